//! The scalar operators of the kernel IR and their reference semantics: unary and binary
//! f32 functions, comparisons, and the counter-based random number of `Expr::Rand`.

/// Elementwise functions of one f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Abs,
    Sqrt,
    Exp,
    Log,
    Tanh,
    /// `1 / x`.
    Recip,
    Floor,
}

impl UnOp {
    pub fn name(self) -> &'static str {
        match self {
            UnOp::Neg => "neg",
            UnOp::Abs => "abs",
            UnOp::Sqrt => "sqrt",
            UnOp::Exp => "exp",
            UnOp::Log => "log",
            UnOp::Tanh => "tanh",
            UnOp::Recip => "recip",
            UnOp::Floor => "floor",
        }
    }

    /// The reference semantics (f32 in, f32 out).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnOp::Neg => -x,
            UnOp::Abs => x.abs(),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Exp => x.exp(),
            UnOp::Log => x.ln(),
            UnOp::Tanh => x.tanh(),
            UnOp::Recip => 1.0 / x,
            UnOp::Floor => x.floor(),
        }
    }
}

/// Elementwise functions of two f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// `a^b`.
    Pow,
}

impl BinOp {
    pub fn name(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Max => "max",
            BinOp::Min => "min",
            BinOp::Pow => "pow",
        }
    }

    /// Infix operators print between their operands; the rest as calls.
    pub fn is_infix(self) -> bool {
        matches!(self, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div)
    }

    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Max => a.max(b),
            BinOp::Min => a.min(b),
            BinOp::Pow => a.powf(b),
        }
    }
}

/// Comparisons; NaN compares false except with `Ne`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CmpOp {
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    pub fn apply(self, a: f32, b: f32) -> bool {
        self.compare(a, b)
    }

    /// The same comparison of two indices.
    pub fn apply_i64(self, a: i64, b: i64) -> bool {
        self.compare(a, b)
    }

    fn compare<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }
}

/// The counter-based random number of [`Expr::Rand`](super::Expr::Rand). It must equal the
/// graph IR's `rand` (`nnc::ir::ops::source::counter_uniform`), which is the oracle: each
/// word is folded in with a multiple of the golden-ratio increment and mixed with the
/// splitmix64 finaliser; the top 24 bits become the fraction. Pure, so every backend and the
/// interpreter agree bit for bit (the compiler's lowering tests check the equality).
pub fn rand_uniform(seed: u64, key: u64, step: u64, counter: u64) -> f32 {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = mix64(seed.wrapping_add(GOLDEN));
    h = mix64(h ^ key.wrapping_add(GOLDEN.wrapping_mul(2)));
    h = mix64(h ^ step.wrapping_add(GOLDEN.wrapping_mul(3)));
    h = mix64(h ^ counter.wrapping_add(GOLDEN.wrapping_mul(4)));
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// The value of an [`Expr::Rand`](super::Expr::Rand) whose `step` and `counter` evaluate
/// to `step` and `counter`: the step truncated to an integer (a negative or NaN step
/// counts as 0), the counter's bits as unsigned.
pub fn rand_value(seed: u64, key: u64, step: f32, counter: i64) -> f32 {
    rand_uniform(seed, key, step.max(0.0) as u64, counter as u64)
}

/// The splitmix64 finaliser: a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
