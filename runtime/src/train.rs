//! The training loop: epochs of mini-batches through any [`Executor`], evaluation of the
//! test split after each epoch, progress output, the metrics log, checkpoints, weights
//! and plots.
//!
//! Invariants:
//! - the data order of epoch `e` is the identity permutation shuffled (when `shuffle`)
//!   by the runtime's [`Rng`] seeded with `seed`, which advances by exactly one shuffle
//!   per epoch; the last partial batch of an epoch is trained, not dropped;
//! - a full checkpoint stores the RNG state at the start of the epoch in progress and the
//!   number of samples of it already trained, so resuming replays the same order and the
//!   same steps: `epochs = 2` in one run and `1 + 1` resumed give bit-identical weights;
//! - after every step the loss and every parameter are checked; the first NaN or
//!   infinity stops training with an error naming the epoch, the batch and the parameter;
//! - `train_loss` is the mean over the epoch's samples of the loss each batch reported
//!   before its update (batch mean × batch size, summed, over the sample count);
//!   `test_loss` and the test metrics come from the parameters at the end of the epoch.

use std::fmt;
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::checkpoint::{write_weights, Checkpoint, CheckpointError};
use crate::data::{DataError, Dataset, Splits};
use crate::executor::{EpochRun, ExecError, Executor, TaskKind};
use crate::metrics::{Accumulator, ConfusionMatrix, Metric, MetricError};
use crate::plot;
use crate::rng::Rng;
use crate::tensor::{element_count, format_shape, Tensor};

/// File names inside the output folder.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CURVES_FILE: &str = "curves.svg";
pub const CONFUSION_FILE: &str = "confusion.svg";

/// How the loop reports progress while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal, otherwise [`ProgressMode::Plain`].
    Auto,
    /// One line per epoch on stdout.
    Plain,
    /// Nothing; the caller prints the [`Summary`].
    Quiet,
}

/// The settings of one training run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// Receives weights, the checkpoint, `metrics.jsonl` and the plots; created if needed.
    pub out_dir: PathBuf,
    /// An extra copy of the metrics log (`--log FILE.jsonl`).
    pub log: Option<PathBuf>,
    pub progress: ProgressMode,
    pub metrics: Vec<Metric>,
    pub task: TaskKind,
    /// Also write the full checkpoint every this many batches inside an epoch (it is
    /// always written at the end of every epoch).
    pub checkpoint_every: Option<usize>,
}

impl TrainConfig {
    /// A configuration with the language's defaults (batch 32, 1 epoch, seed 0, shuffle,
    /// automatic progress, no metrics).
    pub fn new(task: TaskKind, out_dir: impl Into<PathBuf>) -> TrainConfig {
        TrainConfig {
            epochs: 1,
            batch: 32,
            seed: 0,
            shuffle: true,
            out_dir: out_dir.into(),
            log: None,
            progress: ProgressMode::Auto,
            metrics: Vec::new(),
            task,
            checkpoint_every: None,
        }
    }
}

/// The numbers of one epoch, as logged in `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    /// Metrics over the epoch's training batches (from the outputs before each update);
    /// empty when the executor does not return outputs from training steps.
    pub train_metrics: Vec<(Metric, f64)>,
    /// Metrics over the test split at the end of the epoch.
    pub test_metrics: Vec<(Metric, f64)>,
    /// Training samples per second of training time (evaluation excluded).
    pub samples_per_s: f64,
    /// Wall time of the epoch, evaluation included.
    pub seconds: f64,
}

