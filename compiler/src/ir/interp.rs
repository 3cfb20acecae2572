//! The reference interpreter: runs a graph on f32 tensors, one node at a time in id
//! order, with f64 accumulation in reductions and matrix products. It is deliberately
//! plain: it defines what every op means, and every backend is checked against it.
//! Deterministic: the same graph and inputs give the same bits.

use std::collections::HashMap;

use super::graph::{Graph, NodeId};
use super::op::{EvalCtx, Op};
use super::tensor::Tensor;
use super::{ir_bail, IrResult};

/// The most elements one value may hold (2³¹, 8 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Runs `graph` for a batch of `batch` samples and returns its named outputs. Every input
/// must be given, with its declared shape (`N` = `batch`).
pub fn run(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    batch: usize,
) -> IrResult<HashMap<String, Tensor>> {
    let values = eval(graph, inputs, batch, false)?;
    let mut out = HashMap::new();
    for (name, id) in graph.outputs() {
        match &values[id.index()] {
            Some(t) => out.insert(name.clone(), t.clone()),
            None => ir_bail!("output `{name}` was not computed"),
        };
    }
    Ok(out)
}

/// Evaluates every node (live or not) and returns all values, for tests.
pub fn eval_all(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    batch: usize,
) -> IrResult<Vec<Tensor>> {
    let values = eval(graph, inputs, batch, true)?;
    Ok(values
        .into_iter()
        .map(|v| v.unwrap_or_else(|| Tensor::scalar(0.0)))
        .collect())
}

fn eval(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    batch: usize,
    keep_all: bool,
) -> IrResult<Vec<Option<Tensor>>> {
    let n = graph.len();
    // Live nodes and the last user of each, so that values are dropped when done.
    let mut live = vec![keep_all; n];
    for (_, id) in graph.outputs() {
        live[id.index()] = true;
    }
    for i in (0..n).rev() {
        if live[i] {
            for a in graph.args(NodeId(i as u32)) {
                live[a.index()] = true;
            }
        }
    }
    let mut last_use = vec![0usize; n];
    for i in 0..n {
        for a in graph.args(NodeId(i as u32)) {
            last_use[a.index()] = i;
        }
    }
    let mut keep = vec![keep_all; n];
    for (_, id) in graph.outputs() {
        keep[id.index()] = true;
    }
    let mut values: Vec<Option<Tensor>> = vec![None; n];
    for id in graph.ids() {
        let i = id.index();
        if !live[i] {
            continue;
        }
        let shape = graph.shape(id).resolve(batch);
        match shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
            Some(n) if n <= MAX_ELEMENTS => {}
            _ => ir_bail!("node {id} of shape {shape:?} is too large to evaluate"),
        }
        let value = match graph.op(id) {
            Op::Input { name } => {
                let Some(t) = inputs.get(name) else {
                    ir_bail!("missing input `{name}`");
                };
                if t.shape != shape {
                    ir_bail!(
                        "input `{name}` has shape {:?}, expected {:?}",
                        t.shape,
                        shape
                    );
                }
                if t.data.len() != shape.iter().product::<usize>() {
                    ir_bail!("input `{name}` holds the wrong number of values");
                }
                t.clone()
            }
            op => {
                let args: Vec<&Tensor> = graph
                    .args(id)
                    .iter()
                    .map(|a| {
                        values[a.index()]
                            .as_ref()
                            .expect("operands are evaluated first")
                    })
                    .collect();
                op.eval(
                    &args,
                    &EvalCtx {
                        batch,
                        out_shape: &shape,
                    },
                )?
            }
        };
        values[i] = Some(value);
        for a in graph.args(id) {
            if last_use[a.index()] == i && !keep[a.index()] {
                values[a.index()] = None;
            }
        }
    }
    Ok(values)
}
