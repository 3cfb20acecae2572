//! The kernel IR: loop nests over flat f32 buffers.
//!
//! A [`Program`] is the whole training (or evaluation) step: global buffers and kernels
//! run in order. A kernel is straight-line statements and loops; loop variables and
//! index arithmetic are `i64`, values are `f32`, and the only mutable scalars are
//! [`Stmt::Assign`]ed locals (accumulators). Matrix products are one [`Stmt::Gemm`]
//! statement: the CPU backend calls a tuned library for it; the compiler's GPU schedule
//! rewrites it into a tiled kernel. Everything a backend needs is explicit here; backends
//! decide nothing.
//!
//! GPU kernels ([`Kernel::gpu`] set by the GPU schedule) are written for one thread of a
//! grid: they read [`Idx::Thread`] and [`Idx::Block`], and may use block-shared arrays
//! ([`Expr::SharedLoad`], [`Stmt::SharedStore`]), [`Stmt::If`], [`Stmt::Barrier`] and
//! [`Expr::ShuffleXor`]; they hold no `Gemm` and no parallel loop. CPU kernels use none
//! of these. [`crate::gpu`] simulates GPU kernels.
//!
//! Invariants (checked by [`Program::validate`], relied on by backends):
//! - every `BufId` is an index into `Program::buffers` and is listed in the kernel's
//!   `params`; every `VarId` is bound by an enclosing `Loop`; every `LocalId` is below
//!   `Kernel::num_locals` and assigned before it is read (backends zero-initialise).
//! - a `parallel` loop is the only top-level statement of its kernel, and its iterations
//!   write disjoint elements: the runtime may split its range between threads and run the
//!   kernel once per part.

use std::fmt;

/// Index of a buffer in [`Program::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

/// A loop variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u32);

/// A mutable scalar local of one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub u32);

/// Index of a block-shared array in [`GpuLaunch::shared`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedId(pub u32);

/// An element count `per_batch · N + fixed`, `N` being the runtime batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Size {
    pub per_batch: usize,
    pub fixed: usize,
}

impl Size {
    pub fn fixed(n: usize) -> Size {
        Size {
            per_batch: 0,
            fixed: n,
        }
    }

    pub fn per_batch(n: usize) -> Size {
        Size {
            per_batch: n,
            fixed: 0,
        }
    }

    /// Elements for batch size `n` (saturating; sizes are validated when compiled).
    pub fn resolve(self, n: usize) -> usize {
        self.per_batch.saturating_mul(n).saturating_add(self.fixed)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.per_batch, self.fixed) {
            (0, c) => write!(f, "{c}"),
            (1, 0) => write!(f, "N"),
            (p, 0) => write!(f, "{p}*N"),
            (1, c) => write!(f, "N+{c}"),
            (p, c) => write!(f, "{p}*N+{c}"),
        }
    }
}

/// What a buffer is to the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Given by the runtime, read only (the batch, labels).
    Input,
    /// Given by the runtime, read and updated in place (parameters, optimizer state).
    InOut,
    /// Written by the step and read by the runtime (loss, model output).
    Output,
    /// Scratch space inside the step; lives in the arena at `offset`.
    Temp { offset: Size },
}

/// A global f32 buffer of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferDecl {
    pub name: String,
    pub len: Size,
    pub kind: BufferKind,
}

/// Integer index arithmetic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Idx {
    Const(i64),
    Var(VarId),
    /// The runtime batch size.
    N,
    Add(Box<Idx>, Box<Idx>),
    Sub(Box<Idx>, Box<Idx>),
    Mul(Box<Idx>, Box<Idx>),
    /// Floor division by a positive constant.
    Div(Box<Idx>, i64),
    /// Remainder of a non-negative value by a positive constant.
    Rem(Box<Idx>, i64),
    Min(Box<Idx>, Box<Idx>),
    Max(Box<Idx>, Box<Idx>),
    /// The thread's index in its block, `0..threads` (`threadIdx.x`; GPU kernels only).
    Thread,
    /// The block's index along grid axis 0, 1 or 2 (`blockIdx.x/y/z`; GPU kernels only).
    Block(u8),
}