fn json_number(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

impl EpochRecord {
    /// One line of `metrics.jsonl`: `epoch`, `train_loss`, `test_loss`, `train_<metric>`
    /// and `test_<metric>` for each metric, `samples_per_s`, `seconds`, in that order.
    /// A NaN or infinity is written as `null`.
    pub fn to_json_line(&self) -> String {
        let mut fields = vec![
            ("epoch".to_string(), serde_json::Value::from(self.epoch)),
            ("train_loss".to_string(), json_number(self.train_loss)),
            ("test_loss".to_string(), json_number(self.test_loss)),
        ];
        for (m, v) in &self.train_metrics {
            fields.push((format!("train_{m}"), json_number(*v)));
        }
        for (m, v) in &self.test_metrics {
            fields.push((format!("test_{m}"), json_number(*v)));
        }
        fields.push(("samples_per_s".to_string(), json_number(self.samples_per_s)));
        fields.push(("seconds".to_string(), json_number(self.seconds)));
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), v))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// The inverse of [`EpochRecord::to_json_line`] (used for the history in checkpoints).
    pub fn from_json(value: &serde_json::Value, metrics: &[Metric]) -> Option<EpochRecord> {
        let num = |k: &str| value.get(k).map(|v| v.as_f64().unwrap_or(f64::NAN));
        let pick = |prefix: &str| -> Vec<(Metric, f64)> {
            metrics
                .iter()
                .filter_map(|&m| num(&format!("{prefix}_{m}")).map(|v| (m, v)))
                .collect()
        };
        Some(EpochRecord {
            epoch: value.get("epoch")?.as_u64()? as usize,
            train_loss: num("train_loss")?,
            test_loss: num("test_loss")?,
            train_metrics: pick("train"),
            test_metrics: pick("test"),
            samples_per_s: num("samples_per_s")?,
            seconds: num("seconds")?,
        })
    }

    /// The value of `metric` on the test split, if it was computed.
    pub fn test_metric(&self, metric: Metric) -> Option<f64> {
        self.test_metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
    }

    /// The value of `metric` on the training batches, if it was computed.
    pub fn train_metric(&self, metric: Metric) -> Option<f64> {
        self.train_metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
    }
}

impl fmt::Display for EpochRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "train_loss {:.6}  test_loss {:.6}",
            self.train_loss, self.test_loss
        )?;
        for (m, v) in &self.test_metrics {
            write!(f, "  test_{m} {v:.4}")?;
        }
        Ok(())
    }
}

/// Where a NaN or infinity appeared.
#[derive(Clone, Debug, PartialEq)]
pub enum NonFinite {
    /// The training loss of a batch.
    TrainLoss(f32),
    /// The test loss of an evaluation batch.
    TestLoss(f32),
    /// A parameter after the update; `index` is the flat index of its first bad element.
    Param {
        name: String,
        index: usize,
        value: f32,
    },
}

/// Why training stopped.
#[derive(Debug)]
pub enum TrainError {
    /// The configuration does not fit the model or the data.
    Config(String),
    Data(DataError),
    /// The executor failed on a batch (`batch` is 1-based; `evaluating` for the test pass).
    Exec {
        epoch: usize,
        batch: usize,
        evaluating: bool,
        error: ExecError,
    },
    /// A loss or parameter became NaN or infinite.
    NonFinite {
        epoch: usize,
        batch: usize,
        what: NonFinite,
    },
    /// An output could not be scored.
    Metric {
        epoch: usize,
        batch: usize,
        error: MetricError,
    },
    Checkpoint(CheckpointError),
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    Plot {
        path: PathBuf,
        message: String,
    },
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Config(m) => f.write_str(m),
            TrainError::Data(e) => write!(f, "{e}"),
            TrainError::Exec {
                epoch,
                batch,
                evaluating,
                error,
            } => {
                let phase = if *evaluating {
                    "evaluating test batch"
                } else {
                    "training batch"
                };
                write!(f, "epoch {epoch}, {phase} {batch}: {error}")
            }
            TrainError::NonFinite { epoch, batch, what } => {
                let kind = |v: f32| if v.is_nan() { "NaN" } else { "infinite" };
                match what {
                    NonFinite::TrainLoss(v) => write!(f, "the training loss became {} at epoch {epoch}, batch {batch}", kind(*v))?,
                    NonFinite::TestLoss(v) => {
                        write!(f, "the test loss became {} at epoch {epoch}, evaluation batch {batch}", kind(*v))?
                    }
                    NonFinite::Param { name, index, value } => write!(
                        f,
                        "parameter `{name}` became {} (element {index}) after the update of epoch {epoch}, batch {batch}",
                        kind(*value)
                    )?,
                }
                write!(f, "\nhelp: lower the learning rate, or check the data for extreme values (`scale`, `standardize`)")
            }
            TrainError::Metric {
                epoch,
                batch,
                error,
            } => write!(f, "epoch {epoch}, batch {batch}: {error}"),
            TrainError::Checkpoint(e) => write!(f, "{e}"),
            TrainError::Io { path, error } => write!(f, "`{}`: {error}", path.display()),
            TrainError::Plot { path, message } => {
                write!(f, "cannot draw `{}`: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for TrainError {}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> Self {
        TrainError::Data(e)
    }
}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        TrainError::Checkpoint(e)
    }
}

