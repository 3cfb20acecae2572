//! The op registry: one table describing every layer, function, activation, loss,
//! optimizer, metric, initializer and data source of the language, and every training
//! setting. Argument checking (`sema::args`) and `nnc doc` both read this table, so the
//! documentation cannot drift from what the checker accepts.
//!
//! Invariants: `(kind, name)` pairs are unique; within an op, parameter names are unique;
//! tensor parameters (`Tensor`, `Tensors`) come first; a `ArgDefault::SameAs` names an earlier
//! parameter of the same op. A name may appear under two kinds (`mse` is a loss and a
//! metric); lookups always say which kind they want.

use std::fmt::{self, Write as _};

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
}

impl OpKind {
    pub const ALL: [OpKind; 8] = [
        OpKind::Layer,
        OpKind::Function,
        OpKind::Activation,
        OpKind::Loss,
        OpKind::Optimizer,
        OpKind::Metric,
        OpKind::Initializer,
        OpKind::Data,
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
        }
    }

    /// Whether ops of this kind are applied to tensors inside a model.
    pub fn in_model(self) -> bool {
        matches!(self, OpKind::Layer | OpKind::Function | OpKind::Activation)
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
    /// An initializer name or call (`he`, `normal(std = 0.1)`) or a number constant.
    Init,
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
            ParamType::Init => write!(f, "an initializer or a number"),
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
    pub name: &'static str,
    pub kind: OpKind,
    pub params: &'static [ParamSpec],
    /// The per-sample shape rule `input → output`; empty for ops outside models.
    pub shape_rule: &'static str,
    pub creates: &'static [Created],
    pub summary: &'static str,
    pub doc: &'static str,
}

impl OpSpec {
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
        if parts.is_empty() && !self.kind.in_model() {
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
            self.kind.a_noun().split_once(' ').map_or("", |x| x.1)
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
    pub name: &'static str,
    /// What it accepts.
    pub values: &'static str,
    /// The default, or "required".
    pub default: &'static str,
    /// An example line, used in help messages.
    pub example: &'static str,
    pub summary: &'static str,
}

/// Every op, grouped by kind in the order `nnc doc` lists them.
pub fn ops() -> &'static [OpSpec] {
    OPS
}

/// The op named `name` of kind `kind`.
pub fn lookup(name: &str, kind: OpKind) -> Option<&'static OpSpec> {
    OPS.iter().find(|op| op.kind == kind && op.name == name)
}

/// The op named `name` usable in a model (layer, function or activation).
pub fn lookup_in_model(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|op| op.kind.in_model() && op.name == name)
}

/// Every op named `name`, of any kind.
pub fn find(name: &str) -> impl Iterator<Item = &'static OpSpec> + '_ {
    OPS.iter().filter(move |op| op.name == name)
}

/// The names of ops of the kinds for which `keep` holds.
pub fn names_where(keep: impl Fn(OpKind) -> bool) -> Vec<&'static str> {
    OPS.iter()
        .filter(|op| keep(op.kind))
        .map(|op| op.name)
        .collect()
}

pub fn settings() -> &'static [SettingSpec] {
    SETTINGS
}

