//! Training: its settings, results and errors here; the loop ([`run`]), evaluation
//! ([`eval`]), resuming ([`resume`]), progress output ([`progress`]) and the per-step
//! accounting and metrics log ([`record`]) in their own files. Epochs of mini-batches run
//! through any [`Executor`], with evaluation of the test split after each epoch,
//! checkpoints, weights and plots.
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

use crate::checkpoint::{write_atomically, write_weights, Checkpoint, CheckpointError};
use crate::data::{DataError, Dataset, Splits};
use crate::dist::{shard, Collective, CollectiveError, Distributed, ReduceError};
use crate::executor::{
    EpochRun, ExecError, Executor, StateKind, StateTensor, StepOutput, TaskKind,
};
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
    /// Metadata written into `weights.safetensors` besides `nnc.preprocess` (the model,
    /// its shapes and hashes; see the driver).
    pub weights_metadata: Vec<(String, String)>,
    /// Hold out this fraction of the training split (chosen with the seed, before any
    /// shuffling) and evaluate it after every epoch (`val_loss`, `val_<metric>`).
    pub validation: Option<f64>,
    /// A separate validation set instead (`validation = idx(..)`), preprocessed as the
    /// training data.
    pub validation_set: Option<Dataset>,
    pub early_stopping: Option<EarlyStop>,
    /// Write `checkpoint.safetensors` every this many epochs (and after the last one).
    pub checkpoint_every_epochs: usize,
    /// Raised from outside (a signal handler) to stop after the step in flight, with the
    /// checkpoint written where the run stands ([`TrainError::Interrupted`]).
    pub stop: Option<StopFlag>,
    /// A learning-rate schedule; the step then reads its rate from the scalar state
    /// tensor `lr`, which the loop sets before each step. `None`: the optimizer's
    /// constant rate, compiled into the step.
    pub schedule: Option<Schedule>,
    /// The optimizer's base learning rate (recorded in checkpoints: a resumed run with
    /// another one continues with a warning).
    pub lr: Option<f64>,
    /// A fresh run may replace the results of an earlier run in `out_dir` (otherwise it
    /// refuses them; see [`outdir::claim`]).
    pub overwrite: bool,
    /// Data-parallel training: this process is one rank of the group; the global batch
    /// is `batch`, sharded over the ranks; rank 0 alone writes files and reports.
    pub distributed: Option<Distributed>,
}

/// A learning-rate schedule and the rate it starts from.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub base_lr: f64,
    pub kind: ScheduleKind,
}

/// How the rate moves (see `docs/language.md`, "Learning-rate schedules").
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    Constant,
    Step {
        every: usize,
        gamma: f64,
    },
    Exponential {
        gamma: f64,
    },
    Cosine {
        min_lr: f64,
        warmup: f64,
    },
    Plateau {
        monitor: String,
        patience: usize,
        factor: f64,
        min_lr: f64,
        maximize: bool,
    },
}

impl fmt::Display for ScheduleKind {
    /// As the language writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleKind::Constant => write!(f, "constant"),
            ScheduleKind::Step { every, gamma } => {
                write!(f, "step(every = {every}, gamma = {gamma})")
            }
            ScheduleKind::Exponential { gamma } => write!(f, "exponential(gamma = {gamma})"),
            ScheduleKind::Cosine { min_lr, warmup } => {
                write!(f, "cosine(min_lr = {min_lr}, warmup = {warmup})")
            }
            ScheduleKind::Plateau {
                monitor,
                patience,
                factor,
                min_lr,
                ..
            } => write!(
                f,
                "plateau(monitor = \"{monitor}\", patience = {patience}, factor = {factor}, min_lr = {min_lr})"
            ),
        }
    }
}

impl Schedule {
    /// The rate of step `k` (0-based over the run) in epoch `epoch` (0-based), with
    /// `per_epoch` steps per epoch and `total` steps in the run; `plateau` is the rate a
    /// plateau schedule has reached.
    pub fn rate(&self, k: u64, epoch: usize, per_epoch: u64, total: u64, plateau: f64) -> f64 {
        let lr = self.base_lr;
        match &self.kind {
            ScheduleKind::Constant => lr,
            ScheduleKind::Step { every, gamma } => lr * gamma.powi((epoch / every.max(&1)) as i32),
            ScheduleKind::Exponential { gamma } => lr * gamma.powi(epoch as i32),
            ScheduleKind::Cosine { min_lr, warmup } => {
                let w = warmup * per_epoch as f64;
                let k = k as f64;
                if k < w {
                    return lr * (k + 1.0) / w;
                }
                let span = (total as f64 - 1.0 - w).max(1.0);
                let p = ((k - w) / span).clamp(0.0, 1.0);
                min_lr + (lr - min_lr) * (1.0 + (std::f64::consts::PI * p).cos()) / 2.0
            }
            ScheduleKind::Plateau { .. } => plateau,
        }
    }

    /// Whether the rate changes within an epoch (so every step needs it set).
    pub fn per_step(&self) -> bool {
        matches!(self.kind, ScheduleKind::Cosine { .. })
    }
}

