//! Pooling and its gradient as gathers, inlined into whatever kernel reads them.
//!
//! `max_pool` / `avg_pool` at output `(n, p, q, c)` fold the window's taps (loads of the
//! input, clamped and masked where padding can be reached). The gradients run over the
//! input pixels `(n, i, j, c)` and sum over the windows that contain the pixel: a window
//! with stride equal to its size and no padding (the usual 2×2/2) has exactly one,
//! `(i / s, j / s)`; otherwise every tap `t` names a candidate window
//! `(i + pad − t) / s`, kept when that divides and is in range. For the maximum a window
//! passes its share of the gradient on when the pixel equals its maximum `y`; the share
//! (`dy` over the window's ties, `max_pool_ties`) is computed once per window by the
//! kernel before.

use nnc_kernels::build::{binary, constant, select};
use nnc_kernels::ir::{BinOp, CmpOp, Expr, Idx, Stmt};

use super::{clamp, divides, in_range, mask_select, nonneg, ExprBuilder};
use crate::ir::graph::NodeId;
use crate::ir::ops::conv::Conv;
use crate::ir::ops::pool::PoolKind;
use crate::lower::LowerError;

/// `cond` (an index that is 0 or 1) ? `a` : `b`.
fn when(cond: Idx, a: Expr, b: Expr) -> Expr {
    if cond == Idx::Const(1) {
        return a;
    }
    select(CmpOp::Gt, Expr::FromIdx(cond), constant(0.5), a, b)
}

/// Whether some tap of some window falls outside the image along `axis`.
fn reaches_padding(cv: &Conv, axis: usize) -> bool {
    let last = (cv.out[axis] - 1) * cv.stride[axis] + cv.dilation[axis] * (cv.kernel[axis] - 1);
    cv.pad[axis] > 0 || last >= cv.image[axis] + cv.pad[axis]
}