impl Idx {
    /// Whether this index reads [`Idx::Thread`] or [`Idx::Block`].
    pub fn uses_gpu_indices(&self) -> bool {
        match self {
            Idx::Thread | Idx::Block(_) => true,
            Idx::Const(_) | Idx::N | Idx::Var(_) => false,
            Idx::Div(a, _) | Idx::Rem(a, _) => a.uses_gpu_indices(),
            Idx::Add(a, b) | Idx::Sub(a, b) | Idx::Mul(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
                a.uses_gpu_indices() || b.uses_gpu_indices()
            }
        }
    }

    /// How this index changes when loop variable `var` grows by one, if that is a
    /// constant (`None` for GPU indices, which are not loop variables).
    pub fn stride(&self, var: VarId) -> Option<i64> {
        match self {
            Idx::Const(_) | Idx::N => Some(0),
            Idx::Thread | Idx::Block(_) => Some(0),
            Idx::Var(v) => Some(i64::from(*v == var)),
            Idx::Add(a, b) => a.stride(var)?.checked_add(b.stride(var)?),
            Idx::Sub(a, b) => a.stride(var)?.checked_sub(b.stride(var)?),
            Idx::Mul(a, b) => match (a.stride(var)?, b.stride(var)?, &**a, &**b) {
                (0, 0, _, _) => Some(0),
                (s, 0, _, Idx::Const(c)) | (0, s, Idx::Const(c), _) => s.checked_mul(*c),
                _ => None,
            },
            Idx::Div(a, _) | Idx::Rem(a, _) => (a.stride(var)? == 0).then_some(0),
            Idx::Min(a, b) | Idx::Max(a, b) => {
                (a.stride(var)? == 0 && b.stride(var)? == 0).then_some(0)
            }
        }
    }

    /// This index with every loop variable `v` replaced by `f(v)`.
    pub fn map_vars(&self, f: &impl Fn(VarId) -> Idx) -> Idx {
        self.map_leaves(&|leaf| match leaf {
            Idx::Var(v) => Some(f(*v)),
            _ => None,
        })
    }

    /// This index with every leaf (constant, variable, `N`, GPU index) for which `f`
    /// gives a replacement replaced by it.
    pub fn map_leaves(&self, f: &impl Fn(&Idx) -> Option<Idx>) -> Idx {
        let m = |x: &Idx| Box::new(x.map_leaves(f));
        match self {
            Idx::Var(_) | Idx::Const(_) | Idx::N | Idx::Thread | Idx::Block(_) => {
                f(self).unwrap_or_else(|| self.clone())
            }
            Idx::Add(a, b) => Idx::Add(m(a), m(b)),
            Idx::Sub(a, b) => Idx::Sub(m(a), m(b)),
            Idx::Mul(a, b) => Idx::Mul(m(a), m(b)),
            Idx::Div(a, c) => Idx::Div(m(a), *c),
            Idx::Rem(a, c) => Idx::Rem(m(a), *c),
            Idx::Min(a, b) => Idx::Min(m(a), m(b)),
            Idx::Max(a, b) => Idx::Max(m(a), m(b)),
        }
    }
}

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

/// `a op b` on indices: one conjunct of a [`Stmt::If`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cond {
    pub a: Idx,
    pub op: CmpOp,
    pub b: Idx,
}

