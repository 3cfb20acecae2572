//! Optimizer updates as graph ops. Each optimizer turns `(param, grad, state, t)` into
//! `(param', state')`, where `t` is the 1-based index of the step being taken (a scalar
//! node) and the state tensors have the parameter's shape. The formulas:
//!
//! - SGD: `p' = p − lr·g`; with momentum μ: `v' = μ·v + g`, `p' = p − lr·v'`, and with
//!   Nesterov `p' = p − lr·(g + μ·v')` (PyTorch's formulation). State: `velocity`.
//! - RMSProp: `s' = ρ·s + (1−ρ)·g²`, `p' = p − lr·g / (√s' + ε)`. State: `v`.
//! - Adam: `m' = β1·m + (1−β1)·g`, `v' = β2·v + (1−β2)·g²`,
//!   `p' = p − lr·m̂ / (√v̂ + ε)` with `m̂ = m'/(1−β1^t)`, `v̂ = v'/(1−β2^t)`;
//!   `β^t` is computed as `exp(t·ln β)`. State: `m`, `v`.
//! - AdamW: Adam plus decoupled decay, `p' = p − lr·(m̂/(√v̂ + ε) + wd·p)`.
//!
//! Hyper-parameters are graph constants, except the learning rate under a schedule: then
//! it is the scalar input `lr`, which the runtime sets before each step ([`update_with`]).

use crate::ir::graph::{Graph, NodeId};
use crate::ir::ops::elementwise::UnaryOp;
use crate::ir::IrResult;
use crate::sema::typed::Optimizer;

/// The names (suffixes after `<param>.`) of the state tensors one parameter needs, in
/// the order [`update`] takes and returns them. All start at zero.
pub fn state_names(opt: &Optimizer) -> &'static [&'static str] {
    match opt {
        Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
        Optimizer::Sgd { .. } => &["velocity"],
        Optimizer::RmsProp { .. } => &["v"],
        Optimizer::Adam { .. } | Optimizer::AdamW { .. } => &["m", "v"],
    }
}

/// Builds one parameter's update; returns the new parameter and new state.
pub fn update(
    g: &mut Graph,
    opt: &Optimizer,
    p: NodeId,
    grad: NodeId,
    state: &[NodeId],
    t: NodeId,
) -> IrResult<(NodeId, Vec<NodeId>)> {
    update_with(g, opt, p, grad, state, t, None)
}

/// The learning rate the optimizer was declared with.
pub fn base_lr(opt: &Optimizer) -> f64 {
    match opt {
        Optimizer::Sgd { lr, .. }
        | Optimizer::RmsProp { lr, .. }
        | Optimizer::Adam { lr, .. }
        | Optimizer::AdamW { lr, .. } => *lr,
    }
}

/// [`update`] with the learning rate read from the scalar node `lr` when given (a
/// schedule) instead of the optimizer's constant.
pub fn update_with(
    g: &mut Graph,
    opt: &Optimizer,
    p: NodeId,
    grad: NodeId,
    state: &[NodeId],
    t: NodeId,
    lr_node: Option<NodeId>,
) -> IrResult<(NodeId, Vec<NodeId>)> {
    let f = |x: f64| x as f32;
    // `lr · x`: a constant scale, or a product with the rate input.
    let times_lr = |g: &mut Graph, x: NodeId, lr: f64| -> IrResult<NodeId> {
        match lr_node {
            Some(r) => g.mul(x, r),
            None => g.scale(x, lr as f32),
        }
    };
    match opt {
        Optimizer::Sgd {
            lr,
            momentum,
            nesterov,
        } => {
            if *momentum == 0.0 {
                let step = times_lr(g, grad, *lr)?;
                return Ok((g.sub(p, step)?, Vec::new()));
            }
            let mv = g.scale(state[0], f(*momentum))?;
            let v = g.add(mv, grad)?;
            let dir = if *nesterov {
                let mv2 = g.scale(v, f(*momentum))?;
                g.add(grad, mv2)?
            } else {
                v
            };
            let step = times_lr(g, dir, *lr)?;
            Ok((g.sub(p, step)?, vec![v]))
        }
        Optimizer::RmsProp { lr, rho, eps } => {
            let g2 = square(g, grad)?;
            let s = ema(g, state[0], g2, *rho)?;
            let root = g.unary(UnaryOp::Sqrt, s)?;
            let eps_c = g.constant(f(*eps));
            let den = g.add(root, eps_c)?;
            let q = g.div(grad, den)?;
            let step = times_lr(g, q, *lr)?;
            Ok((g.sub(p, step)?, vec![s]))
        }
        Optimizer::Adam {
            lr,
            beta1,
            beta2,
            eps,
        } => {
            let (dir, m, v) = adam_direction(g, grad, state, t, *beta1, *beta2, *eps)?;
            let step = times_lr(g, dir, *lr)?;
            Ok((g.sub(p, step)?, vec![m, v]))
        }
        Optimizer::AdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } => {
            let (dir, m, v) = adam_direction(g, grad, state, t, *beta1, *beta2, *eps)?;
            let decay = g.scale(p, f(*weight_decay))?;
            let total = g.add(dir, decay)?;
            let step = times_lr(g, total, *lr)?;
            Ok((g.sub(p, step)?, vec![m, v]))
        }
    }
}

fn square(g: &mut Graph, x: NodeId) -> IrResult<NodeId> {
    g.mul(x, x)
}

/// `β·old + (1−β)·new`.
fn ema(g: &mut Graph, old: NodeId, new: NodeId, beta: f64) -> IrResult<NodeId> {
    let a = g.scale(old, beta as f32)?;
    let b = g.scale(new, (1.0 - beta) as f32)?;
    g.add(a, b)
}

/// `1 − β^t` as `1 − exp(t·ln β)`.
fn bias_correction(g: &mut Graph, t: NodeId, beta: f64) -> IrResult<NodeId> {
    let tl = g.scale(t, beta.ln() as f32)?;
    let pow = g.unary(UnaryOp::Exp, tl)?;
    let one = g.constant(1.0);
    g.sub(one, pow)
}

/// Adam's `m̂ / (√v̂ + ε)` and the new moments.
fn adam_direction(
    g: &mut Graph,
    grad: NodeId,
    state: &[NodeId],
    t: NodeId,
    beta1: f64,
    beta2: f64,
    eps: f64,
) -> IrResult<(NodeId, NodeId, NodeId)> {
    let m = ema(g, state[0], grad, beta1)?;
    let g2 = square(g, grad)?;
    let v = ema(g, state[1], g2, beta2)?;
    let bc1 = bias_correction(g, t, beta1)?;
    let bc2 = bias_correction(g, t, beta2)?;
    let m_hat = g.div(m, bc1)?;
    let v_hat = g.div(v, bc2)?;
    let root = g.unary(UnaryOp::Sqrt, v_hat)?;
    let eps_c = g.constant(eps as f32);
    let den = g.add(root, eps_c)?;
    Ok((g.div(m_hat, den)?, m, v))
}
