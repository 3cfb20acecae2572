//! The training-step graph and the evaluation graph of a `train` block: the forward graph
//! (`ir::lower`), the loss, its gradient (`autodiff`) and the optimizer update (`optim`)
//! assembled into one graph per step.
//!
//! Contract with the runtime (names are the interface; see [`StepGraphs`]):
//!
//! | train-step inputs | shape |
//! | --- | --- |
//! | `x` | `[N, ..]`, the model input |
//! | `y` | `cross_entropy`: `[N]`, class indices stored as f32; other losses: the model output's shape `[N, ..]` (so `[N, 1]` for one output) |
//! | each parameter, by name (`dense_0.w`) | its shape |
//! | each buffer, by name (`batch_norm_0.running_mean`) | its shape |
//! | `step` | `[]`, the number of steps taken so far (0 before the first) |
//! | each optimizer state tensor, `<param>.<slot>` (`dense_0.w.m`) | the parameter's shape |
//!
//! Train-step outputs: every parameter, buffer and state tensor under its input name (the
//! new value), `step` (+1), `loss` (`[]`, the mean over the `N` samples actually given,
//! so a partial last batch is right), and `output` (the model output, for metrics).
//! The evaluation graph takes `x`, `y`, parameters and buffers and returns `loss` and
//! `output`, with `dropout` the identity and `batch_norm` using its running statistics.
//!
//! Losses: `cross_entropy` applies a stable log-softmax to the logits (the input of a
//! final softmax, or the output itself when the model ends in logits), so its gradient
//! is `(softmax − onehot)/N`; it averages over samples. `binary_cross_entropy` uses the
//! stable logits form after a final sigmoid and clips probabilities to `[1e-7, 1−1e-7]`
//! otherwise; it, `mse` and `mae` average over every output element (samples × outputs).

use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::lower::{bind_state, full_shape, log_softmax, lower_model, Bindings, Forward, Mode};
use crate::ir::op::Op;
use crate::ir::ops::elementwise::{BinaryOp, UnaryOp};
use crate::ir::ops::reduce::ReduceOp;
use crate::ir::tensor::Tensor;
use crate::ir::{init, ir_bail, IrError, IrResult};
use crate::sema::typed::{Loss, Schedule, TypedModel, TypedTrain};

/// The names of the batch and the results: the runtime defines them (its artifact contract).
pub use nnc_runtime::artifact::{INPUT, LABELS, LOSS, OUTPUT};
/// The number of steps taken so far, carried between steps like the parameters.
pub const STEP: &str = "step";
/// The learning rate under a schedule: a scalar state tensor the runtime sets each step.
pub const LR: &str = "lr";

mod parallel;
pub use parallel::{build_parallel_graphs, ParallelGraphs};

/// A named tensor of state and the value every element starts at.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub fill: f32,
}

/// Both graphs of a `train` block and the tensors they carry between steps.
#[derive(Clone, Debug)]
pub struct StepGraphs {
    pub train: Graph,
    pub eval: Graph,
    /// Learnable parameters: name and shape, in declaration order.
    pub params: Vec<(String, Vec<usize>)>,
    /// Model buffers (batch-norm running statistics).
    pub buffers: Vec<StateSpec>,
    /// Optimizer state, then `step`.
    pub state: Vec<StateSpec>,
    /// The shape of `y` (with `N`).
    pub label_shape: Shape,
    /// A fingerprint of the training step (checkpoints record it): the printed train
    /// graph as it is under a schedule, so the learning rate and the schedule, which a
    /// resumed run may change, do not enter it; the model, the loss and every other
    /// optimizer setting do.
    pub hash: String,
}

impl StepGraphs {
    /// Every tensor carried between steps at its starting value: parameters initialised
    /// from `seed`, buffers and optimizer state filled.
    pub fn initial_values(&self, model: &TypedModel, seed: u64) -> Vec<(String, Tensor)> {
        let mut out = init::init_params(model, seed);
        for s in self.buffers.iter().chain(&self.state) {
            out.push((s.name.clone(), Tensor::full(s.shape.clone(), s.fill)));
        }
        out
    }
}

pub fn build_step_graphs(model: &TypedModel, train: &TypedTrain) -> IrResult<StepGraphs> {
    let mut graphs = build(model, train)?;
    graphs.hash = if train.schedule == Schedule::Constant {
        // The same step with the rate read from `lr`, as a scheduled run builds it.
        let mut scheduled = train.clone();
        scheduled.schedule = Schedule::Exponential { gamma: 1.0 };
        step_hash(&build(model, &scheduled)?.train)
    } else {
        step_hash(&graphs.train)
    };
    Ok(graphs)
}

fn step_hash(train: &Graph) -> String {
    let mut h = nnc_runtime::checkpoint::Fnv64::default();
    h.update(crate::ir::print::print_graph(train).as_bytes());
    format!("{:016x}", h.finish())
}

