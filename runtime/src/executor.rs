//! The interface every backend implements so that one training loop drives them all:
//! the reference interpreter (`interp`), and later the compiled `cpu` and `cuda` backends.
//!
//! Contract (the loop relies on it, executors must keep it):
//! - A batch is `x` of shape `[b, ..input_shape]` and `y` of shape `[b]` (class indices as
//!   `f32`) for [`TaskKind::Classification`], `[b, 1]` (0.0 or 1.0) for [`TaskKind::Binary`],
//!   and `[b, ..output_shape]` for [`TaskKind::Regression`]. `b` is the configured batch
//!   size except for the last batch of an epoch, which may be smaller and is trained.
//! - `loss` in [`StepOutput`] and [`EvalOutput`] is the **mean** loss over the `b` samples
//!   of that batch (the quantity whose gradient a training step follows). The loop turns
//!   it into a sum with `loss * b` so that a partial batch weighs only its own samples.
//! - `output` is the model output for the batch, `[b, ..output_shape]`, from the same
//!   parameters the loss was computed with (before the update, for a training step). The
//!   runtime computes every metric from it itself.
//! - [`Executor::state`] returns every tensor that determines future steps (parameters
//!   and optimizer state, including step counters) in a fixed order with stable names;
//!   `set_state(state())` must change nothing, so a checkpoint resumes bit-exactly.

use std::fmt;

use crate::tensor::Tensor;

/// What the model predicts, which decides how outputs become metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// `classes` outputs per sample (probabilities or scores); the prediction is the
    /// index of the largest (the first one on ties); labels are class indices.
    Classification { classes: usize },
    /// One output per sample, a probability; the prediction is 1 when it is above 0.5;
    /// labels are 0 or 1.
    Binary,
    /// `outputs` real values per sample, compared with targets of the same count.
    Regression { outputs: usize },
}

impl TaskKind {
    /// The number of classes a confusion matrix has, if this task has one.
    pub fn classes(self) -> Option<usize> {
        match self {
            TaskKind::Classification { classes } => Some(classes),
            TaskKind::Binary => Some(2),
            TaskKind::Regression { .. } => None,
        }
    }

    /// The number of model outputs per sample.
    pub fn outputs_per_sample(self) -> usize {
        match self {
            TaskKind::Classification { classes } => classes,
            TaskKind::Binary => 1,
            TaskKind::Regression { outputs } => outputs,
        }
    }
}

/// Whether a state tensor is a trained parameter (it goes into `weights.safetensors`)
/// or optimizer state (only in full checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    Param,
    Optimizer,
}

/// One named piece of executor state. Parameter names are the model's (`dense_0.w`).
#[derive(Clone, Debug, PartialEq)]
pub struct StateTensor {
    pub name: String,
    pub kind: StateKind,
    pub tensor: Tensor,
}

/// The result of one training step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// Mean loss over the batch, computed before the update.
    pub loss: f32,
    /// The model output before the update, `[b, ..output_shape]`, when the backend has it
    /// at no extra cost; the loop then reports training metrics too.
    pub output: Option<Tensor>,
}

/// The result of evaluating one batch (no state changes).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOutput {
    /// Mean loss over the batch.
    pub loss: f32,
    /// The model output, `[b, ..output_shape]`.
    pub output: Tensor,
}

/// What a whole epoch of training steps run by the executor produced
/// ([`Executor::train_epoch`]), read back once at its end.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRun {
    /// Each step's mean loss, in order (a NaN or infinity stays in place: the loop names
    /// the first such step).
    pub losses: Vec<f32>,
    /// The model output before each update for every trained row, in the epoch's order,
    /// `[rows, ..output_shape]`; `None` when the backend does not produce it.
    pub outputs: Option<Tensor>,
}

/// A failure inside an executor, with a message written for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecError {
    pub message: String,
}