/// Scalar f32 expressions.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(f32),
    Load {
        buf: BufId,
        index: Idx,
    },
    Local(LocalId),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `a * b + c`, fused (one rounding).
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `if a op b { then } else { otherwise }`.
    Select {
        op: CmpOp,
        a: Box<Expr>,
        b: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// An index converted to f32.
    FromIdx(Idx),
    /// Uniform in `[0, 1)` from [`rand_uniform`]`(seed, key, step, counter)`, where
    /// `step` is the f32 value of `step` truncated to an integer.
    Rand {
        seed: u64,
        key: u64,
        step: Box<Expr>,
        counter: Idx,
    },
    /// Element `index` of a block-shared array (GPU kernels only).
    SharedLoad {
        buf: SharedId,
        index: Idx,
    },
    /// The value of `local` in the thread whose lane is this thread's lane XOR `lanes`,
    /// within the same warp of 32 (`shfl.sync.bfly`; GPU kernels only, every lane of the
    /// warp must execute it together).
    ShuffleXor {
        local: LocalId,
        lanes: u32,
    },
}

/// `C = alpha·A·B + beta·C` with `A: [m, k]`, `B: [k, n]`, `C: [m, n]`, each operand
/// addressed as `buf[offset + row·row_stride + col·col_stride]` (so transposes are
/// strides). With `batch = Some((count, [sa, sb, sc]))`, `count` products with the
/// operands' offsets advanced by `sa`, `sb`, `sc` each.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    pub m: Idx,
    pub n: Idx,
    pub k: Idx,
    pub a: MatRef,
    pub b: MatRef,
    pub c: MatRef,
    pub alpha: f32,
    pub beta: f32,
    pub batch: Option<(Idx, [Idx; 3])>,
}

/// A strided matrix inside a buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct MatRef {
    pub buf: BufId,
    pub offset: Idx,
    pub row_stride: Idx,
    pub col_stride: Idx,
}

/// Statements. (`Gemm` is the large variant; kernels hold a handful of statements, so
/// boxing it would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in 0..extent { body }`.
    Loop {
        var: VarId,
        extent: Idx,
        body: Vec<Stmt>,
        parallel: bool,
    },
    Store {
        buf: BufId,
        index: Idx,
        value: Expr,
    },
    Assign {
        local: LocalId,
        value: Expr,
    },
    Gemm(Gemm),
    /// `if conds[0] && conds[1] && … { body }` (GPU kernels only).
    If {
        conds: Vec<Cond>,
        body: Vec<Stmt>,
    },
    /// `shared[index] = value` (GPU kernels only).
    SharedStore {
        buf: SharedId,
        index: Idx,
        value: Expr,
    },
    /// Every thread of the block waits here until all have arrived; shared (and global)
    /// memory written before it is visible to the whole block after it (`bar.sync 0`;
    /// GPU kernels only, never inside code some threads of the block skip).
    Barrier,
}

impl Expr {
    /// Calls `f` on this expression and every subexpression, parents first.
    pub fn visit(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Const(_)
            | Expr::Local(_)
            | Expr::Load { .. }
            | Expr::FromIdx(_)
            | Expr::SharedLoad { .. }
            | Expr::ShuffleXor { .. } => {}
            Expr::Unary(_, a) => a.visit(f),
            Expr::Binary(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Fma(a, b, c) => {
                a.visit(f);
                b.visit(f);
                c.visit(f);
            }
            Expr::Select {
                a,
                b,
                then,
                otherwise,
                ..
            } => {
                for x in [a, b, then, otherwise] {
                    x.visit(f);
                }
            }
            Expr::Rand { step, .. } => step.visit(f),
        }
    }

    /// Calls `f` on the buffer and index of every load in this expression.
    pub fn for_each_load(&self, f: &mut impl FnMut(BufId, &Idx)) {
        self.visit(&mut |e| {
            if let Expr::Load { buf, index } = e {
                f(*buf, index);
            }
        });
    }

    /// Whether every load in this expression satisfies `ok(buffer, index)`.
    pub fn all_loads(&self, ok: impl Fn(BufId, &Idx) -> bool) -> bool {
        let mut all = true;
        self.for_each_load(&mut |b, i| all &= ok(b, i));
        all
    }

    /// Whether this expression loads from any buffer.
    pub fn loads_any(&self) -> bool {
        !self.all_loads(|_, _| false)
    }

