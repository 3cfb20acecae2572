//! The contract between a compiled artifact and the executors that run it: the files of
//! an artifact folder, the names the step programs give the batch and their results, what
//! the runtime knows of the model, and how a step's buffers bind to memory. The `cpu` and
//! `cuda` executors both build on it; neither uses the other.

use nnc_kernels::ir::{BufferDecl, BufferKind};

use crate::executor::{ExecError, StateKind};
use crate::tensor::Tensor;

/// File names inside an artifact folder.
pub const LIBRARY_FILE: &str = "kernels.so";
pub const TRAIN_MANIFEST: &str = "train.manifest";
pub const EVAL_MANIFEST: &str = "eval.manifest";

/// Names the step programs use for the batch and their results.
pub const INPUT: &str = "x";
pub const LABELS: &str = "y";
pub const LOSS: &str = "loss";
pub const OUTPUT: &str = "output";
/// The suffix of a gradient's name in the gradient and update steps of data-parallel
/// training (`dense_0.w.grad`).
pub const GRAD_SUFFIX: &str = ".grad";
/// The manifests of those two steps, present in an artifact built for data parallelism.
pub const GRAD_MANIFEST: &str = "grad.manifest";
pub const APPLY_MANIFEST: &str = "apply.manifest";

/// What the runtime must know about the model besides the artifact.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// Every carried tensor in state order: name, kind, shape, initial value.
    pub state: Vec<(String, StateKind, Tensor)>,
    pub hash: String,
    /// The gradients the data-parallel steps hand over (name, shape), in the order of
    /// the one buffer that holds them; empty without those steps.
    pub grads: Vec<(String, Vec<usize>)>,
    /// The model's buffers among the state (batch-norm running statistics).
    pub buffers: Vec<String>,
}

impl ModelInfo {
    /// Each gradient's offset in the one gradient buffer, and the gradients' total
    /// length ([`ModelInfo::grads`] in order).
    pub fn grad_layout(&self) -> (std::collections::HashMap<String, usize>, usize) {
        grad_layout(&self.grads)
    }
}

/// See [`ModelInfo::grad_layout`].
pub fn grad_layout(
    grads: &[(String, Vec<usize>)],
) -> (std::collections::HashMap<String, usize>, usize) {
    let mut at = std::collections::HashMap::new();
    let mut len = 0;
    for (name, shape) in grads {
        at.insert(name.clone(), len);
        len += shape.iter().product::<usize>();
    }
    (at, len)
}

/// Which program of a compiled training block a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepProgram {
    Train,
    Eval,
    /// The data-parallel halves of the training step.
    Grad,
    Apply,
}

impl StepProgram {
    /// The training or the evaluation step.
    #[cfg(feature = "cuda")]
    pub(crate) fn of(train: bool) -> StepProgram {
        if train {
            StepProgram::Train
        } else {
            StepProgram::Eval
        }
    }
}

/// Where a compiled executor finds a step buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binding<'a> {
    /// A temporary, at this offset (in floats) of the arena.
    Arena(usize),
    /// The batch or a result: one of [`INPUT`], [`LABELS`], [`LOSS`], [`OUTPUT`].
    Batch(&'static str),
    /// A named state tensor (a parameter, optimizer state, `step`).
    State(&'a str),
}

/// How buffer `b` is bound for a batch of `n` (by kind for temporaries, else by name).
pub(crate) fn binding(b: &BufferDecl, n: usize) -> Binding<'_> {
    if let BufferKind::Temp { offset } = b.kind {
        return Binding::Arena(offset.resolve(n));
    }
    match [INPUT, LABELS, LOSS, OUTPUT]
        .into_iter()
        .find(|k| *k == b.name)
    {
        Some(key) => Binding::Batch(key),
        None => Binding::State(&b.name),
    }
}

/// Every buffer of a step must be a temporary, the batch, a result, known state or a
/// data-parallel gradient.
pub(crate) fn check_bindings(buffers: &[BufferDecl], info: &ModelInfo) -> Result<(), ExecError> {
    for b in buffers {
        if let Binding::State(name) = binding(b, 0) {
            if !info.state.iter().any(|(n, ..)| n == name)
                && !info.grads.iter().any(|(n, _)| n == name)
            {
                return Err(ExecError::new(format!(
                    "step buffer `{name}` is neither state nor a step input or output"
                )));
            }
        }
    }
    Ok(())
}
