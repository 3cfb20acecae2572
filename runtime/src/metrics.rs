//! Metrics computed exactly by the runtime from model outputs and labels, never by a
//! backend: accuracy; precision, recall and F1 macro-averaged from the confusion
//! matrix; mean absolute and mean squared error.
//!
//! Definitions (they match scikit-learn's `accuracy_score`, `precision_score`,
//! `recall_score` and `f1_score` with `average="macro"`, and its `mean_absolute_error`
//! and `mean_squared_error` averaged over every output element):
//! - the prediction of a classifier is the index of its largest output (the first on
//!   ties; NaN never wins); of a binary model, 1 when its output is above 0.5;
//! - per class `c`: precision = TP / predicted-as-`c`, recall = TP / truly-`c`,
//!   F1 = 2PR / (P + R); a zero denominator gives 0;
//! - the macro average runs over the classes that occur among the labels or the
//!   predictions of the evaluated samples (scikit-learn's default label set);
//! - sums and counts are kept in `f64` / `u64`, so the result does not depend on how
//!   the samples were cut into batches.

use std::fmt;

use crate::executor::TaskKind;
use crate::tensor::Tensor;

/// A metric a `train` block can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Accuracy,
    Precision,
    Recall,
    F1,
    Mae,
    Mse,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Accuracy,
        Metric::Precision,
        Metric::Recall,
        Metric::F1,
        Metric::Mae,
        Metric::Mse,
    ];

    /// The metric's name in `.nn` files and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::F1 => "f1",
            Metric::Mae => "mae",
            Metric::Mse => "mse",
        }
    }

    /// The metric called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the metric needs a confusion matrix (a classifier).
    pub fn is_classification(self) -> bool {
        matches!(
            self,
            Metric::Accuracy | Metric::Precision | Metric::Recall | Metric::F1
        )
    }

    /// Whether the metric can be computed for `task`: the classification metrics need
    /// a classifier or a binary model; MAE and MSE need outputs shaped like the labels
    /// (regression, or a binary model's probability against its 0/1 label).
    pub fn applies_to(self, task: TaskKind) -> bool {
        if self.is_classification() {
            task.classes().is_some()
        } else {
            !matches!(task, TaskKind::Classification { .. })
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts of (true class, predicted class) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major: `counts[truth * classes + predicted]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> ConfusionMatrix {
        ConfusionMatrix {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// A matrix from row-major counts (`truth` rows, `predicted` columns).
    pub fn from_counts(classes: usize, counts: Vec<u64>) -> Option<ConfusionMatrix> {
        (counts.len() == classes * classes).then_some(ConfusionMatrix { classes, counts })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Row-major counts, `truth * classes + predicted`.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    /// Records one sample; both indices must be below `classes`.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth * self.classes + predicted] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn row_sum(&self, c: usize) -> u64 {
        (0..self.classes).map(|p| self.get(c, p)).sum()
    }

    fn col_sum(&self, c: usize) -> u64 {
        (0..self.classes).map(|t| self.get(t, c)).sum()
    }

    /// Correct predictions over all samples (NaN when there are none).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.get(c, c)).sum();
        correct as f64 / self.total() as f64
    }

    /// Per-class (precision, recall, F1) of the classes that occur as a label or a
    /// prediction.
    fn per_class(&self) -> Vec<(f64, f64, f64)> {
        (0..self.classes)
            .filter_map(|c| {
                let tp = self.get(c, c) as f64;
                let (predicted, truly) = (self.col_sum(c), self.row_sum(c));
                if predicted == 0 && truly == 0 {
                    return None;
                }
                let p = if predicted == 0 {
                    0.0
                } else {
                    tp / predicted as f64
                };
                let r = if truly == 0 { 0.0 } else { tp / truly as f64 };
                let f1 = if p + r == 0.0 {
                    0.0
                } else {
                    2.0 * p * r / (p + r)
                };
                Some((p, r, f1))
            })
            .collect()
    }

    fn macro_average(&self, pick: impl Fn(&(f64, f64, f64)) -> f64) -> f64 {
        let per_class = self.per_class();
        per_class.iter().map(pick).sum::<f64>() / per_class.len() as f64
    }

    pub fn macro_precision(&self) -> f64 {
        self.macro_average(|c| c.0)
    }

    pub fn macro_recall(&self) -> f64 {
        self.macro_average(|c| c.1)
    }

    pub fn macro_f1(&self) -> f64 {
        self.macro_average(|c| c.2)
    }
}

impl fmt::Display for ConfusionMatrix {
    /// A table with true classes as rows and predicted classes as columns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widest = self
            .counts
            .iter()
            .max()
            .copied()
            .unwrap_or(0)
            .to_string()
            .len();
        let width = widest
            .max(self.classes.saturating_sub(1).to_string().len())
            .max(2);
        write!(f, "{:>w$}", "true\\pred", w = 9)?;
        for p in 0..self.classes {
            write!(f, " {p:>width$}")?;
        }
        writeln!(f)?;
        for t in 0..self.classes {
            write!(f, "{t:>9}")?;
            for p in 0..self.classes {
                write!(f, " {:>width$}", self.get(t, p))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A label or output the metrics cannot use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricError(pub String);

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetricError {}

/// Running sums over the batches of one pass (an epoch or an evaluation), from which
/// the loss and every metric follow exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct Accumulator {
    task: TaskKind,
    /// Sum over samples of the per-sample loss (batch mean × batch size).
    pub loss_sum: f64,
    pub samples: u64,
    confusion: Option<ConfusionMatrix>,
    abs_error_sum: f64,
    sq_error_sum: f64,
    error_count: u64,
    /// Whether any batch brought outputs (training steps may not).
    saw_outputs: bool,
}

impl Accumulator {
    pub fn new(task: TaskKind) -> Accumulator {
        Accumulator {
            task,
            loss_sum: 0.0,
            samples: 0,
            confusion: task.classes().map(ConfusionMatrix::new),
            abs_error_sum: 0.0,
            sq_error_sum: 0.0,
            error_count: 0,
            saw_outputs: false,
        }
    }

    /// Adds a batch's mean loss, weighted by its `samples`.
    pub fn add_loss(&mut self, mean_loss: f32, samples: usize) {
        self.loss_sum += f64::from(mean_loss) * samples as f64;
        self.samples += samples as u64;
    }

    /// Adds a batch's outputs `[b, ..]` and labels (shapes as in the executor contract).
    pub fn add_outputs(&mut self, output: &Tensor, labels: &Tensor) -> Result<(), MetricError> {
        let b = labels.rows();
        let per_sample = self.task.outputs_per_sample();
        if output.rows() != b || output.len() != b * per_sample {
            return Err(MetricError(format!(
                "the model output has shape {}, expected {} rows of {} values",
                crate::tensor::format_shape(&output.shape),
                b,
                per_sample
            )));
        }
        self.saw_outputs = true;
        if let Some(cm) = &mut self.confusion {
            for (i, row) in output.data.chunks(per_sample).enumerate() {
                let truth = class_label(labels.data[i], cm.classes).ok_or_else(|| {
                    MetricError(format!(
                        "label {} of sample {i} in the batch is not a class index below {}",
                        labels.data[i], cm.classes
                    ))
                })?;
                cm.add(truth, predict(self.task, row));
            }
        }
        if !matches!(self.task, TaskKind::Classification { .. }) {
            if labels.len() != output.len() {
                return Err(MetricError(format!(
                    "labels have {} values, the model output has {}",
                    labels.len(),
                    output.len()
                )));
            }
            for (&o, &t) in output.data.iter().zip(&labels.data) {
                let e = f64::from(o) - f64::from(t);
                self.abs_error_sum += e.abs();
                self.sq_error_sum += e * e;
            }
            self.error_count += output.len() as u64;
        }
        Ok(())
    }

    /// Mean loss per sample (NaN before any sample).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.samples as f64
    }

    /// The confusion matrix so far, for classifiers that produced outputs.
    pub fn confusion(&self) -> Option<&ConfusionMatrix> {
        self.confusion.as_ref().filter(|_| self.saw_outputs)
    }

    /// The value of `metric`, or `None` when no outputs were seen or it does not apply.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        if !self.saw_outputs || !metric.applies_to(self.task) {
            return None;
        }
        let cm = self.confusion.as_ref();
        let n = self.error_count as f64;
        Some(match metric {
            Metric::Accuracy => cm?.accuracy(),
            Metric::Precision => cm?.macro_precision(),
            Metric::Recall => cm?.macro_recall(),
            Metric::F1 => cm?.macro_f1(),
            Metric::Mae => self.abs_error_sum / n,
            Metric::Mse => self.sq_error_sum / n,
        })
    }

    /// Every sum and count as one vector (counts exact up to 2^53), for adding the
    /// accumulators of data-parallel ranks together ([`Accumulator::set_sums`]).
    pub fn sums(&self) -> Vec<f64> {
        let mut v = vec![
            self.loss_sum,
            self.samples as f64,
            self.abs_error_sum,
            self.sq_error_sum,
            self.error_count as f64,
            f64::from(u8::from(self.saw_outputs)),
        ];
        if let Some(cm) = &self.confusion {
            v.extend(cm.counts.iter().map(|&c| c as f64));
        }
        v
    }

    /// Replaces the sums with `v`, a (summed) [`Accumulator::sums`] of the same task.
    pub fn set_sums(&mut self, v: &[f64]) {
        self.loss_sum = v[0];
        self.samples = v[1] as u64;
        self.abs_error_sum = v[2];
        self.sq_error_sum = v[3];
        self.error_count = v[4] as u64;
        self.saw_outputs = v[5] > 0.0;
        if let Some(cm) = &mut self.confusion {
            for (c, &s) in cm.counts.iter_mut().zip(&v[6..]) {
                *c = s as u64;
            }
        }
    }

    /// The sums as JSON, exact to the bit, for mid-epoch checkpoints.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "loss_sum": hex_f64(self.loss_sum),
            "samples": self.samples,
            "confusion": self.confusion.as_ref().map(|c| c.counts.clone()),
            "abs_error_sum": hex_f64(self.abs_error_sum),
            "sq_error_sum": hex_f64(self.sq_error_sum),
            "error_count": self.error_count,
            "saw_outputs": self.saw_outputs,
        })
    }

    /// The inverse of [`Accumulator::to_json`]; `None` when `value` is not one.
    pub fn from_json(task: TaskKind, value: &serde_json::Value) -> Option<Accumulator> {
        let confusion = match (task.classes(), value.get("confusion")?) {
            (Some(k), serde_json::Value::Array(items)) => {
                let counts: Option<Vec<u64>> = items.iter().map(|v| v.as_u64()).collect();
                Some(ConfusionMatrix::from_counts(k, counts?)?)
            }
            (None, serde_json::Value::Null) => None,
            _ => return None,
        };
        Some(Accumulator {
            task,
            loss_sum: parse_hex_f64(value.get("loss_sum")?.as_str()?)?,
            samples: value.get("samples")?.as_u64()?,
            confusion,
            abs_error_sum: parse_hex_f64(value.get("abs_error_sum")?.as_str()?)?,
            sq_error_sum: parse_hex_f64(value.get("sq_error_sum")?.as_str()?)?,
            error_count: value.get("error_count")?.as_u64()?,
            saw_outputs: value.get("saw_outputs")?.as_bool()?,
        })
    }
}

fn hex_f64(v: f64) -> String {
    format!("{:016x}", v.to_bits())
}

fn parse_hex_f64(s: &str) -> Option<f64> {
    u64::from_str_radix(s, 16).ok().map(f64::from_bits)
}

/// A label as a class index, if it is a whole number below `classes`.
pub fn class_label(label: f32, classes: usize) -> Option<usize> {
    (label >= 0.0 && label.fract() == 0.0 && (label as usize) < classes).then_some(label as usize)
}

/// The predicted class of one sample's outputs.
pub fn predict(task: TaskKind, outputs: &[f32]) -> usize {
    match task {
        TaskKind::Binary => usize::from(outputs.first().is_some_and(|&p| p > 0.5)),
        _ => {
            let mut best = 0;
            for (i, &v) in outputs.iter().enumerate() {
                if v > outputs[best] || outputs[best].is_nan() && !v.is_nan() {
                    best = i;
                }
            }
            best
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor::new(shape, data).unwrap()
    }

    /// Three classes, labels and argmax predictions chosen by hand:
    /// truth     0 0 0 1 1 2 2 2 2 0
    /// predicted 0 0 1 1 2 2 2 0 2 0
    fn three_class_batch() -> (Tensor, Tensor) {
        let truth = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0];
        let predicted = [0, 0, 1, 1, 2, 2, 2, 0, 2, 0];
        let mut out = Vec::new();
        for &p in &predicted {
            let mut row = [0.1f32, 0.2, 0.3];
            row[p] = 0.9;
            out.extend_from_slice(&row);
        }
        let labels: Vec<f32> = truth.iter().map(|&c| c as f32).collect();
        (t(vec![10, 3], out), t(vec![10], labels))
    }

    #[test]
    fn classification_metrics_match_the_hand_computed_confusion_matrix() {
        let (out, labels) = three_class_batch();
        let mut acc = Accumulator::new(TaskKind::Classification { classes: 3 });
        acc.add_outputs(&out, &labels).unwrap();
        let cm = acc.confusion().unwrap();
        // rows truth, columns predicted
        assert_eq!(cm.counts(), &[3, 1, 0, 0, 1, 1, 1, 0, 3]);
        assert_eq!(acc.value(Metric::Accuracy), Some(7.0 / 10.0));
        // precision: c0 3/4, c1 1/2, c2 3/4; recall: c0 3/4, c1 1/2, c2 3/4
        let p = (3.0 / 4.0 + 1.0 / 2.0 + 3.0 / 4.0) / 3.0;
        assert_eq!(acc.value(Metric::Precision), Some(p));
        assert_eq!(acc.value(Metric::Recall), Some(p));
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        let expected_f1 = (f1(0.75, 0.75) + f1(0.5, 0.5) + f1(0.75, 0.75)) / 3.0;
        assert_eq!(acc.value(Metric::F1), Some(expected_f1));
    }

    #[test]
    fn macro_average_skips_classes_absent_from_labels_and_predictions() {
        // 4 classes, class 3 never occurs; class 2 is predicted but never true.
        let out = t(
            vec![3, 4],
            vec![1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.],
        );
        let labels = t(vec![3], vec![0., 1., 1.]);
        let mut acc = Accumulator::new(TaskKind::Classification { classes: 4 });
        acc.add_outputs(&out, &labels).unwrap();
        // c0: P 1, R 1; c1: P 1, R 1/2; c2: P 0 (0 of 1), R 0 (no support)
        assert_eq!(acc.value(Metric::Precision), Some(2.0 / 3.0));
        assert_eq!(acc.value(Metric::Recall), Some(1.5 / 3.0));
        let f1_c1 = 2.0 * 0.5 / 1.5;
        assert_eq!(acc.value(Metric::F1), Some((1.0 + f1_c1) / 3.0));
    }

    #[test]
    fn metrics_do_not_depend_on_how_samples_are_batched() {
        let (out, labels) = three_class_batch();
        let task = TaskKind::Classification { classes: 3 };
        let mut whole = Accumulator::new(task);
        whole.add_outputs(&out, &labels).unwrap();
        let mut parts = Accumulator::new(task);
        for idx in [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]] {
            parts
                .add_outputs(&out.gather_rows(&idx), &labels.gather_rows(&idx))
                .unwrap();
        }
        assert_eq!(whole, parts);
    }

    #[test]
    fn binary_threshold_is_strictly_above_one_half() {
        let out = t(vec![4, 1], vec![0.5, 0.51, 0.2, 0.9]);
        let labels = t(vec![4, 1], vec![0., 1., 1., 1.]);
        let mut acc = Accumulator::new(TaskKind::Binary);
        acc.add_outputs(&out, &labels).unwrap();
        let cm = acc.confusion().unwrap();
        assert_eq!(cm.counts(), &[1, 0, 1, 2]);
        assert_eq!(acc.value(Metric::Accuracy), Some(0.75));
        let mse = (0.25f64
            + (0.51f32 as f64 - 1.0).powi(2)
            + (0.2f32 as f64 - 1.0).powi(2)
            + (0.9f32 as f64 - 1.0).powi(2))
            / 4.0;
        assert_eq!(acc.value(Metric::Mse), Some(mse));
    }

    #[test]
    fn regression_errors_average_over_every_output_element() {
        let out = t(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let labels = t(vec![2, 2], vec![1.5, 2.0, 1.0, 8.0]);
        let mut acc = Accumulator::new(TaskKind::Regression { outputs: 2 });
        acc.add_outputs(&out, &labels).unwrap();
        assert_eq!(acc.value(Metric::Mae), Some((0.5 + 0.0 + 2.0 + 4.0) / 4.0));
        assert_eq!(
            acc.value(Metric::Mse),
            Some((0.25 + 0.0 + 4.0 + 16.0) / 4.0)
        );
        assert_eq!(acc.value(Metric::Accuracy), None);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_outputs_and_ignores_nan() {
        let task = TaskKind::Classification { classes: 3 };
        assert_eq!(predict(task, &[0.2, 0.4, 0.4]), 1);
        assert_eq!(predict(task, &[f32::NAN, 0.1, 0.3]), 2);
    }

    #[test]
    fn a_label_outside_the_classes_is_an_error() {
        let out = t(vec![1, 2], vec![0.3, 0.7]);
        let mut acc = Accumulator::new(TaskKind::Classification { classes: 2 });
        let err = acc.add_outputs(&out, &t(vec![1], vec![2.0])).unwrap_err();
        assert!(err.0.contains("not a class index below 2"), "{err}");
    }

    #[test]
    fn accumulator_round_trips_through_json_exactly() {
        let (out, labels) = three_class_batch();
        let task = TaskKind::Classification { classes: 3 };
        let mut acc = Accumulator::new(task);
        acc.add_loss(0.1, 3);
        acc.add_outputs(&out, &labels).unwrap();
        assert_eq!(Accumulator::from_json(task, &acc.to_json()), Some(acc));
    }

    #[test]
    fn confusion_matrix_prints_truth_rows_and_predicted_columns() {
        let cm = ConfusionMatrix::from_counts(2, vec![5, 1, 0, 12]).unwrap();
        assert_eq!(
            cm.to_string(),
            "true\\pred  0  1\n        0  5  1\n        1  0 12\n"
        );
    }
}