    /// Calls `f` on every local this expression reads (its own or, through a shuffle,
    /// another lane's).
    pub fn for_each_local(&self, f: &mut impl FnMut(LocalId)) {
        self.visit(&mut |e| {
            if let Expr::Local(l) | Expr::ShuffleXor { local: l, .. } = e {
                f(*l);
            }
        });
    }

    /// This expression with every index `i` in it replaced by `f(i)`.
    pub fn map_indices(&self, f: &impl Fn(&Idx) -> Idx) -> Expr {
        let m = |x: &Expr| Box::new(x.map_indices(f));
        match self {
            Expr::Const(_) | Expr::Local(_) | Expr::ShuffleXor { .. } => self.clone(),
            Expr::Load { buf, index } => Expr::Load {
                buf: *buf,
                index: f(index),
            },
            Expr::SharedLoad { buf, index } => Expr::SharedLoad {
                buf: *buf,
                index: f(index),
            },
            Expr::FromIdx(i) => Expr::FromIdx(f(i)),
            Expr::Unary(op, a) => Expr::Unary(*op, m(a)),
            Expr::Binary(op, a, b) => Expr::Binary(*op, m(a), m(b)),
            Expr::Fma(a, b, c) => Expr::Fma(m(a), m(b), m(c)),
            Expr::Select {
                op,
                a,
                b,
                then,
                otherwise,
            } => Expr::Select {
                op: *op,
                a: m(a),
                b: m(b),
                then: m(then),
                otherwise: m(otherwise),
            },
            Expr::Rand {
                seed,
                key,
                step,
                counter,
            } => Expr::Rand {
                seed: *seed,
                key: *key,
                step: m(step),
                counter: f(counter),
            },
        }
    }
}

impl Gemm {
    /// This product with every index in it (sizes, offsets, strides) replaced by `f(i)`.
    pub fn map_indices(&self, f: &impl Fn(&Idx) -> Idx) -> Gemm {
        let m = |r: &MatRef| MatRef {
            buf: r.buf,
            offset: f(&r.offset),
            row_stride: f(&r.row_stride),
            col_stride: f(&r.col_stride),
        };
        Gemm {
            m: f(&self.m),
            n: f(&self.n),
            k: f(&self.k),
            a: m(&self.a),
            b: m(&self.b),
            c: m(&self.c),
            alpha: self.alpha,
            beta: self.beta,
            batch: self
                .batch
                .as_ref()
                .map(|(count, strides)| (f(count), strides.clone().map(|s| f(&s)))),
        }
    }
}

impl Cond {
    /// This condition with both sides replaced by `f(side)`.
    pub fn map(&self, f: impl Fn(&Idx) -> Idx) -> Cond {
        Cond {
            a: f(&self.a),
            op: self.op,
            b: f(&self.b),
        }
    }
}

impl Stmt {
    /// Calls `f` on this statement and every statement nested in it, parents first.
    pub fn visit(&self, f: &mut impl FnMut(&Stmt)) {
        f(self);
        if let Stmt::Loop { body, .. } | Stmt::If { body, .. } = self {
            body.iter().for_each(|s| s.visit(f));
        }
    }

    /// Calls `f` on the value of every store, assignment and shared store in this
    /// statement, nested ones included.
    pub fn for_each_value(&self, f: &mut impl FnMut(&Expr)) {
        self.visit(&mut |s| {
            if let Stmt::Store { value, .. }
            | Stmt::Assign { value, .. }
            | Stmt::SharedStore { value, .. } = s
            {
                f(value);
            }
        });
    }

