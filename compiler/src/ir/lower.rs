//! Typed model → forward graph. Every layer, function and activation of the language is
//! lowered to primitives here and nowhere else, by exhaustive `match` on the typed op and
//! on the registry's identities ([`activation`] is the meaning of each activation):
//!
//! | layer | primitives |
//! | --- | --- |
//! | `dense` | `matmul(x, w) + b` |
//! | `conv2d` | `conv` (a product over the implicit `im2col` matrix) with `w` reshaped to `[k·k·c, f]` → `+ b` |
//! | `max_pool` / `avg_pool` | `max_pool` / `avg_pool` (valid windows; each output gathers its window) |
//! | `relu` | `max(x, 0)`; `leaky_relu`: `select(x > 0, x, α·x)` |
//! | `softmax` | `e = exp(x − stop_grad(max x))`, `e / Σe` |
//! | `softplus` | `max(x, 0) + log(1 + exp(−|x|))` (stable) |
//! | `gelu` | tanh approximation `½x(1 + tanh(√(2/π)(x + 0.044715x³)))` |
//! | `dropout` | train: `x · (rand ≥ rate) · 1/(1−rate)`, `rand` keyed by (seed, node, step); eval: `x` |
//! | `batch_norm` | `(x − mean)·scale + β`, per-channel `scale = γ/√(var + ε)`; train: batch mean and biased variance `E[(x − stop_grad(mean))²]` over all but the channel axis (the cut is exact: the variance's derivative in the mean is zero), running averages updated as `m·old + (1−m)·batch`; eval: the running statistics |
//!
//! Typed shapes leave the batch implicit; graph shapes carry it as a leading `N`, so a
//! per-sample axis `a` of a batched value is graph axis `a + 1`. After each node the
//! graph shape is checked against the typed one (an internal error if they differ).

use super::graph::{Dim, Graph, NodeId, Shape};
use super::op::Op;
use super::ops::conv::{Conv, Padding};
use super::ops::elementwise::{BinaryOp, UnaryOp};
use super::ops::pool::PoolKind;
use super::ops::reduce::ReduceOp;
use super::{ir_bail, IrResult};
use crate::sema::typed::{self, Activation, BinaryFn, Function, PoolFn, ReduceFn, TOp, TypedModel};

/// Training or inference form of the layers that differ (`dropout`, `batch_norm`).
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `step` is the scalar step-counter input that keys dropout's random numbers.
    Train {
        seed: u64,
        step: NodeId,
    },
    Eval,
}

/// The graph values a model's inputs, parameters and buffers are bound to.
pub struct Bindings<'a> {
    pub inputs: &'a [NodeId],
    pub params: &'a [NodeId],
    pub buffers: &'a [NodeId],
}

/// The lowered forward pass.
#[derive(Clone, Debug)]
pub struct Forward {
    pub output: NodeId,
    /// The logits when the model's output is a softmax over its last axis.
    pub softmax_logits: Option<NodeId>,
    /// The logits when the model's output is a sigmoid.
    pub sigmoid_logits: Option<NodeId>,
    /// New values of the buffers (train mode), by buffer index.
    pub buffer_updates: Vec<(usize, NodeId)>,
    /// The graph value of every typed node.
    pub values: Vec<NodeId>,
}

/// The graph shape of a typed shape.
pub fn full_shape(s: &typed::Shape) -> Shape {
    if s.batched {
        Shape::batched(&s.dims)
    } else {
        Shape::fixed(&s.dims)
    }
}

/// Lowers a model into a standalone graph whose inputs are the model inputs, parameters
/// and buffers under their own names and whose output is named `output`.
pub fn lower_forward(model: &TypedModel, mode_is_train: bool, seed: u64) -> IrResult<Graph> {
    let mut g = Graph::new(&model.name);
    let inputs = model
        .inputs
        .iter()
        .map(|i| g.input(&i.name, full_shape(&i.shape)))
        .collect::<IrResult<Vec<_>>>()?;
    let (params, buffers) = bind_state(&mut g, model)?;
    let mode = if mode_is_train {
        let step = g.input("step", Shape::scalar())?;
        Mode::Train { seed, step }
    } else {
        Mode::Eval
    };
    let fwd = lower_model(
        &mut g,
        model,
        mode,
        &Bindings {
            inputs: &inputs,
            params: &params,
            buffers: &buffers,
        },
    )?;
    g.set_output("output", fwd.output)?;
    for (b, id) in &fwd.buffer_updates {
        g.set_output(&model.buffers[*b].name, *id)?;
    }
    Ok(g.compact())
}

