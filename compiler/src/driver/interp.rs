//! The `interp` executor: runs the train-step and eval graphs with the reference
//! interpreter. Slow but obviously correct; it is the oracle the compiled targets are
//! checked against, and it trains the small examples in tests.
//!
//! State is kept by name exactly as the graphs' inputs and outputs name it
//! (`step`'s contract): parameters and buffers, then optimizer state and `step`.

use std::collections::HashMap;

use nnc_runtime::executor::{
    not_parallel, EvalOutput, ExecError, Executor, StateKind, StateTensor, StepOutput, GRAD_EXTRA,
};
use nnc_runtime::tensor::Tensor as RtTensor;

use crate::ir::interp;
use crate::ir::tensor::Tensor;
use crate::sema::typed::TypedModel;
use crate::step::{ParallelGraphs, StepGraphs, INPUT, LABELS, LOSS, OUTPUT};

/// The reference-interpreter backend of one `train` block.
pub struct InterpExecutor {
    graphs: StepGraphs,
    /// Every carried tensor by name.
    values: HashMap<String, Tensor>,
    /// The order and kind of [`Executor::state`].
    order: Vec<(String, StateKind)>,
    /// The state the training step updates: all of `order` but frozen parameters and the
    /// scheduled `lr`, which are step inputs only.
    updated: Vec<String>,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    hash: String,
    /// The data-parallel halves of the step and the gradient buffer between them.
    parallel: Option<(ParallelGraphs, Vec<f32>)>,
}

impl InterpExecutor {
    /// An executor with parameters initialised from `seed` and zero optimizer state.
    pub fn new(graphs: StepGraphs, model: &TypedModel, seed: u64) -> InterpExecutor {
        let values: HashMap<String, Tensor> =
            graphs.initial_values(model, seed).into_iter().collect();
        let order = state_order(&graphs);
        let updated = order
            .iter()
            .filter(|(n, _)| graphs.train.outputs().iter().any(|(o, _)| o == n))
            .map(|(n, _)| n.clone())
            .collect();
        let input_shape = model.inputs[0].shape.dims.clone();
        let output_shape = model.nodes[model.output.0 as usize].shape.dims.clone();
        let hash = model_hash(&graphs);
        InterpExecutor {
            graphs,
            values,
            order,
            updated,
            input_shape,
            output_shape,
            hash,
            parallel: None,
        }
    }

    /// Adds the data-parallel halves of the training step.
    pub fn with_parallel(mut self, graphs: ParallelGraphs) -> InterpExecutor {
        let (_, len) = nnc_runtime::artifact::grad_layout(&graphs.grads);
        self.parallel = Some((graphs, vec![0.0; len + GRAD_EXTRA]));
        self
    }

    fn inputs(&self, x: &RtTensor, y: &RtTensor) -> Result<HashMap<String, Tensor>, ExecError> {
        let mut inputs = self.values.clone();
        inputs.insert(INPUT.to_string(), to_ir(x)?);
        inputs.insert(LABELS.to_string(), to_ir(y)?);
        Ok(inputs)
    }
}

/// Every carried tensor in checkpoint order: parameters and buffers, then optimizer
/// state and `step`.
pub fn state_order(graphs: &StepGraphs) -> Vec<(String, StateKind)> {
    let mut order: Vec<(String, StateKind)> = graphs
        .params
        .iter()
        .map(|(n, _)| (n.clone(), StateKind::Param))
        .collect();
    order.extend(
        graphs
            .buffers
            .iter()
            .map(|b| (b.name.clone(), StateKind::Param)),
    );
    order.extend(
        graphs
            .state
            .iter()
            .map(|s| (s.name.clone(), StateKind::Optimizer)),
    );
    order
}

/// A fingerprint of the training step ([`StepGraphs::hash`]).
pub fn model_hash(graphs: &StepGraphs) -> String {
    graphs.hash.clone()
}

fn to_ir(t: &RtTensor) -> Result<Tensor, ExecError> {
    Tensor::new(t.shape.clone(), t.data.clone()).map_err(|e| ExecError::new(e.to_string()))
}

fn to_rt(t: &Tensor) -> RtTensor {
    RtTensor {
        shape: t.shape.clone(),
        data: t.data.clone(),
    }
}

fn take(outputs: &mut HashMap<String, Tensor>, name: &str) -> Result<Tensor, ExecError> {
    outputs
        .remove(name)
        .ok_or_else(|| ExecError::new(format!("the step graph has no output `{name}`")))
}

fn scalar(t: &Tensor) -> f32 {
    t.data.first().copied().unwrap_or(f32::NAN)
}

