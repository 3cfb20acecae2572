//! Algebraic simplification and constant folding, in one forward sweep that rebuilds the
//! graph (hash-consing in `Graph::push` makes the rebuilt graph CSE'd as well).
//!
//! Every rewrite keeps the node's shape exactly; a rule whose result would have another
//! shape is skipped. The rules:
//! - scalar constant folding of elementwise ops whose operands are all constants;
//! - `x * 1`, `1 * x`, `x / 1`, `x + 0`, `0 + x`, `x - 0` → `x`; `neg(neg(x))` → `x`;
//! - `x > 0` → `max(x, 0) > 0` (the ReLU mask from the ReLU output, see below);
//! - `stop_grad(x)` → `x` (after autodiff it is the identity);
//! - reshape of a reshape, reshape to the operand's own shape; transpose of a transpose
//!   (composed; the identity disappears); broadcast of a broadcast;
//! - a reduction over axes of size 1 drops them (over nothing it is the identity);
//! - a reduction over the last axis *and* others is split into a last-axis reduction
//!   followed by the rest, so that the first half can fuse into a row kernel (this is
//!   what puts the per-sample cross-entropy into the softmax kernel). Sums re-associate,
//!   which changes rounding only.

use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::ops::elementwise::{BinaryOp, UnaryOp};
use crate::ir::{IrResult, Op};

pub fn simplify(g: &Graph) -> IrResult<Graph> {
    let mut out = Graph::new(&g.name);
    let mut map: Vec<NodeId> = Vec::with_capacity(g.len());
    for id in g.ids() {
        let args: Vec<NodeId> = g.args(id).iter().map(|a| map[a.index()]).collect();
        let new = match g.op(id) {
            Op::Input { name } => out.input(name, g.shape(id).clone())?,
            op => {
                let want = g.shape(id);
                match rewrite(&mut out, op, &args)? {
                    Some(r) if out.shape(r) == want => r,
                    _ => out.push(op.clone(), &args)?,
                }
            }
        };
        map.push(new);
    }
    for (name, id) in g.outputs() {
        out.set_output(name, map[id.index()])?;
    }
    Ok(out)
}

fn const_of(g: &Graph, id: NodeId) -> Option<f32> {
    match g.op(id) {
        Op::Const(bits) => Some(f32::from_bits(*bits)),
        _ => None,
    }
}

/// A simpler node computing `op(args)`, or `None` when no rule applies.
fn rewrite(g: &mut Graph, op: &Op, args: &[NodeId]) -> IrResult<Option<NodeId>> {
    let c = |i: usize, g: &Graph| const_of(g, args[i]);
    Ok(match op {
        Op::Unary(u) => {
            if let Some(x) = c(0, g) {
                return Ok(Some(g.constant(u.apply(x))));
            }
            let x = args[0];
            match (u, g.op(x)) {
                (UnaryOp::StopGrad, _) => Some(x),
                (UnaryOp::Neg, Op::Unary(UnaryOp::Neg)) => Some(g.args(x)[0]),
                _ => None,
            }
        }
        Op::Binary(b) => {
            if let (Some(x), Some(y)) = (c(0, g), c(1, g)) {
                return Ok(Some(g.constant(b.apply(x, y))));
            }
            let (a, bb) = (args[0], args[1]);
            if let (BinaryOp::Gt, Some(0.0)) = (b, c(1, g)) {
                // `x > 0` ≡ `max(x, 0) > 0` (also for NaN): reading the ReLU output lets
                // the pre-activation stay inside the forward kernel.
                let relu = g.binary(BinaryOp::Max, a, bb)?;
                if g.shape(relu) == g.shape(a) {
                    return Ok(Some(g.binary(BinaryOp::Gt, relu, bb)?));
                }
            }
            match (b, c(0, g), c(1, g)) {
                (BinaryOp::Mul, _, Some(v)) | (BinaryOp::Div, _, Some(v)) if v == 1.0 => Some(a),
                (BinaryOp::Mul, Some(1.0), _) => Some(bb),
                (BinaryOp::Add, _, Some(v)) | (BinaryOp::Sub, _, Some(v)) if v == 0.0 => Some(a),
                (BinaryOp::Add, Some(0.0), _) => Some(bb),
                _ => None,
            }
        }
        Op::Reshape { shape } => {
            let x = args[0];
            let inner = match g.op(x) {
                Op::Reshape { .. } => g.args(x)[0],
                _ => x,
            };
            if g.shape(inner) == shape {
                Some(inner)
            } else if inner != x {
                Some(g.reshape(inner, shape.clone())?)
            } else {
                None
            }
        }
        Op::Transpose { perm } => {
            let x = args[0];
            match g.op(x).clone() {
                Op::Transpose { perm: first } => {
                    let composed: Vec<usize> = perm.iter().map(|&p| first[p]).collect();
                    let base = g.args(x)[0];
                    Some(g.transpose(base, composed)?)
                }
                _ => None,
            }
        }
        Op::Broadcast { shape } => {
            let x = args[0];
            match g.op(x) {
                Op::Broadcast { .. } => {
                    let base = g.args(x)[0];
                    Some(g.broadcast_to(base, shape.clone())?)
                }
                _ => None,
            }
        }
        Op::Reduce { func, axes } => {
            let x = args[0];
            let shape: Shape = g.shape(x).clone();
            let real: Vec<usize> = axes
                .iter()
                .copied()
                .filter(|&a| shape.0[a] != Dim::K(1))
                .collect();
            if real.is_empty() {
                return Ok(Some(x));
            }
            let last = shape.rank() - 1;
            if real.len() > 1 && real.contains(&last) {
                let row = g.reduce(*func, x, &[last])?;
                let rest: Vec<usize> = real.iter().copied().filter(|&a| a != last).collect();
                return Ok(Some(g.reduce(*func, row, &rest)?));
            }
            if real.len() != axes.len() {
                Some(g.reduce(*func, x, &real)?)
            } else {
                None
            }
        }
        _ => None,
    })
}