/// Adds an input for every parameter and buffer, in declaration order.
pub fn bind_state(g: &mut Graph, model: &TypedModel) -> IrResult<(Vec<NodeId>, Vec<NodeId>)> {
    let params = model
        .params
        .iter()
        .map(|p| g.input(&p.name, full_shape(&p.shape)))
        .collect::<IrResult<Vec<_>>>()?;
    let buffers = model
        .buffers
        .iter()
        .map(|b| g.input(&b.name, full_shape(&b.shape)))
        .collect::<IrResult<Vec<_>>>()?;
    Ok((params, buffers))
}

pub fn lower_model(
    g: &mut Graph,
    model: &TypedModel,
    mode: Mode,
    bind: &Bindings,
) -> IrResult<Forward> {
    let mut values: Vec<NodeId> = Vec::with_capacity(model.nodes.len());
    let mut buffer_updates = Vec::new();
    for (index, node) in model.nodes.iter().enumerate() {
        let mut args = Vec::with_capacity(node.operands.len());
        for a in &node.operands {
            match values.get(a.0 as usize) {
                Some(v) => args.push(*v),
                None => ir_bail!("typed node {index} uses a later node"),
            }
        }
        let want = full_shape(&node.shape);
        let mut cx = Cx {
            g: &mut *g,
            want: &want,
            per_sample_offset: usize::from(node.shape.batched),
        };
        let v = cx.lower_node(&node.op, &args, bind, mode, index, &mut buffer_updates)?;
        if *g.shape(v) != want {
            ir_bail!(
                "internal error: `{:?}` lowered to {} but the model says {want}",
                node.op,
                g.shape(v)
            );
        }
        values.push(v);
    }
    let Some(&output) = values.get(model.output.0 as usize) else {
        ir_bail!("the model output refers to a missing node");
    };
    let out_node = &model.nodes[model.output.0 as usize];
    let last_axis = out_node.shape.dims.len().saturating_sub(1);
    let arg0 = out_node.operands.first().map(|a| values[a.0 as usize]);
    let softmax_logits = match out_node.op {
        TOp::Softmax { axis } if axis == last_axis => arg0,
        _ => None,
    };
    let sigmoid_logits = match out_node.op {
        TOp::Activation(Activation::Sigmoid) => arg0,
        _ => None,
    };
    Ok(Forward {
        output,
        softmax_logits,
        sigmoid_logits,
        buffer_updates,
        values,
    })
}

struct Cx<'g> {
    g: &'g mut Graph,
    want: &'g Shape,
    /// 1 when the node is batched: per-sample axis `a` is graph axis `a + 1`.
    per_sample_offset: usize,
}

fn known(d: Dim) -> IrResult<usize> {
    match d {
        Dim::K(k) => Ok(k),
        Dim::N => ir_bail!("internal error: a layer dimension is the batch size"),
    }
}