impl ExecError {
    pub fn new(message: impl Into<String>) -> ExecError {
        ExecError {
            message: message.into(),
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExecError {}

/// A backend that holds a model's state and trains it one batch at a time.
pub trait Executor {
    /// The backend's name for messages: `interp`, `cpu`, `cuda`.
    fn backend(&self) -> &str;

    /// A fingerprint of the model and its training setup (loss, optimizer and its
    /// settings). Checkpoints store it and refuse to load into a different fingerprint.
    fn model_hash(&self) -> String;

    /// The shape of one input sample (without the batch dimension).
    fn input_shape(&self) -> Vec<usize>;

    /// The shape of one output sample (without the batch dimension).
    fn output_shape(&self) -> Vec<usize>;

    /// Every state tensor, parameters and optimizer state, in a fixed order.
    fn state(&self) -> Result<Vec<StateTensor>, ExecError>;

    /// Replaces the state with `state`, which has exactly the names, kinds and shapes that
    /// [`Executor::state`] returns (the runtime checks this before calling).
    fn set_state(&mut self, state: &[StateTensor]) -> Result<(), ExecError>;

    /// One optimizer step on the batch.
    fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput, ExecError>;

    /// The loss and output on a batch, without changing any state.
    fn eval_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<EvalOutput, ExecError>;

    /// Runs one epoch's training steps itself: the rows of `x` and `y` (the whole
    /// training split) in `order`, `batch` at a time (the last batch may be smaller),
    /// keeping the data and every step's results where it computes and handing them back
    /// once at the end. `None` when the backend has no such path; the loop then calls
    /// [`Executor::train_step`] per batch. Semantics per step are `train_step`'s; the
    /// loop checks losses and parameters after the epoch instead of after each step.
    fn train_epoch(
        &mut self,
        _x: &Tensor,
        _y: &Tensor,
        _order: &[usize],
        _batch: usize,
    ) -> Option<Result<EpochRun, ExecError>> {
        None
    }

    /// Evaluates the rows of `x`, `y` in order, `batch` at a time, keeping data and
    /// results where it computes and handing every batch's loss and every output back
    /// once (an [`EpochRun`] with one loss per batch). `None` when the backend has no
    /// such path; the loop then calls [`Executor::eval_batch`] per batch.
    fn eval_all(
        &mut self,
        _x: &Tensor,
        _y: &Tensor,
        _batch: usize,
    ) -> Option<Result<EpochRun, ExecError>> {
        None
    }

    /// Data-parallel training, first half of a step: the loss, output and gradients of
    /// the batch (the gradient of its mean loss) without updating anything but buffers
    /// (batch-norm statistics). The gradients land in [`Executor::gradients`]. An error
    /// when the executor was not built with the data-parallel steps.
    fn grad_step(&mut self, _x: &Tensor, _y: &Tensor) -> Result<StepOutput, ExecError> {
        Err(not_parallel())
    }

    /// The one buffer holding every gradient of the last [`Executor::grad_step`], in the
    /// layout of the artifact's gradient list, followed by [`GRAD_EXTRA`] spare slots the
    /// caller may use to reduce other numbers in the same collective operation. The
    /// caller may change it (sum it across processes); [`Executor::apply_gradients`]
    /// reads it. `None` without the data-parallel steps.
    fn gradients(&mut self) -> Option<&mut [f32]> {
        None
    }

    /// The names of the model's buffers among [`Executor::state`] (batch-norm running
    /// statistics): state the step updates without gradients.
    fn buffer_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Sums the gradients of the last [`Executor::grad_step`] over the ranks of `dist`,
    /// each rank's weighted by its `share` (its rows over the global batch's; 0 for a rank
    /// without rows, whose gradients count as zero), and `extra` (unweighted) alongside
    /// in the same operation; returns the summed `extra`. The default works on
    /// [`Executor::gradients`] in host memory; a device backend reduces where the
    /// gradients are.
    fn reduce_gradients(
        &mut self,
        dist: &dyn crate::dist::Collective,
        share: f32,
        extra: [f32; GRAD_EXTRA],
    ) -> Result<[f32; GRAD_EXTRA], crate::dist::ReduceError> {
        let grads = self
            .gradients()
            .ok_or_else(|| crate::dist::ReduceError::Exec(not_parallel()))?;
        let g = grads.len() - GRAD_EXTRA;
        if share > 0.0 {
            for v in &mut grads[..g] {
                *v *= share;
            }
        } else {
            grads[..g].fill(0.0);
        }
        grads[g..].copy_from_slice(&extra);
        dist.all_reduce_sum(grads)
            .map_err(crate::dist::ReduceError::Collective)?;
        let mut out = [0.0; GRAD_EXTRA];
        out.copy_from_slice(&grads[g..]);
        Ok(out)
    }

    /// A data-parallel gradient step whose gradients are summed over `dist` while it
    /// runs: each bucket of gradients starts its reduction (weighted by `share`) as soon
    /// as the kernels that write it are done, overlapping the rest of the backward pass.
    /// The spare values are left to the caller. Returns the step's output and the seconds
    /// spent waiting for reductions after the gradient kernels were done. `None` when the
    /// executor or the collective cannot overlap; the caller then runs
    /// [`Executor::grad_step`] and [`Executor::reduce_gradients`].
    fn grad_step_overlapped(
        &mut self,
        _x: &Tensor,
        _y: &Tensor,
        _dist: &dyn crate::dist::Collective,
        _share: f32,
    ) -> Option<Result<(StepOutput, f64), crate::dist::ReduceError>> {
        None
    }

    /// Second half of a data-parallel step: the optimizer update with the gradients in
    /// [`Executor::gradients`], advancing `step`.
    fn apply_gradients(&mut self) -> Result<(), ExecError> {
        Err(not_parallel())
    }

    /// Starts (or stops) timing each kernel of the training step; a backend without
    /// kernels ignores it.
    fn set_profiling(&mut self, _on: bool) {}

    /// Per kernel of the training step, in launch order: its name, how many times it
    /// ran and the seconds it took in all, since profiling was switched on. Empty for a
    /// backend without kernels or without profiling.
    fn kernel_profile(&self) -> Vec<KernelTime> {
        Vec::new()
    }

    /// The name of the first parameter holding a NaN or infinity, checked after every
    /// step. The default reads the whole state; a device backend can override it with a
    /// check that runs on the device.
    fn first_non_finite_param(&self) -> Result<Option<NonFiniteParam>, ExecError> {
        for entry in self.state()? {
            if entry.kind != StateKind::Param {
                continue;
            }
            if let Some((index, value)) = entry.tensor.first_non_finite() {
                return Ok(Some(NonFiniteParam {
                    name: entry.name,
                    index,
                    value,
                }));
            }
        }
        Ok(None)
    }
}

/// Spare slots after the gradients in [`Executor::gradients`]: the loss sum and the
/// stop flag of a data-parallel step.
pub const GRAD_EXTRA: usize = 2;

/// The error of a data-parallel call on an executor built without the split step.
pub fn not_parallel() -> ExecError {
    ExecError::new("the executor was not built for data-parallel training")
}

/// The time one kernel of the training step took while profiling.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub name: String,
    pub calls: u64,
    pub seconds: f64,
}

/// A parameter element that became NaN or infinite.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFiniteParam {
    pub name: String,
    /// Flat (row-major) index of the first bad element.
    pub index: usize,
    pub value: f32,
}
