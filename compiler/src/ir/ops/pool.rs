//! Pooling over channels-last images, and its gradient, as gathers: every output element
//! reads its own window (no `im2col` matrix, no scatter).
//! - `max_pool(x)` / `avg_pool(x)`: `[B, h, w, c]` → `[B, oh, ow, c]`, the maximum or
//!   the mean (over the `kh·kw` taps, padding counted as absent for the maximum and as
//!   zero for the mean) of each window;
//! - `max_pool_ties(x, y)`: `[B, oh, ow, c]`, how many taps of each window hold its
//!   maximum `y = max_pool(x)`;
//! - `max_pool_grad(x, y, share)`: `[B, h, w, c]` → `[B, h, w, c]`: each input pixel
//!   receives, from every window it is a maximum of, that window's `share`. The gradient
//!   of `max_pool` passes `share = dy / ties`, so tied taps split a window's gradient (a
//!   subgradient like any other). No argmax is stored: the comparison with `y` finds it,
//!   and the per-window division is done once per window, not once per pixel;
//! - `avg_pool_grad(dy)`: `[B, oh, ow, c]` → `[B, h, w, c]`, each window's `dy / (kh·kw)`
//!   spread over its taps.
//!
//! The window geometry is a convolution's ([`Conv`], dilation 1) so padding and strides
//! mean the same everywhere.

use super::conv::Conv;
use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::tensor::Tensor;
use crate::ir::{ir_bail, IrResult, Op};

/// Maximum or mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Avg,
}

impl PoolKind {
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Max => "max",
            PoolKind::Avg => "avg",
        }
    }

    pub fn from_name(s: &str) -> Option<PoolKind> {
        match s {
            "max" => Some(PoolKind::Max),
            "avg" => Some(PoolKind::Avg),
            _ => None,
        }
    }
}

fn image(x: &Shape, hw: [usize; 2], what: &str) -> IrResult<(Dim, Dim)> {
    if x.rank() != 4 || x.0[1] != Dim::K(hw[0]) || x.0[2] != Dim::K(hw[1]) {
        ir_bail!("{what} must be [B, {}, {}, C], got {x}", hw[0], hw[1]);
    }
    Ok((x.0[0], x.0[3]))
}

pub fn pool_shape(cv: &Conv, x: &Shape) -> IrResult<Shape> {
    let (b, c) = image(x, cv.image, "a pooling's input")?;
    Ok(Shape(vec![b, Dim::K(cv.out[0]), Dim::K(cv.out[1]), c]))
}

/// `max_pool_grad(x, y, dy)` or `avg_pool_grad(dy)`.
pub fn grad_shape(kind: PoolKind, cv: &Conv, args: &[&Shape]) -> IrResult<Shape> {
    let dy = args[args.len() - 1];
    let (b, c) = image(dy, cv.out, "a pooling gradient's output gradient")?;
    if args.len() == 2 {
        // `max_pool_ties(x, y)`.
        if &pool_shape(cv, args[0])? != dy {
            ir_bail!(
                "`max_pool_ties` needs x and its pooling, got {} and {dy}",
                args[0]
            );
        }
        return Ok(dy.clone());
    }
    if kind == PoolKind::Max {
        let x = pool_shape(cv, args[0])?;
        if &x != args[1] || &x != dy {
            ir_bail!(
                "`max_pool_grad` needs x, its pooling and a gradient of that, got {}, {}, {dy}",
                args[0],
                args[1]
            );
        }
    }
    Ok(Shape(vec![b, Dim::K(cv.image[0]), Dim::K(cv.image[1]), c]))
}

/// The input row (axis 0) or column (axis 1) tap `t` of window `p` reads, if inside.
pub fn tap(cv: &Conv, axis: usize, p: usize, t: usize) -> Option<usize> {
    let pos = (p * cv.stride[axis] + t * cv.dilation[axis]) as isize - cv.pad[axis] as isize;
    (pos >= 0 && (pos as usize) < cv.image[axis]).then_some(pos as usize)
}

