//! Reductions over a set of axes, keeping each reduced axis with size 1 (so results
//! broadcast back against their input without a reshape). Sums accumulate in f64.
//!
//! The gradient of `max` is shared equally among the elements that attain the maximum
//! (a valid subgradient; with distinct values it is the usual one-hot routing).

use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::tensor::{strides, Tensor};
use crate::ir::{ir_bail, IrResult};

use super::elementwise::BinaryOp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
        }
    }

    pub fn from_name(name: &str) -> Option<ReduceOp> {
        match name {
            "sum" => Some(ReduceOp::Sum),
            "max" => Some(ReduceOp::Max),
            _ => None,
        }
    }
}

pub fn shape(axes: &[usize], x: &Shape) -> IrResult<Shape> {
    if axes.is_empty() || axes.windows(2).any(|w| w[0] >= w[1]) {
        ir_bail!("reduction axes {axes:?} must be sorted, distinct and non-empty");
    }
    let mut dims = x.0.clone();
    for &a in axes {
        if a >= dims.len() {
            ir_bail!("reduction axis {a} out of range for {x}");
        }
        dims[a] = Dim::K(1);
    }
    Ok(Shape(dims))
}

pub fn eval(func: ReduceOp, axes: &[usize], x: &Tensor, out: &[usize]) -> Tensor {
    let total: usize = out.iter().product();
    let mut acc = vec![
        match func {
            ReduceOp::Sum => 0.0f64,
            ReduceOp::Max => f64::NEG_INFINITY,
        };
        total
    ];
    let ostr = strides(out);
    // Output stride per input dim, 0 on reduced dims.
    let map: Vec<usize> = (0..x.shape.len())
        .map(|d| if axes.contains(&d) { 0 } else { ostr[d] })
        .collect();
    let rank = x.shape.len();
    if rank == 0 {
        return x.clone();
    }
    let inner = x.shape[rank - 1];
    let inner_stride = map[rank - 1];
    let mut idx = vec![0usize; rank - 1];
    let mut pos = 0;
    let outer = x.data.len().checked_div(inner).unwrap_or(0);
    for _ in 0..outer {
        let base: usize = idx.iter().zip(&map).map(|(i, s)| i * s).sum();
        for j in 0..inner {
            let o = base + j * inner_stride;
            let v = x.data[pos] as f64;
            pos += 1;
            match func {
                ReduceOp::Sum => acc[o] += v,
                ReduceOp::Max => {
                    if v > acc[o] || v.is_nan() {
                        acc[o] = v
                    }
                }
            }
        }
        super::next_index(&mut idx, &x.shape);
    }
    Tensor {
        shape: out.to_vec(),
        data: acc.into_iter().map(|v| v as f32).collect(),
    }
}

pub fn grad(
    func: ReduceOp,
    axes: &[usize],
    g: &mut Graph,
    y: NodeId,
    x: NodeId,
    dy: NodeId,
) -> IrResult<Vec<Option<NodeId>>> {
    let xs = g.shape(x).clone();
    let dx = match func {
        ReduceOp::Sum => g.broadcast_to(dy, xs)?,
        ReduceOp::Max => {
            let mask = g.binary(BinaryOp::Eq, x, y)?;
            let count = g.reduce(ReduceOp::Sum, mask, axes)?;
            let share = g.div(dy, count)?;
            g.mul(mask, share)?
        }
    };
    Ok(vec![Some(dx)])
}
