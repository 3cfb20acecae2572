//! Data movement: reshape, transpose (any permutation), broadcast, concat and slice.
//! None of them computes; their gradients move the gradient back.

use crate::ir::graph::{broadcast_shapes, Dim, Graph, NodeId, Shape};
use crate::ir::op::Op;
use crate::ir::tensor::{strides, Tensor};
use crate::ir::{ir_bail, IrResult};

use super::elementwise::map_broadcast;

pub fn shape(op: &Op, args: &[&Shape]) -> IrResult<Shape> {
    let x = args[0];
    match op {
        Op::Reshape { shape } => {
            if shape.volume().is_none() || shape.volume() != x.volume() {
                ir_bail!("cannot reshape {x} to {shape}: different number of elements");
            }
            Ok(shape.clone())
        }
        Op::Transpose { perm } => {
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank() {
                ir_bail!("permutation {perm:?} does not fit {x}");
            }
            for &p in perm {
                if p >= x.rank() || seen[p] {
                    ir_bail!("{perm:?} is not a permutation");
                }
                seen[p] = true;
            }
            Ok(Shape(perm.iter().map(|&p| x.0[p]).collect()))
        }
        Op::Broadcast { shape } => {
            if x.rank() > shape.rank() || broadcast_shapes(x, shape)? != *shape {
                ir_bail!("cannot broadcast {x} to {shape}");
            }
            Ok(shape.clone())
        }
        Op::Concat { axis } => {
            let axis = *axis;
            if axis >= x.rank() {
                ir_bail!("concat axis {axis} out of range for {x}");
            }
            let mut total = 0;
            for a in args {
                if a.rank() != x.rank() || (0..x.rank()).any(|d| d != axis && a.0[d] != x.0[d]) {
                    ir_bail!("cannot concatenate {x} and {a} along axis {axis}");
                }
                match a.0[axis] {
                    Dim::K(k) => {
                        total = match usize::checked_add(total, k) {
                            Some(t) => t,
                            None => ir_bail!("concatenated size overflows"),
                        }
                    }
                    Dim::N => ir_bail!("cannot concatenate along the batch dimension"),
                }
            }
            let mut out = x.clone();
            out.0[axis] = Dim::K(total);
            Ok(out)
        }
        Op::Slice { axis, start, end } => {
            let (axis, start, end) = (*axis, *start, *end);
            if axis >= x.rank() {
                ir_bail!("slice axis {axis} out of range for {x}");
            }
            match x.0[axis] {
                Dim::K(k) if start < end && end <= k => {}
                _ => ir_bail!("slice {start}..{end} out of range on axis {axis} of {x}"),
            }
            let mut out = x.clone();
            out.0[axis] = Dim::K(end - start);
            Ok(out)
        }
        _ => ir_bail!("not a layout op"),
    }
}

pub fn eval(op: &Op, args: &[&Tensor], out: &[usize]) -> Tensor {
    let x = args[0];
    match op {
        Op::Reshape { .. } => Tensor {
            shape: out.to_vec(),
            data: x.data.clone(),
        },
        Op::Broadcast { .. } => map_broadcast([x], out, |[v]| v),
        Op::Transpose { perm } => {
            let xs = strides(&x.shape);
            let src: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
            gather(out, &src, 0, &x.data)
        }
        Op::Slice { axis, start, .. } => {
            let xs = strides(&x.shape);
            gather(out, &xs, start * xs[*axis], &x.data)
        }
        Op::Concat { axis } => {
            let outer: usize = out[..*axis].iter().product();
            let mut data = Vec::with_capacity(out.iter().product());
            for o in 0..outer {
                for a in args {
                    let chunk: usize = a.shape[*axis..].iter().product();
                    data.extend_from_slice(&a.data[o * chunk..(o + 1) * chunk]);
                }
            }
            Tensor {
                shape: out.to_vec(),
                data,
            }
        }
        _ => x.clone(),
    }
}

/// Reads `out`-shaped data from `src` at `offset + Σ idx[d]·stride[d]`.
fn gather(out: &[usize], stride: &[usize], offset: usize, src: &[f32]) -> Tensor {
    let total: usize = out.iter().product();
    let mut data = Vec::with_capacity(total);
    let mut idx = vec![0usize; out.len()];
    for _ in 0..total {
        let o: usize = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        data.push(src[o]);
        super::next_index(&mut idx, out);
    }
    Tensor {
        shape: out.to_vec(),
        data,
    }
}

pub fn grad(op: &Op, g: &mut Graph, args: &[NodeId], dy: NodeId) -> IrResult<Vec<Option<NodeId>>> {
    let x = args[0];
    let xs = g.shape(x).clone();
    Ok(match op {
        Op::Reshape { .. } => vec![Some(g.reshape(dy, xs)?)],
        Op::Broadcast { .. } => vec![Some(g.sum_to(dy, &xs)?)],
        Op::Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            vec![Some(g.transpose(dy, inv)?)]
        }
        Op::Slice { axis, start, end } => {
            let (axis, start, end) = (*axis, *start, *end);
            let full = match xs.0[axis] {
                Dim::K(k) => k,
                Dim::N => ir_bail!("slice along the batch dimension"),
            };
            let mut parts = Vec::new();
            let zero = g.constant(0.0);
            for (len, is_dy) in [(start, false), (end - start, true), (full - end, false)] {
                if is_dy {
                    parts.push(dy);
                } else if len > 0 {
                    let mut s = xs.clone();
                    s.0[axis] = Dim::K(len);
                    parts.push(g.broadcast_to(zero, s)?);
                }
            }
            if parts.len() == 1 {
                vec![Some(dy)]
            } else {
                vec![Some(g.push(Op::Concat { axis }, &parts)?)]
            }
        }
        Op::Concat { axis } => {
            let mut out = Vec::new();
            let mut at = 0;
            for a in args {
                let len = match g.shape(*a).0[*axis] {
                    Dim::K(k) => k,
                    Dim::N => ir_bail!("concat along the batch dimension"),
                };
                let piece = g.push(
                    Op::Slice {
                        axis: *axis,
                        start: at,
                        end: at + len,
                    },
                    &[dy],
                )?;
                out.push(Some(piece));
                at += len;
            }
            out
        }
        _ => ir_bail!("not a layout op"),
    })
}
