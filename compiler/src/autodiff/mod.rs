//! Reverse-mode automatic differentiation over the primitive op set.
//!
//! [`grad`] appends the backward computation to the same graph: it walks the nodes from
//! the loss down to the first one, asks each op's gradient rule (in `ir::ops`) for the
//! gradients of its operands, and sums the contributions of values used more than once.
//! Only nodes that depend on a requested value get gradient work. The new nodes are
//! hash-consed like any other, so shared subexpressions of the backward pass are shared.

use crate::ir::graph::{Graph, NodeId};
use crate::ir::{ir_bail, IrResult};

/// Returns, for each node in `wrt`, the gradient of the scalar `loss` with respect to it
/// (a node of the same shape; a zero constant broadcast to it when unrelated).
pub fn grad(g: &mut Graph, loss: NodeId, wrt: &[NodeId]) -> IrResult<Vec<NodeId>> {
    if g.shape(loss).rank() != 0 {
        ir_bail!("the loss must be a scalar, got {}", g.shape(loss));
    }
    let n = loss.index() + 1;
    // Which nodes depend on a value we differentiate with respect to.
    let mut needs = vec![false; n];
    for w in wrt {
        if w.index() < n {
            needs[w.index()] = true;
        }
    }
    for i in 0..n {
        if !needs[i] {
            needs[i] = g.args(NodeId(i as u32)).iter().any(|a| needs[a.index()]);
        }
    }
    let mut adjoint: Vec<Option<NodeId>> = vec![None; n];
    adjoint[loss.index()] = Some(g.constant(1.0));
    for i in (0..n).rev() {
        let id = NodeId(i as u32);
        let Some(dy) = adjoint[i] else { continue };
        if !needs[i] || g.op(id).is_source() {
            continue;
        }
        let op = g.op(id).clone();
        let args = g.args(id).to_vec();
        let grads = op.grad(g, id, &args, dy)?;
        for (a, da) in args.iter().zip(grads) {
            let Some(da) = da else { continue };
            if !needs[a.index()] {
                continue;
            }
            if g.shape(da) != g.shape(*a) {
                ir_bail!(
                    "gradient rule of `{}` gave {} for an operand of shape {}",
                    op.mnemonic(),
                    g.shape(da),
                    g.shape(*a)
                );
            }
            adjoint[a.index()] = Some(match adjoint[a.index()] {
                None => da,
                Some(prev) => g.add(prev, da)?,
            });
        }
    }
    let mut out = Vec::with_capacity(wrt.len());
    for w in wrt {
        let d = match adjoint.get(w.index()).copied().flatten() {
            Some(d) => d,
            None => {
                let zero = g.constant(0.0);
                let s = g.shape(*w).clone();
                g.broadcast_to(zero, s)?
            }
        };
        out.push(d);
    }
    Ok(out)
}