impl Cx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn lower_node(
        &mut self,
        op: &TOp,
        args: &[NodeId],
        bind: &Bindings,
        mode: Mode,
        index: usize,
        buffer_updates: &mut Vec<(usize, NodeId)>,
    ) -> IrResult<NodeId> {
        let arg = |i: usize| -> IrResult<NodeId> {
            match args.get(i) {
                Some(a) => Ok(*a),
                None => ir_bail!("typed node {index} is missing operand {i}"),
            }
        };
        let get = |list: &[NodeId], i: usize, what: &str| -> IrResult<NodeId> {
            match list.get(i) {
                Some(v) => Ok(*v),
                None => ir_bail!("typed node {index} refers to missing {what} {i}"),
            }
        };
        let g = &mut *self.g;
        Ok(match op {
            TOp::Input(i) => get(bind.inputs, *i, "input")?,
            TOp::Param(p) => get(bind.params, p.0 as usize, "parameter")?,
            TOp::Const(c) => g.constant(*c as f32),
            TOp::Neg => g.unary(UnaryOp::Neg, arg(0)?)?,
            TOp::Elementwise(f) => function(g, *f, arg(0)?)?,
            TOp::Activation(a) => activation(g, *a, arg(0)?)?,
            TOp::LeakyRelu { alpha } => {
                let x = arg(0)?;
                let zero = g.constant(0.0);
                let pos = g.binary(BinaryOp::Gt, x, zero)?;
                let ax = g.scale(x, *alpha as f32)?;
                g.select(pos, x, ax)?
            }
            TOp::Softmax { axis } => softmax(g, arg(0)?, axis + self.per_sample_offset)?,
            TOp::Binary(f) => {
                let op = match f {
                    BinaryFn::Add => BinaryOp::Add,
                    BinaryFn::Sub => BinaryOp::Sub,
                    BinaryFn::Mul => BinaryOp::Mul,
                    BinaryFn::Div => BinaryOp::Div,
                };
                let (a, b) = align_per_sample(g, arg(0)?, arg(1)?)?;
                g.binary(op, a, b)?
            }
            TOp::MatMul => self.matmul(arg(0)?, arg(1)?)?,
            TOp::Reduce { func, axis } => {
                let x = arg(0)?;
                let ax = axis + usize::from(self.g.shape(x).has_batch());
                let g = &mut *self.g;
                let r = match func {
                    ReduceFn::Sum | ReduceFn::Mean => g.reduce(ReduceOp::Sum, x, &[ax])?,
                    ReduceFn::Max => g.reduce(ReduceOp::Max, x, &[ax])?,
                };
                let r = if *func == ReduceFn::Mean {
                    let len = known(g.shape(x).0[ax])?;
                    g.scale(r, 1.0 / len as f32)?
                } else {
                    r
                };
                g.reshape(r, self.want.clone())?
            }
            TOp::Reshape { .. } | TOp::Flatten => g.reshape(arg(0)?, self.want.clone())?,
            TOp::Transpose => {
                let x = arg(0)?;
                let per_sample = g.shape(x).rank() - usize::from(g.shape(x).has_batch());
                if per_sample < 2 {
                    x
                } else {
                    g.transpose_last2(x)?
                }
            }
            TOp::Concat { axis } => {
                let mut parts = Vec::new();
                for &a in args {
                    let mut s = self.want.clone();
                    s.0[axis + self.per_sample_offset] = self.g.shape(a).0[self.g.shape(a).rank()
                        - (self.want.rank() - axis - self.per_sample_offset)];
                    parts.push(self.g.broadcast_to(a, s)?);
                }
                self.g.push(
                    Op::Concat {
                        axis: axis + self.per_sample_offset,
                    },
                    &parts,
                )?
            }
            TOp::Dense { w, b, .. } => {
                let x = arg(0)?;
                let w = get(bind.params, w.0 as usize, "parameter")?;
                let b = get(bind.params, b.0 as usize, "parameter")?;
                let xw = g.matmul(x, w)?;
                g.add(xw, b)?
            }
            TOp::Conv2d {
                w,
                b,
                filters,
                kernel,
                stride,
                dilation,
                groups,
                padding,
            } => {
                let x = arg(0)?;
                let xs = g.shape(x).clone();
                if xs.rank() != 4 {
                    ir_bail!("internal error: conv2d input {xs} is not [N, h, w, c]");
                }
                let (h, wd, c) = (known(xs.0[1])?, known(xs.0[2])?, known(xs.0[3])?);
                let padding = match padding {
                    typed::Padding::Same => Padding::Same,
                    typed::Padding::Valid => Padding::Valid,
                };
                let cv = Conv::new([h, wd], *kernel, *stride, *dilation, padding)?;
                let w = get(bind.params, w.0 as usize, "parameter")?;
                let b = get(bind.params, b.0 as usize, "parameter")?;
                let y = if *groups == 1 {
                    let w2 = g.reshape(w, Shape::fixed(&[cv.taps() * c, *filters]))?;
                    g.push(Op::Conv(cv), &[x, w2])?
                } else {
                    // One convolution per group of channels, joined along the channels.
                    let (cg, fg) = (c / groups, filters / groups);
                    let mut parts = Vec::new();
                    for i in 0..*groups {
                        let slice = |axis, n| Op::Slice {
                            axis,
                            start: i * n,
                            end: (i + 1) * n,
                        };
                        let xg = g.push(slice(3, cg), &[x])?;
                        let wg = g.push(slice(3, fg), &[w])?;
                        let wg = g.reshape(wg, Shape::fixed(&[cv.taps() * cg, fg]))?;
                        parts.push(g.push(Op::Conv(cv.clone()), &[xg, wg])?);
                    }
                    g.push(Op::Concat { axis: 3 }, &parts)?
                };
                g.add(y, b)?
            }
            TOp::Pool { func, size, stride } => {
                let x = arg(0)?;
                let xs = g.shape(x).clone();
                if xs.rank() != 4 {
                    ir_bail!("internal error: pooling input {xs} is not [N, h, w, c]");
                }
                let (h, wd) = (known(xs.0[1])?, known(xs.0[2])?);
                let cv = Conv::new([h, wd], *size, *stride, [1, 1], Padding::Valid)?;
                let kind = match func {
                    PoolFn::Max => PoolKind::Max,
                    PoolFn::Avg => PoolKind::Avg,
                };
                let y = g.push(Op::Pool(kind, cv), &[x])?;
                if g.shape(y) == self.want {
                    y
                } else {
                    g.reshape(y, self.want.clone())? // global pooling: [N, 1, 1, c] → [N, c]
                }
            }
            TOp::Dropout { rate } => {
                let x = arg(0)?;
                match mode {
                    Mode::Eval => x,
                    Mode::Train { .. } if *rate <= 0.0 => x,
                    Mode::Train { .. } if *rate >= 1.0 => g.scale(x, 0.0)?,
                    Mode::Train { seed, step } => {
                        let shape = g.shape(x).clone();
                        let r = g.push(
                            Op::Rand {
                                seed,
                                key: index as u64,
                                shape,
                            },
                            &[step],
                        )?;
                        let rate_c = g.constant(*rate as f32);
                        let keep = g.binary(BinaryOp::Ge, r, rate_c)?;
                        let scale = g.scale(keep, (1.0 / (1.0 - rate)) as f32)?;
                        g.mul(x, scale)?
                    }
                }
            }
            TOp::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                momentum,
                eps,
            } => {
                let x = arg(0)?;
                let gamma = get(bind.params, gamma.0 as usize, "parameter")?;
                let beta = get(bind.params, beta.0 as usize, "parameter")?;
                let rm = get(bind.buffers, *running_mean, "buffer")?;
                let rv = get(bind.buffers, *running_var, "buffer")?;
                let eps_c = g.constant(*eps as f32);
                let one = g.constant(1.0);
                // `y = (x − mean)·scale + β` with a per-channel `scale = γ/√(var + ε)`: one
                // pointwise pass, and a gradient of one sweep of two reductions (Σdy,
                // Σdy·(x − mean)) and one pointwise pass.
                let (centered, scale) = match mode {
                    Mode::Eval => {
                        let ve = g.add(rv, eps_c)?;
                        let sd = g.unary(UnaryOp::Sqrt, ve)?;
                        let rstd = g.div(one, sd)?;
                        let scale = g.mul(gamma, rstd)?;
                        (g.sub(x, rm)?, scale)
                    }
                    Mode::Train { .. } => {
                        // Two sweeps for the statistics (the mean, then the variance of
                        // `x − mean`, as exact as the data allows). The variance reads the
                        // mean through `stop_grad`: its derivative in the mean,
                        // `−2·E[x − mean]`, is zero, and without the cut the gradient would
                        // hold a reduction of a reduction (three dependent sweeps).
                        let xs = g.shape(x).clone();
                        let axes: Vec<usize> = (0..xs.rank().saturating_sub(1)).collect();
                        let count = element_count(g, &xs, &axes)?;
                        let sum = g.reduce(ReduceOp::Sum, x, &axes)?;
                        let mean = g.div(sum, count)?;
                        let fixed = g.unary(UnaryOp::StopGrad, mean)?;
                        let dev = g.sub(x, fixed)?;
                        let sq = g.mul(dev, dev)?;
                        let sq_sum = g.reduce(ReduceOp::Sum, sq, &axes)?;
                        let var = g.div(sq_sum, count)?;
                        let channel = g.shape(rm).clone();
                        let m = *momentum as f32;
                        for (buffer, old, batch) in
                            [(*running_mean, rm, mean), (*running_var, rv, var)]
                        {
                            let batch = g.reshape(batch, channel.clone())?;
                            let keep = g.scale(old, m)?;
                            let new = g.scale(batch, (1.0 - momentum) as f32)?;
                            buffer_updates.push((buffer, g.add(keep, new)?));
                        }
                        let ve = g.add(var, eps_c)?;
                        let sd = g.unary(UnaryOp::Sqrt, ve)?;
                        let rstd = g.div(one, sd)?;
                        let scale = g.mul(gamma, rstd)?;
                        (g.sub(x, mean)?, scale)
                    }
                };
                let scaled = g.mul(centered, scale)?;
                g.add(scaled, beta)?
            }
        })
    }

    /// `a @ b` with per-sample rank-1 operands promoted as in NumPy.
    fn matmul(&mut self, a: NodeId, b: NodeId) -> IrResult<NodeId> {
        let g = &mut *self.g;
        let (sa, sb) = (g.shape(a).clone(), g.shape(b).clone());
        let rank_a = sa.rank() - usize::from(sa.has_batch());
        let rank_b = sb.rank() - usize::from(sb.has_batch());
        // The common case `[N, n] @ [n, k]` is already a matrix product.
        if rank_a == 1 && sa.has_batch() && sb.rank() == 2 && !sb.has_batch() {
            return g.matmul(a, b);
        }
        let a2 = if rank_a == 1 {
            let mut s = sa.0.clone();
            s.insert(s.len() - 1, Dim::K(1));
            g.reshape(a, Shape(s))?
        } else {
            a
        };
        let b2 = if rank_b == 1 {
            let mut s = sb.0.clone();
            s.push(Dim::K(1));
            g.reshape(b, Shape(s))?
        } else {
            b
        };
        let y = g.matmul(a2, b2)?;
        g.reshape(y, self.want.clone())
    }
}