fn build(model: &TypedModel, train: &TypedTrain) -> IrResult<StepGraphs> {
    if model.inputs.len() != 1 {
        ir_bail!(
            "a trained model needs exactly one input, `{}` has {}",
            model.name,
            model.inputs.len()
        );
    }
    let reserved = [INPUT, LABELS, STEP, LOSS, OUTPUT, LR];
    for name in model
        .params
        .iter()
        .map(|p| &p.name)
        .chain(model.buffers.iter().map(|b| &b.name))
    {
        if reserved.contains(&name.as_str()) {
            ir_bail!("parameter `{name}` has a name the training step reserves; rename it");
        }
    }
    let label_shape = label_shape(model, train)?;

    // The training step.
    let mut g = Graph::new(&format!("{}_train_step", model.name));
    let x = g.input(INPUT, full_shape(&model.inputs[0].shape))?;
    let y = g.input(LABELS, label_shape.clone())?;
    let (params, buffers) = bind_state(&mut g, model)?;
    let step = g.input(STEP, Shape::scalar())?;
    let update = update_inputs(&mut g, model, train)?;
    let back = backward(&mut g, model, train, x, y, &params, &buffers, step)?;
    let t = apply_update(&mut g, model, train, &params, step, &update, &back)?;
    for (b, id) in &back.fwd.buffer_updates {
        g.set_output(&model.buffers[*b].name, *id)?;
    }
    g.set_output(STEP, t)?;
    g.set_output(LOSS, back.loss)?;
    g.set_output(OUTPUT, back.fwd.output)?;
    let state = update.state;
    let train_graph = g.compact();

    // The evaluation graph.
    let mut e = Graph::new(&format!("{}_eval", model.name));
    let x = e.input(INPUT, full_shape(&model.inputs[0].shape))?;
    let y = e.input(LABELS, label_shape.clone())?;
    let (params, buffers) = bind_state(&mut e, model)?;
    let fwd = lower_model(
        &mut e,
        model,
        Mode::Eval,
        &Bindings {
            inputs: &[x],
            params: &params,
            buffers: &buffers,
        },
    )?;
    let loss = build_loss_smoothed(&mut e, &fwd, train.loss, y, train.label_smoothing)?;
    e.set_output(LOSS, loss)?;
    e.set_output(OUTPUT, fwd.output)?;
    let eval_graph = e.compact();

    Ok(StepGraphs {
        train: train_graph,
        eval: eval_graph,
        params: model
            .params
            .iter()
            .map(|p| (p.name.clone(), p.shape.dims.clone()))
            .collect(),
        buffers: model
            .buffers
            .iter()
            .map(|b| StateSpec {
                name: b.name.clone(),
                shape: b.shape.dims.clone(),
                fill: b.fill,
            })
            .collect(),
        state,
        label_shape,
        hash: String::new(),
    })
}

/// The scalar loss of a forward pass against labels `y` (see the module doc).
/// The shape of `y`: class indices `[N]` for `cross_entropy`, else the model output's.
fn label_shape(model: &TypedModel, train: &TypedTrain) -> IrResult<Shape> {
    let out_node = model
        .nodes
        .get(model.output.0 as usize)
        .ok_or_else(|| IrError::new("the model output refers to a missing node"))?;
    Ok(match train.loss {
        Loss::CrossEntropy => Shape(vec![Dim::N]),
        _ => full_shape(&out_node.shape),
    })
}

/// The optimizer's inputs of a training step: each trainable parameter's state slots
/// (by parameter index; none for a frozen one), the `lr` input under a schedule, and the
/// state they and `step` make up.
struct UpdateInputs {
    slots: Vec<Vec<NodeId>>,
    lr: Option<NodeId>,
    state: Vec<StateSpec>,
}

fn update_inputs(g: &mut Graph, model: &TypedModel, train: &TypedTrain) -> IrResult<UpdateInputs> {
    let names = crate::optim::state_names(&train.optimizer);
    let mut slots = Vec::with_capacity(model.params.len());
    let mut state = Vec::new();
    for p in &model.params {
        let mut ids = Vec::new();
        if !train.is_frozen(&p.name) {
            for slot in names {
                let name = format!("{}.{slot}", p.name);
                ids.push(g.input(&name, full_shape(&p.shape))?);
                state.push(StateSpec {
                    name,
                    shape: p.shape.dims.clone(),
                    fill: 0.0,
                });
            }
        }
        slots.push(ids);
    }
    state.push(StateSpec {
        name: STEP.into(),
        shape: Vec::new(),
        fill: 0.0,
    });
    // Under a schedule the rate is a scalar input the runtime sets before each step.
    let lr = if train.schedule == Schedule::Constant {
        None
    } else {
        state.push(StateSpec {
            name: LR.into(),
            shape: Vec::new(),
            fill: crate::optim::base_lr(&train.optimizer) as f32,
        });
        Some(g.input(LR, Shape::scalar())?)
    };
    Ok(UpdateInputs { slots, lr, state })
}