impl Executor for InterpExecutor {
    fn backend(&self) -> &str {
        "interp"
    }

    fn model_hash(&self) -> String {
        self.hash.clone()
    }

    fn input_shape(&self) -> Vec<usize> {
        self.input_shape.clone()
    }

    fn output_shape(&self) -> Vec<usize> {
        self.output_shape.clone()
    }

    fn state(&self) -> Result<Vec<StateTensor>, ExecError> {
        self.order
            .iter()
            .map(|(name, kind)| {
                let t = self
                    .values
                    .get(name)
                    .ok_or_else(|| ExecError::new(format!("no state tensor `{name}`")))?;
                Ok(StateTensor {
                    name: name.clone(),
                    kind: *kind,
                    tensor: to_rt(t),
                })
            })
            .collect()
    }

    fn set_state(&mut self, state: &[StateTensor]) -> Result<(), ExecError> {
        for s in state {
            if !self.values.contains_key(&s.name) {
                return Err(ExecError::new(format!("unknown state tensor `{}`", s.name)));
            }
            self.values.insert(s.name.clone(), to_ir(&s.tensor)?);
        }
        Ok(())
    }

    fn train_step(&mut self, x: &RtTensor, y: &RtTensor) -> Result<StepOutput, ExecError> {
        let batch = x.shape.first().copied().unwrap_or(0);
        let inputs = self.inputs(x, y)?;
        let mut outputs = interp::run(&self.graphs.train, &inputs, batch)
            .map_err(|e| ExecError::new(e.to_string()))?;
        let loss = scalar(&take(&mut outputs, LOSS)?);
        let output = to_rt(&take(&mut outputs, OUTPUT)?);
        for name in &self.updated {
            let v = take(&mut outputs, name)?;
            self.values.insert(name.clone(), v);
        }
        Ok(StepOutput {
            loss,
            output: Some(output),
        })
    }

    fn buffer_names(&self) -> Vec<String> {
        self.graphs.buffers.iter().map(|b| b.name.clone()).collect()
    }

    fn grad_step(&mut self, x: &RtTensor, y: &RtTensor) -> Result<StepOutput, ExecError> {
        let batch = x.shape.first().copied().unwrap_or(0);
        let inputs = self.inputs(x, y)?;
        let (graphs, buffer) = self.parallel.as_mut().ok_or_else(not_parallel)?;
        let mut outputs =
            interp::run(&graphs.grad, &inputs, batch).map_err(|e| ExecError::new(e.to_string()))?;
        let loss = scalar(&take(&mut outputs, LOSS)?);
        let output = to_rt(&take(&mut outputs, OUTPUT)?);
        let mut at = 0;
        for (name, _) in &graphs.grads {
            let g = take(&mut outputs, name)?;
            buffer[at..at + g.data.len()].copy_from_slice(&g.data);
            at += g.data.len();
        }
        // What is left are the updated buffers (batch-norm statistics).
        for (name, v) in outputs {
            self.values.insert(name, v);
        }
        Ok(StepOutput {
            loss,
            output: Some(output),
        })
    }

    fn gradients(&mut self) -> Option<&mut [f32]> {
        self.parallel.as_mut().map(|(_, b)| b.as_mut_slice())
    }

    fn apply_gradients(&mut self) -> Result<(), ExecError> {
        let (graphs, buffer) = self.parallel.as_ref().ok_or_else(not_parallel)?;
        let mut inputs = self.values.clone();
        let mut at = 0;
        for (name, shape) in &graphs.grads {
            let len: usize = shape.iter().product();
            let t = Tensor::new(shape.clone(), buffer[at..at + len].to_vec())
                .map_err(|e| ExecError::new(e.to_string()))?;
            inputs.insert(name.clone(), t);
            at += len;
        }
        let outputs =
            interp::run(&graphs.apply, &inputs, 0).map_err(|e| ExecError::new(e.to_string()))?;
        for (name, v) in outputs {
            self.values.insert(name, v);
        }
        Ok(())
    }

    fn eval_batch(&mut self, x: &RtTensor, y: &RtTensor) -> Result<EvalOutput, ExecError> {
        let batch = x.shape.first().copied().unwrap_or(0);
        let inputs = self.inputs(x, y)?;
        let mut outputs = interp::run(&self.graphs.eval, &inputs, batch)
            .map_err(|e| ExecError::new(e.to_string()))?;
        Ok(EvalOutput {
            loss: scalar(&take(&mut outputs, LOSS)?),
            output: to_rt(&take(&mut outputs, OUTPUT)?),
        })
    }
}