/// Makes NumPy broadcasting of graph shapes agree with per-sample broadcasting: a batched
/// operand whose per-sample rank is lower than the other operand's gets size-1 dims
/// inserted after `N` (`[N] + [N, 3]` means a per-sample scalar plus a vector, i.e.
/// `[N, 1] + [N, 3]`, not a right-aligned `N` against `3`).
fn align_per_sample(g: &mut Graph, a: NodeId, b: NodeId) -> IrResult<(NodeId, NodeId)> {
    let per_sample = |s: &Shape| s.rank() - usize::from(s.has_batch());
    let (sa, sb) = (g.shape(a).clone(), g.shape(b).clone());
    let target = per_sample(&sa).max(per_sample(&sb));
    let lift = |g: &mut Graph, x: NodeId, s: &Shape| -> IrResult<NodeId> {
        if !s.has_batch() || per_sample(s) >= target {
            return Ok(x);
        }
        let mut dims = vec![Dim::N];
        dims.extend(std::iter::repeat_n(Dim::K(1), target - per_sample(s)));
        dims.extend_from_slice(&s.0[1..]);
        g.reshape(x, Shape(dims))
    };
    Ok((lift(g, a, &sa)?, lift(g, b, &sb)?))
}

/// The number of elements reduced over `axes` of `shape`, as a scalar node (it involves
/// the batch size when an axis is `N`).
pub fn element_count(g: &mut Graph, shape: &Shape, axes: &[usize]) -> IrResult<NodeId> {
    let mut fixed = 1usize;
    let mut batches = 0;
    for &a in axes {
        match shape.0[a] {
            Dim::N => batches += 1,
            Dim::K(k) => fixed *= k,
        }
    }
    let mut count = None;
    for _ in 0..batches {
        let n = g.batch_size();
        count = Some(match count {
            None => n,
            Some(c) => g.mul(c, n)?,
        });
    }
    match count {
        None => Ok(g.constant(fixed as f32)),
        Some(c) if fixed == 1 => Ok(c),
        Some(c) => g.scale(c, fixed as f32),
    }
}