/// The forward pass in training mode, the loss, and the raw gradients of the trainable
/// parameters (a frozen one is an input that stays).
struct Backward {
    fwd: Forward,
    loss: NodeId,
    /// Indices of the trainable parameters, in declaration order.
    trainable: Vec<usize>,
    /// The gradient of the loss for each of them.
    grads: Vec<NodeId>,
}

#[allow(clippy::too_many_arguments)]
fn backward(
    g: &mut Graph,
    model: &TypedModel,
    train: &TypedTrain,
    x: NodeId,
    y: NodeId,
    params: &[NodeId],
    buffers: &[NodeId],
    step: NodeId,
) -> IrResult<Backward> {
    let fwd = lower_model(
        g,
        model,
        Mode::Train {
            seed: train.seed,
            step,
        },
        &Bindings {
            inputs: &[x],
            params,
            buffers,
        },
    )?;
    let loss = build_loss_smoothed(g, &fwd, train.loss, y, train.label_smoothing)?;
    let trainable: Vec<usize> = (0..model.params.len())
        .filter(|&i| !train.is_frozen(&model.params[i].name))
        .collect();
    let wrt: Vec<NodeId> = trainable.iter().map(|&i| params[i]).collect();
    let grads = crate::autodiff::grad(g, loss, &wrt)?;
    Ok(Backward {
        fwd,
        loss,
        trainable,
        grads,
    })
}

/// Clips and decays the gradients ([`shape_gradients`]), applies the optimizer to every
/// trainable parameter and sets the new parameters and optimizer state as outputs;
/// returns the advanced `step` (not yet an output).
fn apply_update(
    g: &mut Graph,
    model: &TypedModel,
    train: &TypedTrain,
    params: &[NodeId],
    step: NodeId,
    inputs: &UpdateInputs,
    back: &Backward,
) -> IrResult<NodeId> {
    let wrt: Vec<NodeId> = back.trainable.iter().map(|&i| params[i]).collect();
    let grads = shape_gradients(g, train, &wrt, back.grads.clone())?;
    let one = g.constant(1.0);
    let t = g.add(step, one)?;
    let slots = crate::optim::state_names(&train.optimizer);
    let mut updates = Vec::new();
    for (k, &i) in back.trainable.iter().enumerate() {
        let p = &model.params[i];
        let (new_p, new_state) = crate::optim::update_with(
            g,
            &train.optimizer,
            params[i],
            grads[k],
            &inputs.slots[i],
            t,
            inputs.lr,
        )?;
        updates.push((p.name.clone(), new_p));
        for (slot, id) in slots.iter().zip(new_state) {
            updates.push((format!("{}.{slot}", p.name), id));
        }
    }
    for (name, id) in updates {
        g.set_output(&name, id)?;
    }
    Ok(t)
}

/// The gradients as the optimizer takes them: each element clamped to `[−clip_value,
/// clip_value]`, then all scaled by `min(1, clip_norm / (‖g‖ + 1e-6))` with `‖g‖` the
/// global L2 norm over every trainable parameter (one scalar computed in the step), then
/// `weight_decay · p` added (L2; adamw's decay is decoupled, in its update).
fn shape_gradients(
    g: &mut Graph,
    train: &TypedTrain,
    params: &[NodeId],
    mut grads: Vec<NodeId>,
) -> IrResult<Vec<NodeId>> {
    if let Some(v) = train.clip_value {
        let hi = g.constant(v as f32);
        let lo = g.constant(-v as f32);
        for d in &mut grads {
            let above = g.binary(BinaryOp::Gt, *d, hi)?;
            let capped = g.select(above, hi, *d)?;
            *d = g.binary(BinaryOp::Max, capped, lo)?;
        }
    }
    if let (Some(c), false) = (train.clip_norm, grads.is_empty()) {
        let mut total: Option<NodeId> = None;
        for &d in &grads {
            let sq = g.mul(d, d)?;
            let axes: Vec<usize> = (0..g.shape(sq).rank()).collect();
            let s = g.reduce(ReduceOp::Sum, sq, &axes)?;
            // A scalar, so that the factor keeps each gradient's own shape.
            let s = g.reshape(s, Shape::scalar())?;
            total = Some(match total {
                Some(t) => g.add(t, s)?,
                None => s,
            });
        }
        let norm = g.unary(UnaryOp::Sqrt, total.expect("at least one gradient"))?;
        let tiny = g.constant(1e-6);
        let den = g.add(norm, tiny)?;
        let c = g.constant(c as f32);
        let ratio = g.div(c, den)?;
        let one = g.constant(1.0);
        let over = g.binary(BinaryOp::Gt, ratio, one)?;
        let factor = g.select(over, one, ratio)?;
        for d in &mut grads {
            *d = g.mul(*d, factor)?;
        }
    }
    if train.weight_decay > 0.0 {
        for (d, &p) in grads.iter_mut().zip(params) {
            let decay = g.scale(p, train.weight_decay as f32)?;
            *d = g.add(*d, decay)?;
        }
    }
    Ok(grads)
}

