//! The declarations of the ops applied inside a model (layers, tensor functions,
//! activations): one enum per kind, each variant's [`OpSpec`] given by an exhaustive
//! `match`, so a new variant does not compile until it is documented. The model checker
//! (`sema::model::calls`) and the graph lowering (`ir::lower`) match the same enums.

use super::spec::{
    elementwise, param, pool, reduce_fn, ArgDefault, Created, OpId, OpSpec, ParamType, Range, AXIS,
    X,
};

listed_enum! {
    /// A layer: applied in a model, creates parameters or behaves differently in training.
    Layer {
        Dense,
        Conv2d,
        MaxPool,
        AvgPool,
        GlobalAvgPool,
        Flatten,
        Dropout,
        BatchNorm,
    }
}

impl Layer {
    /// The declaration: name, parameters, shape rule, created tensors and documentation.
    #[rustfmt::skip]
    pub const fn spec(self) -> OpSpec {
        match self {
            Layer::Dense => const { OpSpec {
                id: OpId::Layer(Layer::Dense),
                name: "dense",
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
            } },
            Layer::Conv2d => const { OpSpec {
                id: OpId::Layer(Layer::Conv2d),
                name: "conv2d",
                params: &[
                    X,
                    param("filters", ParamType::Int { min: 1 }, ArgDefault::Required, "the number of output channels"),
                    param("kernel", ParamType::Pair { min: 1 }, ArgDefault::Int(3), "the window's side, or its [rows, columns]"),
                    param("stride", ParamType::Pair { min: 1 }, ArgDefault::Int(1), "the step between windows (one number, or [rows, columns])"),
                    param("padding", ParamType::Str(&["same", "valid"]), ArgDefault::Str("same"), "\"same\" pads with zeros to keep ceil(h / stride) rows; \"valid\" does not pad"),
                    param("init", ParamType::Init, ArgDefault::Init("he"), "how `w` starts"),
                    param("dilation", ParamType::Pair { min: 1 }, ArgDefault::Int(1), "the step between a window's taps (1: adjacent pixels)"),
                    param("groups", ParamType::Int { min: 1 }, ArgDefault::Int(1), "channel groups convolved separately (c: depthwise)"),
                ],
                shape_rule: "[h, w, c] → [h', w', filters]; same: h' = ceil(h / stride); valid: h' = (h - dilation·(kernel - 1) - 1) / stride + 1, per axis",
                creates: &[
                    Created { name: "w", shape: "[kernel_h, kernel_w, c / groups, filters]", init: "init", buffer: false },
                    Created { name: "b", shape: "[filters]", init: "zeros", buffer: false },
                ],
                summary: "2-D convolution over channels-last images",
                doc: "Slides a `kernel × kernel` window (or `kernel = [rows, columns]`) over each image (channels last) and applies the same weights at every position, plus a bias per filter. With `dilation = d` the window's taps are `d` pixels apart. With `groups = g` the channels are split into `g` groups, each convolved with its own `filters / g` filters (`groups = c`: a depthwise convolution).",
            } },
            Layer::MaxPool => pool(OpId::Layer(Layer::MaxPool), "max_pool", "maximum over windows (no padding)", "Takes the largest value of each `size × size` window (or `size = [rows, columns]`), per channel. Windows do not pad; a window larger than the image is an error."),
            Layer::AvgPool => pool(OpId::Layer(Layer::AvgPool), "avg_pool", "average over windows (no padding)", "Takes the mean of each `size × size` window (or `size = [rows, columns]`), per channel. Windows do not pad; a window larger than the image is an error."),
            Layer::GlobalAvgPool => const { OpSpec {
                id: OpId::Layer(Layer::GlobalAvgPool),
                name: "global_avg_pool",
                params: &[X],
                shape_rule: "[h, w, c] → [c]",
                creates: &[],
                summary: "average of each channel over the whole image",
                doc: "Takes the mean of each channel over all `h × w` positions, giving a vector per sample (the usual head of a convolutional network before `dense`).",
            } },
            Layer::Flatten => const { OpSpec {
                id: OpId::Layer(Layer::Flatten),
                name: "flatten",
                params: &[X],
                shape_rule: "[d1, .., dk] → [d1 · … · dk]",
                creates: &[],
                summary: "turns each sample into a vector",
                doc: "Reshapes each sample to one dimension, keeping the batch; usually placed before `dense`.",
            } },
            Layer::Dropout => const { OpSpec {
                id: OpId::Layer(Layer::Dropout),
                name: "dropout",
                params: &[
                    X,
                    param("rate", ParamType::Float(Range::FRACTION), ArgDefault::Required, "the fraction of values zeroed in training"),
                ],
                shape_rule: "[d1, .., dk] → [d1, .., dk]",
                creates: &[],
                summary: "zeroes random values in training (identity otherwise)",
                doc: "In training, zeroes each value with probability `rate` and scales the rest by 1 / (1 - rate); outside training it is the identity.",
            } },
            Layer::BatchNorm => const { OpSpec {
                id: OpId::Layer(Layer::BatchNorm),
                name: "batch_norm",
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
            } },
        }
    }
}

listed_enum! {
    /// A pure tensor function applied in a model.
    Function {
        Exp,
        Log,
        Sqrt,
        Abs,
        Square,
        Sum,
        Mean,
        Max,
        Reshape,
        Transpose,
        Concat,
    }
}

impl Function {
    /// Whether the function maps each element on its own (`TOp::Elementwise`).
    pub fn is_elementwise(self) -> bool {
        match self {
            Function::Exp | Function::Log | Function::Sqrt | Function::Abs | Function::Square => {
                true
            }
            Function::Sum
            | Function::Mean
            | Function::Max
            | Function::Reshape
            | Function::Transpose
            | Function::Concat => false,
        }
    }