/// What a finished run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Every epoch of the run, those before a resume included.
    pub history: Vec<EpochRecord>,
    /// Optimizer steps over the whole run.
    pub steps: u64,
    /// Wall time of this invocation.
    pub seconds: f64,
    /// The test split's confusion matrix after the last epoch, for classifiers.
    pub confusion: Option<ConfusionMatrix>,
    /// The files written.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trained {} epochs ({} steps) in {:.1} s",
            self.history.len(),
            self.steps,
            self.seconds
        )?;
        if let Some(last) = self.history.last() {
            writeln!(f, "epoch {}: {last}", last.epoch)?;
        }
        let files: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        write!(f, "wrote {}", files.join(", "))
    }
}

/// The result of evaluating a dataset (`nnc eval`).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub samples: u64,
    pub loss: f64,
    pub metrics: Vec<(Metric, f64)>,
    pub confusion: Option<ConfusionMatrix>,
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "samples {}", self.samples)?;
        writeln!(f, "loss {:.6}", self.loss)?;
        for (m, v) in &self.metrics {
            writeln!(f, "{m} {v:.6}")?;
        }
        if let Some(cm) = &self.confusion {
            writeln!(
                f,
                "confusion matrix (rows: true class, columns: predicted class)"
            )?;
            write!(f, "{cm}")?;
        }
        Ok(())
    }
}

/// Checks that the task and metrics fit the executor's output, and fits both splits to
/// the model's input and labels.
fn prepare(
    exec: &dyn Executor,
    data: &mut Splits,
    task: TaskKind,
    metrics: &[Metric],
) -> Result<(), TrainError> {
    let out_shape = exec.output_shape();
    if element_count(&out_shape) != task.outputs_per_sample() {
        return Err(TrainError::Config(format!(
            "the model output has shape {}, but the task {task:?} needs {} values per sample",
            format_shape(&out_shape),
            task.outputs_per_sample()
        )));
    }
    if let Some(m) = metrics.iter().find(|m| !m.applies_to(task)) {
        let what = if m.is_classification() {
            "a classifier"
        } else {
            "outputs shaped like the targets (regression or binary)"
        };
        return Err(TrainError::Config(format!("metric `{m}` needs {what}")));
    }
    let input = exec.input_shape();
    for d in [&mut data.train, &mut data.test] {
        d.fit_input(&input)?;
        d.fit_labels(task, &out_shape)?;
    }
    Ok(())
}

/// Evaluates `data` in order, in batches of `batch`, and scores it. `epoch` is only used
/// in error messages.
fn evaluate_split(
    exec: &mut dyn Executor,
    data: &Dataset,
    batch: usize,
    task: TaskKind,
    epoch: usize,
) -> Result<Accumulator, TrainError> {
    let mut acc = Accumulator::new(task);
    let order: Vec<usize> = (0..data.len()).collect();
    if let Some(run) = exec.eval_all(&data.x, &data.y, batch) {
        let run = run.map_err(|error| TrainError::Exec {
            epoch,
            batch: 1,
            evaluating: true,
            error,
        })?;
        account_run(&run, &order, batch, &data.y, &mut acc, epoch, true)?;
        return Ok(acc);
    }
    for (i, idx) in order.chunks(batch).enumerate() {
        let (x, y) = (data.x.gather_rows(idx), data.y.gather_rows(idx));
        let out = exec.eval_batch(&x, &y).map_err(|error| TrainError::Exec {
            epoch,
            batch: i + 1,
            evaluating: true,
            error,
        })?;
        if !out.loss.is_finite() {
            return Err(TrainError::NonFinite {
                epoch,
                batch: i + 1,
                what: NonFinite::TestLoss(out.loss),
            });
        }
        acc.add_loss(out.loss, idx.len());
        acc.add_outputs(&out.output, &y)
            .map_err(|error| TrainError::Metric {
                epoch,
                batch: i + 1,
                error,
            })?;
    }
    Ok(acc)
}