pub fn build_loss(g: &mut Graph, fwd: &Forward, loss: Loss, y: NodeId) -> IrResult<NodeId> {
    build_loss_smoothed(g, fwd, loss, y, 0.0)
}

/// [`build_loss`] with `cross_entropy`'s label smoothing `eps`: the target is
/// `(1 − eps)·one-hot + eps/classes`.
pub fn build_loss_smoothed(
    g: &mut Graph,
    fwd: &Forward,
    loss: Loss,
    y: NodeId,
    eps: f64,
) -> IrResult<NodeId> {
    let out = fwd.output;
    let total = match loss {
        Loss::CrossEntropy => {
            let z = fwd.softmax_logits.unwrap_or(out);
            let zs = g.shape(z).clone();
            let classes = match zs.0.as_slice() {
                [Dim::N, Dim::K(k)] => *k,
                _ => ir_bail!("`cross_entropy` needs an output of one vector per sample, got {zs}"),
            };
            let lsm = log_softmax(g, z, 1)?;
            let labels = g.reshape(y, Shape(vec![Dim::N, Dim::K(1)]))?;
            let classes_iota = g.push(Op::Iota { len: classes }, &[])?;
            let onehot = g.binary(BinaryOp::Eq, labels, classes_iota)?;
            let target = if eps > 0.0 {
                let kept = g.scale(onehot, (1.0 - eps) as f32)?;
                let spread = g.constant((eps / classes as f64) as f32);
                g.add(kept, spread)?
            } else {
                onehot
            };
            let picked = g.mul(target, lsm)?;
            let sum = g.reduce(ReduceOp::Sum, picked, &[0, 1])?;
            let n = g.batch_size();
            let mean = g.div(sum, n)?;
            g.unary(UnaryOp::Neg, mean)?
        }
        Loss::BinaryCrossEntropy => {
            let per_elem = match fwd.sigmoid_logits {
                Some(z) => {
                    // max(z, 0) − z·y + log(1 + exp(−|z|))
                    let zero = g.constant(0.0);
                    let pos = g.binary(BinaryOp::Max, z, zero)?;
                    let zy = g.mul(z, y)?;
                    let a = g.sub(pos, zy)?;
                    let abs = g.unary(UnaryOp::Abs, z)?;
                    let nabs = g.unary(UnaryOp::Neg, abs)?;
                    let ex = g.unary(UnaryOp::Exp, nabs)?;
                    let one = g.constant(1.0);
                    let ope = g.add(one, ex)?;
                    let l = g.unary(UnaryOp::Log, ope)?;
                    g.add(a, l)?
                }
                None => {
                    let lo = g.constant(1e-7);
                    let hi = g.constant(1.0 - 1e-7);
                    let above = g.binary(BinaryOp::Gt, out, hi)?;
                    let capped = g.select(above, hi, out)?;
                    let p = g.binary(BinaryOp::Max, capped, lo)?;
                    let one = g.constant(1.0);
                    let lp = g.unary(UnaryOp::Log, p)?;
                    let omp = g.sub(one, p)?;
                    let lomp = g.unary(UnaryOp::Log, omp)?;
                    let omy = g.sub(one, y)?;
                    let a = g.mul(y, lp)?;
                    let b = g.mul(omy, lomp)?;
                    let s = g.add(a, b)?;
                    g.unary(UnaryOp::Neg, s)?
                }
            };
            mean_all(g, per_elem)?
        }
        Loss::Mse => {
            let d = g.sub(out, y)?;
            let sq = g.mul(d, d)?;
            mean_all(g, sq)?
        }
        Loss::Mae => {
            let d = g.sub(out, y)?;
            let a = g.unary(UnaryOp::Abs, d)?;
            mean_all(g, a)?
        }
    };
    g.reshape(total, Shape::scalar())
}

/// The mean of every element (the count includes the runtime batch size).
fn mean_all(g: &mut Graph, x: NodeId) -> IrResult<NodeId> {
    let s = g.shape(x).clone();
    let axes: Vec<usize> = (0..s.rank()).collect();
    let sum = g.reduce(ReduceOp::Sum, x, &axes)?;
    let count = crate::ir::lower::element_count(g, &s, &axes)?;
    g.div(sum, count)
}

#[cfg(test)]
mod tests;
