//! The vocabulary of the registry: what an op is ([`OpId`], [`OpKind`]), how its
//! parameters are typed and defaulted ([`ParamSpec`]), its declaration ([`OpSpec`]) and
//! how a declaration is printed (signature, `nnc doc NAME` reference). Also the
//! `const fn` helpers the declaration tables are written with.

use std::fmt::{self, Write as _};

use nnc_runtime::metrics::Metric;

use super::model_ops::{Activation, Function, Layer};
use super::training_ops::{metric_spec, ControlKind, DataKind, InitKind, OptimizerKind, Setting};
use crate::sema::typed::Loss;

/// What an op is, which decides where it may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// Applied in a model; creates parameters or has a training-only behaviour.
    Layer,
    /// A pure tensor function applied in a model.
    Function,
    /// An elementwise (or softmax) nonlinearity applied in a model.
    Activation,
    Loss,
    Optimizer,
    Metric,
    Initializer,
    Data,
    /// Training control (`early_stopping = ..`).
    Control,
}

impl OpKind {
    pub const ALL: [OpKind; 9] = [
        OpKind::Layer,
        OpKind::Function,
        OpKind::Activation,
        OpKind::Loss,
        OpKind::Optimizer,
        OpKind::Metric,
        OpKind::Initializer,
        OpKind::Data,
        OpKind::Control,
    ];

    /// Singular noun with an article: "a layer", "an activation".
    pub fn a_noun(self) -> &'static str {
        match self {
            OpKind::Layer => "a layer",
            OpKind::Function => "a tensor function",
            OpKind::Activation => "an activation",
            OpKind::Loss => "a loss",
            OpKind::Optimizer => "an optimizer",
            OpKind::Metric => "a metric",
            OpKind::Initializer => "an initializer",
            OpKind::Data => "a data source",
            OpKind::Control => "a training control",
        }
    }

    /// Plural heading used in the `nnc doc` index.
    pub fn heading(self) -> &'static str {
        match self {
            OpKind::Layer => "Layers",
            OpKind::Function => "Tensor functions",
            OpKind::Activation => "Activations",
            OpKind::Loss => "Losses (`loss = ..`)",
            OpKind::Optimizer => "Optimizers (`optimizer = ..`)",
            OpKind::Metric => "Metrics (`metrics = [..]`)",
            OpKind::Initializer => "Initializers (`init = ..`, `param .. = ..`)",
            OpKind::Data => "Data sources (`data = ..`)",
            OpKind::Control => "Training control (`early_stopping = ..`, `schedule = ..`)",
        }
    }

    /// Whether ops of this kind are applied to tensors inside a model.
    pub fn in_model(self) -> bool {
        matches!(self, OpKind::Layer | OpKind::Function | OpKind::Activation)
    }
}

/// The typed identity of an op: its kind and which op of that kind. Sema dispatches on it
/// (never on names), and every enum it wraps lists its members in `ALL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpId {
    Layer(Layer),
    Function(Function),
    Activation(Activation),
    Loss(Loss),
    Optimizer(OptimizerKind),
    Metric(Metric),
    Initializer(InitKind),
    Data(DataKind),
    Control(ControlKind),
}

impl OpId {
    pub fn kind(self) -> OpKind {
        match self {
            OpId::Layer(_) => OpKind::Layer,
            OpId::Function(_) => OpKind::Function,
            OpId::Activation(_) => OpKind::Activation,
            OpId::Loss(_) => OpKind::Loss,
            OpId::Optimizer(_) => OpKind::Optimizer,
            OpId::Metric(_) => OpKind::Metric,
            OpId::Initializer(_) => OpKind::Initializer,
            OpId::Data(_) => OpKind::Data,
            OpId::Control(_) => OpKind::Control,
        }
    }