pub fn setting(name: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The `nnc doc` index: every op grouped by kind with its summary, then the settings.
pub fn index() -> String {
    let mut out = String::new();
    for kind in OpKind::ALL {
        let _ = writeln!(out, "{}:", kind.heading());
        for op in OPS.iter().filter(|op| op.kind == kind) {
            let sig = op.signature();
            if sig.chars().count() > 40 {
                let _ = writeln!(out, "  {sig}\n  {:<42} {}", "", op.summary);
            } else {
                let _ = writeln!(out, "  {sig:<42} {}", op.summary);
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "Training settings (`train MODEL {{ .. }}`):");
    for s in SETTINGS {
        let _ = writeln!(
            out,
            "  {:<42} {}",
            format!("{} = {}", s.name, s.values),
            s.summary
        );
    }
    let _ = writeln!(
        out,
        "\nRun `nnc doc NAME` for the full reference of one name."
    );
    out
}

/// The full reference of a name (all kinds it has, and the setting of that name), or
/// `None` when nothing is called `name`.
pub fn reference(name: &str) -> Option<String> {
    let mut parts: Vec<String> = find(name).map(|op| op.reference()).collect();
    if let Some(s) = setting(name) {
        parts.push(format!(
            "{} = {}  (training setting)\n\n{}\n\ndefault: {}\nexample: {}\n",
            s.name, s.values, s.summary, s.default, s.example
        ));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("\n"))
    }
}

/// Every documented name (ops and settings), for suggestions.
pub fn all_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = OPS.iter().map(|op| op.name).collect();
    names.extend(SETTINGS.iter().map(|s| s.name));
    names.sort_unstable();
    names.dedup();
    names
}

const fn tensor(name: &'static str, doc: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        ty: ParamType::Tensor,
        default: ArgDefault::Required,
        doc,
    }
}

