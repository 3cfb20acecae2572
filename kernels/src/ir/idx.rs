//! Integer index arithmetic of the kernel IR: the [`Idx`] tree and its queries
//! (strides, GPU-index use) and leaf substitution.

use super::VarId;

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