    /// Every op, grouped by kind in the order of [`OpKind::ALL`].
    pub fn all() -> impl Iterator<Item = OpId> {
        let layers = Layer::ALL.into_iter().map(OpId::Layer);
        let functions = Function::ALL.into_iter().map(OpId::Function);
        let activations = Activation::ALL.into_iter().map(OpId::Activation);
        let losses = Loss::ALL.into_iter().map(OpId::Loss);
        let optimizers = OptimizerKind::ALL.into_iter().map(OpId::Optimizer);
        let metrics = Metric::ALL.into_iter().map(OpId::Metric);
        let inits = InitKind::ALL.into_iter().map(OpId::Initializer);
        let data = DataKind::ALL.into_iter().map(OpId::Data);
        let control = ControlKind::ALL.into_iter().map(OpId::Control);
        layers
            .chain(functions)
            .chain(activations)
            .chain(losses)
            .chain(optimizers)
            .chain(metrics)
            .chain(inits)
            .chain(data)
            .chain(control)
    }

    /// The op's declaration.
    pub const fn spec(self) -> OpSpec {
        match self {
            OpId::Layer(l) => l.spec(),
            OpId::Function(f) => f.spec(),
            OpId::Activation(a) => a.spec(),
            OpId::Loss(l) => l.spec(),
            OpId::Optimizer(o) => o.spec(),
            OpId::Metric(m) => metric_spec(m),
            OpId::Initializer(i) => i.spec(),
            OpId::Data(d) => d.spec(),
            OpId::Control(c) => c.spec(),
        }
    }
}

/// An inclusive or exclusive range of numbers accepted by a float parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub lo_incl: bool,
    pub hi: f64,
    pub hi_incl: bool,
}

impl Range {
    pub const ANY: Range = Range {
        lo: f64::NEG_INFINITY,
        lo_incl: true,
        hi: f64::INFINITY,
        hi_incl: true,
    };
    /// `> 0`.
    pub const POSITIVE: Range = Range {
        lo: 0.0,
        lo_incl: false,
        ..Range::ANY
    };
    /// `>= 0`.
    pub const NON_NEGATIVE: Range = Range {
        lo: 0.0,
        lo_incl: true,
        ..Range::ANY
    };
    /// `(0, 1)`: the share of samples held out for testing.
    pub const OPEN_FRACTION: Range = Range {
        lo: 0.0,
        lo_incl: false,
        hi: 1.0,
        hi_incl: false,
    };
    /// `[0, 1)`.
    pub const FRACTION: Range = Range {
        lo: 0.0,
        lo_incl: true,
        hi: 1.0,
        hi_incl: false,
    };

    pub fn contains(&self, x: f64) -> bool {
        let above = if self.lo_incl {
            x >= self.lo
        } else {
            x > self.lo
        };
        let below = if self.hi_incl {
            x <= self.hi
        } else {
            x < self.hi
        };
        x.is_finite() && above && below
    }
}

impl fmt::Display for Range {
    /// "a number > 0", "a number in [0, 1)", "a number".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lo = self.lo.is_finite();
        let hi = self.hi.is_finite();
        match (lo, hi) {
            (false, false) => write!(f, "a number"),
            (true, false) => {
                write!(
                    f,
                    "a number {} {}",
                    if self.lo_incl { "≥" } else { ">" },
                    self.lo
                )
            }
            (false, true) => {
                write!(
                    f,
                    "a number {} {}",
                    if self.hi_incl { "≤" } else { "<" },
                    self.hi
                )
            }
            (true, true) => write!(
                f,
                "a number in {}{}, {}{}",
                if self.lo_incl { "[" } else { "(" },
                self.lo,
                self.hi,
                if self.hi_incl { "]" } else { ")" }
            ),
        }
    }
}

/// A number as users write it: `0`, `0.9`, `1e-7`.
pub fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x != 0.0 && x.abs() < 1e-3 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// The type of a parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamType {
    /// A tensor (the input of layers and functions; piped with `|>`).
    Tensor,
    /// Every positional argument, each a tensor (at least two); only `concat`.
    Tensors,
    /// An integer constant `>= min`.
    Int {
        min: i64,
    },
    /// A number constant in a range.
    Float(Range),
    Bool,
    /// A string; when the slice is not empty, one of its values.
    Str(&'static [&'static str]),
    /// A list of integers `>= 1` (a shape).
    Ints,
    /// An integer `>= min`, or a list of two (rows, columns): window sizes and steps.
    Pair {
        min: i64,
    },
    /// An initializer name or call (`he`, `normal(std = 0.1)`) or a number constant.
    Init,
    /// A test split: a fraction in (0, 1) of the samples, or a file name (a string).
    Split,
}

