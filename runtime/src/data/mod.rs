//! Training data: loaders for IDX (MNIST layout) and CSV files, the [`Dataset`] they
//! produce, readers of samples to predict (NumPy arrays, PNG/JPEG images), the
//! [`Preprocess`] recorded with the weights, and the checks that fit a dataset to a model's input and task.
//!
//! Invariants:
//! - a [`Dataset`] has `x` of shape `[n, ..sample_shape]` and `y` with `n` rows, `n > 0`;
//! - every malformed file is a [`DataError`] naming the file and the byte offset or
//!   line and column; nothing here panics on file contents, and nothing is silently
//!   truncated or padded;
//! - values are finite `f32`s: a NaN or infinity in a file is an error.

mod csv;
mod idx;
mod images;
mod npy;
mod preprocess;

use std::fmt;
use std::path::{Path, PathBuf};

pub use csv::{load_csv, read_csv_columns, read_csv_dataset, TEST_EVERY};
pub use idx::{load_idx, read_idx, IdxArray};
pub use images::{
    image_files, image_geometry, is_image_file, load_image_folder, load_images, write_png,
};
pub use npy::{load_npy_data, npy_bytes, read_npy, write_npy};
pub use preprocess::Preprocess;

use crate::executor::TaskKind;
use crate::metrics::class_label;
use crate::tensor::{element_count, format_shape, Tensor};

/// Samples and their labels or targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `[n, ..sample_shape]`.
    pub x: Tensor,
    /// `[n, ..]`: class indices or targets, shaped for the task by [`Dataset::fit_labels`].
    pub y: Tensor,
    pub sample_shape: Vec<usize>,
    /// Where the samples came from, for error messages.
    pub source: Source,
}

/// The origin of a dataset's samples and labels.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// IDX files; label `i` starts at byte `label_offset + i * label_size` of the
    /// (decompressed) labels file.
    Idx {
        images: PathBuf,
        labels: PathBuf,
        label_offset: usize,
        label_size: usize,
    },
    /// A CSV file; sample `i` is on line `lines[i]`, its target in column `target_col`
    /// (1-based character column of that field, per line).
    Csv {
        path: PathBuf,
        lines: Vec<usize>,
        target_cols: Vec<usize>,
    },
    /// Built in memory (tests, other front ends).
    Memory { name: String },
}

impl Source {
    /// The file holding the samples.
    pub fn samples_path(&self) -> PathBuf {
        match self {
            Source::Idx { images, .. } => images.clone(),
            Source::Csv { path, .. } => path.clone(),
            Source::Memory { name } => PathBuf::from(name),
        }
    }

    /// The file and location of label `i`.
    fn label_location(&self, i: usize) -> (PathBuf, Location) {
        match self {
            Source::Idx {
                labels,
                label_offset,
                label_size,
                ..
            } => (
                labels.clone(),
                Location::Byte((label_offset + i * label_size) as u64),
            ),
            Source::Csv {
                path,
                lines,
                target_cols,
            } => (
                path.clone(),
                Location::LineCol(
                    lines.get(i).copied().unwrap_or(0),
                    target_cols.get(i).copied().unwrap_or(0),
                ),
            ),
            Source::Memory { name } => (PathBuf::from(name), Location::Sample(i)),
        }
    }
}

/// How a data source's test split is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum TestSplit {
    /// This fraction of the rows, spread evenly ([`evenly_spread`]).
    Fraction(f64),
    /// The rows of another file.
    File(PathBuf),
}

/// Which of `n` rows a test fraction `f` holds out: row `i` when `⌊(i+1)·f⌋` passes an
/// integer, so the rows are spread evenly and the same every time (`0.2`: every fifth).
pub fn evenly_spread(n: usize, f: f64) -> Vec<bool> {
    let at = |i: usize| (i as f64 * f + 1e-9).floor();
    (0..n).map(|i| at(i + 1) > at(i)).collect()
}

/// The training and test splits of `all` by the rows `test` marks; a data set too small
/// to hold any row out tests on its training rows.
pub fn split_rows(all: &Dataset, test: &[bool]) -> (Dataset, Dataset) {
    let (test_rows, train_rows): (Vec<usize>, Vec<usize>) = (0..all.len()).partition(|&i| test[i]);
    let train = all.subset(&train_rows);
    let test = if test_rows.is_empty() {
        train.clone()
    } else {
        all.subset(&test_rows)
    };
    (train, test)
}

/// The training and test splits of one data source.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
    /// What the source did to both splits' samples (recorded with the weights).
    pub preprocess: Preprocess,
}

