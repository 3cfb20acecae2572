//! Ergonomic, simplifying constructors for kernel IR: `Idx` arithmetic with operators
//! (constant-folded, so printed indices stay short) and small `Expr` helpers.

use std::ops::{Add, Mul, Sub};

use crate::ir::{
    BinOp, BufId, BufferDecl, BufferKind, CmpOp, Expr, Gemm, Idx, Kernel, LocalId, MatRef, Program,
    Size, Stmt, UnOp, VarId,
};

impl From<i64> for Idx {
    fn from(c: i64) -> Idx {
        Idx::Const(c)
    }
}

impl From<usize> for Idx {
    fn from(c: usize) -> Idx {
        Idx::Const(c as i64)
    }
}

impl From<VarId> for Idx {
    fn from(v: VarId) -> Idx {
        Idx::Var(v)
    }
}

impl Add for Idx {
    type Output = Idx;
    fn add(self, rhs: Idx) -> Idx {
        match (self, rhs) {
            (Idx::Const(0), x) | (x, Idx::Const(0)) => x,
            (Idx::Const(a), Idx::Const(b)) => Idx::Const(a + b),
            (a, b) => Idx::Add(Box::new(a), Box::new(b)),
        }
    }
}

impl Sub for Idx {
    type Output = Idx;
    fn sub(self, rhs: Idx) -> Idx {
        match (self, rhs) {
            (x, Idx::Const(0)) => x,
            (Idx::Const(a), Idx::Const(b)) => Idx::Const(a - b),
            (a, b) => Idx::Sub(Box::new(a), Box::new(b)),
        }
    }
}

impl Mul for Idx {
    type Output = Idx;
    fn mul(self, rhs: Idx) -> Idx {
        match (self, rhs) {
            (Idx::Const(0), _) | (_, Idx::Const(0)) => Idx::Const(0),
            (Idx::Const(1), x) | (x, Idx::Const(1)) => x,
            (Idx::Const(a), Idx::Const(b)) => Idx::Const(a * b),
            (a, b) => Idx::Mul(Box::new(a), Box::new(b)),
        }
    }
}

impl Add<i64> for Idx {
    type Output = Idx;
    fn add(self, rhs: i64) -> Idx {
        self + Idx::Const(rhs)
    }
}

impl Mul<i64> for Idx {
    type Output = Idx;
    fn mul(self, rhs: i64) -> Idx {
        self * Idx::Const(rhs)
    }
}

// `div`/`rem` take a constant divisor (what index arithmetic allows), not another `Idx`,
// so they are not the `Div`/`Rem` traits.
#[allow(clippy::should_implement_trait)]
impl Idx {
    pub fn div(self, c: i64) -> Idx {
        match self {
            _ if c == 1 => self,
            Idx::Const(a) => Idx::Const(a.div_euclid(c)),
            x => Idx::Div(Box::new(x), c),
        }
    }

    pub fn rem(self, c: i64) -> Idx {
        match self {
            _ if c == 1 => Idx::Const(0),
            Idx::Const(a) => Idx::Const(a.rem_euclid(c)),
            x => Idx::Rem(Box::new(x), c),
        }
    }
}

/// `buf[index]`.
pub fn load(buf: BufId, index: Idx) -> Expr {
    Expr::Load { buf, index }
}

pub fn local(l: LocalId) -> Expr {
    Expr::Local(l)
}

pub fn constant(c: f32) -> Expr {
    Expr::Const(c)
}

pub fn unary(op: UnOp, a: Expr) -> Expr {
    Expr::Unary(op, Box::new(a))
}

pub fn binary(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary(op, Box::new(a), Box::new(b))
}

pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
    Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
}

/// `if a op b { then } else { otherwise }`.
pub fn select(op: CmpOp, a: Expr, b: Expr, then: Expr, otherwise: Expr) -> Expr {
    Expr::Select {
        op,
        a: Box::new(a),
        b: Box::new(b),
        then: Box::new(then),
        otherwise: Box::new(otherwise),
    }
}

/// A buffer declaration.
pub fn decl(name: &str, len: Size, kind: BufferKind) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        len,
        kind,
    }
}

/// A kernel with `vars` loop variables and `locals` locals, without a note.
pub fn kernel(name: &str, params: Vec<BufId>, body: Vec<Stmt>, vars: u32, locals: u32) -> Kernel {
    Kernel {
        name: name.into(),
        params,
        body,
        num_vars: vars,
        num_locals: locals,
        note: String::new(),
        gpu: None,
    }
}

/// A program whose arena is not planned yet (empty).
pub fn program(name: &str, buffers: Vec<BufferDecl>, kernels: Vec<Kernel>) -> Program {
    Program {
        name: name.into(),
        buffers,
        kernels,
        arena: Size::default(),
    }
}

/// `for var in 0..extent { body }`, `parallel` or not.
pub fn for_(var: VarId, extent: impl Into<Idx>, parallel: bool, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        extent: extent.into(),
        body,
        parallel,
    }
}

/// `buf[index] = value`.
pub fn store(buf: BufId, index: Idx, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
}

/// `local = value`.
pub fn assign(local: LocalId, value: Expr) -> Stmt {
    Stmt::Assign { local, value }
}

/// The matrix of `buf` whose element `(row, col)` is at `offset + row·rs + col·cs`.
pub fn matrix(
    buf: BufId,
    offset: impl Into<Idx>,
    rs: impl Into<Idx>,
    cs: impl Into<Idx>,
) -> MatRef {
    MatRef {
        buf,
        offset: offset.into(),
        row_stride: rs.into(),
        col_stride: cs.into(),
    }
}

/// `C = A·B` of an `m×k` and a `k×n` matrix (alpha 1, beta 0, one product); other
/// scalings and batches by struct update (`Gemm { beta: 1.0, ..matmul(…) }`).
pub fn matmul(
    m: impl Into<Idx>,
    n: impl Into<Idx>,
    k: impl Into<Idx>,
    a: MatRef,
    b: MatRef,
    c: MatRef,
) -> Gemm {
    Gemm {
        m: m.into(),
        n: n.into(),
        k: k.into(),
        a,
        b,
        c,
        alpha: 1.0,
        beta: 0.0,
        batch: None,
        windows: None,
    }
}
