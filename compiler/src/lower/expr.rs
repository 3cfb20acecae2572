//! Index inlining: the value of a node at a symbolic multi-index, as a kernel-IR
//! expression. Members of the current group are inlined (elementwise ops become scalar
//! arithmetic, layout ops become index arithmetic); anything else is a load from its
//! buffer; reduction anchors are the kernel's accumulators, and a value a row kernel
//! stored in an earlier pass (`spilled`) is a load from that scratch buffer. A value used
//! more than once at the same index is computed once into a local (`Assign`), in `pre`,
//! which the kernel builder places before the statement that needs it.

mod pool;

use std::collections::HashMap;

use nnc_kernels::build::{binary, constant, load, select, unary};
use nnc_kernels::ir::{BinOp, BufId, CmpOp, Expr, Idx, LocalId, Stmt, UnOp};

use super::{dims_idx, linear, LowerError};
use crate::ir::graph::{Dim, Graph, NodeId};
use crate::ir::ops::elementwise::{BinaryOp, UnaryOp};
use crate::ir::Op;
use crate::passes::fuse::{Fusion, Placement};

pub struct ExprBuilder<'a> {
    pub g: &'a Graph,
    pub fusion: &'a Fusion,
    pub group: usize,
    /// Buffer of every materialized node.
    pub home: &'a HashMap<NodeId, BufId>,
    /// Accumulators and other values fixed for the current iteration point.
    pub fixed: HashMap<NodeId, Expr>,
    /// Values of the group already stored by an earlier pass of a row kernel, in a
    /// scratch buffer of their own shape.
    pub spilled: HashMap<NodeId, BufId>,
    /// How many in-group users each node has (values used twice are cached).
    pub uses: HashMap<NodeId, usize>,
    pub cache: HashMap<(NodeId, Vec<Idx>), LocalId>,
    pub pre: Vec<Stmt>,
    pub num_locals: u32,
}

