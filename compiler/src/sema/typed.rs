//! The output of semantic analysis: checked models as typed dataflow graphs, and checked
//! training configurations. This is the contract between the front end and the graph IR
//! (`ir::lower` consumes it); nothing here refers to the AST except spans for diagnostics.
//!
//! Invariants (established by `sema`, relied on downstream without re-checking):
//! - `TypedModel::nodes` is in topological order: every operand id is smaller than the
//!   node's own id; `output` is a valid id.
//! - every node's `shape` is the shape its op produces from its operands' shapes;
//!   element counts fit in `usize` (and in `i64`).
//! - axes stored in ops are normalised to non-negative indices into `Shape::dims`
//!   (the batch dimension is never an axis).
//! - parameter names are unique within a model.

use std::path::PathBuf;

/// The metrics a `train` block asks for are the runtime's, which computes them (also
/// their registry identity, `registry::OpId::Metric`).
pub use nnc_runtime::metrics::Metric;

pub use crate::sema::registry::{Activation, Function};
use crate::syntax::ast::Span;

/// The shape of a value. `batched` values carry the implicit batch dimension `N` in front
/// of `dims` (inputs and everything computed from them); parameters and constants do not.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub batched: bool,
    pub dims: Vec<usize>,
}

impl Shape {
    pub fn batched(dims: Vec<usize>) -> Shape {
        Shape {
            batched: true,
            dims,
        }
    }

    pub fn fixed(dims: Vec<usize>) -> Shape {
        Shape {
            batched: false,
            dims,
        }
    }

    pub fn scalar() -> Shape {
        Shape::fixed(Vec::new())
    }

    /// Elements per sample (the product of `dims`).
    pub fn elems(&self) -> usize {
        self.dims.iter().product()
    }
}

impl std::fmt::Display for Shape {
    /// `[N, 28, 28]` for batched shapes, `[784, 128]` otherwise, `[]` for scalars.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.batched {
            parts.push("N".into());
        }
        parts.extend(self.dims.iter().map(|d| d.to_string()));
        write!(f, "[{}]", parts.join(", "))
    }
}

/// Index of a node in [`TypedModel::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TNodeId(pub u32);

/// Index of a parameter in [`TypedModel::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