/// An elementwise tensor function in primitives.
fn function(g: &mut Graph, f: Function, x: NodeId) -> IrResult<NodeId> {
    match f {
        Function::Exp => g.unary(UnaryOp::Exp, x),
        Function::Log => g.unary(UnaryOp::Log, x),
        Function::Sqrt => g.unary(UnaryOp::Sqrt, x),
        Function::Abs => g.unary(UnaryOp::Abs, x),
        Function::Square => g.mul(x, x),
        Function::Sum
        | Function::Mean
        | Function::Max
        | Function::Reshape
        | Function::Transpose
        | Function::Concat => ir_bail!("internal error: `{f:?}` is not elementwise"),
    }
}

/// The meaning of an activation: its expansion into primitives (the interpreter, the
/// gradient and the kernels follow from theirs). `leaky_relu` and `softmax`, which have
/// settings, are lowered from their own typed ops.
pub fn activation(g: &mut Graph, a: Activation, x: NodeId) -> IrResult<NodeId> {
    match a {
        Activation::Sigmoid => g.unary(UnaryOp::Sigmoid, x),
        Activation::Tanh => g.unary(UnaryOp::Tanh, x),
        Activation::Relu => {
            let zero = g.constant(0.0);
            g.binary(BinaryOp::Max, x, zero)
        }
        Activation::Softplus => {
            let zero = g.constant(0.0);
            let pos = g.binary(BinaryOp::Max, x, zero)?;
            let ax = g.unary(UnaryOp::Abs, x)?;
            let nax = g.unary(UnaryOp::Neg, ax)?;
            let e = g.unary(UnaryOp::Exp, nax)?;
            let one = g.constant(1.0);
            let ope = g.add(one, e)?;
            let l = g.unary(UnaryOp::Log, ope)?;
            g.add(pos, l)
        }
        Activation::Gelu => {
            let x2 = g.mul(x, x)?;
            let x3 = g.mul(x2, x)?;
            let c3 = g.scale(x3, 0.044715)?;
            let inner = g.add(x, c3)?;
            let k = (2.0 / std::f64::consts::PI).sqrt() as f32;
            let arg = g.scale(inner, k)?;
            let t = g.unary(UnaryOp::Tanh, arg)?;
            let one = g.constant(1.0);
            let opt = g.add(one, t)?;
            let hx = g.scale(x, 0.5)?;
            g.mul(hx, opt)
        }
        Activation::LeakyRelu | Activation::Softmax => {
            ir_bail!("internal error: `{a:?}` has settings and its own typed op")
        }
    }
}