impl ExprBuilder<'_> {
    pub fn new_local(&mut self) -> LocalId {
        self.num_locals += 1;
        LocalId(self.num_locals - 1)
    }

    /// Loads a materialized node.
    fn load_home(&self, id: NodeId, idx: &[Idx]) -> Result<Expr, LowerError> {
        let buf = *self
            .home
            .get(&id)
            .ok_or_else(|| LowerError(format!("{id} has no buffer")))?;
        Ok(load(buf, linear(idx, &dims_idx(self.g.shape(id)))))
    }

    pub fn value(&mut self, id: NodeId, idx: &[Idx]) -> Result<Expr, LowerError> {
        if let Some(e) = self.fixed.get(&id) {
            return Ok(e.clone());
        }
        if let Some(&buf) = self.spilled.get(&id) {
            return Ok(load(buf, linear(idx, &dims_idx(self.g.shape(id)))));
        }
        let inline = match &self.fusion.placement[id.index()] {
            Placement::Group(k) => *k == self.group,
            Placement::Free | Placement::View { .. } => true,
            Placement::Input => false,
        };
        if !inline {
            return self.load_home(id, idx);
        }
        let key = (id, idx.to_vec());
        if let Some(l) = self.cache.get(&key) {
            return Ok(Expr::Local(*l));
        }
        let e = self.compute(id, idx)?;
        let cheap = matches!(
            e,
            Expr::Const(_) | Expr::Load { .. } | Expr::Local(_) | Expr::FromIdx(_)
        );
        if !cheap && self.uses.get(&id).copied().unwrap_or(0) > 1 {
            let l = self.new_local();
            self.pre.push(Stmt::Assign { local: l, value: e });
            self.cache.insert(key, l);
            return Ok(Expr::Local(l));
        }
        Ok(e)
    }

    /// The operand `arg` read at the index of a broadcasting user of shape `out`.
    fn operand(&mut self, arg: NodeId, idx: &[Idx]) -> Result<Expr, LowerError> {
        let i = broadcast_index(self.g.shape(arg).dims(), idx);
        self.value(arg, &i)
    }

    /// The element `(n, y, x, c)` of the NHWC node `arg` (spatial extents `hw`) where
    /// `valid` is 1, else 0: the load's `y` and `x` are clamped into range, so it stays in
    /// bounds on the side not taken.
    fn masked(
        &mut self,
        arg: NodeId,
        [n, y, x, c]: [Idx; 4],
        [h, w]: [i64; 2],
        valid: Idx,
    ) -> Result<Expr, LowerError> {
        let v = self.value(arg, &[n, clamp(y, h), clamp(x, w), c])?;
        Ok(select(
            CmpOp::Gt,
            Expr::FromIdx(valid),
            constant(0.5),
            v,
            constant(0.0),
        ))
    }

    fn compute(&mut self, id: NodeId, idx: &[Idx]) -> Result<Expr, LowerError> {
        let g = self.g;
        let args = g.args(id);
        let shape = g.shape(id);
        Ok(match g.op(id) {
            Op::Const(bits) => constant(f32::from_bits(*bits)),
            Op::Iota { .. } => Expr::FromIdx(idx[0].clone()),
            Op::BatchSize => Expr::FromIdx(Idx::N),
            Op::Rand { seed, key, .. } => Expr::Rand {
                seed: *seed,
                key: *key,
                step: Box::new(self.value(args[0], &[])?),
                counter: linear(idx, &dims_idx(shape)),
            },
            Op::Unary(u) => {
                let x = self.operand(args[0], idx)?;
                match u {
                    UnaryOp::Neg => unary(UnOp::Neg, x),
                    UnaryOp::Exp => unary(UnOp::Exp, x),
                    UnaryOp::Log => unary(UnOp::Log, x),
                    UnaryOp::Sqrt => unary(UnOp::Sqrt, x),
                    UnaryOp::Abs => unary(UnOp::Abs, x),
                    UnaryOp::Tanh => unary(UnOp::Tanh, x),
                    UnaryOp::StopGrad => x,
                    UnaryOp::Sigmoid => binary(
                        BinOp::Div,
                        constant(1.0),
                        binary(
                            BinOp::Add,
                            constant(1.0),
                            unary(UnOp::Exp, unary(UnOp::Neg, x)),
                        ),
                    ),
                    UnaryOp::Sign => {
                        let l = self.new_local();
                        self.pre.push(Stmt::Assign { local: l, value: x });
                        let x = Expr::Local(l);
                        select(
                            CmpOp::Gt,
                            x.clone(),
                            constant(0.0),
                            constant(1.0),
                            select(CmpOp::Lt, x, constant(0.0), constant(-1.0), constant(0.0)),
                        )
                    }
                }
            }
            Op::Binary(b) => {
                let x = self.operand(args[0], idx)?;
                let y = self.operand(args[1], idx)?;
                let cmp = |op| select(op, x.clone(), y.clone(), constant(1.0), constant(0.0));
                match b {
                    BinaryOp::Add => binary(BinOp::Add, x, y),
                    BinaryOp::Sub => binary(BinOp::Sub, x, y),
                    BinaryOp::Mul => binary(BinOp::Mul, x, y),
                    BinaryOp::Div => binary(BinOp::Div, x, y),
                    BinaryOp::Max => binary(BinOp::Max, x, y),
                    BinaryOp::Gt => cmp(CmpOp::Gt),
                    BinaryOp::Ge => cmp(CmpOp::Ge),
                    BinaryOp::Eq => cmp(CmpOp::Eq),
                }
            }
            Op::Select => {
                let c = self.operand(args[0], idx)?;
                let a = self.operand(args[1], idx)?;
                let b = self.operand(args[2], idx)?;
                mask_select(CmpOp::Ne, c, constant(0.0), a, b)
            }
            Op::Broadcast { .. } => self.operand(args[0], idx)?,
            Op::Reshape { .. } => {
                let src = reshape_index(idx, shape.dims(), g.shape(args[0]).dims())?;
                self.value(args[0], &src)?
            }
            Op::Transpose { perm } => {
                let mut src = vec![Idx::Const(0); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    src[p] = idx[i].clone();
                }
                self.value(args[0], &src)?
            }
            Op::Slice { axis, start, .. } => {
                let mut src = idx.to_vec();
                src[*axis] = src[*axis].clone() + Idx::Const(*start as i64);
                self.value(args[0], &src)?
            }
            Op::Concat { axis } => {
                // Selects on the position along `axis`; each part reads a clamped index
                // so that every load is in bounds whichever branch is taken.
                let mut parts = Vec::new();
                let mut at = 0i64;
                for a in args {
                    let len = known(g.shape(*a).dims()[*axis])? as i64;
                    let mut src = idx.to_vec();
                    src[*axis] = clamp(idx[*axis].clone() - Idx::Const(at), len);
                    parts.push((at + len, self.value(*a, &src)?));
                    at += len;
                }
                if parts.is_empty() {
                    return Err(LowerError("empty concat".into()));
                }
                concat_select(&Expr::FromIdx(idx[*axis].clone()), parts)
            }
            Op::Im2col(w) => {
                let c = known(g.shape(args[0]).dims()[3])? as i64;
                let k = w.kernel as i64;
                let col = idx[3].clone();
                let ky = col.clone().div(k * c);
                let kx = col.clone().div(c).rem(k);
                let ch = col.rem(c);
                let iy = idx[1].clone() * (w.stride as i64) + ky - Idx::Const(w.pad_top as i64);
                let ix = idx[2].clone() * (w.stride as i64) + kx - Idx::Const(w.pad_left as i64);
                let valid = in_range(iy.clone(), w.h as i64) * in_range(ix.clone(), w.w as i64);
                let at = [idx[0].clone(), iy, ix, ch];
                self.masked(args[0], at, [w.h as i64, w.w as i64], valid)?
            }
            Op::Col2im(w) => {
                let c = known(shape.dims()[3])? as i64;
                let (k, s) = (w.kernel as i64, w.stride as i64);
                let mut sum: Option<Expr> = None;
                for ky in 0..k {
                    for kx in 0..k {
                        let ty = idx[1].clone() + Idx::Const(w.pad_top as i64 - ky);
                        let tx = idx[2].clone() + Idx::Const(w.pad_left as i64 - kx);
                        let (oy, ox) = (ty.clone().div(s), tx.clone().div(s));
                        let valid = nonneg(ty.clone())
                            * divides(ty, s)
                            * in_range(oy.clone(), w.oh as i64)
                            * nonneg(tx.clone())
                            * divides(tx, s)
                            * in_range(ox.clone(), w.ow as i64);
                        let col = Idx::Const((ky * k + kx) * c) + idx[3].clone();
                        let at = [idx[0].clone(), oy, ox, col];
                        let term = self.masked(args[0], at, [w.oh as i64, w.ow as i64], valid)?;
                        sum = Some(match sum {
                            None => term,
                            Some(acc) => binary(BinOp::Add, acc, term),
                        });
                    }
                }
                sum.unwrap_or(constant(0.0))
            }
            Op::Reduce { .. } | Op::MatMul | Op::Conv(_) | Op::ConvData(_) | Op::ConvFilter(_) => {
                return Err(LowerError(format!(
                    "{id} {} is an anchor but is read outside its iteration point",
                    g.op(id).mnemonic()
                )))
            }
            Op::Pool(kind, cv) => self.pool(*kind, cv, args[0], idx)?,
            Op::PoolGrad(kind, cv) => self.pool_grad(*kind, cv, args, idx)?,
            Op::PoolTies(cv) => self.pool_ties(cv, args[0], args[1], idx)?,
            Op::Input { .. } => return self.load_home(id, idx),
        })
    }
}