fn metric_values(acc: &Accumulator, metrics: &[Metric]) -> Vec<(Metric, f64)> {
    metrics
        .iter()
        .filter_map(|&m| acc.value(m).map(|v| (m, v)))
        .collect()
}

/// Evaluates an executor on a dataset: loss, `metrics` and, for classifiers, the
/// confusion matrix (`nnc eval`). The dataset is fitted to the model first.
pub fn evaluate(
    exec: &mut dyn Executor,
    mut data: Dataset,
    batch: usize,
    task: TaskKind,
    metrics: &[Metric],
) -> Result<EvalReport, TrainError> {
    if batch == 0 {
        return Err(TrainError::Config("the batch size must be positive".into()));
    }
    let mut splits = Splits {
        train: data.clone(),
        test: data,
    };
    prepare(exec, &mut splits, task, metrics)?;
    data = splits.test;
    let acc = evaluate_split(exec, &data, batch, task, 0)?;
    Ok(EvalReport {
        samples: acc.samples,
        loss: acc.mean_loss(),
        metrics: metric_values(&acc, metrics),
        confusion: acc.confusion().cloned(),
    })
}

/// Where a run starts: fresh, or from a checkpoint.
struct Start {
    epoch: usize,
    position: usize,
    rng: Rng,
    step: u64,
    partial: Option<Accumulator>,
    history: Vec<EpochRecord>,
}

fn resume_from(
    exec: &mut dyn Executor,
    path: &Path,
    config: &TrainConfig,
    train_len: usize,
) -> Result<Start, TrainError> {
    let ck = Checkpoint::load(path)?;
    let current = exec.state().map_err(|error| TrainError::Exec {
        epoch: 0,
        batch: 0,
        evaluating: false,
        error,
    })?;
    let state = ck.state_for(path, &exec.model_hash(), &current)?;
    let differs = |what: &str, then: String, now: String| {
        TrainError::Config(format!(
            "`{}`: the checkpoint was written with {what} {then}, this run has {what} {now}\nhelp: resume with the same {what}, so that the data order continues exactly",
            path.display()
        ))
    };
    if ck.batch != config.batch {
        return Err(differs(
            "batch",
            ck.batch.to_string(),
            config.batch.to_string(),
        ));
    }
    if ck.seed != config.seed {
        return Err(differs(
            "seed",
            ck.seed.to_string(),
            config.seed.to_string(),
        ));
    }
    if ck.shuffle != config.shuffle {
        return Err(differs(
            "shuffle",
            ck.shuffle.to_string(),
            config.shuffle.to_string(),
        ));
    }
    if ck.epoch > config.epochs || (ck.epoch == config.epochs && ck.position > 0) {
        return Err(TrainError::Config(format!(
            "`{}`: the checkpoint is already past epoch {} of the {} asked for\nhelp: ask for more epochs to continue training",
            path.display(),
            ck.epoch,
            config.epochs
        )));
    }
    let bad = |what: &str| {
        TrainError::Config(format!(
            "`{}`: the checkpoint's {what} does not fit this data",
            path.display()
        ))
    };
    if ck.position >= train_len && ck.position > 0 || ck.position % config.batch != 0 {
        return Err(bad("position in the data order"));
    }
    let rng = Rng::from_state(ck.rng).ok_or_else(|| bad("RNG state"))?;
    let history: Vec<EpochRecord> = match ck.progress.get("history").and_then(|h| h.as_array()) {
        Some(items) => items
            .iter()
            .map(|v| EpochRecord::from_json(v, &config.metrics))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("history"))?,
        None => return Err(bad("history")),
    };
    let partial = match ck.progress.get("partial") {
        Some(serde_json::Value::Null) | None => None,
        Some(v) => Some(Accumulator::from_json(config.task, v).ok_or_else(|| bad("running sums"))?),
    };
    exec.set_state(&state).map_err(|error| TrainError::Exec {
        epoch: ck.epoch,
        batch: 0,
        evaluating: false,
        error,
    })?;
    Ok(Start {
        epoch: ck.epoch,
        position: ck.position,
        rng,
        step: ck.step,
        partial,
        history,
    })
}

/// Progress output for one run.
struct Reporter {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
}