    /// This statement with every index in it (nested loops included) replaced by `f(i)`.
    pub fn map_indices(&self, f: &impl Fn(&Idx) -> Idx) -> Stmt {
        match self {
            Stmt::Loop {
                var,
                extent,
                body,
                parallel,
            } => Stmt::Loop {
                var: *var,
                extent: f(extent),
                body: body.iter().map(|s| s.map_indices(f)).collect(),
                parallel: *parallel,
            },
            Stmt::Store { buf, index, value } => Stmt::Store {
                buf: *buf,
                index: f(index),
                value: value.map_indices(f),
            },
            Stmt::Assign { local, value } => Stmt::Assign {
                local: *local,
                value: value.map_indices(f),
            },
            Stmt::Gemm(g) => Stmt::Gemm(g.map_indices(f)),
            Stmt::If { conds, body } => Stmt::If {
                conds: conds.iter().map(|c| c.map(f)).collect(),
                body: body.iter().map(|s| s.map_indices(f)).collect(),
            },
            Stmt::SharedStore { buf, index, value } => Stmt::SharedStore {
                buf: *buf,
                index: f(index),
                value: value.map_indices(f),
            },
            Stmt::Barrier => Stmt::Barrier,
        }
    }
}

/// A block-shared f32 array of a GPU kernel (uninitialised when the block starts).
#[derive(Clone, Debug, PartialEq)]
pub struct SharedDecl {
    pub name: String,
    pub len: u32,
}

/// How a GPU kernel is launched: `threads` threads per block (a multiple of 32, at most
/// 1024) on a grid of `grid[0] × grid[1] × grid[2]` blocks (indices in `N`), each block
/// with its own `shared` arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuLaunch {
    pub threads: u32,
    pub grid: [Idx; 3],
    pub shared: Vec<SharedDecl>,
}

/// One kernel: the buffers it touches and its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    /// Buffers this kernel reads or writes, in a fixed order (the backend's argument
    /// order).
    pub params: Vec<BufId>,
    pub body: Vec<Stmt>,
    pub num_vars: u32,
    pub num_locals: u32,
    /// What the kernel does, for `nnc explain` and the printer's header comment.
    pub note: String,
    /// Set by the GPU schedule: the kernel is written for one thread of a grid (it may
    /// use [`Idx::Thread`], [`Idx::Block`], shared arrays, barriers and shuffles); `None`
    /// for the CPU-shaped kernels every other stage sees.
    pub gpu: Option<GpuLaunch>,
}

/// A whole step: buffers and kernels, run in order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub name: String,
    pub buffers: Vec<BufferDecl>,
    pub kernels: Vec<Kernel>,
    /// Size of the scratch arena holding every `Temp` buffer.
    pub arena: Size,
}

/// The counter-based random number of [`Expr::Rand`]. It must equal the graph IR's
/// `rand` (`nnc::ir::ops::source::counter_uniform`), which is the oracle: each word is
/// folded in with a multiple of the golden-ratio increment and mixed with the splitmix64
/// finaliser; the top 24 bits become the fraction. Pure, so every backend and the
/// interpreter agree bit for bit (the compiler's lowering tests check the equality).
pub fn rand_uniform(seed: u64, key: u64, step: u64, counter: u64) -> f32 {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = mix64(seed.wrapping_add(GOLDEN));
    h = mix64(h ^ key.wrapping_add(GOLDEN.wrapping_mul(2)));
    h = mix64(h ^ step.wrapping_add(GOLDEN.wrapping_mul(3)));
    h = mix64(h ^ counter.wrapping_add(GOLDEN.wrapping_mul(4)));
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// The splitmix64 finaliser: a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Why a program breaks an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidProgram(pub String);

impl fmt::Display for InvalidProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid kernel program: {}", self.0)
    }
}

impl std::error::Error for InvalidProgram {}