/// `text` as an error message may show it: control characters escaped (a data file must
/// not drive the terminal) and anything past 48 characters cut, with the full length
/// noted.
pub fn excerpt(text: &str) -> String {
    const LIMIT: usize = 48;
    let mut out = String::new();
    for (k, c) in text.chars().enumerate() {
        if k == LIMIT {
            out.push_str(&format!("… ({} bytes in all)", text.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Names for an error message: each quoted with [`excerpt`], at most 20 of them.
pub fn excerpt_list(names: &[&str]) -> String {
    let mut shown: Vec<String> = names
        .iter()
        .take(20)
        .map(|n| format!("`{}`", excerpt(n)))
        .collect();
    if names.len() > 20 {
        shown.push(format!("… and {} more", names.len() - 20));
    }
    shown.join(", ")
}

/// Where in a file an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole.
    File,
    /// A byte offset (in the decompressed stream for `.gz` files).
    Byte(u64),
    /// A 1-based line.
    Line(usize),
    /// A 1-based line and character column.
    LineCol(usize, usize),
    /// A sample index (in-memory data).
    Sample(usize),
}

/// What went wrong with a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataErrorKind {
    /// The file is missing or unreadable.
    Io,
    /// The bytes are not a valid file of the expected format (magic, header, size,
    /// compression).
    Format,
    /// Two files, or a file and its header, disagree (counts, shapes).
    Mismatch,
    /// A CSV value is not a number, or a row has the wrong number of fields.
    Parse,
    /// A sample's shape differs from the model input.
    Shape,
    /// A label does not fit the task (a class index out of range, a non-0/1 binary
    /// label, a target of the wrong width).
    Label,
}

/// A data file that cannot be used, with the file and the place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError {
    pub kind: DataErrorKind,
    pub path: PathBuf,
    pub location: Location,
    pub message: String,
    pub help: Option<String>,
}

/// Reads a whole data file; an I/O error names the file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| {
        DataError::new(
            DataErrorKind::Io,
            path,
            Location::File,
            format!("cannot read the file: {e}"),
        )
    })
}