/// A flag another thread (a signal handler) raises to stop training after the step in
/// flight ([`TrainConfig::stop`]).
#[derive(Clone, Debug, Default)]
pub struct StopFlag(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StopFlag {
    pub fn raise(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn raised(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl PartialEq for StopFlag {
    /// The same flag.
    fn eq(&self, other: &StopFlag) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// When to stop training early ([`TrainConfig::early_stopping`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStop {
    /// `val_loss`, `val_<metric>`, `train_loss` or `train_<metric>`.
    pub monitor: String,
    /// Epochs without an improvement of more than `min_delta` before stopping.
    pub patience: usize,
    pub min_delta: f64,
    /// Whether larger values are better.
    pub maximize: bool,
    /// Whether the final `weights.safetensors` is the best epoch's.
    pub restore_best: bool,
}

/// The file early stopping writes the best weights to.
pub const BEST_FILE: &str = "best.safetensors";

/// The scalar state tensor a scheduled step reads its learning rate from.
pub const LR_STATE: &str = "lr";

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
            weights_metadata: Vec::new(),
            validation: None,
            validation_set: None,
            early_stopping: None,
            checkpoint_every_epochs: 1,
            stop: None,
            schedule: None,
            lr: None,
            overwrite: false,
            distributed: None,
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
    /// The validation split's loss and metrics, when there is one.
    pub val_loss: Option<f64>,
    pub val_metrics: Vec<(Metric, f64)>,
    /// Why training stopped after this epoch, when it stopped before `epochs`.
    pub stopped: Option<String>,
    /// The learning rate of the epoch's last step (under a schedule).
    pub lr: Option<f64>,
    /// Under data parallelism: seconds this rank spent in the gradient all-reduce.
    pub allreduce_seconds: Option<f64>,
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
        if let Some(v) = self.val_loss {
            fields.push(("val_loss".to_string(), json_number(v)));
        }
        for (m, v) in &self.val_metrics {
            fields.push((format!("val_{m}"), json_number(*v)));
        }
        fields.push(("samples_per_s".to_string(), json_number(self.samples_per_s)));
        fields.push(("seconds".to_string(), json_number(self.seconds)));
        if let Some(lr) = self.lr {
            fields.push(("lr".to_string(), json_number(lr)));
        }
        if let Some(s) = self.allreduce_seconds {
            fields.push(("allreduce_seconds".to_string(), json_number(s)));
        }
        if let Some(why) = &self.stopped {
            fields.push(("stopped".to_string(), serde_json::Value::from(why.as_str())));
        }
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
            val_loss: num("val_loss"),
            val_metrics: pick("val"),
            samples_per_s: num("samples_per_s")?,
            seconds: num("seconds")?,
            lr: num("lr"),
            allreduce_seconds: num("allreduce_seconds"),
            stopped: value
                .get("stopped")
                .and_then(|v| v.as_str())
                .map(String::from),
        })
    }

    /// The value `monitor` (`val_loss`, `train_accuracy`, …) names in this record.
    pub fn monitored(&self, monitor: &str) -> Option<f64> {
        let (split, what) = monitor.split_once('_')?;
        let (loss, metrics) = match split {
            "val" => (self.val_loss, &self.val_metrics),
            "train" => (Some(self.train_loss), &self.train_metrics),
            "test" => (Some(self.test_loss), &self.test_metrics),
            _ => return None,
        };
        if what == "loss" {
            return loss;
        }
        metrics
            .iter()
            .find(|(m, _)| m.name() == what)
            .map(|(_, v)| *v)
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
        if let Some(v) = self.val_loss {
            write!(f, "  val_loss {v:.6}")?;
        }
        for (m, v) in &self.val_metrics {
            write!(f, "  val_{m} {v:.4}")?;
        }
        if let Some(why) = &self.stopped {
            write!(f, "  (stopped: {why})")?;
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
    /// A collective operation of data-parallel training failed.
    Collective(CollectiveError),
    /// The stop flag was raised (Ctrl-C, SIGTERM): the step in flight finished and the
    /// checkpoint holds the run up to `position` samples into `epoch`.
    Interrupted {
        epoch: usize,
        position: usize,
        checkpoint: PathBuf,
    },
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Interrupted {
                epoch,
                position,
                checkpoint,
            } => write!(
                f,
                "interrupted in epoch {epoch} after {position} samples; the run so far is in `{}`",
                checkpoint.display()
            ),
            TrainError::Config(m) => f.write_str(m),
            TrainError::Collective(e) => write!(f, "{e}"),
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
                match what {
                    NonFinite::TestLoss(_) => write!(
                        f,
                        "\nhelp: the parameters were finite after every step, so look at the evaluated data: a NaN, an infinity or an extreme value in it (or a label outside the model's range), or preprocessing (`scale`, `standardize`) that does not fit it"
                    ),
                    _ => write!(f, "\nhelp: lower the learning rate, or check the data for extreme values (`scale`, `standardize`)"),
                }
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
    /// This process's rank under data parallelism (0 otherwise): only rank 0 reports.
    pub rank: usize,
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

mod eval;
pub mod outdir;
mod progress;
mod record;
mod resume;
mod run;

pub use eval::evaluate;
use eval::{evaluate_shared, metric_values, prepare, reduce_accumulator};
use progress::{progress_json, Reporter};
use record::{
    account_epoch_run, account_run, append_line, check_params, io_error, read_log, write_log,
};
use resume::{resume_from, Start};
pub use run::train_loop;
use run::{Plateau, Watch};