impl Reporter {
    fn new(mode: ProgressMode) -> Reporter {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Auto,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        };
        Reporter { mode, bar: None }
    }

    fn start_epoch(&mut self, epoch: usize, epochs: usize, batches: u64, done: u64) {
        if self.mode != ProgressMode::Auto {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(batches), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        bar.set_position(done);
        self.bar = Some(bar);
    }

    fn batch_done(&self, running_loss: f64, samples_per_s: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "loss {running_loss:.4} {samples_per_s:.0} samples/s"
            ));
            bar.inc(1);
        }
    }

    fn end_epoch(&mut self, record: &EpochRecord, epochs: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.mode != ProgressMode::Quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "epoch {}/{epochs}  {record}  {:.0} samples/s  {:.1} s",
                record.epoch, record.samples_per_s, record.seconds
            );
        }
    }
}

/// Accounts the steps of an epoch (or an evaluation) the executor ran itself
/// ([`Executor::train_epoch`], [`Executor::eval_all`]) as the per-batch loop would have:
/// each batch's loss must be finite (the first that is not is named by its batch), and
/// losses and outputs go into `acc` batch by batch. An evaluation must have outputs.
fn account_run(
    run: &EpochRun,
    order: &[usize],
    batch: usize,
    labels: &Tensor,
    acc: &mut Accumulator,
    epoch: usize,
    evaluating: bool,
) -> Result<(), TrainError> {
    let steps = order.len().div_ceil(batch);
    let exec_error = |batch: usize, msg: String| TrainError::Exec {
        epoch,
        batch,
        evaluating,
        error: ExecError::new(msg),
    };
    if run.losses.len() != steps {
        let msg = format!("{} losses came back for {steps} batches", run.losses.len());
        return Err(exec_error(steps, msg));
    }
    if evaluating && run.outputs.is_none() {
        return Err(exec_error(steps, "the evaluation gave no outputs".into()));
    }
    let mut y = Tensor::default();
    for (k, idx) in order.chunks(batch).enumerate() {
        let loss = run.losses[k];
        if !loss.is_finite() {
            let what = if evaluating {
                NonFinite::TestLoss(loss)
            } else {
                NonFinite::TrainLoss(loss)
            };
            return Err(TrainError::NonFinite {
                epoch,
                batch: k + 1,
                what,
            });
        }
        acc.add_loss(loss, idx.len());
        if let Some(outputs) = &run.outputs {
            let rows = outputs.rows_range(k * batch, k * batch + idx.len());
            labels.gather_rows_into(idx, &mut y);
            acc.add_outputs(&rows, &y)
                .map_err(|error| TrainError::Metric {
                    epoch,
                    batch: k + 1,
                    error,
                })?;
        }
    }
    Ok(())
}

/// Accounts an epoch the executor ran itself ([`account_run`]), then checks the
/// parameters once: a bad one is named with the epoch's last batch (the steps in between
/// are not checked one by one).
fn account_epoch_run(
    exec: &dyn Executor,
    run: EpochRun,
    order: &[usize],
    batch: usize,
    labels: &Tensor,
    acc: &mut Accumulator,
    epoch: usize,
) -> Result<(), TrainError> {
    account_run(&run, order, batch, labels, acc, epoch, false)?;
    check_params(exec, epoch, order.len().div_ceil(batch))
}

/// The parameters must be finite after the update of `epoch`, `batch`.
fn check_params(exec: &dyn Executor, epoch: usize, batch: usize) -> Result<(), TrainError> {
    let bad = exec
        .first_non_finite_param()
        .map_err(|error| TrainError::Exec {
            epoch,
            batch,
            evaluating: false,
            error,
        })?;
    match bad {
        Some(p) => Err(TrainError::NonFinite {
            epoch,
            batch,
            what: NonFinite::Param {
                name: p.name,
                index: p.index,
                value: p.value,
            },
        }),
        None => Ok(()),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |error| TrainError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `records` as the whole content of a JSON-lines log.
fn write_log(path: &Path, records: &[EpochRecord]) -> Result<(), TrainError> {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.to_json_line());
        text.push('\n');
    }
    fs::write(path, text).map_err(io_error(path))
}

