//! The training step split in two for data-parallel training: a gradient step and an
//! update step, with the gradients handed over between them so that the runtime can sum
//! them across processes (an all-reduce) in between.
//!
//! Contract with the runtime (names are the interface):
//! - the gradient step takes what the fused training step takes except the optimizer
//!   state and `lr`; it returns `<param>.grad` for every trainable parameter (the
//!   gradient of the mean loss over the samples it was given), the updated buffers,
//!   `loss` and `output`. It does not advance `step`.
//! - the update step takes the parameters, `<param>.grad`, the optimizer state, `step`
//!   and (under a schedule) `lr`; it clips, decays and applies the gradients as the fused
//!   step does and returns the new parameters, optimizer state and `step`.
//!
//! Run one after the other on one process with the gradients untouched, the two steps
//! compute what the fused step computes: the same ops in the same order.

use super::{build_loss_smoothed, shape_gradients, LR, STEP};
use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::lower::{bind_state, full_shape, lower_model, Bindings, Mode};
use crate::ir::{IrError, IrResult};
use crate::sema::typed::{Loss, Schedule, TypedModel, TypedTrain};

pub use nnc_runtime::artifact::{GRAD_SUFFIX, INPUT, LABELS, LOSS, OUTPUT};

/// The two halves of a training step and the gradients between them.
#[derive(Clone, Debug)]
pub struct ParallelGraphs {
    pub grad: Graph,
    pub apply: Graph,
    /// `<param>.grad` and its shape, for each trainable parameter in declaration order:
    /// the layout of the one gradient buffer the runtime reduces.
    pub grads: Vec<(String, Vec<usize>)>,
}

/// Builds both halves of the training step of `model` under `train`.
pub fn build_parallel_graphs(model: &TypedModel, train: &TypedTrain) -> IrResult<ParallelGraphs> {
    let out_node = model
        .nodes
        .get(model.output.0 as usize)
        .ok_or_else(|| IrError::new("the model output refers to a missing node"))?;
    let label_shape = match train.loss {
        Loss::CrossEntropy => Shape(vec![Dim::N]),
        _ => full_shape(&out_node.shape),
    };
    let trainable: Vec<usize> = (0..model.params.len())
        .filter(|&i| !train.is_frozen(&model.params[i].name))
        .collect();
    let grad_name = |i: usize| format!("{}{GRAD_SUFFIX}", model.params[i].name);

    // The gradient step.
    let mut g = Graph::new(&format!("{}_grad_step", model.name));
    let x = g.input(INPUT, full_shape(&model.inputs[0].shape))?;
    let y = g.input(LABELS, label_shape)?;
    let (params, buffers) = bind_state(&mut g, model)?;
    let step = g.input(STEP, Shape::scalar())?;
    let fwd = lower_model(
        &mut g,
        model,
        Mode::Train {
            seed: train.seed,
            step,
        },
        &Bindings {
            inputs: &[x],
            params: &params,
            buffers: &buffers,
        },
    )?;
    let loss = build_loss_smoothed(&mut g, &fwd, train.loss, y, train.label_smoothing)?;
    let wrt: Vec<NodeId> = trainable.iter().map(|&i| params[i]).collect();
    let raw = crate::autodiff::grad(&mut g, loss, &wrt)?;
    for (k, &i) in trainable.iter().enumerate() {
        g.set_output(&grad_name(i), raw[k])?;
    }
    for (b, id) in &fwd.buffer_updates {
        g.set_output(&model.buffers[*b].name, *id)?;
    }
    g.set_output(LOSS, loss)?;
    g.set_output(OUTPUT, fwd.output)?;
    let grad = g.compact();

    // The update step.
    let mut a = Graph::new(&format!("{}_apply_step", model.name));
    let mut params = Vec::with_capacity(model.params.len());
    for p in &model.params {
        params.push(a.input(&p.name, full_shape(&p.shape))?);
    }
    let step = a.input(STEP, Shape::scalar())?;
    let slots = crate::optim::state_names(&train.optimizer);
    let mut state_inputs = Vec::with_capacity(trainable.len());
    let mut incoming = Vec::with_capacity(trainable.len());
    for &i in &trainable {
        let p = &model.params[i];
        let mut ids = Vec::new();
        for slot in slots {
            ids.push(a.input(&format!("{}.{slot}", p.name), full_shape(&p.shape))?);
        }
        state_inputs.push(ids);
        incoming.push(a.input(&grad_name(i), full_shape(&p.shape))?);
    }
    let lr = if train.schedule == Schedule::Constant {
        None
    } else {
        Some(a.input(LR, Shape::scalar())?)
    };
    let wrt: Vec<NodeId> = trainable.iter().map(|&i| params[i]).collect();
    let grads = shape_gradients(&mut a, train, &wrt, incoming)?;
    let one = a.constant(1.0);
    let t = a.add(step, one)?;
    for (k, &i) in trainable.iter().enumerate() {
        let name = &model.params[i].name;
        let (new_p, new_state) = crate::optim::update_with(
            &mut a,
            &train.optimizer,
            params[i],
            grads[k],
            &state_inputs[k],
            t,
            lr,
        )?;
        a.set_output(name, new_p)?;
        for (slot, id) in slots.iter().zip(new_state) {
            a.set_output(&format!("{name}.{slot}"), id)?;
        }
    }
    a.set_output(STEP, t)?;
    let apply = a.compact();

    Ok(ParallelGraphs {
        grad,
        apply,
        grads: trainable
            .iter()
            .map(|&i| (grad_name(i), model.params[i].shape.dims.clone()))
            .collect(),
    })
}