impl ExprBuilder<'_> {
    /// `e` computed once into a local.
    fn once(&mut self, e: Expr) -> Expr {
        if matches!(e, Expr::Const(_) | Expr::Local(_)) {
            return e;
        }
        let l = self.new_local();
        self.pre.push(Stmt::Assign { local: l, value: e });
        Expr::Local(l)
    }

    /// The input element of tap `(ty, tx)` of window `(p, q)` (indices, possibly out of
    /// range when `p`, `q` are) and a 0/1 index saying whether it lies in the image.
    fn pool_tap(
        &mut self,
        cv: &Conv,
        x: NodeId,
        [n, p, q, c]: [&Idx; 4],
        [ty, tx]: [usize; 2],
    ) -> Result<(Expr, Idx), LowerError> {
        let pos = |axis: usize, w: &Idx, t: usize| {
            w.clone() * cv.stride[axis] as i64
                + Idx::Const((t * cv.dilation[axis]) as i64 - cv.pad[axis] as i64)
        };
        let (y, xx) = (pos(0, p, ty), pos(1, q, tx));
        let [h, w] = cv.image.map(|v| v as i64);
        let (mut valid, mut yi, mut xi) = (Idx::Const(1), y.clone(), xx.clone());
        if reaches_padding(cv, 0) {
            valid = valid * in_range(y, h);
            yi = clamp(yi, h);
        }
        if reaches_padding(cv, 1) {
            valid = valid * in_range(xx, w);
            xi = clamp(xi, w);
        }
        let v = self.value(x, &[n.clone(), yi, xi, c.clone()])?;
        Ok((v, valid))
    }

    /// `max_pool(x)` or `avg_pool(x)` at output index `idx`.
    pub(in crate::lower) fn pool(
        &mut self,
        kind: PoolKind,
        cv: &Conv,
        x: NodeId,
        idx: &[Idx],
    ) -> Result<Expr, LowerError> {
        let mut acc: Option<Expr> = None;
        for ty in 0..cv.kernel[0] {
            for tx in 0..cv.kernel[1] {
                let (v, valid) =
                    self.pool_tap(cv, x, [&idx[0], &idx[1], &idx[2], &idx[3]], [ty, tx])?;
                let (op, fill) = match kind {
                    PoolKind::Max => (BinOp::Max, f32::NEG_INFINITY),
                    PoolKind::Avg => (BinOp::Add, 0.0),
                };
                let v = when(valid, v, constant(fill));
                acc = Some(match acc {
                    None => v,
                    Some(a) => binary(op, a, v),
                });
            }
        }
        let acc = acc.ok_or_else(|| LowerError("a pooling window without taps".into()))?;
        Ok(match kind {
            PoolKind::Max => acc,
            PoolKind::Avg => binary(BinOp::Mul, acc, constant(1.0 / cv.taps() as f32)),
        })
    }

    /// `max_pool_ties(x, y)` at window `idx`: how many of its taps equal `y`.
    pub(in crate::lower) fn pool_ties(
        &mut self,
        cv: &Conv,
        x: NodeId,
        y: NodeId,
        idx: &[Idx],
    ) -> Result<Expr, LowerError> {
        let max = self.value(y, idx)?;
        let max = self.once(max);
        let mut count: Option<Expr> = None;
        for ty in 0..cv.kernel[0] {
            for tx in 0..cv.kernel[1] {
                let (v, ok) =
                    self.pool_tap(cv, x, [&idx[0], &idx[1], &idx[2], &idx[3]], [ty, tx])?;
                let hit = select(CmpOp::Eq, v, max.clone(), constant(1.0), constant(0.0));
                let hit = when(ok, hit, constant(0.0));
                count = Some(match count {
                    None => hit,
                    Some(a) => binary(BinOp::Add, a, hit),
                });
            }
        }
        Ok(count.unwrap_or(constant(1.0)))
    }

    /// The windows containing input pixel `idx` (rows and columns of `(n, p, q, c)`
    /// indices, each with a 0/1 validity), see the module doc.
    fn windows_of(cv: &Conv, idx: &[Idx]) -> Vec<([Idx; 2], Idx)> {
        let axis = |a: usize| -> Vec<(Idx, Idx)> {
            let (s, len) = (cv.stride[a] as i64, cv.out[a] as i64);
            let i = idx[1 + a].clone();
            if cv.stride[a] == cv.kernel[a] && cv.dilation[a] == 1 && cv.pad[a] == 0 {
                let p = i.div(s);
                return vec![(clamp(p.clone(), len), in_range(p, len))];
            }
            (0..cv.kernel[a])
                .map(|t| {
                    let pos =
                        i.clone() + Idx::Const(cv.pad[a] as i64 - (t * cv.dilation[a]) as i64);
                    let p = pos.clone().div(s);
                    let valid = nonneg(pos.clone()) * divides(pos, s) * in_range(p.clone(), len);
                    (clamp(p, len), valid)
                })
                .collect()
        };
        let (rows, cols) = (axis(0), axis(1));
        let mut out = Vec::new();
        for (p, vp) in &rows {
            for (q, vq) in &cols {
                out.push(([p.clone(), q.clone()], vp.clone() * vq.clone()));
            }
        }
        out
    }

    /// `max_pool_grad(x, y, share)` (`args = [x, y, share]`) or `avg_pool_grad(dy)` at
    /// input pixel `idx`.
    pub(in crate::lower) fn pool_grad(
        &mut self,
        kind: PoolKind,
        cv: &Conv,
        args: &[NodeId],
        idx: &[Idx],
    ) -> Result<Expr, LowerError> {
        let (n, c) = (&idx[0], &idx[3]);
        let here = match kind {
            PoolKind::Max => {
                let v = self.value(args[0], idx)?;
                Some(self.once(v))
            }
            PoolKind::Avg => None,
        };
        let dy = args[args.len() - 1];
        let mut sum: Option<Expr> = None;
        for ([p, q], valid) in Self::windows_of(cv, idx) {
            let at = [n.clone(), p.clone(), q.clone(), c.clone()];
            let d = self.value(dy, &at)?;
            let term = match (&here, kind) {
                (Some(here), PoolKind::Max) => {
                    let y = self.value(args[1], &at)?;
                    mask_select(CmpOp::Eq, here.clone(), y, d, constant(0.0))
                }
                _ => binary(BinOp::Mul, d, constant(1.0 / cv.taps() as f32)),
            };
            let term = when(valid, term, constant(0.0));
            sum = Some(match sum {
                None => term,
                Some(a) => binary(BinOp::Add, a, term),
            });
        }
        Ok(sum.unwrap_or(constant(0.0)))
    }
}