    /// The declaration: name, parameters, shape rule, created tensors and documentation.
    #[rustfmt::skip]
    pub const fn spec(self) -> OpSpec {
        match self {
            Function::Exp => elementwise(OpId::Function(Function::Exp), "exp", "e to the power of each element", "Elementwise exponential."),
            Function::Log => elementwise(OpId::Function(Function::Log), "log", "natural logarithm of each element", "Elementwise natural logarithm."),
            Function::Sqrt => elementwise(OpId::Function(Function::Sqrt), "sqrt", "square root of each element", "Elementwise square root."),
            Function::Abs => elementwise(OpId::Function(Function::Abs), "abs", "absolute value of each element", "Elementwise absolute value."),
            Function::Square => elementwise(OpId::Function(Function::Square), "square", "square of each element", "Elementwise square."),
            Function::Sum => reduce_fn(OpId::Function(Function::Sum), "sum", "sum along one axis", "Adds the values along `axis` and removes that axis. The batch dimension is never an axis."),
            Function::Mean => reduce_fn(OpId::Function(Function::Mean), "mean", "mean along one axis", "Averages the values along `axis` and removes that axis. The batch dimension is never an axis."),
            Function::Max => reduce_fn(OpId::Function(Function::Max), "max", "maximum along one axis", "Takes the largest value along `axis` and removes that axis. The batch dimension is never an axis."),
            Function::Reshape => const { OpSpec {
                id: OpId::Function(Function::Reshape),
                name: "reshape",
                params: &[
                    X,
                    param("shape", ParamType::Ints, ArgDefault::Required, "the new per-sample dimensions"),
                ],
                shape_rule: "[d1, .., dk] → shape (same number of elements)",
                creates: &[],
                summary: "gives each sample new dimensions",
                doc: "Reinterprets each sample (row-major) with new dimensions; the number of elements must not change. The batch dimension is kept and not written.",
            } },
            Function::Transpose => const { OpSpec {
                id: OpId::Function(Function::Transpose),
                name: "transpose",
                params: &[X],
                shape_rule: "[.., m, n] → [.., n, m] (a vector is unchanged)",
                creates: &[],
                summary: "swaps the last two dimensions",
                doc: "Swaps the last two per-sample dimensions; a one-dimensional value is returned unchanged.",
            } },
            Function::Concat => const { OpSpec {
                id: OpId::Function(Function::Concat),
                name: "concat",
                params: &[
                    param("tensors", ParamType::Tensors, ArgDefault::Required, "two or more tensors, all positional"),
                    AXIS,
                ],
                shape_rule: "[.., a, ..] and [.., b, ..] → [.., a + b, ..] along `axis`; other dims equal",
                creates: &[],
                summary: "joins tensors along one axis",
                doc: "Joins two or more tensors along `axis`; every other dimension must match. All positional arguments are tensors, so `axis` is always named: `concat(a, b, c, axis = 0)`; in a pipe the piped value comes first.",
            } },
        }
    }
}

listed_enum! {
    /// An activation: an elementwise (or softmax) nonlinearity applied in a model. Its
    /// expansion into graph primitives is `ir::lower::activation`, an exhaustive match on
    /// this enum; gradients, the interpreter and kernels follow from the primitives.
    Activation {
        Sigmoid,
        Tanh,
        Relu,
        LeakyRelu,
        Softmax,
        Softplus,
        Gelu,
    }
}

impl Activation {
    /// The declaration: name, parameters, shape rule, created tensors and documentation.
    #[rustfmt::skip]
    pub const fn spec(self) -> OpSpec {
        match self {
            Activation::Sigmoid => elementwise(OpId::Activation(Activation::Sigmoid), "sigmoid", "1 / (1 + e^-x)", "Elementwise logistic function, into (0, 1)."),
            Activation::Tanh => elementwise(OpId::Activation(Activation::Tanh), "tanh", "hyperbolic tangent", "Elementwise hyperbolic tangent, into (-1, 1)."),
            Activation::Relu => elementwise(OpId::Activation(Activation::Relu), "relu", "max(x, 0)", "Elementwise rectified linear unit."),
            Activation::LeakyRelu => const { OpSpec {
                id: OpId::Activation(Activation::LeakyRelu),
                name: "leaky_relu",
                params: &[X, param("alpha", ParamType::Float(Range::NON_NEGATIVE), ArgDefault::Float(0.01), "the slope for negative inputs")],
                shape_rule: "[d1, .., dk] → [d1, .., dk]",
                creates: &[],
                summary: "x if x > 0, else alpha · x",
                doc: "Elementwise leaky rectified linear unit.",
            } },
            Activation::Softmax => const { OpSpec {
                id: OpId::Activation(Activation::Softmax),
                name: "softmax",
                params: &[X, AXIS],
                shape_rule: "[d1, .., dk] → [d1, .., dk]",
                creates: &[],
                summary: "exponentials normalised to sum to 1 along an axis",
                doc: "Turns scores into probabilities along `axis`. Followed by the `cross_entropy` loss, the pair is computed as one stable log-softmax.",
            } },
            Activation::Softplus => elementwise(OpId::Activation(Activation::Softplus), "softplus", "log(1 + e^x)", "Elementwise smooth approximation of relu."),
            Activation::Gelu => elementwise(OpId::Activation(Activation::Gelu), "gelu", "½x(1 + tanh(√(2/π)(x + 0.044715x³)))", "Elementwise Gaussian error linear unit in its tanh approximation of x · Φ(x), on every backend and in the ONNX export."),
        }
    }
}
