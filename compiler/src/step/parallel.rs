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

use super::{apply_update, backward, label_shape, update_inputs, Backward, STEP};
use crate::ir::graph::{Graph, NodeId, Shape};
use crate::ir::lower::{bind_state, full_shape};
use crate::ir::IrResult;
use crate::sema::typed::{TypedModel, TypedTrain};

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

/// Builds both halves of the training step of `model` under `train`, from the same
/// pieces as the fused step ([`super::backward`], [`super::apply_update`]).
pub fn build_parallel_graphs(model: &TypedModel, train: &TypedTrain) -> IrResult<ParallelGraphs> {
    let grad_name = |i: usize| format!("{}{GRAD_SUFFIX}", model.params[i].name);

    // The gradient step.
    let mut g = Graph::new(&format!("{}_grad_step", model.name));
    let x = g.input(INPUT, full_shape(&model.inputs[0].shape))?;
    let y = g.input(LABELS, label_shape(model, train)?)?;
    let (params, buffers) = bind_state(&mut g, model)?;
    let step = g.input(STEP, Shape::scalar())?;
    let back = backward(&mut g, model, train, x, y, &params, &buffers, step)?;
    for (&i, &d) in back.trainable.iter().zip(&back.grads) {
        g.set_output(&grad_name(i), d)?;
    }
    for (b, id) in &back.fwd.buffer_updates {
        g.set_output(&model.buffers[*b].name, *id)?;
    }
    g.set_output(LOSS, back.loss)?;
    g.set_output(OUTPUT, back.fwd.output)?;
    let grad = g.compact();

    // The update step: the gradients come in as inputs.
    let mut a = Graph::new(&format!("{}_apply_step", model.name));
    let params = model
        .params
        .iter()
        .map(|p| a.input(&p.name, full_shape(&p.shape)))
        .collect::<IrResult<Vec<NodeId>>>()?;
    let step = a.input(STEP, Shape::scalar())?;
    let update = update_inputs(&mut a, model, train)?;
    let incoming = back
        .trainable
        .iter()
        .map(|&i| a.input(&grad_name(i), full_shape(&model.params[i].shape)))
        .collect::<IrResult<Vec<NodeId>>>()?;
    let handed = Backward {
        grads: incoming,
        ..back
    };
    let t = apply_update(&mut a, model, train, &params, step, &update, &handed)?;
    a.set_output(STEP, t)?;
    let apply = a.compact();

    Ok(ParallelGraphs {
        grad,
        apply,
        grads: handed
            .trainable
            .iter()
            .map(|&i| (grad_name(i), model.params[i].shape.dims.clone()))
            .collect(),
    })
}
