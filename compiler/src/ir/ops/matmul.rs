//! Batched matrix product `[.., m, k] @ [.., k, n] → [.., m, n]`; the leading dims
//! broadcast (NumPy `matmul`). The reference evaluation accumulates each output row in
//! f64, looping i-k-j so the inner loop runs over contiguous memory. A zero in `a` skips
//! its row of `b` (sparse inputs such as MNIST pixels are mostly zero), so the oracle
//! treats `0 · inf` as 0 rather than NaN; every other product is IEEE.

use super::broadcast_strides;
use crate::ir::graph::{broadcast_shapes, Graph, NodeId, Shape};
use crate::ir::tensor::{strides, Tensor};
use crate::ir::{ir_bail, IrResult};

pub fn shape(a: &Shape, b: &Shape) -> IrResult<Shape> {
    if a.rank() < 2 || b.rank() < 2 {
        ir_bail!("`matmul` needs operands of rank 2 or more, got {a} and {b}");
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k1) = (a.0[ra - 2], a.0[ra - 1]);
    let (k2, n) = (b.0[rb - 2], b.0[rb - 1]);
    if k1 != k2 {
        ir_bail!("`matmul` inner dimensions differ: {a} @ {b}");
    }
    let lead = broadcast_shapes(
        &Shape(a.0[..ra - 2].to_vec()),
        &Shape(b.0[..rb - 2].to_vec()),
    )?;
    let mut out = lead.0;
    out.push(m);
    out.push(n);
    Ok(Shape(out))
}

pub fn eval(a: &Tensor, b: &Tensor, out: &[usize]) -> Tensor {
    let (ra, rb, ro) = (a.shape.len(), b.shape.len(), out.len());
    let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
    let n = b.shape[rb - 1];
    let lead = &out[..ro - 2];
    let batches: usize = lead.iter().product();
    let sa = broadcast_strides(&a.shape[..ra - 2], lead);
    let sb = broadcast_strides(&b.shape[..rb - 2], lead);
    let lead_str = strides(lead);
    let mut data = vec![0f32; batches * m * n];
    let mut row = vec![0f64; n];
    for bi in 0..batches {
        let (mut oa, mut ob) = (0, 0);
        for d in 0..lead.len() {
            let i = (bi / lead_str[d]) % lead[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        let (oa, ob) = (oa * m * k, ob * k * n);
        for i in 0..m {
            row.iter_mut().for_each(|r| *r = 0.0);
            for kk in 0..k {
                let av = a.data[oa + i * k + kk] as f64;
                if av == 0.0 {
                    continue;
                }
                let brow = &b.data[ob + kk * n..ob + kk * n + n];
                for (r, &bv) in row.iter_mut().zip(brow) {
                    *r += av * bv as f64;
                }
            }
            let o = (bi * m + i) * n;
            for (d, r) in data[o..o + n].iter_mut().zip(&row) {
                *d = *r as f32;
            }
        }
    }
    Tensor {
        shape: out.to_vec(),
        data,
    }
}

pub fn grad(g: &mut Graph, a: NodeId, b: NodeId, dy: NodeId) -> IrResult<Vec<Option<NodeId>>> {
    let bt = g.transpose_last2(b)?;
    let da = g.matmul(dy, bt)?;
    let at = g.transpose_last2(a)?;
    let db = g.matmul(at, dy)?;
    let sa = g.shape(a).clone();
    let sb = g.shape(b).clone();
    Ok(vec![Some(g.sum_to(da, &sa)?), Some(g.sum_to(db, &sb)?)])
}