/// `a op b ? then : otherwise`, as a product with a 0/1 mask when one arm is zero and
/// the other loads: a backend evaluates only the taken arm of a select with loads (it may
/// guard an out-of-range load), which costs a data-dependent branch per element (the
/// ReLU and max-pool gradients: half of them mispredicted). Every load this lowering
/// emits is in range on both sides (gathers clamp their indices), so the arm can be
/// computed unconditionally. The product differs from the select only where the arm is
/// infinite or NaN and masked off (NaN instead of 0: a diverged step either way).
///
/// A condition that is already a 0/1 mask compared with 0 (`m != 0`: the ReLU gradient's
/// `x > 0` mask selecting the incoming gradient) is its own mask, not `(m != 0 ? 1 : 0)`
/// (two compares and two blends per vector in the pooling and ReLU gradients).
pub(super) fn mask_select(op: CmpOp, a: Expr, b: Expr, then: Expr, otherwise: Expr) -> Expr {
    let zero = |e: &Expr| matches!(e, Expr::Const(z) if *z == 0.0);
    let one = |e: &Expr| matches!(e, Expr::Const(o) if *o == 1.0);
    let is_mask = |e: &Expr| matches!(e, Expr::Select { then, otherwise, .. } if one(then) && zero(otherwise));
    if zero(&otherwise) && then.loads_any() {
        let mask = if op == CmpOp::Ne && zero(&b) && is_mask(&a) {
            a
        } else {
            select(op, a, b, constant(1.0), constant(0.0))
        };
        binary(BinOp::Mul, then, mask)
    } else if zero(&then) && otherwise.loads_any() {
        let mask = select(op, a, b, constant(0.0), constant(1.0));
        binary(BinOp::Mul, otherwise, mask)
    } else {
        select(op, a, b, then, otherwise)
    }
}

fn known(d: Dim) -> Result<usize, LowerError> {
    match d {
        Dim::K(k) => Ok(k),
        Dim::N => Err(LowerError(
            "a window or concat dimension is the batch size".into(),
        )),
    }
}

/// `1` when `t >= 0`, else `0` (for integer `t`).
fn nonneg(t: Idx) -> Idx {
    Idx::Min(
        Box::new(Idx::Max(
            Box::new(t + Idx::Const(1)),
            Box::new(Idx::Const(0)),
        )),
        Box::new(Idx::Const(1)),
    )
}

/// `1` when `0 <= t < len`.
fn in_range(t: Idx, len: i64) -> Idx {
    nonneg(t.clone()) * nonneg(Idx::Const(len - 1) - t)
}