impl fmt::Display for ParamType {
    /// What the parameter accepts, as used in "expected ..." messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Tensor => write!(f, "a tensor"),
            ParamType::Tensors => write!(f, "tensors"),
            ParamType::Int { min } if *min == i64::MIN => write!(f, "an integer"),
            ParamType::Int { min } => write!(f, "an integer ≥ {min}"),
            ParamType::Float(r) => write!(f, "{r}"),
            ParamType::Bool => write!(f, "`true` or `false`"),
            ParamType::Str([]) => write!(f, "a string"),
            ParamType::Str(choices) => {
                let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
                write!(f, "{}", quoted.join(" or "))
            }
            ParamType::Ints => write!(f, "a list of positive integers"),
            ParamType::Pair { min } => write!(f, "an integer ≥ {min} or a list of two"),
            ParamType::Init => write!(f, "an initializer or a number"),
            ParamType::Split => write!(f, "a fraction in (0, 1) or a file name"),
        }
    }
}

/// The default of a parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgDefault {
    Required,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'static str),
    /// An initializer given by name.
    Init(&'static str),
    /// The value of an earlier parameter (`stride = size`).
    SameAs(&'static str),
}

impl fmt::Display for ArgDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgDefault::Required => write!(f, "required"),
            ArgDefault::Int(i) => write!(f, "{i}"),
            ArgDefault::Float(x) => write!(f, "{}", format_number(*x)),
            ArgDefault::Bool(b) => write!(f, "{b}"),
            ArgDefault::Str(s) => write!(f, "\"{s}\""),
            ArgDefault::Init(s) | ArgDefault::SameAs(s) => write!(f, "{s}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: ArgDefault,
    pub doc: &'static str,
}

/// A tensor an op creates in the model: a learnable parameter or a buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Created {
    /// The name after `<kind>_<index>.`.
    pub name: &'static str,
    /// The shape, in terms of the input's dims and the arguments.
    pub shape: &'static str,
    /// How it starts: an initializer name, `init` (the `init` argument) or a fill value.
    pub init: &'static str,
    /// A non-learnable buffer (running statistics) rather than a parameter.
    pub buffer: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpSpec {
    /// The typed identity the checker and the lowering dispatch on.
    pub id: OpId,
    pub name: &'static str,
    pub params: &'static [ParamSpec],
    /// The per-sample shape rule `input → output`; empty for ops outside models.
    pub shape_rule: &'static str,
    pub creates: &'static [Created],
    pub summary: &'static str,
    pub doc: &'static str,
}

impl OpSpec {
    pub fn kind(&self) -> OpKind {
        self.id.kind()
    }

    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Parameters other than the tensor input(s).
    pub fn settings(&self) -> impl Iterator<Item = &'static ParamSpec> {
        self.params
            .iter()
            .filter(|p| !matches!(p.ty, ParamType::Tensor | ParamType::Tensors))
    }

    /// The signature as users write it, tensor inputs first: `dense(x, units, init = he)`;
    /// `concat(a, b, .., axis = -1)` for the variadic one.
    pub fn signature(&self) -> String {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|p| match (p.ty, p.default) {
                (ParamType::Tensors, _) => "a, b, ..".to_string(),
                (_, ArgDefault::Required) => p.name.to_string(),
                (_, d) => format!("{} = {d}", p.name),
            })
            .collect();
        if parts.is_empty() && !self.kind().in_model() {
            self.name.to_string()
        } else {
            format!("{}({})", self.name, parts.join(", "))
        }
    }

    /// The full reference text printed by `nnc doc NAME`.
    pub fn reference(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}  ({})",
            self.signature(),
            self.kind().a_noun().split_once(' ').map_or("", |x| x.1)
        );
        let _ = writeln!(out, "\n{}", self.summary);
        if !self.shape_rule.is_empty() {
            let _ = writeln!(out, "\nshape: {}", self.shape_rule);
        }
        if !self.params.is_empty() {
            let _ = writeln!(out, "\narguments:");
            for p in self.params {
                let _ = writeln!(out, "  {:<14} {} ({}): {}", p.name, p.ty, p.default, p.doc);
            }
        }
        if !self.creates.is_empty() {
            let _ = writeln!(out, "\ncreates (named `{}_<index>.<name>`):", self.name);
            for c in self.creates {
                let what = if c.buffer { "buffer" } else { "parameter" };
                let _ = writeln!(
                    out,
                    "  {:<14} {} {what}, starts as {}",
                    c.name, c.shape, c.init
                );
            }
        }
        let _ = writeln!(out, "\n{}", self.doc);
        out
    }
}

