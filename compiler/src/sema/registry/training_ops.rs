//! The declarations of the ops of a `train` block (losses, optimizers, metrics,
//! initializers, data sources) and the table of training settings. Losses and metrics are
//! identified by `typed::Loss` and the runtime's `Metric`; the others by an enum here.
//! Each declaration is an exhaustive `match`, so a new variant does not compile until it
//! is documented.

use nnc_runtime::metrics::Metric;

use super::spec::{
    nullary, param, ArgDefault, OpId, OpSpec, ParamType, Range, SettingSpec, ADAM_TAIL, LR,
};
use crate::sema::typed::Loss;

impl Loss {
    /// Every loss (a `typed` enum, so listed here by hand), in the order `nnc doc` lists them.
    pub const ALL: [Loss; 4] = [
        Loss::CrossEntropy,
        Loss::BinaryCrossEntropy,
        Loss::Mse,
        Loss::Mae,
    ];

    /// The declaration: name, parameters, shape rule, created tensors and documentation.
    #[rustfmt::skip]
    pub const fn spec(self) -> OpSpec {
        match self {
            Loss::CrossEntropy => const { OpSpec {
                id: OpId::Loss(Loss::CrossEntropy),
                name: "cross_entropy",
                params: &[
                    param("label_smoothing", ParamType::Float(Range::FRACTION), ArgDefault::Float(0.0), "mix this much of a uniform distribution into the one-hot targets"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "classification with class-index labels",
                doc: "The output holds one score or probability per class (last dimension > 1); labels are class indices. A final `softmax` is fused into a numerically stable log-softmax. With `label_smoothing = ε` the target is (1 − ε)·one-hot + ε/classes.",
            } },
            Loss::BinaryCrossEntropy => nullary(OpId::Loss(Loss::BinaryCrossEntropy), "binary_cross_entropy", "two-class classification", "The output holds one probability in (0, 1) per sample (e.g. `dense(1) |> sigmoid`); targets are 0 or 1. An output of several units (multi-label) is an error: use `cross_entropy` after `softmax` for one of several classes."),
            Loss::Mse => nullary(OpId::Loss(Loss::Mse), "mse", "mean squared error (regression)", "The mean of (output - target)² over the batch and the output's elements."),
            Loss::Mae => nullary(OpId::Loss(Loss::Mae), "mae", "mean absolute error (regression)", "The mean of |output - target| over the batch and the output's elements."),
        }
    }
}

listed_enum! {
    /// An optimizer (`optimizer = ..`); its settings become a `typed::Optimizer`.
    OptimizerKind {
        Sgd,
        RmsProp,
        Adam,
        AdamW,
    }
}

impl OptimizerKind {
    /// The declaration: name, parameters, shape rule, created tensors and documentation.
    #[rustfmt::skip]
    pub const fn spec(self) -> OpSpec {
        match self {
            OptimizerKind::Sgd => const { OpSpec {
                id: OpId::Optimizer(OptimizerKind::Sgd),
                name: "sgd",
                params: &[
                    LR,
                    param("momentum", ParamType::Float(Range::FRACTION), ArgDefault::Float(0.0), "the weight of the previous update"),
                    param("nesterov", ParamType::Bool, ArgDefault::Bool(false), "use Nesterov momentum"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "stochastic gradient descent, optionally with momentum",
                doc: "Updates each parameter by -lr · gradient, with a velocity when `momentum` > 0.",
            } },
            OptimizerKind::RmsProp => const { OpSpec {
                id: OpId::Optimizer(OptimizerKind::RmsProp),
                name: "rmsprop",
                params: &[
                    LR,
                    param("rho", ParamType::Float(Range::FRACTION), ArgDefault::Float(0.9), "decay of the squared-gradient average"),
                    param("eps", ParamType::Float(Range::POSITIVE), ArgDefault::Float(1e-7), "added to the denominator for stability"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "gradient divided by a running RMS of gradients",
                doc: "Divides each gradient by the square root of a moving average of its square.",
            } },
            OptimizerKind::Adam => const { OpSpec {
                id: OpId::Optimizer(OptimizerKind::Adam),
                name: "adam",
                params: &[LR, ADAM_TAIL[0], ADAM_TAIL[1], ADAM_TAIL[2]],
                shape_rule: "",
                creates: &[],
                summary: "adaptive moment estimation",
                doc: "Keeps bias-corrected moving averages of the gradient and its square per parameter.",
            } },
            OptimizerKind::AdamW => const { OpSpec {
                id: OpId::Optimizer(OptimizerKind::AdamW),
                name: "adamw",
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
            } },
        }
    }
}

/// The declaration of a metric (the runtime computes it; see `nnc_runtime::metrics`).
#[rustfmt::skip]
pub const fn metric_spec(m: Metric) -> OpSpec {
    match m {
        Metric::Accuracy => nullary(OpId::Metric(Metric::Accuracy), "accuracy", "fraction of samples classified right", "Classification only (`cross_entropy` or `binary_cross_entropy`): the predicted class is the arg-max (or output > 0.5 for one unit)."),
        Metric::Precision => nullary(OpId::Metric(Metric::Precision), "precision", "macro-averaged precision", "Classification only: true positives / predicted positives, averaged over classes."),
        Metric::Recall => nullary(OpId::Metric(Metric::Recall), "recall", "macro-averaged recall", "Classification only: true positives / actual positives, averaged over classes."),
        Metric::F1 => nullary(OpId::Metric(Metric::F1), "f1", "macro-averaged F1 score", "Classification only: the harmonic mean of precision and recall, averaged over classes."),
        Metric::Mae => nullary(OpId::Metric(Metric::Mae), "mae", "mean absolute error", "The mean of |output - target|; not with `cross_entropy` (whose labels are class indices)."),
        Metric::Mse => nullary(OpId::Metric(Metric::Mse), "mse", "mean squared error", "The mean of (output - target)²; not with `cross_entropy` (whose labels are class indices)."),
    }
}

listed_enum! {
    /// An initializer (`init = ..`); its settings become a `typed::Init`.
    InitKind {
        Zeros,
        Ones,
        Normal,
        Uniform,
        Glorot,
        He,
    }
}

impl InitKind {
    /// The declaration: name, parameters, shape rule, created tensors and documentation.
    #[rustfmt::skip]
    pub const fn spec(self) -> OpSpec {
        match self {
            InitKind::Zeros => nullary(OpId::Initializer(InitKind::Zeros), "zeros", "all zeros", "Every element starts at 0."),
            InitKind::Ones => nullary(OpId::Initializer(InitKind::Ones), "ones", "all ones", "Every element starts at 1."),
            InitKind::Normal => const { OpSpec {
                id: OpId::Initializer(InitKind::Normal),
                name: "normal",
                params: &[param("std", ParamType::Float(Range::POSITIVE), ArgDefault::Float(0.01), "the standard deviation")],
                shape_rule: "",
                creates: &[],
                summary: "normal distribution with mean 0",
                doc: "Every element is drawn from N(0, std²) with the training seed.",
            } },
            InitKind::Uniform => const { OpSpec {
                id: OpId::Initializer(InitKind::Uniform),
                name: "uniform",
                params: &[param("limit", ParamType::Float(Range::POSITIVE), ArgDefault::Required, "half the width of the interval")],
                shape_rule: "",
                creates: &[],
                summary: "uniform distribution on [-limit, limit]",
                doc: "Every element is drawn uniformly from [-limit, limit] with the training seed.",
            } },
            InitKind::Glorot => nullary(OpId::Initializer(InitKind::Glorot), "glorot", "Xavier uniform", "Uniform on [-l, l] with l = sqrt(6 / (fan_in + fan_out)), from the parameter's last two dims (times the receptive field for convolutions)."),
            InitKind::He => nullary(OpId::Initializer(InitKind::He), "he", "Kaiming normal", "Normal with std = sqrt(2 / fan_in); suits relu networks."),
        }
    }
}

listed_enum! {
    /// A data source (`data = ..`); its settings become a `typed::DataSpec`.
    DataKind {
        Idx,
        Csv,
        Images,
        Npy,
    }
}

impl DataKind {
    /// The declaration: name, parameters, shape rule, created tensors and documentation.
    #[rustfmt::skip]
    pub const fn spec(self) -> OpSpec {
        match self {
            DataKind::Idx => const { OpSpec {
                id: OpId::Data(DataKind::Idx),
                name: "idx",
                params: &[
                    param("dir", ParamType::Str(&[]), ArgDefault::Required, "the folder, relative to the .nn file"),
                    param("scale", ParamType::Float(Range::POSITIVE), ArgDefault::Float(1.0), "multiplies raw values (1/255 maps pixels to [0, 1])"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "MNIST-layout IDX files (`train-*`, `t10k-*`, gz or not)",
                doc: "Reads `train-images`/`train-labels` and `t10k-images`/`t10k-labels` IDX files from `dir`. Images are `[rows, cols]`; a model input of `[rows, cols, 1]` accepts them too.",
            } },
            DataKind::Csv => const { OpSpec {
                id: OpId::Data(DataKind::Csv),
                name: "csv",
                params: &[
                    param("path", ParamType::Str(&[]), ArgDefault::Required, "the file, relative to the .nn file"),
                    param("target", ParamType::Str(&[]), ArgDefault::Required, "the name of the label or target column"),
                    param("standardize", ParamType::Bool, ArgDefault::Bool(false), "subtract each feature's training mean and divide by its deviation"),
                    param("test", ParamType::Split, ArgDefault::Float(0.2), "the test split: a fraction of the rows, spread evenly (0.2: every fifth row), or another CSV file with the same columns"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "a CSV file with a header row",
                doc: "Each sample is the vector of all columns except `target`; the `target` column is the label (for `cross_entropy`, a class index) or the regression target. By default every fifth data row (`test = 0.2`) is the test split; a fraction `f` takes the rows where ⌊(i+1)·f⌋ passes an integer, the same rows every time; `test = \"other.csv\"` trains on the whole file and tests on the other.",
            } },
            DataKind::Images => const { OpSpec {
                id: OpId::Data(DataKind::Images),
                name: "images",
                params: &[
                    param("dir", ParamType::Str(&[]), ArgDefault::Required, "the folder (one subfolder per class), relative to the .nn file"),
                    param("size", ParamType::Pair { min: 1 }, ArgDefault::Required, "every image is resized to [height, width]"),
                    param("channels", ParamType::Int { min: 1 }, ArgDefault::Int(1), "1 (grey) or 3 (RGB)"),
                    param("scale", ParamType::Float(Range::POSITIVE), ArgDefault::Float(1.0), "multiplies pixel values (1/255 maps them to [0, 1])"),
                    param("test", ParamType::Float(Range::OPEN_FRACTION), ArgDefault::Float(0.2), "the fraction held out for testing, chosen with the seed (unless `train/` and `test/` subfolders exist)"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "a folder of PNG/JPEG images, one subfolder per class",
                doc: "Class indices follow the subfolders' names in sorted order; the names are stored with the weights and printed by `nnc predict`. When `dir` has `train/` and `test/` subfolders (each with the class subfolders), they are the splits; otherwise `test` of the images, chosen with the block's seed, form the test split. Images are decoded, converted to grey or RGB and resized to `size`; samples are `[height, width, channels]`.",
            } },
            DataKind::Npy => const { OpSpec {
                id: OpId::Data(DataKind::Npy),
                name: "npy",
                params: &[
                    param("x", ParamType::Str(&[]), ArgDefault::Required, "the samples, `[n, ..sample shape]` (u8, f32 or f64), relative to the .nn file"),
                    param("y", ParamType::Str(&[]), ArgDefault::Required, "the labels or targets, `[n]` or `[n, ..]`"),
                    param("test_x", ParamType::Str(&[]), ArgDefault::Str(""), "test samples (with `test_y`); without them `test` splits `x`"),
                    param("test_y", ParamType::Str(&[]), ArgDefault::Str(""), "test labels"),
                    param("scale", ParamType::Float(Range::POSITIVE), ArgDefault::Float(1.0), "multiplies sample values"),
                    param("test", ParamType::Float(Range::OPEN_FRACTION), ArgDefault::Float(0.2), "without `test_x`: the fraction of rows held out, spread evenly"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "NumPy .npy arrays of samples and labels",
                doc: "Reads `x` and `y` (and `test_x`, `test_y` when given) as written by `numpy.save`. Without a separate test set, rows are split as in `csv`.",
            } },
        }
    }
}

listed_enum! {
    /// A training control (`early_stopping = early_stopping(..)`); its settings become a
    /// `typed::EarlyStopping`.
    ControlKind {
        EarlyStopping,
        Constant,
        StepDecay,
        Exponential,
        Cosine,
        Plateau,
    }
}

impl ControlKind {
    /// The declaration: name, parameters and documentation.
    #[rustfmt::skip]
    pub const fn spec(self) -> OpSpec {
        match self {
            ControlKind::EarlyStopping => const { OpSpec {
                id: OpId::Control(ControlKind::EarlyStopping),
                name: "early_stopping",
                params: &[
                    param("monitor", ParamType::Str(&[]), ArgDefault::Str("val_loss"), "what is watched: `val_loss`, `val_<metric>`, `train_loss` or `train_<metric>`"),
                    param("patience", ParamType::Int { min: 1 }, ArgDefault::Int(3), "epochs without an improvement before training stops"),
                    param("min_delta", ParamType::Float(Range::NON_NEGATIVE), ArgDefault::Float(0.0), "how much the monitored value must improve to count"),
                    param("mode", ParamType::Str(&["auto", "min", "max"]), ArgDefault::Str("auto"), "`min` (losses, errors) or `max` (accuracy, precision, recall, f1); `auto` chooses by the monitor"),
                    param("restore_best", ParamType::Bool, ArgDefault::Bool(false), "make the final weights the best epoch's"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "stop when the monitored value stops improving; keep the best weights",
                doc: "After every epoch the monitored value is compared with the best so far; when it has not improved by more than `min_delta` for `patience` epochs, training stops and that epoch's row of `metrics.jsonl` says so. Whenever it improves, `best.safetensors` is written (atomically) beside `weights.safetensors`. Monitors of the validation split (`val_..`) need `validation`.",
            } },
            ControlKind::Constant => nullary(OpId::Control(ControlKind::Constant), "constant", "the optimizer's `lr` throughout (the default schedule)", "The learning rate stays the optimizer's `lr`."),
            ControlKind::StepDecay => const { OpSpec {
                id: OpId::Control(ControlKind::StepDecay),
                name: "step",
                params: &[
                    param("every", ParamType::Int { min: 1 }, ArgDefault::Required, "epochs between decays"),
                    param("gamma", ParamType::Float(Range::POSITIVE), ArgDefault::Float(0.1), "the factor applied every `every` epochs"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "a learning-rate schedule: lr · gamma^⌊epoch / every⌋",
                doc: "The rate of a step in epoch `e` (0-based) is `lr · gamma^⌊e / every⌋`.",
            } },
            ControlKind::Exponential => const { OpSpec {
                id: OpId::Control(ControlKind::Exponential),
                name: "exponential",
                params: &[
                    param("gamma", ParamType::Float(Range::POSITIVE), ArgDefault::Required, "the factor per epoch"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "a learning-rate schedule: lr · gamma^epoch",
                doc: "The rate of a step in epoch `e` (0-based) is `lr · gamma^e`.",
            } },
            ControlKind::Cosine => const { OpSpec {
                id: OpId::Control(ControlKind::Cosine),
                name: "cosine",
                params: &[
                    param("min_lr", ParamType::Float(Range::NON_NEGATIVE), ArgDefault::Float(0.0), "the rate at the last step"),
                    param("warmup", ParamType::Float(Range::NON_NEGATIVE), ArgDefault::Float(0.0), "epochs (fractions allowed) of linear warm-up from 0"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "a learning-rate schedule: linear warm-up, then a cosine to `min_lr`",
                doc: "With `S` steps per epoch, `T = epochs·S` steps in all and `W = warmup·S`, step `k` (0-based) runs at `lr·(k+1)/W` while `k < W`, then at `min_lr + (lr − min_lr)·(1 + cos(π·(k − W)/(T − 1 − W)))/2`, which reaches `min_lr` at the last step. Set per step.",
            } },
            ControlKind::Plateau => const { OpSpec {
                id: OpId::Control(ControlKind::Plateau),
                name: "plateau",
                params: &[
                    param("monitor", ParamType::Str(&[]), ArgDefault::Str("val_loss"), "what is watched, as for `early_stopping`"),
                    param("patience", ParamType::Int { min: 1 }, ArgDefault::Int(2), "epochs without an improvement before the rate drops"),
                    param("factor", ParamType::Float(Range::OPEN_FRACTION), ArgDefault::Float(0.1), "the rate is multiplied by this"),
                    param("min_lr", ParamType::Float(Range::NON_NEGATIVE), ArgDefault::Float(0.0), "the rate never drops below this"),
                ],
                shape_rule: "",
                creates: &[],
                summary: "a learning-rate schedule: multiply by `factor` when the monitor stops improving",
                doc: "After each epoch without an improvement of the monitored value for `patience` epochs the rate is multiplied by `factor` (not below `min_lr`), and the count starts again.",
            } },
        }
    }
}

listed_enum! {
    /// A training setting (`batch = 64` inside `train NAME { .. }`).
    Setting {
        Data,
        Loss,
        Optimizer,
        Batch,
        Epochs,
        Metrics,
        Seed,
        Shuffle,
        Init,
        Freeze,
        Validation,
        EarlyStopping,
        CheckpointEvery,
        ClipNorm,
        ClipValue,
        WeightDecay,
        Schedule,
    }
}

impl Setting {
    /// The declaration: name, accepted values, default, example and summary.
    pub fn spec(self) -> SettingSpec {
        match self {
            Setting::Data => SettingSpec {
                id: Setting::Data,
                name: "data",
                values: "idx(..), csv(..), images(..) or npy(..)",
                default: "required",
                example: "data = idx(\"data/mnist\", scale = 1/255)",
                summary: "where the training samples come from",
            },
            Setting::Loss => SettingSpec {
                id: Setting::Loss,
                name: "loss",
                values: "a loss",
                default: "required",
                example: "loss = cross_entropy",
                summary: "what training minimises, as loss(output, target)",
            },
            Setting::Optimizer => SettingSpec {
                id: Setting::Optimizer,
                name: "optimizer",
                values: "an optimizer",
                default: "required",
                example: "optimizer = adam(lr = 0.001)",
                summary: "how parameters are updated",
            },
            Setting::Batch => SettingSpec {
                id: Setting::Batch,
                name: "batch",
                values: "a positive integer",
                default: "32",
                example: "batch = 64",
                summary: "samples per training step",
            },
            Setting::Epochs => SettingSpec {
                id: Setting::Epochs,
                name: "epochs",
                values: "a positive integer",
                default: "1",
                example: "epochs = 5",
                summary: "passes over the training data",
            },
            Setting::Metrics => SettingSpec {
                id: Setting::Metrics,
                name: "metrics",
                values: "[metric, ..]",
                default: "[]",
                example: "metrics = [accuracy]",
                summary: "what is reported after each epoch",
            },
            Setting::Seed => SettingSpec {
                id: Setting::Seed,
                name: "seed",
                values: "an integer ≥ 0",
                default: "0",
                example: "seed = 7",
                summary: "the same seed gives the same weights, shuffles and results",
            },
            Setting::Shuffle => SettingSpec {
                id: Setting::Shuffle,
                name: "shuffle",
                values: "true or false",
                default: "true",
                example: "shuffle = false",
                summary: "shuffle the samples every epoch",
            },
            Setting::Init => SettingSpec {
                id: Setting::Init,
                name: "init",
                values: "a weights file (relative to the .nn file)",
                default: "the initializers",
                example: "init = \"runs/pretrained/weights.safetensors\"",
                summary: "start from trained parameters, matched by name (fine-tuning)",
            },
            Setting::Validation => SettingSpec {
                id: Setting::Validation,
                name: "validation",
                values: "a fraction in (0, 1), or a data source read whole",
                default: "none",
                example: "validation = 0.1",
                summary: "hold out this fraction of the training split (seeded) and report `val_loss` and `val_<metric>` every epoch",
            },
            Setting::EarlyStopping => SettingSpec {
                id: Setting::EarlyStopping,
                name: "early_stopping",
                values: "early_stopping(monitor = .., patience = .., min_delta = .., mode = .., restore_best = ..)",
                default: "none",
                example: "early_stopping = early_stopping(monitor = \"val_loss\", patience = 3)",
                summary: "stop when the monitored value stops improving",
            },
            Setting::CheckpointEvery => SettingSpec {
                id: Setting::CheckpointEvery,
                name: "checkpoint_every",
                values: "a positive integer (epochs)",
                default: "1",
                example: "checkpoint_every = 5",
                summary: "write `checkpoint.safetensors` every this many epochs (and after the last)",
            },
            Setting::Schedule => SettingSpec {
                id: Setting::Schedule,
                name: "schedule",
                values: "constant, step(..), exponential(..), cosine(..) or plateau(..)",
                default: "constant",
                example: "schedule = cosine(min_lr = 1e-5, warmup = 1)",
                summary: "how the learning rate changes during training; logged as `lr` in every epoch's row",
            },
            Setting::ClipNorm => SettingSpec {
                id: Setting::ClipNorm,
                name: "clip_norm",
                values: "a number > 0",
                default: "none",
                example: "clip_norm = 1.0",
                summary: "scale all gradients down so that their global L2 norm is at most this",
            },
            Setting::ClipValue => SettingSpec {
                id: Setting::ClipValue,
                name: "clip_value",
                values: "a number > 0",
                default: "none",
                example: "clip_value = 0.5",
                summary: "clamp every gradient element to [−v, v]",
            },
            Setting::WeightDecay => SettingSpec {
                id: Setting::WeightDecay,
                name: "weight_decay",
                values: "a number ≥ 0",
                default: "0 (adamw: its own `weight_decay`)",
                example: "weight_decay = 1e-4",
                summary: "L2 penalty λ·p added to each gradient (sgd, rmsprop, adam); the decoupled decay of adamw",
            },
            Setting::Freeze => SettingSpec {
                id: Setting::Freeze,
                name: "freeze",
                values: "[\"name\", ..]: parameter names or prefixes",
                default: "[]",
                example: "freeze = [\"conv2d_0\", \"dense_0.w\"]",
                summary: "parameters kept fixed (no gradient, no optimizer state)",
            },
        }
    }
}