/// A checked model.
#[derive(Clone, Debug, PartialEq)]
pub struct TypedModel {
    pub name: String,
    pub inputs: Vec<TypedInput>,
    pub params: Vec<TypedParam>,
    /// Non-learnable state updated in training (batch-norm running statistics).
    pub buffers: Vec<TypedBuffer>,
    pub nodes: Vec<TNode>,
    pub output: TNodeId,
    /// The output's name (`output probs = …`), if it has one.
    pub output_name: Option<String>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TypedInput {
    pub name: String,
    /// Per-sample dims (batched).
    pub shape: Shape,
    pub span: Span,
}

/// A learnable tensor: declared with `param` or created by a layer (`dense_0.w`).
#[derive(Clone, Debug, PartialEq)]
pub struct TypedParam {
    pub name: String,
    /// Never batched.
    pub shape: Shape,
    pub init: Init,
    pub span: Span,
}

/// A non-learnable tensor of model state (`batch_norm_0.running_mean`).
#[derive(Clone, Debug, PartialEq)]
pub struct TypedBuffer {
    pub name: String,
    pub shape: Shape,
    /// Initial value of every element.
    pub fill: f32,
}

/// Initializers. Fan-in/fan-out are taken from the parameter's shape: for a shape
/// `[.., fan_in, fan_out]` (dense `[in, units]`, conv `[k, k, c, f]` with receptive field
/// `k·k`), see `ir::init`.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Normal {
        std: f64,
    },
    Uniform {
        limit: f64,
    },
    /// Xavier uniform: limit = sqrt(6 / (fan_in + fan_out)).
    Glorot,
    /// Kaiming normal: std = sqrt(2 / fan_in).
    He,
    /// A constant value (e.g. `param b: [1] = 0.5`).
    Constant(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TNode {
    pub op: TOp,
    pub operands: Vec<TNodeId>,
    pub shape: Shape,
    /// The source expression that produced this node.
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceFn {
    Sum,
    Mean,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolFn {
    Max,
    Avg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    Same,
    Valid,
}

/// One operation of a typed model. Layers stay whole here (the graph IR lowers them to
/// primitives); operands are listed in [`TNode::operands`].
#[derive(Clone, Debug, PartialEq)]
pub enum TOp {
    /// Operands: none. The model input with this index.
    Input(usize),
    /// Operands: none. A learnable parameter.
    Param(ParamId),
    /// Operands: none. A scalar literal used in a tensor expression (`x * 2`).
    Const(f64),
    /// Operands: `[x]`; `-x`.
    Neg,
    /// Operands: `[x]`; an elementwise tensor function (`exp`, `log`, `sqrt`, `abs`,
    /// `square`: [`Function::is_elementwise`]); the others have their own variants.
    Elementwise(Function),
    /// Operands: `[x]`; an activation without settings (not `LeakyRelu` or `Softmax`,
    /// which have their own variants).
    Activation(Activation),
    /// Operands: `[x]`.
    LeakyRelu { alpha: f64 },
    /// Operands: `[x]`; normalised axis.
    Softmax { axis: usize },
    /// Operands: `[a, b]`; NumPy broadcasting (batch dim broadcasts like a leading dim).
    Binary(BinaryFn),
    /// Operands: `[a, b]`; `[.., m, n] @ [.., n, k]`, batched over leading dims.
    /// NumPy `matmul` on the per-sample dims: a rank-1 left operand is a row vector and a
    /// rank-1 right operand a column vector, that dim being dropped from the result
    /// (`x: [N, 1] @ w: [1, 1] → [N, 1]` has per-sample dims `[1] @ [1, 1] → [1]`).
    MatMul,
    /// Operands: `[x]`; reduces `axis` away (no keepdims).
    Reduce { func: ReduceFn, axis: usize },
    /// Operands: `[x]`; per-sample target dims.
    Reshape { dims: Vec<usize> },
    /// Operands: `[x]`; swaps the last two dims (a rank-1 value is unchanged).
    Transpose,
    /// Operands: `[a, b, ..]`; normalised axis.
    Concat { axis: usize },
    /// Operands: `[x]`.
    Flatten,
    /// Operands: `[x]`; `x @ w + b`.
    Dense {
        w: ParamId,
        b: ParamId,
        units: usize,
    },
    /// Operands: `[x]`; channels-last, `w: [k, k, c, filters]`.
    Conv2d {
        w: ParamId,
        b: ParamId,
        filters: usize,
        /// `[rows, columns]`, likewise `stride` and `dilation`.
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        /// Channel groups: group `i` of the input's channels feeds group `i` of the
        /// filters only.
        groups: usize,
        padding: Padding,
    },
    /// Operands: `[x]`; `[h, w, c]`, window `size`, `padding = valid`.
    Pool {
        func: PoolFn,
        /// `[rows, columns]`, likewise `stride`.
        size: [usize; 2],
        stride: [usize; 2],
    },
    /// Operands: `[x]`; identity outside training.
    Dropout { rate: f64 },
    /// Operands: `[x]`; normalises over the batch (and spatial dims for rank-3 inputs),
    /// per channel (the last dim). `running_mean`/`running_var` index `TypedModel::buffers`.
    BatchNorm {
        gamma: ParamId,
        beta: ParamId,
        running_mean: usize,
        running_var: usize,
        momentum: f64,
        eps: f64,
    },
}

/// A checked `train` block.
#[derive(Clone, Debug, PartialEq)]
pub struct TypedTrain {
    /// Index into [`Program::models`].
    pub model: usize,
    pub data: DataSpec,
    pub loss: Loss,
    pub optimizer: Optimizer,
    pub batch: usize,
    pub epochs: usize,
    pub metrics: Vec<Metric>,
    pub seed: u64,
    pub shuffle: bool,
    pub span: Span,
    /// Span of the model name after `train`.
    pub name_span: Span,
    /// Span of each setting's value, for diagnostics raised later (e.g. data shapes).
    pub data_span: Span,
    /// Parameters to start from (`init = "…"`), resolved against the file's folder.
    pub init: Option<PathBuf>,
    /// Parameter names or name prefixes (`dense_0` covers `dense_0.w`) kept fixed.
    pub freeze: Vec<String>,
    /// The fraction of the training split held out for validation (`validation = 0.1`).
    pub validation: Option<f64>,
    /// A separate validation set (`validation = idx(..)`), read whole.
    pub validation_source: Option<DataSpec>,
    pub early_stopping: Option<EarlyStopping>,
    /// Write the checkpoint every this many epochs (`checkpoint_every`; default 1).
    pub checkpoint_every: Option<usize>,
    /// `cross_entropy(label_smoothing = ε)`; 0 otherwise.
    pub label_smoothing: f64,
    /// Global gradient-norm clipping (`clip_norm`).
    pub clip_norm: Option<f64>,
    /// Elementwise gradient clipping (`clip_value`).
    pub clip_value: Option<f64>,
    /// L2 decay for sgd/rmsprop/adam (`weight_decay`; adamw's decoupled decay is in its
    /// optimizer).
    pub weight_decay: f64,
    /// How the learning rate changes (`schedule = ..`).
    pub schedule: Schedule,
}

/// A learning-rate schedule (the runtime's type: it sets the rate before each step).
pub use nnc_runtime::train::ScheduleKind as Schedule;

/// `early_stopping = early_stopping(..)`: checked in sema (the monitor exists and is
/// computed), carried out by the runtime's training loop, whose type it is.
pub use nnc_runtime::train::EarlyStop as EarlyStopping;

impl TypedTrain {
    /// Whether parameter `name` is frozen: named by `freeze`, or under a prefix of it
    /// (`dense_0` covers `dense_0.w`, not `dense_01.w`).
    pub fn is_frozen(&self, name: &str) -> bool {
        self.freeze.iter().any(|f| freezes(f, name))
    }
}

/// Whether the `freeze` entry `pattern` covers parameter `name`.
pub fn freezes(pattern: &str, name: &str) -> bool {
    name == pattern
        || name
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('.') || pattern.ends_with('.'))
}

/// Where training data comes from; paths are already resolved against the file's folder.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    Idx {
        dir: PathBuf,
        scale: f64,
    },
    Csv {
        path: PathBuf,
        target: String,
        standardize: bool,
        test: TestSplit,
    },
    /// A folder of images, one subfolder per class.
    Images {
        dir: PathBuf,
        size: [usize; 2],
        channels: usize,
        scale: f64,
        test: f64,
    },
    /// NumPy arrays.
    Npy {
        x: PathBuf,
        y: PathBuf,
        /// Test samples and labels; `None`: `test` splits `x`.
        test_xy: Option<(PathBuf, PathBuf)>,
        scale: f64,
        test: f64,
    },
}

/// How a data source's test split is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum TestSplit {
    /// This fraction of the rows, spread evenly.
    Fraction(f64),
    /// Another file.
    File(PathBuf),
}

/// A loss; also its registry identity (`registry::OpId::Loss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loss {
    /// Labels are class indices; the output is probabilities (final softmax) or logits.
    CrossEntropy,
    BinaryCrossEntropy,
    Mse,
    Mae,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Optimizer {
    Sgd {
        lr: f64,
        momentum: f64,
        nesterov: bool,
    },
    RmsProp {
        lr: f64,
        rho: f64,
        eps: f64,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    AdamW {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

/// Everything a file defines, checked.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub models: Vec<TypedModel>,
    pub trains: Vec<TypedTrain>,
}
