//! Scalar f32 expressions of the kernel IR and their walkers.

use super::{BinOp, BufId, CmpOp, Idx, LocalId, SharedId, UnOp};

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
    /// Uniform in `[0, 1)` from
    /// [`rand_uniform`](super::rand_uniform)`(seed, key, step, counter)`, where `step` is
    /// the f32 value of `step` truncated to an integer.
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

    /// The direct subexpressions of this expression, for rewriting passes.
    pub fn children_mut(&mut self) -> Vec<&mut Expr> {
        match self {
            Expr::Const(_)
            | Expr::Local(_)
            | Expr::Load { .. }
            | Expr::FromIdx(_)
            | Expr::SharedLoad { .. }
            | Expr::ShuffleXor { .. } => Vec::new(),
            Expr::Unary(_, a) => vec![a.as_mut()],
            Expr::Binary(_, a, b) => vec![a.as_mut(), b.as_mut()],
            Expr::Fma(a, b, c) => vec![a.as_mut(), b.as_mut(), c.as_mut()],
            Expr::Select {
                a,
                b,
                then,
                otherwise,
                ..
            } => vec![a.as_mut(), b.as_mut(), then.as_mut(), otherwise.as_mut()],
            Expr::Rand { step, .. } => vec![step.as_mut()],
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