impl DataError {
    pub fn new(
        kind: DataErrorKind,
        path: &Path,
        location: Location,
        message: impl Into<String>,
    ) -> DataError {
        DataError {
            kind,
            path: path.to_path_buf(),
            location,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> DataError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.location {
            Location::File => write!(f, "`{path}`: {}", self.message)?,
            Location::Byte(b) => write!(f, "`{path}` at byte {b}: {}", self.message)?,
            Location::Line(l) => write!(f, "`{path}` line {l}: {}", self.message)?,
            Location::LineCol(l, c) => {
                write!(f, "`{path}` line {l}, column {c}: {}", self.message)?
            }
            Location::Sample(i) => write!(f, "`{path}` sample {i}: {}", self.message)?,
        }
        if let Some(help) = &self.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DataError {}

impl Dataset {
    /// A dataset from tensors built in memory; `x` and `y` must have the same number of
    /// rows, at least one.
    pub fn from_tensors(name: &str, x: Tensor, y: Tensor) -> Result<Dataset, DataError> {
        let path = Path::new(name);
        if x.shape.is_empty() || x.rows() == 0 {
            return Err(DataError::new(
                DataErrorKind::Mismatch,
                path,
                Location::File,
                "the dataset has no samples",
            ));
        }
        if y.shape.is_empty() || y.rows() != x.rows() {
            return Err(DataError::new(
                DataErrorKind::Mismatch,
                path,
                Location::File,
                format!(
                    "{} samples but {} labels",
                    x.rows(),
                    if y.shape.is_empty() { 0 } else { y.rows() }
                ),
            ));
        }
        let sample_shape = x.shape[1..].to_vec();
        Ok(Dataset {
            x,
            y,
            sample_shape,
            source: Source::Memory {
                name: name.to_string(),
            },
        })
    }

    /// The rows `rows` of this data set, keeping their source lines for messages.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let all = self;
        let source = match &all.source {
            Source::Csv {
                path,
                lines,
                target_cols,
            } => Source::Csv {
                path: path.clone(),
                lines: rows.iter().map(|&i| lines[i]).collect(),
                target_cols: rows.iter().map(|&i| target_cols[i]).collect(),
            },
            other => other.clone(),
        };
        Dataset {
            x: all.x.gather_rows(rows),
            y: all.y.gather_rows(rows),
            sample_shape: all.sample_shape.clone(),
            source,
        }
    }

    /// The samples of `self`, then those of `other` (same sample and label shapes).
    pub fn concat(&self, other: &Dataset) -> Result<Dataset, DataError> {
        let path = self.source.samples_path();
        if self.sample_shape != other.sample_shape || self.y.shape[1..] != other.y.shape[1..] {
            return Err(DataError::new(
                DataErrorKind::Mismatch,
                &other.source.samples_path(),
                Location::File,
                format!(
                    "samples of shape {} cannot join those of {} in `{}`",
                    format_shape(&other.sample_shape),
                    format_shape(&self.sample_shape),
                    path.display()
                ),
            ));
        }
        let join = |a: &Tensor, b: &Tensor| {
            let mut shape = a.shape.clone();
            shape[0] += b.shape[0];
            let mut data = a.data.clone();
            data.extend_from_slice(&b.data);
            Tensor { shape, data }
        };
        Ok(Dataset {
            x: join(&self.x, &other.x),
            y: join(&self.y, &other.y),
            sample_shape: self.sample_shape.clone(),
            source: Source::Memory {
                name: path.display().to_string(),
            },
        })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.x.rows()
    }

    /// Whether there are no samples (never true for a loaded dataset).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the sample shape against the model input, adding or dropping a trailing
    /// channel of size 1 (`[28, 28]` fits `[28, 28, 1]` and back); any other difference
    /// is an error showing both shapes.
    pub fn fit_input(&mut self, input_shape: &[usize]) -> Result<(), DataError> {
        let s = &self.sample_shape;
        let fits = s == input_shape
            || (input_shape.last() == Some(&1) && s[..] == input_shape[..input_shape.len() - 1])
            || (s.last() == Some(&1) && s[..s.len() - 1] == *input_shape);
        if !fits {
            return Err(DataError::new(
                DataErrorKind::Shape,
                &self.source.samples_path(),
                Location::File,
                format!(
                    "samples have shape {}, the model input is {}",
                    format_shape(&self.sample_shape),
                    format_shape(input_shape)
                ),
            )
            .with_help("change the model's `input` to the data's shape, or add `flatten`/`reshape` after it"));
        }
        let mut shape = vec![self.len()];
        shape.extend_from_slice(input_shape);
        self.x.shape = shape;
        self.sample_shape = input_shape.to_vec();
        Ok(())
    }

    /// Checks and shapes the labels for `task` and the model's output shape, as the
    /// executor contract wants them: `[n]` class indices, `[n, 1]` 0/1 labels, or
    /// `[n, ..output_shape]` targets.
    pub fn fit_labels(&mut self, task: TaskKind, output_shape: &[usize]) -> Result<(), DataError> {
        let n = self.len();
        let per_sample = self.y.len() / n.max(1);
        let want = match task {
            TaskKind::Classification { .. } | TaskKind::Binary => 1,
            TaskKind::Regression { .. } => element_count(output_shape),
        };
        if per_sample != want || self.y.len() != n * want {
            let (path, _) = self.source.label_location(0);
            return Err(DataError::new(
                DataErrorKind::Label,
                &path,
                Location::File,
                format!(
                    "each sample has {per_sample} target values, the model output needs {want}"
                ),
            ));
        }
        if let Some(classes) = task.classes() {
            for (i, &label) in self.y.data.iter().enumerate() {
                if class_label(label, classes).is_none() {
                    let (path, location) = self.source.label_location(i);
                    let what = if task == TaskKind::Binary {
                        "a binary label must be 0 or 1".to_string()
                    } else {
                        format!("the model has {classes} classes, labels must be whole numbers from 0 to {}", classes - 1)
                    };
                    return Err(DataError::new(
                        DataErrorKind::Label,
                        &path,
                        location,
                        format!("label {label} of sample {i} does not fit: {what}"),
                    ));
                }
            }
        }
        let shape = match task {
            TaskKind::Classification { .. } => vec![n],
            TaskKind::Binary => vec![n, 1],
            TaskKind::Regression { .. } => {
                let mut s = vec![n];
                s.extend_from_slice(output_shape);
                s
            }
        };
        self.y.shape = shape;
        Ok(())
    }
}

/// Multiplies every sample value by `factor` (`scale = 1/255` maps pixels to [0, 1]).
pub fn scale(dataset: &mut Dataset, factor: f32) {
    if factor != 1.0 {
        for v in &mut dataset.x.data {
            *v *= factor;
        }
    }
}

/// Per-feature statistics of a training set, applied to every split.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    /// Population standard deviation; a constant feature keeps 1 so it is only centred.
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Mean and standard deviation of each feature (each element of a sample) of `train`,
    /// accumulated in `f64`.
    pub fn fit(train: &Dataset) -> Standardizer {
        let width = train.x.row_len();
        let n = train.len() as f64;
        let mut mean = vec![0.0f64; width];
        for row in train.x.data.chunks(width) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0f64; width];
        for row in train.x.data.chunks(width) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|s| if *s > 0.0 { (s / n).sqrt() } else { 1.0 })
            .collect();
        Standardizer { mean, std }
    }

    /// Replaces each value `v` of feature `j` with `(v - mean[j]) / std[j]`.
    pub fn apply(&self, dataset: &mut Dataset) {
        self.apply_rows(&mut dataset.x.data);
    }

    /// [`Standardizer::apply`] on rows of `mean.len()` values.
    pub fn apply_rows(&self, data: &mut [f32]) {
        let width = self.mean.len();
        for row in data.chunks_mut(width) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = ((f64::from(*v) - self.mean[j]) / self.std[j]) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(x: Vec<f32>, xs: Vec<usize>, y: Vec<f32>, ys: Vec<usize>) -> Dataset {
        Dataset::from_tensors(
            "mem",
            Tensor::new(xs, x).unwrap(),
            Tensor::new(ys, y).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_trailing_channel_of_one_is_added_or_dropped() {
        let mut d = dataset(vec![0.0; 8], vec![2, 2, 2], vec![0.0, 1.0], vec![2]);
        d.fit_input(&[2, 2, 1]).unwrap();
        assert_eq!(d.x.shape, vec![2, 2, 2, 1]);
        d.fit_input(&[2, 2]).unwrap();
        assert_eq!(d.x.shape, vec![2, 2, 2]);
    }

    #[test]
    fn a_different_sample_shape_is_an_error_showing_both_shapes() {
        let mut d = dataset(vec![0.0; 8], vec![2, 2, 2], vec![0.0, 1.0], vec![2]);
        let err = d.fit_input(&[4]).unwrap_err();
        assert_eq!(err.kind, DataErrorKind::Shape);
        assert!(
            err.to_string()
                .starts_with("`mem`: samples have shape [2, 2], the model input is [4]"),
            "{err}"
        );
    }

    #[test]
    fn labels_are_shaped_for_the_task() {
        let mut d = dataset(vec![0.0; 2], vec![2, 1], vec![0.0, 1.0], vec![2, 1]);
        d.fit_labels(TaskKind::Classification { classes: 2 }, &[2])
            .unwrap();
        assert_eq!(d.y.shape, vec![2]);
        d.fit_labels(TaskKind::Binary, &[1]).unwrap();
        assert_eq!(d.y.shape, vec![2, 1]);
        d.fit_labels(TaskKind::Regression { outputs: 1 }, &[1])
            .unwrap();
        assert_eq!(d.y.shape, vec![2, 1]);
        let err = d
            .fit_labels(TaskKind::Regression { outputs: 3 }, &[3])
            .unwrap_err();
        assert!(
            err.message
                .contains("1 target values, the model output needs 3"),
            "{err}"
        );
    }

    #[test]
    fn a_class_label_out_of_range_names_the_sample() {
        let mut d = dataset(vec![0.0; 3], vec![3, 1], vec![0.0, 3.0, 1.0], vec![3]);
        let err = d
            .fit_labels(TaskKind::Classification { classes: 3 }, &[3])
            .unwrap_err();
        assert_eq!(err.location, Location::Sample(1));
        assert!(err.message.contains("label 3 of sample 1"), "{err}");
        let err = d.fit_labels(TaskKind::Binary, &[1]).unwrap_err();
        assert!(err.message.contains("must be 0 or 1"), "{err}");
    }

    #[test]
    fn standardizing_uses_training_statistics_only() {
        let train = dataset(
            vec![1.0, 10.0, 3.0, 10.0],
            vec![2, 2],
            vec![0.0, 0.0],
            vec![2],
        );
        let mut test = dataset(vec![5.0, 11.0], vec![1, 2], vec![0.0], vec![1]);
        let s = Standardizer::fit(&train);
        assert_eq!(s.mean, vec![2.0, 10.0]);
        assert_eq!(s.std, vec![1.0, 1.0]); // feature 1 is constant: only centred
        s.apply(&mut test);
        assert_eq!(test.x.data, vec![3.0, 1.0]);
    }
}