fn progress_json(history: &[EpochRecord], partial: Option<&Accumulator>) -> serde_json::Value {
    let history: Vec<serde_json::Value> = history
        .iter()
        .map(|r| serde_json::from_str(&r.to_json_line()).unwrap_or(serde_json::Value::Null))
        .collect();
    serde_json::json!({ "history": history, "partial": partial.map(Accumulator::to_json) })
}

/// Trains `exec` on `data.train` for `config.epochs` epochs (counting those of the
/// checkpoint at `resume`, if given), evaluating on `data.test` after each, and writes
/// into `config.out_dir`: `weights.safetensors` and `checkpoint.safetensors` (after every
/// epoch), `metrics.jsonl` (and `config.log`), `curves.svg`, and `confusion.svg` for
/// classifiers.
///
/// The executor arrives initialized (parameters from the seed, optimizer state zero);
/// with `resume` its state is replaced by the checkpoint's.
pub fn train_loop(
    exec: &mut dyn Executor,
    mut data: Splits,
    config: &TrainConfig,
    resume: Option<&Path>,
) -> Result<Summary, TrainError> {
    let started = Instant::now();
    if config.epochs == 0 || config.batch == 0 {
        return Err(TrainError::Config(
            "`epochs` and `batch` must be positive".into(),
        ));
    }
    if config.checkpoint_every == Some(0) {
        return Err(TrainError::Config(
            "`checkpoint_every` must be positive".into(),
        ));
    }
    prepare(exec, &mut data, config.task, &config.metrics)?;
    let train = &data.train;
    let n = train.len();
    let batches = n.div_ceil(config.batch);
    fs::create_dir_all(&config.out_dir).map_err(io_error(&config.out_dir))?;
    let checkpoint_path = config.out_dir.join(CHECKPOINT_FILE);
    let weights_path = config.out_dir.join(WEIGHTS_FILE);
    let metrics_path = config.out_dir.join(METRICS_FILE);

    let mut start = match resume {
        Some(path) => resume_from(exec, path, config, n)?,
        None => Start {
            epoch: 0,
            position: 0,
            rng: Rng::from_seed(config.seed),
            step: 0,
            partial: None,
            history: Vec::new(),
        },
    };
    let mut history = std::mem::take(&mut start.history);
    write_log(&metrics_path, &history)?;
    if let Some(log) = &config.log {
        write_log(log, &history)?;
    }
    let mut rng = start.rng.clone();
    let mut step = start.step;
    let mut reporter = Reporter::new(config.progress);
    let mut last_test: Option<Accumulator> = None;

    for epoch in start.epoch + 1..=config.epochs {
        let epoch_started = Instant::now();
        let epoch_rng = rng.state();
        let (mut x, mut y) = (Tensor::default(), Tensor::default());
        let mut order: Vec<usize> = (0..n).collect();
        if config.shuffle {
            rng.shuffle(&mut order);
        }
        let resuming_here = epoch == start.epoch + 1;
        let first = if resuming_here { start.position } else { 0 };
        let mut acc = match (resuming_here, start.partial.take()) {
            (true, Some(partial)) => partial,
            _ => Accumulator::new(config.task),
        };
        let first_batch = first / config.batch;
        reporter.start_epoch(epoch, config.epochs, batches as u64, first_batch as u64);
        let mut trained_now = 0usize;
        // A backend that can run the whole epoch itself (data resident on a GPU) does,
        // unless the epoch starts mid-way or checkpoints are due inside it.
        let whole = if first == 0 && config.checkpoint_every.is_none() {
            exec.train_epoch(&train.x, &train.y, &order, config.batch)
        } else {
            None
        };
        let per_step: &[usize] = match whole {
            Some(run) => {
                let run = run.map_err(|error| TrainError::Exec {
                    epoch,
                    batch: 1,
                    evaluating: false,
                    error,
                })?;
                account_epoch_run(exec, run, &order, config.batch, &train.y, &mut acc, epoch)?;
                step += batches as u64;
                trained_now = n;
                reporter.batch_done(
                    acc.mean_loss(),
                    n as f64 / epoch_started.elapsed().as_secs_f64(),
                );
                &[]
            }
            None => &order[first..],
        };
        for (k, idx) in per_step.chunks(config.batch).enumerate() {
            let batch_no = first_batch + k + 1;
            train.x.gather_rows_into(idx, &mut x);
            train.y.gather_rows_into(idx, &mut y);
            let (x, y) = (&x, &y);
            let out = exec.train_step(x, y).map_err(|error| TrainError::Exec {
                epoch,
                batch: batch_no,
                evaluating: false,
                error,
            })?;
            if !out.loss.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch,
                    batch: batch_no,
                    what: NonFinite::TrainLoss(out.loss),
                });
            }
            check_params(exec, epoch, batch_no)?;
            acc.add_loss(out.loss, idx.len());
            if let Some(output) = &out.output {
                acc.add_outputs(output, y)
                    .map_err(|error| TrainError::Metric {
                        epoch,
                        batch: batch_no,
                        error,
                    })?;
            }
            step += 1;
            trained_now += idx.len();
            let position = first + trained_now;
            reporter.batch_done(
                acc.mean_loss(),
                trained_now as f64 / epoch_started.elapsed().as_secs_f64(),
            );
            if let Some(every) = config.checkpoint_every {
                if batch_no % every == 0 && position < n {
                    let state = exec.state().map_err(|error| TrainError::Exec {
                        epoch,
                        batch: batch_no,
                        evaluating: false,
                        error,
                    })?;
                    Checkpoint {
                        model_hash: exec.model_hash(),
                        state,
                        step,
                        epoch: epoch - 1,
                        position,
                        rng: epoch_rng,
                        batch: config.batch,
                        seed: config.seed,
                        shuffle: config.shuffle,
                        progress: progress_json(&history, Some(&acc)),
                    }
                    .save(&checkpoint_path)?;
                }
            }
        }
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        let test = evaluate_split(exec, &data.test, config.batch, config.task, epoch)?;
        let record = EpochRecord {
            epoch,
            train_loss: acc.mean_loss(),
            test_loss: test.mean_loss(),
            train_metrics: metric_values(&acc, &config.metrics),
            test_metrics: metric_values(&test, &config.metrics),
            samples_per_s: trained_now as f64 / train_seconds.max(1e-9),
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        history.push(record.clone());
        append_line(&metrics_path, &record)?;
        if let Some(log) = &config.log {
            append_line(log, &record)?;
        }
        let state = exec.state().map_err(|error| TrainError::Exec {
            epoch,
            batch: batches,
            evaluating: false,
            error,
        })?;
        write_weights(&weights_path, &state)?;
        Checkpoint {
            model_hash: exec.model_hash(),
            state,
            step,
            epoch,
            position: 0,
            rng: rng.state(),
            batch: config.batch,
            seed: config.seed,
            shuffle: config.shuffle,
            progress: progress_json(&history, None),
        }
        .save(&checkpoint_path)?;
        reporter.end_epoch(&record, config.epochs);
        last_test = Some(test);
    }

    let mut files = vec![weights_path, checkpoint_path, metrics_path];
    if let Some(log) = &config.log {
        files.push(log.clone());
    }
    if last_test.is_none() {
        // A checkpoint that already holds every epoch asked for: still write the outputs.
        let state = exec.state().map_err(|error| TrainError::Exec {
            epoch: config.epochs,
            batch: 0,
            evaluating: false,
            error,
        })?;
        write_weights(&files[0], &state)?;
        last_test = Some(evaluate_split(
            exec,
            &data.test,
            config.batch,
            config.task,
            config.epochs,
        )?);
    }
    let curves = config.out_dir.join(CURVES_FILE);
    plot::write_curves(&curves, &history, &config.metrics).map_err(|message| TrainError::Plot {
        path: curves.clone(),
        message,
    })?;
    files.push(curves);
    let confusion = last_test.as_ref().and_then(|t| t.confusion().cloned());
    if let Some(cm) = &confusion {
        let path = config.out_dir.join(CONFUSION_FILE);
        plot::write_confusion(&path, cm).map_err(|message| TrainError::Plot {
            path: path.clone(),
            message,
        })?;
        files.push(path);
    }
    Ok(Summary {
        history,
        steps: step,
        seconds: started.elapsed().as_secs_f64(),
        confusion,
        files,
    })
}

fn append_line(path: &Path, record: &EpochRecord) -> Result<(), TrainError> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error(path))?;
    writeln!(f, "{}", record.to_json_line()).map_err(io_error(path))
}