const fn param(
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

const X: ParamSpec = tensor("x", "the input tensor (piped: `x |> op(..)`)");
const AXIS: ParamSpec = param(
    "axis",
    ParamType::Int { min: i64::MIN },
    ArgDefault::Int(-1),
    "a per-sample axis; negative counts from the end",
);
const LR: ParamSpec = param(
    "lr",
    ParamType::Float(Range::POSITIVE),
    ArgDefault::Required,
    "the learning rate",
);

const fn activation(name: &'static str, summary: &'static str, doc: &'static str) -> OpSpec {
    OpSpec {
        name,
        kind: OpKind::Activation,
        params: &[X],
        shape_rule: "[d1, .., dk] → [d1, .., dk]",
        creates: &[],
        summary,
        doc,
    }
}

const fn unary_fn(name: &'static str, summary: &'static str, doc: &'static str) -> OpSpec {
    OpSpec {
        name,
        kind: OpKind::Function,
        params: &[X],
        shape_rule: "[d1, .., dk] → [d1, .., dk]",
        creates: &[],
        summary,
        doc,
    }
}

const fn reduce_fn(name: &'static str, summary: &'static str, doc: &'static str) -> OpSpec {
    OpSpec {
        name,
        kind: OpKind::Function,
        params: &[X, AXIS],
        shape_rule: "[d1, .., dk] → the same without dimension `axis`",
        creates: &[],
        summary,
        doc,
    }
}

const fn nullary(
    kind: OpKind,
    name: &'static str,
    summary: &'static str,
    doc: &'static str,
) -> OpSpec {
    OpSpec {
        name,
        kind,
        params: &[],
        shape_rule: "",
        creates: &[],
        summary,
        doc,
    }
}

const ADAM_TAIL: [ParamSpec; 3] = [
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

static OPS: &[OpSpec] = &[
    // Layers.
    OpSpec {
        name: "dense",
        kind: OpKind::Layer,
        params: &[
            X,
            param("units", ParamType::Int { min: 1 }, ArgDefault::Required, "the number of outputs per sample"),
            param("init", ParamType::Init, ArgDefault::Init("he"), "how `w` starts"),
        ],
        shape_rule: "[in] → [units] (a vector per sample; `flatten` other shapes first)",
        creates: &[
            Created { name: "w", shape: "[in, units]", init: "init", buffer: false },
            Created { name: "b", shape: "[units]", init: "zeros", buffer: false },
        ],
        summary: "fully connected layer: x @ w + b",
        doc: "Multiplies each sample vector by the weight matrix `w` and adds the bias `b`.",
    },
    OpSpec {
        name: "conv2d",
        kind: OpKind::Layer,
        params: &[
            X,
            param("filters", ParamType::Int { min: 1 }, ArgDefault::Required, "the number of output channels"),
            param("kernel", ParamType::Int { min: 1 }, ArgDefault::Int(3), "the side of the square window"),
            param("stride", ParamType::Int { min: 1 }, ArgDefault::Int(1), "the step between windows"),
            param("padding", ParamType::Str(&["same", "valid"]), ArgDefault::Str("same"), "\"same\" pads with zeros to keep ceil(h / stride) rows; \"valid\" does not pad"),
            param("init", ParamType::Init, ArgDefault::Init("he"), "how `w` starts"),
        ],
        shape_rule: "[h, w, c] → [h', w', filters]; same: h' = ceil(h / stride); valid: h' = (h - kernel) / stride + 1",
        creates: &[
            Created { name: "w", shape: "[kernel, kernel, c, filters]", init: "init", buffer: false },
            Created { name: "b", shape: "[filters]", init: "zeros", buffer: false },
        ],
        summary: "2-D convolution over channels-last images",
        doc: "Slides a `kernel × kernel` window over each image (channels last) and applies the same weights at every position, plus a bias per filter.",
    },
    OpSpec {
        name: "max_pool",
        kind: OpKind::Layer,
        params: &[
            X,
            param("size", ParamType::Int { min: 1 }, ArgDefault::Int(2), "the side of the square window"),
            param("stride", ParamType::Int { min: 1 }, ArgDefault::SameAs("size"), "the step between windows"),
        ],
        shape_rule: "[h, w, c] → [(h - size) / stride + 1, (w - size) / stride + 1, c]",
        creates: &[],
        summary: "maximum over square windows (no padding)",
        doc: "Takes the largest value of each `size × size` window, per channel. Windows do not pad; a window larger than the image is an error.",
    },
    OpSpec {
        name: "avg_pool",
        kind: OpKind::Layer,
        params: &[
            X,
            param("size", ParamType::Int { min: 1 }, ArgDefault::Int(2), "the side of the square window"),
            param("stride", ParamType::Int { min: 1 }, ArgDefault::SameAs("size"), "the step between windows"),
        ],
        shape_rule: "[h, w, c] → [(h - size) / stride + 1, (w - size) / stride + 1, c]",
        creates: &[],
        summary: "average over square windows (no padding)",
        doc: "Takes the mean of each `size × size` window, per channel. Windows do not pad; a window larger than the image is an error.",
    },
    OpSpec {
        name: "flatten",
        kind: OpKind::Layer,
        params: &[X],
        shape_rule: "[d1, .., dk] → [d1 · … · dk]",
        creates: &[],
        summary: "turns each sample into a vector",
        doc: "Reshapes each sample to one dimension, keeping the batch; usually placed before `dense`.",
    },
    OpSpec {
        name: "dropout",
        kind: OpKind::Layer,
        params: &[
            X,
            param("rate", ParamType::Float(Range::FRACTION), ArgDefault::Required, "the fraction of values zeroed in training"),
        ],
        shape_rule: "[d1, .., dk] → [d1, .., dk]",
        creates: &[],
        summary: "zeroes random values in training (identity otherwise)",
        doc: "In training, zeroes each value with probability `rate` and scales the rest by 1 / (1 - rate); outside training it is the identity.",
    },
    OpSpec {
        name: "batch_norm",
        kind: OpKind::Layer,
        params: &[
            X,
            param("momentum", ParamType::Float(Range::FRACTION), ArgDefault::Float(0.99), "weight of the old running statistics in each update"),
            param("eps", ParamType::Float(Range::POSITIVE), ArgDefault::Float(1e-3), "added to the variance for stability"),
        ],
        shape_rule: "[c] → [c] or [h, w, c] → [h, w, c] (normalised per channel c)",
        creates: &[
            Created { name: "gamma", shape: "[c]", init: "ones", buffer: false },
            Created { name: "beta", shape: "[c]", init: "zeros", buffer: false },
            Created { name: "running_mean", shape: "[c]", init: "0", buffer: true },
            Created { name: "running_var", shape: "[c]", init: "1", buffer: true },
        ],
        summary: "normalises each channel over the batch",
        doc: "In training, normalises each channel with the batch's mean and variance (and over height and width for images), then scales by `gamma` and shifts by `beta`; the running statistics it keeps are used outside training.",
    },
    // Tensor functions.
    unary_fn("exp", "e to the power of each element", "Elementwise exponential."),
    unary_fn("log", "natural logarithm of each element", "Elementwise natural logarithm."),
    unary_fn("sqrt", "square root of each element", "Elementwise square root."),
    unary_fn("abs", "absolute value of each element", "Elementwise absolute value."),
    unary_fn("square", "square of each element", "Elementwise square."),
    reduce_fn("sum", "sum along one axis", "Adds the values along `axis` and removes that axis. The batch dimension is never an axis."),
    reduce_fn("mean", "mean along one axis", "Averages the values along `axis` and removes that axis. The batch dimension is never an axis."),
    reduce_fn("max", "maximum along one axis", "Takes the largest value along `axis` and removes that axis. The batch dimension is never an axis."),
    OpSpec {
        name: "reshape",
        kind: OpKind::Function,
        params: &[
            X,
            param("shape", ParamType::Ints, ArgDefault::Required, "the new per-sample dimensions"),
        ],
        shape_rule: "[d1, .., dk] → shape (same number of elements)",
        creates: &[],
        summary: "gives each sample new dimensions",
        doc: "Reinterprets each sample (row-major) with new dimensions; the number of elements must not change. The batch dimension is kept and not written.",
    },
    OpSpec {
        name: "transpose",
        kind: OpKind::Function,
        params: &[X],
        shape_rule: "[.., m, n] → [.., n, m] (a vector is unchanged)",
        creates: &[],
        summary: "swaps the last two dimensions",
        doc: "Swaps the last two per-sample dimensions; a one-dimensional value is returned unchanged.",
    },
    OpSpec {
        name: "concat",
        kind: OpKind::Function,
        params: &[
            param("tensors", ParamType::Tensors, ArgDefault::Required, "two or more tensors, all positional"),
            AXIS,
        ],
        shape_rule: "[.., a, ..] and [.., b, ..] → [.., a + b, ..] along `axis`; other dims equal",
        creates: &[],
        summary: "joins tensors along one axis",
        doc: "Joins two or more tensors along `axis`; every other dimension must match. All positional arguments are tensors, so `axis` is always named: `concat(a, b, c, axis = 0)`; in a pipe the piped value comes first.",
    },
    // Activations.
    activation("sigmoid", "1 / (1 + e^-x)", "Elementwise logistic function, into (0, 1)."),
    activation("tanh", "hyperbolic tangent", "Elementwise hyperbolic tangent, into (-1, 1)."),
    activation("relu", "max(x, 0)", "Elementwise rectified linear unit."),
    OpSpec {
        name: "leaky_relu",
        kind: OpKind::Activation,
        params: &[X, param("alpha", ParamType::Float(Range::NON_NEGATIVE), ArgDefault::Float(0.01), "the slope for negative inputs")],
        shape_rule: "[d1, .., dk] → [d1, .., dk]",
        creates: &[],
        summary: "x if x > 0, else alpha · x",
        doc: "Elementwise leaky rectified linear unit.",
    },
    OpSpec {
        name: "softmax",
        kind: OpKind::Activation,
        params: &[X, AXIS],
        shape_rule: "[d1, .., dk] → [d1, .., dk]",
        creates: &[],
        summary: "exponentials normalised to sum to 1 along an axis",
        doc: "Turns scores into probabilities along `axis`. Followed by the `cross_entropy` loss, the pair is computed as one stable log-softmax.",
    },
    activation("softplus", "log(1 + e^x)", "Elementwise smooth approximation of relu."),
    activation("gelu", "x · Φ(x)", "Elementwise Gaussian error linear unit."),
    // Losses.
    nullary(OpKind::Loss, "cross_entropy", "classification with class-index labels", "The output holds one score or probability per class (last dimension > 1); labels are class indices. A final `softmax` is fused into a numerically stable log-softmax."),
    nullary(OpKind::Loss, "binary_cross_entropy", "two-class or multi-label classification", "The output holds probabilities in (0, 1) (e.g. after `sigmoid`); targets are 0 or 1 with the output's shape."),
    nullary(OpKind::Loss, "mse", "mean squared error (regression)", "The mean of (output - target)² over the batch and the output's elements."),
    nullary(OpKind::Loss, "mae", "mean absolute error (regression)", "The mean of |output - target| over the batch and the output's elements."),
    // Optimizers.
    OpSpec {
        name: "sgd",
        kind: OpKind::Optimizer,
        params: &[
            LR,
            param("momentum", ParamType::Float(Range::FRACTION), ArgDefault::Float(0.0), "the weight of the previous update"),
            param("nesterov", ParamType::Bool, ArgDefault::Bool(false), "use Nesterov momentum"),
        ],
        shape_rule: "",
        creates: &[],
        summary: "stochastic gradient descent, optionally with momentum",
        doc: "Updates each parameter by -lr · gradient, with a velocity when `momentum` > 0.",
    },
    OpSpec {
        name: "rmsprop",
        kind: OpKind::Optimizer,
        params: &[
            LR,
            param("rho", ParamType::Float(Range::FRACTION), ArgDefault::Float(0.9), "decay of the squared-gradient average"),
            param("eps", ParamType::Float(Range::POSITIVE), ArgDefault::Float(1e-7), "added to the denominator for stability"),
        ],
        shape_rule: "",
        creates: &[],
        summary: "gradient divided by a running RMS of gradients",
        doc: "Divides each gradient by the square root of a moving average of its square.",
    },
    OpSpec {
        name: "adam",
        kind: OpKind::Optimizer,
        params: &[LR, ADAM_TAIL[0], ADAM_TAIL[1], ADAM_TAIL[2]],
        shape_rule: "",
        creates: &[],
        summary: "adaptive moment estimation",
        doc: "Keeps bias-corrected moving averages of the gradient and its square per parameter.",
    },
    OpSpec {
        name: "adamw",
        kind: OpKind::Optimizer,
        params: &[
            LR,
            param("weight_decay", ParamType::Float(Range::NON_NEGATIVE), ArgDefault::Float(0.01), "decoupled weight decay per step (times lr)"),
            ADAM_TAIL[0],
            ADAM_TAIL[1],
            ADAM_TAIL[2],
        ],
        shape_rule: "",
        creates: &[],
        summary: "adam with decoupled weight decay",
        doc: "Adam whose weight decay shrinks parameters directly instead of through the gradient.",
    },
    // Metrics.
    nullary(OpKind::Metric, "accuracy", "fraction of samples classified right", "Classification only (`cross_entropy` or `binary_cross_entropy`): the predicted class is the arg-max (or output > 0.5 for one unit)."),
    nullary(OpKind::Metric, "precision", "macro-averaged precision", "Classification only: true positives / predicted positives, averaged over classes."),
    nullary(OpKind::Metric, "recall", "macro-averaged recall", "Classification only: true positives / actual positives, averaged over classes."),
    nullary(OpKind::Metric, "f1", "macro-averaged F1 score", "Classification only: the harmonic mean of precision and recall, averaged over classes."),
    nullary(OpKind::Metric, "mae", "mean absolute error", "The mean of |output - target|; not with `cross_entropy` (whose labels are class indices)."),
    nullary(OpKind::Metric, "mse", "mean squared error", "The mean of (output - target)²; not with `cross_entropy` (whose labels are class indices)."),
    // Initializers.
    nullary(OpKind::Initializer, "zeros", "all zeros", "Every element starts at 0."),
    nullary(OpKind::Initializer, "ones", "all ones", "Every element starts at 1."),
    OpSpec {
        name: "normal",
        kind: OpKind::Initializer,
        params: &[param("std", ParamType::Float(Range::POSITIVE), ArgDefault::Float(0.01), "the standard deviation")],
        shape_rule: "",
        creates: &[],
        summary: "normal distribution with mean 0",
        doc: "Every element is drawn from N(0, std²) with the training seed.",
    },
    OpSpec {
        name: "uniform",
        kind: OpKind::Initializer,
        params: &[param("limit", ParamType::Float(Range::POSITIVE), ArgDefault::Required, "half the width of the interval")],
        shape_rule: "",
        creates: &[],
        summary: "uniform distribution on [-limit, limit]",
        doc: "Every element is drawn uniformly from [-limit, limit] with the training seed.",
    },
    nullary(OpKind::Initializer, "glorot", "Xavier uniform", "Uniform on [-l, l] with l = sqrt(6 / (fan_in + fan_out)), from the parameter's last two dims (times the receptive field for convolutions)."),
    nullary(OpKind::Initializer, "he", "Kaiming normal", "Normal with std = sqrt(2 / fan_in); suits relu networks."),
    // Data sources.
    OpSpec {
        name: "idx",
        kind: OpKind::Data,
        params: &[
            param("dir", ParamType::Str(&[]), ArgDefault::Required, "the folder, relative to the .nn file"),
            param("scale", ParamType::Float(Range::POSITIVE), ArgDefault::Float(1.0), "multiplies raw values (1/255 maps pixels to [0, 1])"),
        ],
        shape_rule: "",
        creates: &[],
        summary: "MNIST-layout IDX files (`train-*`, `t10k-*`, gz or not)",
        doc: "Reads `train-images`/`train-labels` and `t10k-images`/`t10k-labels` IDX files from `dir`. Images are `[rows, cols]`; a model input of `[rows, cols, 1]` accepts them too.",
    },
    OpSpec {
        name: "csv",
        kind: OpKind::Data,
        params: &[
            param("path", ParamType::Str(&[]), ArgDefault::Required, "the file, relative to the .nn file"),
            param("target", ParamType::Str(&[]), ArgDefault::Required, "the name of the label or target column"),
            param("standardize", ParamType::Bool, ArgDefault::Bool(false), "subtract each feature's training mean and divide by its deviation"),
        ],
        shape_rule: "",
        creates: &[],
        summary: "a CSV file with a header row",
        doc: "Each sample is the vector of all columns except `target`; the `target` column is the label (for `cross_entropy`, a class index) or the regression target.",
    },
];

static SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "data",
        values: "idx(..) or csv(..)",
        default: "required",
        example: "data = idx(\"data/mnist\", scale = 1/255)",
        summary: "where the training samples come from",
    },
    SettingSpec {
        name: "loss",
        values: "a loss",
        default: "required",
        example: "loss = cross_entropy",
        summary: "what training minimises, as loss(output, target)",
    },
    SettingSpec {
        name: "optimizer",
        values: "an optimizer",
        default: "required",
        example: "optimizer = adam(lr = 0.001)",
        summary: "how parameters are updated",
    },
    SettingSpec {
        name: "batch",
        values: "a positive integer",
        default: "32",
        example: "batch = 64",
        summary: "samples per training step",
    },
    SettingSpec {
        name: "epochs",
        values: "a positive integer",
        default: "1",
        example: "epochs = 5",
        summary: "passes over the training data",
    },
    SettingSpec {
        name: "metrics",
        values: "[metric, ..]",
        default: "[]",
        example: "metrics = [accuracy]",
        summary: "what is reported after each epoch",
    },
    SettingSpec {
        name: "seed",
        values: "an integer ≥ 0",
        default: "0",
        example: "seed = 7",
        summary: "the same seed gives the same weights, shuffles and results",
    },
    SettingSpec {
        name: "shuffle",
        values: "true or false",
        default: "true",
        example: "shuffle = false",
        summary: "shuffle the samples every epoch",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_kind_and_params_unique_per_op() {
        for (i, a) in OPS.iter().enumerate() {
            for b in &OPS[i + 1..] {
                assert!(
                    !(a.kind == b.kind && a.name == b.name),
                    "duplicate {}",
                    a.name
                );
            }
            for (j, p) in a.params.iter().enumerate() {
                assert!(
                    a.params[j + 1..].iter().all(|q| q.name != p.name),
                    "{}.{}",
                    a.name,
                    p.name
                );
            }
        }
    }

    #[test]
    fn tensor_params_come_first_and_same_as_defaults_point_backwards() {
        for op in OPS {
            let first_setting = op
                .params
                .iter()
                .position(|p| !matches!(p.ty, ParamType::Tensor | ParamType::Tensors));
            if let Some(k) = first_setting {
                assert!(
                    op.params[k..]
                        .iter()
                        .all(|p| !matches!(p.ty, ParamType::Tensor | ParamType::Tensors)),
                    "{}",
                    op.name
                );
            }
            for (j, p) in op.params.iter().enumerate() {
                if let ArgDefault::SameAs(other) = p.default {
                    assert!(
                        op.params[..j].iter().any(|q| q.name == other),
                        "{}.{}",
                        op.name,
                        p.name
                    );
                }
            }
            assert_eq!(op.kind.in_model(), !op.shape_rule.is_empty(), "{}", op.name);
        }
    }

    #[test]
    fn signatures_match_the_language_reference() {
        assert_eq!(
            lookup("dense", OpKind::Layer)
                .map(|o| o.signature())
                .as_deref(),
            Some("dense(x, units, init = he)")
        );
        assert_eq!(
            lookup("conv2d", OpKind::Layer)
                .map(|o| o.signature())
                .as_deref(),
            Some("conv2d(x, filters, kernel = 3, stride = 1, padding = \"same\", init = he)")
        );
        assert_eq!(
            lookup("max_pool", OpKind::Layer)
                .map(|o| o.signature())
                .as_deref(),
            Some("max_pool(x, size = 2, stride = size)")
        );
        assert_eq!(
            lookup("concat", OpKind::Function)
                .map(|o| o.signature())
                .as_deref(),
            Some("concat(a, b, .., axis = -1)")
        );
        assert_eq!(
            lookup("mse", OpKind::Loss)
                .map(|o| o.signature())
                .as_deref(),
            Some("mse")
        );
        assert_eq!(
            lookup("sgd", OpKind::Optimizer)
                .map(|o| o.signature())
                .as_deref(),
            Some("sgd(lr, momentum = 0, nesterov = false)")
        );
    }

    #[test]
    fn reference_of_a_name_with_two_kinds_shows_both() {
        let text = reference("mse").unwrap_or_default();
        assert!(
            text.contains("(loss)") && text.contains("(metric)"),
            "{text}"
        );
        assert!(reference("densee").is_none());
    }

    #[test]
    fn index_lists_every_op_and_setting() {
        let text = index();
        for op in OPS {
            assert!(text.contains(op.name), "{}", op.name);
        }
        for s in SETTINGS {
            assert!(text.contains(s.name), "{}", s.name);
        }
    }

    #[test]
    fn range_membership_and_wording() {
        assert!(Range::FRACTION.contains(0.0) && !Range::FRACTION.contains(1.0));
        assert!(!Range::POSITIVE.contains(0.0) && !Range::POSITIVE.contains(f64::NAN));
        assert_eq!(Range::FRACTION.to_string(), "a number in [0, 1)");
        assert_eq!(Range::POSITIVE.to_string(), "a number > 0");
    }
}
