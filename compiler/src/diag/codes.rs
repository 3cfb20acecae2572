//! Stable error codes. A code, once published, keeps its meaning: add new codes, never
//! renumber. `E01xx` syntax, `E02xx` names and arguments, `E03xx` shapes, `E04xx` training,
//! `E05xx` export.

use std::fmt;

macro_rules! codes {
    ($($variant:ident = $text:literal : $summary:literal,)*) => {
        /// A stable error code, printed as `nnc::E0101`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($variant,)* }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text,)* }
            }

            /// One line saying what class of error the code stands for.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary,)* }
            }
        }
    };
}

codes! {
    // Syntax.
    UnexpectedToken = "E0101": "unexpected token",
    UnclosedDelimiter = "E0102": "unclosed brace, bracket or parenthesis",
    NumberForName = "E0103": "a number where a name belongs",
    UnterminatedString = "E0104": "unterminated string",
    TooDeep = "E0105": "nesting deeper than the limit",
    IntegerTooLarge = "E0106": "integer literal too large",
    InvalidUtf8 = "E0107": "file is not valid UTF-8",
    UnmatchedClose = "E0108": "closing delimiter without an opening one",
    InvalidCharacter = "E0109": "character that cannot start a token",
    // Names and arguments.
    UnknownFunction = "E0201": "unknown layer or function",
    UndefinedName = "E0202": "undefined name",
    Rebound = "E0203": "name defined twice",
    UnknownArgument = "E0204": "unknown argument name",
    MissingArgument = "E0205": "missing required argument",
    ArgumentOrder = "E0206": "arguments in the wrong order, repeated, or too many",
    InvalidArgument = "E0207": "argument of the wrong type or out of range",
    UnknownModel = "E0208": "train block names an unknown model",
    ModelStructure = "E0209": "model without exactly one output or without an input",
    UnknownSetting = "E0210": "unknown training setting",
    DuplicateSetting = "E0211": "training setting given twice",
    NotATensor = "E0212": "value used where a tensor is expected, or the reverse",
    DuplicateItem = "E0213": "two models with the same name",
    NoModel = "E0214": "file that defines no model",
    // Shapes.
    DenseRank = "E0301": "`dense` on an input that is not a vector",
    MatMulMismatch = "E0302": "`@` with mismatched inner dimensions",
    Broadcast = "E0303": "shapes that do not broadcast",
    PoolTooLarge = "E0304": "pooling or convolution window larger than its input",
    InvalidAxis = "E0305": "axis out of range",
    ReshapeMismatch = "E0306": "reshape to a different number of elements",
    ShapeOverflow = "E0307": "shape whose element count overflows",
    RankMismatch = "E0308": "tensor of the wrong rank",
    EmptyShape = "E0309": "shape with a zero dimension",
    Groups = "E0310": "convolution groups that do not divide the channels or the filters",
    MemoryLimit = "E0311": "model that does not fit in memory at its batch size",
    // Training.
    NoTrainBlock = "E0401": "no `train` block",
    MissingSetting = "E0402": "missing required training setting",
    LossOutputMismatch = "E0403": "loss incompatible with the model output",
    DataShapeMismatch = "E0404": "data samples differ from the model input",
    NonPositive = "E0405": "setting that must be positive",
    AmbiguousTrain = "E0406": "several `train` blocks and none chosen",
    Data = "E0407": "unreadable or malformed data file",
    MetricLossMismatch = "E0408": "metric that does not fit the loss",
    UnknownParameter = "E0409": "`freeze` or `init` names no parameter of the model",
    DuplicateTrain = "E0410": "two `train` blocks for one model",
    NothingToTrain = "E0411": "trained model without parameters",
    DuplicateMetric = "E0412": "metric listed twice",
    // Export.
    NotExportable = "E0501": "layer or function the ONNX export does not cover",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