impl Program {
    /// Checks the invariants listed in the module doc.
    pub fn validate(&self) -> Result<(), InvalidProgram> {
        for k in &self.kernels {
            let mut bound = Vec::new();
            let mut parallel = 0;
            for s in &k.body {
                if let Stmt::Loop { parallel: true, .. } = s {
                    parallel += 1;
                }
                self.validate_stmt(k, s, &mut bound, true)?;
            }
            if parallel > 0 && k.body.len() > 1 {
                return Err(InvalidProgram(format!(
                    "kernel `{}` has a parallel loop beside other top-level statements",
                    k.name
                )));
            }
            if let Some(g) = &k.gpu {
                let err = |m: String| Err(InvalidProgram(format!("kernel `{}`: {m}", k.name)));
                if g.threads == 0 || g.threads % 32 != 0 || g.threads > 1024 {
                    return err(format!(
                        "{} threads per block (a multiple of 32, at most 1024)",
                        g.threads
                    ));
                }
                for i in &g.grid {
                    self.validate_idx(k, i, &[])?;
                    if i.uses_gpu_indices() {
                        return err("the grid size depends on a thread or block index".into());
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_gpu(&self, k: &Kernel, what: &str) -> Result<(), InvalidProgram> {
        if k.gpu.is_none() {
            return Err(InvalidProgram(format!(
                "kernel `{}` uses {what} but is not a GPU kernel",
                k.name
            )));
        }
        Ok(())
    }

    fn validate_shared(&self, k: &Kernel, buf: SharedId) -> Result<(), InvalidProgram> {
        self.validate_gpu(k, "shared memory")?;
        match &k.gpu {
            Some(g) if (buf.0 as usize) < g.shared.len() => Ok(()),
            _ => Err(InvalidProgram(format!(
                "kernel `{}` uses shared array s{} it does not declare",
                k.name, buf.0
            ))),
        }
    }

    fn validate_stmt(
        &self,
        k: &Kernel,
        s: &Stmt,
        bound: &mut Vec<VarId>,
        top: bool,
    ) -> Result<(), InvalidProgram> {
        let err = |m: String| Err(InvalidProgram(format!("kernel `{}`: {m}", k.name)));
        match s {
            Stmt::Loop {
                var,
                extent,
                body,
                parallel,
            } => {
                if *parallel && !top {
                    return err(format!("parallel loop {var:?} is not at the top level"));
                }
                if *parallel && k.gpu.is_some() {
                    return err("a GPU kernel has a parallel loop (threads replace it)".into());
                }
                if var.0 >= k.num_vars || bound.contains(var) {
                    return err(format!("loop variable {var:?} is out of range or rebound"));
                }
                self.validate_idx(k, extent, bound)?;
                bound.push(*var);
                for s in body {
                    self.validate_stmt(k, s, bound, false)?;
                }
                bound.pop();
            }
            Stmt::Store { buf, index, value } => {
                self.validate_buf(k, *buf)?;
                self.validate_idx(k, index, bound)?;
                self.validate_expr(k, value, bound)?;
            }
            Stmt::Assign { local, value } => {
                if local.0 >= k.num_locals {
                    return err(format!("local {local:?} out of range"));
                }
                self.validate_expr(k, value, bound)?;
            }
            Stmt::If { conds, body } => {
                self.validate_gpu(k, "`if`")?;
                for c in conds {
                    self.validate_idx(k, &c.a, bound)?;
                    self.validate_idx(k, &c.b, bound)?;
                }
                for s in body {
                    self.validate_stmt(k, s, bound, false)?;
                }
            }
            Stmt::SharedStore { buf, index, value } => {
                self.validate_shared(k, *buf)?;
                self.validate_idx(k, index, bound)?;
                self.validate_expr(k, value, bound)?;
            }
            Stmt::Barrier => self.validate_gpu(k, "a barrier")?,
            Stmt::Gemm(_) if k.gpu.is_some() => {
                return err("a GPU kernel holds a `gemm` (the GPU schedule tiles it)".into())
            }
            Stmt::Gemm(g) => {
                for i in [&g.m, &g.n, &g.k] {
                    self.validate_idx(k, i, bound)?;
                }
                for r in [&g.a, &g.b, &g.c] {
                    self.validate_buf(k, r.buf)?;
                    for i in [&r.offset, &r.row_stride, &r.col_stride] {
                        self.validate_idx(k, i, bound)?;
                    }
                }
                if let Some((count, strides)) = &g.batch {
                    self.validate_idx(k, count, bound)?;
                    for i in strides {
                        self.validate_idx(k, i, bound)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_buf(&self, k: &Kernel, buf: BufId) -> Result<(), InvalidProgram> {
        if buf.0 as usize >= self.buffers.len() || !k.params.contains(&buf) {
            return Err(InvalidProgram(format!(
                "kernel `{}` uses buffer {} it does not list",
                k.name, buf.0
            )));
        }
        Ok(())
    }

    fn validate_idx(&self, k: &Kernel, i: &Idx, bound: &[VarId]) -> Result<(), InvalidProgram> {
        match i {
            Idx::Const(_) | Idx::N => Ok(()),
            Idx::Thread => self.validate_gpu(k, "a thread index"),
            Idx::Block(axis) if *axis < 3 => self.validate_gpu(k, "a block index"),
            Idx::Block(axis) => Err(InvalidProgram(format!(
                "kernel `{}` reads block index axis {axis} (axes are 0, 1, 2)",
                k.name
            ))),
            Idx::Var(v) if bound.contains(v) => Ok(()),
            Idx::Var(v) => Err(InvalidProgram(format!(
                "kernel `{}` reads unbound loop variable {v:?}",
                k.name
            ))),
            Idx::Add(a, b) | Idx::Sub(a, b) | Idx::Mul(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
                self.validate_idx(k, a, bound)?;
                self.validate_idx(k, b, bound)
            }
            Idx::Div(a, c) | Idx::Rem(a, c) => {
                if *c <= 0 {
                    return Err(InvalidProgram(format!(
                        "kernel `{}` divides an index by {c}",
                        k.name
                    )));
                }
                self.validate_idx(k, a, bound)
            }
        }
    }

    fn validate_expr(&self, k: &Kernel, e: &Expr, bound: &[VarId]) -> Result<(), InvalidProgram> {
        match e {
            Expr::Const(_) => Ok(()),
            Expr::Local(l) if l.0 < k.num_locals => Ok(()),
            Expr::Local(l) => Err(InvalidProgram(format!(
                "kernel `{}` reads local {l:?} out of range",
                k.name
            ))),
            Expr::Load { buf, index } => {
                self.validate_buf(k, *buf)?;
                self.validate_idx(k, index, bound)
            }
            Expr::Unary(_, a) => self.validate_expr(k, a, bound),
            Expr::Binary(_, a, b) => {
                self.validate_expr(k, a, bound)?;
                self.validate_expr(k, b, bound)
            }
            Expr::Fma(a, b, c) => {
                self.validate_expr(k, a, bound)?;
                self.validate_expr(k, b, bound)?;
                self.validate_expr(k, c, bound)
            }
            Expr::Select {
                a,
                b,
                then,
                otherwise,
                ..
            } => {
                for x in [a, b, then, otherwise] {
                    self.validate_expr(k, x, bound)?;
                }
                Ok(())
            }
            Expr::FromIdx(i) => self.validate_idx(k, i, bound),
            Expr::Rand { step, counter, .. } => {
                self.validate_expr(k, step, bound)?;
                self.validate_idx(k, counter, bound)
            }
            Expr::SharedLoad { buf, index } => {
                self.validate_shared(k, *buf)?;
                self.validate_idx(k, index, bound)
            }
            Expr::ShuffleXor { local, lanes } => {
                self.validate_gpu(k, "a warp shuffle")?;
                if local.0 >= k.num_locals || *lanes == 0 || *lanes >= 32 {
                    return Err(InvalidProgram(format!(
                        "kernel `{}`: shuffle of local {local:?} with lane mask {lanes} \
                         (the mask must be in 1..32)",
                        k.name
                    )));
                }
                Ok(())
            }
        }
    }
}