/// Calls `f(window element, [input elements of its taps])` for every window of every
/// sample, over an image of `c` channels and `batch` samples.
fn for_each_window(cv: &Conv, batch: usize, c: usize, mut f: impl FnMut(usize, &[usize])) {
    let [h, w] = cv.image;
    let [oh, ow] = cv.out;
    let mut taps = Vec::with_capacity(cv.taps());
    for n in 0..batch {
        for p in 0..oh {
            for q in 0..ow {
                for ch in 0..c {
                    taps.clear();
                    for ty in 0..cv.kernel[0] {
                        for tx in 0..cv.kernel[1] {
                            if let (Some(y), Some(x)) = (tap(cv, 0, p, ty), tap(cv, 1, q, tx)) {
                                taps.push(((n * h + y) * w + x) * c + ch);
                            }
                        }
                    }
                    f(((n * oh + p) * ow + q) * c + ch, &taps);
                }
            }
        }
    }
}

/// `max_pool_ties(x, y)`: per window, the number of taps equal to its maximum `y`.
pub fn eval_ties(cv: &Conv, x: &Tensor, y: &Tensor, out: &[usize]) -> Tensor {
    let mut data = vec![0f32; out.iter().product()];
    for_each_window(cv, x.shape[0], x.shape[3], |o, taps| {
        data[o] = taps.iter().filter(|&&i| x.data[i] == y.data[o]).count() as f32;
    });
    Tensor {
        shape: out.to_vec(),
        data,
    }
}

pub fn eval_pool(kind: PoolKind, cv: &Conv, x: &Tensor, out: &[usize]) -> Tensor {
    let mut data = vec![0f32; out.iter().product()];
    let scale = 1.0 / cv.taps() as f64;
    for_each_window(cv, x.shape[0], x.shape[3], |o, taps| {
        data[o] = match kind {
            PoolKind::Max => taps
                .iter()
                .map(|&i| x.data[i])
                .fold(f32::NEG_INFINITY, f32::max),
            PoolKind::Avg => {
                (taps.iter().map(|&i| f64::from(x.data[i])).sum::<f64>() * scale) as f32
            }
        };
    });
    Tensor {
        shape: out.to_vec(),
        data,
    }
}

/// `args` is `[x, y, dy]` for the maximum, `[dy]` for the mean.
pub fn eval_grad(kind: PoolKind, cv: &Conv, args: &[&Tensor], out: &[usize]) -> Tensor {
    let dy = args[args.len() - 1];
    let mut acc = vec![0f64; out.iter().product()];
    for_each_window(cv, out[0], out[3], |o, taps| {
        let d = f64::from(dy.data[o]);
        match kind {
            PoolKind::Max => {
                let (x, y) = (args[0], args[1].data[o]);
                for &i in taps.iter().filter(|&&i| x.data[i] == y) {
                    acc[i] += d;
                }
            }
            PoolKind::Avg => {
                for &i in taps {
                    acc[i] += d / cv.taps() as f64;
                }
            }
        }
    });
    Tensor {
        shape: out.to_vec(),
        data: acc.into_iter().map(|v| v as f32).collect(),
    }
}

/// The gradient of a pooling: through the maximum to the taps that hold it, through the
/// mean to every tap.
pub fn grad_pool(
    g: &mut Graph,
    kind: PoolKind,
    cv: &Conv,
    node: NodeId,
    x: NodeId,
    dy: NodeId,
) -> IrResult<Vec<Option<NodeId>>> {
    let dx = match kind {
        PoolKind::Max => {
            let ties = g.push(Op::PoolTies(cv.clone()), &[x, node])?;
            let share = g.div(dy, ties)?;
            g.push(Op::PoolGrad(kind, cv.clone()), &[x, node, share])?
        }
        PoolKind::Avg => g.push(Op::PoolGrad(kind, cv.clone()), &[dy])?,
    };
    Ok(vec![Some(dx)])
}

/// The gradient of `avg_pool_grad` (linear: its adjoint is the mean pooling); that of
/// `max_pool_grad` would need the gradient of a comparison and is not defined.
pub fn grad_grad(
    g: &mut Graph,
    kind: PoolKind,
    cv: &Conv,
    gx: NodeId,
) -> IrResult<Vec<Option<NodeId>>> {
    match kind {
        PoolKind::Avg => Ok(vec![Some(g.push(Op::Pool(kind, cv.clone()), &[gx])?)]),
        PoolKind::Max => ir_bail!("`max_pool_grad` is not differentiable"),
    }
}