/// A training setting (`batch = 64` inside `train NAME { .. }`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SettingSpec {
    pub id: Setting,
    pub name: &'static str,
    /// What it accepts.
    pub values: &'static str,
    /// The default, or "required".
    pub default: &'static str,
    /// An example line, used in help messages.
    pub example: &'static str,
    pub summary: &'static str,
}

pub(super) const fn tensor(name: &'static str, doc: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        ty: ParamType::Tensor,
        default: ArgDefault::Required,
        doc,
    }
}

pub(super) const fn param(
    name: &'static str,
    ty: ParamType,
    default: ArgDefault,
    doc: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        default,
        doc,
    }
}

pub(super) const X: ParamSpec = tensor("x", "the input tensor (piped: `x |> op(..)`)");
pub(super) const AXIS: ParamSpec = param(
    "axis",
    ParamType::Int { min: i64::MIN },
    ArgDefault::Int(-1),
    "a per-sample axis; negative counts from the end",
);
pub(super) const LR: ParamSpec = param(
    "lr",
    ParamType::Float(Range::POSITIVE),
    ArgDefault::Required,
    "the learning rate",
);

/// An op that creates nothing.
const fn plain(
    id: OpId,
    name: &'static str,
    params: &'static [ParamSpec],
    shape_rule: &'static str,
    summary: &'static str,
    doc: &'static str,
) -> OpSpec {
    OpSpec {
        id,
        name,
        params,
        shape_rule,
        creates: &[],
        summary,
        doc,
    }
}

/// An elementwise function or activation of `x` alone.
pub(super) const fn elementwise(
    id: OpId,
    name: &'static str,
    summary: &'static str,
    doc: &'static str,
) -> OpSpec {
    plain(id, name, &[X], "[d1, .., dk] → [d1, .., dk]", summary, doc)
}

/// A pooling layer over square windows of `x`.
pub(super) const fn pool(
    id: OpId,
    name: &'static str,
    summary: &'static str,
    doc: &'static str,
) -> OpSpec {
    const SIZE: ParamSpec = param(
        "size",
        ParamType::Pair { min: 1 },
        ArgDefault::Int(2),
        "the window's side, or its [rows, columns]",
    );
    const STRIDE: ParamSpec = param(
        "stride",
        ParamType::Pair { min: 1 },
        ArgDefault::SameAs("size"),
        "the step between windows",
    );
    let rule = "[h, w, c] → [(h - size) / stride + 1, (w - size) / stride + 1, c]";
    plain(id, name, &[X, SIZE, STRIDE], rule, summary, doc)
}

/// A reduction of `x` along `axis`.
pub(super) const fn reduce_fn(
    id: OpId,
    name: &'static str,
    summary: &'static str,
    doc: &'static str,
) -> OpSpec {
    let rule = "[d1, .., dk] → the same without dimension `axis`";
    plain(id, name, &[X, AXIS], rule, summary, doc)
}

/// An op outside models without parameters (a loss, a metric, an initializer).
pub(super) const fn nullary(
    id: OpId,
    name: &'static str,
    summary: &'static str,
    doc: &'static str,
) -> OpSpec {
    plain(id, name, &[], "", summary, doc)
}

pub(super) const ADAM_TAIL: [ParamSpec; 3] = [
    param(
        "beta1",
        ParamType::Float(Range::FRACTION),
        ArgDefault::Float(0.9),
        "decay of the first-moment average",
    ),
    param(
        "beta2",
        ParamType::Float(Range::FRACTION),
        ArgDefault::Float(0.999),
        "decay of the second-moment average",
    ),
    param(
        "eps",
        ParamType::Float(Range::POSITIVE),
        ArgDefault::Float(1e-8),
        "added to the denominator for stability",
    ),
];
