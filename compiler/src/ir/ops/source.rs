//! Ops without differentiable operands: scalar constants, `iota`, the batch size, and
//! the counter-based random op used by dropout.
//!
//! `rand` is keyed by `(seed, key, step, index)` through [`counter_uniform`], so a value
//! depends only on those four numbers: runs are reproducible, any backend can compute
//! any element independently, and the order of evaluation does not matter.

use crate::ir::graph::{Dim, Shape};
use crate::ir::op::{EvalCtx, Op};
use crate::ir::tensor::Tensor;
use crate::ir::{ir_bail, IrResult};

pub fn shape(op: &Op, args: &[&Shape]) -> IrResult<Shape> {
    match op {
        Op::Const(_) | Op::BatchSize => Ok(Shape::scalar()),
        Op::Iota { len } => Ok(Shape(vec![Dim::K(*len)])),
        Op::Rand { shape, .. } => {
            if args[0].rank() != 0 {
                ir_bail!("`rand` takes a scalar step, got {}", args[0]);
            }
            Ok(shape.clone())
        }
        _ => ir_bail!("not a source op"),
    }
}

pub fn eval(op: &Op, args: &[&Tensor], ctx: &EvalCtx) -> IrResult<Tensor> {
    Ok(match op {
        Op::Const(bits) => Tensor::scalar(f32::from_bits(*bits)),
        Op::BatchSize => Tensor::scalar(ctx.batch as f32),
        Op::Iota { len } => Tensor {
            shape: vec![*len],
            data: (0..*len).map(|i| i as f32).collect(),
        },
        Op::Rand { seed, key, .. } => {
            let step = args[0].data[0];
            if step.is_nan() || step < 0.0 {
                ir_bail!("`rand` step must be a non-negative number, got {step}");
            }
            let n: usize = ctx.out_shape.iter().product();
            Tensor {
                shape: ctx.out_shape.to_vec(),
                data: (0..n)
                    .map(|i| counter_uniform(*seed, *key, step as u64, i as u64))
                    .collect(),
            }
        }
        _ => ir_bail!("not a source op"),
    })
}

/// The counter-based uniform generator, shared with the kernel IR so that compiled code
/// and this interpreter draw the same numbers.
pub use nnc_kernels::ir::{mix64, rand_uniform as counter_uniform};
