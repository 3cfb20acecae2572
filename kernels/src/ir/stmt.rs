//! Statements of the kernel IR (loops, stores, assignments, matrix products and the
//! GPU-only forms) and their walkers.

use super::{BufId, CmpOp, Expr, Idx, LocalId, SharedId, VarId, Windows};

/// `a op b` on indices: one conjunct of a [`Stmt::If`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cond {
    pub a: Idx,
    pub op: CmpOp,
    pub b: Idx,
}

/// `C = alpha·A·B + beta·C` with `A: [m, k]`, `B: [k, n]`, `C: [m, n]`, each operand
/// addressed as `buf[offset + row·row_stride + col·col_stride]` (so transposes are
/// strides). With `batch = Some((count, [sa, sb, sc]))`, `count` products with the
/// operands' offsets advanced by `sa`, `sb`, `sc` each.
///
/// With `windows = Some(w)`, `A` is not strided: it is the windows view `w` of the image
/// buffer `a.buf` starting at `a.offset` (an implicit GEMM; `a`'s strides are unused and
/// `batch` is `None`).
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
    pub windows: Option<Windows>,
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
            windows: self.windows.as_ref().map(|w| w.map_first(f)),
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
        for s in self.body().unwrap_or_default() {
            s.visit(f);
        }
    }

    /// The statements a loop or an `if` encloses (`None` for every other statement): the
    /// one place that knows which statements nest, for walkers that handle a statement's
    /// own parts and then its body.
    pub fn body(&self) -> Option<&[Stmt]> {
        match self {
            Stmt::Loop { body, .. } | Stmt::If { body, .. } => Some(body),
            _ => None,
        }
    }

    /// [`Stmt::body`], mutable.
    pub fn body_mut(&mut self) -> Option<&mut Vec<Stmt>> {
        match self {
            Stmt::Loop { body, .. } | Stmt::If { body, .. } => Some(body),
            _ => None,
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