/// Softmax along `axis`, shifted by the (gradient-free) maximum for stability.
pub fn softmax(g: &mut Graph, x: NodeId, axis: usize) -> IrResult<NodeId> {
    let (_, e, s) = shifted_exp(g, x, axis)?;
    g.div(e, s)
}

/// Log-softmax along `axis`: `z − m − log Σ exp(z − m)` with `m = stop_grad(max z)`.
/// Its gradient against a one-hot target is `softmax − onehot`.
pub fn log_softmax(g: &mut Graph, z: NodeId, axis: usize) -> IrResult<NodeId> {
    let (sh, _, s) = shifted_exp(g, z, axis)?;
    let lse = g.unary(UnaryOp::Log, s)?;
    g.sub(sh, lse)
}

/// `sh = z − stop_grad(max z)`, `e = exp(sh)` and `s = Σ e` along `axis`.
fn shifted_exp(g: &mut Graph, z: NodeId, axis: usize) -> IrResult<(NodeId, NodeId, NodeId)> {
    let m = g.reduce(ReduceOp::Max, z, &[axis])?;
    let m = g.unary(UnaryOp::StopGrad, m)?;
    let sh = g.sub(z, m)?;
    let e = g.unary(UnaryOp::Exp, sh)?;
    let s = g.reduce(ReduceOp::Sum, e, &[axis])?;
    Ok((sh, e, s))
}