/// `1` when `s` divides `t` (`t >= 0` is checked separately).
fn divides(t: Idx, s: i64) -> Idx {
    if s == 1 {
        return Idx::Const(1);
    }
    Idx::Const(1) - Idx::Min(Box::new(t.rem(s)), Box::new(Idx::Const(1)))
}

fn clamp(t: Idx, len: i64) -> Idx {
    Idx::Min(
        Box::new(Idx::Max(Box::new(t), Box::new(Idx::Const(0)))),
        Box::new(Idx::Const(len - 1)),
    )
}

/// The index into an operand of shape `dims` broadcast against a user index `idx`
/// (right-aligned; size-1 operand dims read position 0).
pub fn broadcast_index(dims: &[Dim], idx: &[Idx]) -> Vec<Idx> {
    let off = idx.len() - dims.len();
    dims.iter()
        .enumerate()
        .map(|(d, dim)| {
            if *dim == Dim::K(1) {
                Idx::Const(0)
            } else {
                idx[off + d].clone()
            }
        })
        .collect()
}

/// Maps an index of a reshape's output to the operand's index: directly when the two
/// shapes differ only by size-1 dims, else through the linear position.
pub fn reshape_index(idx: &[Idx], out: &[Dim], src: &[Dim]) -> Result<Vec<Idx>, LowerError> {
    let strip = |s: &[Dim]| -> Vec<Dim> { s.iter().copied().filter(|d| *d != Dim::K(1)).collect() };
    if strip(out) == strip(src) {
        let mut it = out
            .iter()
            .zip(idx)
            .filter(|(d, _)| **d != Dim::K(1))
            .map(|(_, i)| i.clone());
        return Ok(src
            .iter()
            .map(|d| {
                if *d == Dim::K(1) {
                    Idx::Const(0)
                } else {
                    it.next().unwrap_or(Idx::Const(0))
                }
            })
            .collect());
    }
    let lin = linear(idx, &out.iter().map(dim_idx).collect::<Vec<_>>());
    let mut res = vec![Idx::Const(0); src.len()];
    let mut stride: i64 = 1;
    for d in (0..src.len()).rev() {
        let size = match src[d] {
            Dim::K(k) => Some(k as i64),
            Dim::N => None,
        };
        let q = lin.clone().div(stride);
        res[d] = match size {
            Some(k) if d > 0 => q.rem(k),
            _ if d == 0 => q,
            _ => return Err(LowerError("a reshape moves the batch dimension".into())),
        };
        match size {
            Some(k) => stride *= k,
            None => {
                if d != 0 {
                    return Err(LowerError("a reshape moves the batch dimension".into()));
                }
            }
        }
    }
    Ok(res)
}

pub fn dim_idx(d: &Dim) -> Idx {
    match d {
        Dim::N => Idx::N,
        Dim::K(k) => Idx::Const(*k as i64),
    }
}

/// The part of a concatenation that position `pos` falls in, from the parts' values and
/// end positions: a balanced tree of selects, so that its depth grows with the logarithm
/// of the number of parts (a `concat` of thousands of tensors stays a shallow expression).
fn concat_select(pos: &Expr, mut parts: Vec<(i64, Expr)>) -> Expr {
    if parts.len() == 1 {
        return parts.pop().expect("one part").1;
    }
    let right = parts.split_off(parts.len() / 2);
    let split = parts.last().expect("a left half").0;
    select(
        CmpOp::Lt,
        pos.clone(),
        constant(split as f32),
        concat_select(pos, parts),
        concat_select(pos, right),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The depth of the select tree and the part it picks at position `pos`.
    fn walk(e: &Expr, pos: f32) -> (usize, f32) {
        match e {
            Expr::Select {
                b, then, otherwise, ..
            } => {
                let Expr::Const(split) = **b else {
                    panic!("splits are constants")
                };
                let branch = if pos < split { then } else { otherwise };
                let (d, v) = walk(branch, pos);
                (d + 1, v)
            }
            Expr::Const(v) => (0, *v),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_concat_of_many_parts_selects_in_a_balanced_tree() {
        // Part `i` holds positions `[3i, 3i + 3)` and has the value `i`.
        let parts = (0..10_000)
            .map(|i| (3 * i + 3, constant(i as f32)))
            .collect();
        let e = concat_select(&Expr::FromIdx(Idx::Const(0)), parts);
        for pos in [0, 1, 2, 3, 299, 15_000, 29_999] {
            let (depth, part) = walk(&e, pos as f32);
            assert_eq!(part, (pos / 3) as f32, "position {pos}");
            assert!(depth <= 14, "⌈log2 10000⌉ selects deep, not {depth}");
        }
    }
}
