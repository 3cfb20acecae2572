//! What `nnc train` records with the weights and how `eval`, `predict` and the exporters
//! check weights against the model they are loaded into.
//!
//! `weights.safetensors`' metadata (`__metadata__`, strings) holds, besides the
//! safetensors `format`:
//!
//! | key | value |
//! | --- | --- |
//! | `nnc.model` | the model's name |
//! | `nnc.version` | the nnc that trained it |
//! | `nnc.input`, `nnc.output` | `{"name": …, "shape": […]}` per sample |
//! | `nnc.task` | `classification`, `binary` or `regression`, and `nnc.classes` / `nnc.outputs` |
//! | `nnc.params` | the parameter table: `[[name, [dims…]], …]` in the model's order |
//! | `nnc.params_hash` | FNV-1a of that table |
//! | `nnc.graph_hash` | FNV-1a of the printed evaluation graph (what the model computes) |
//! | `nnc.preprocess` | what the data source did to samples ([`Preprocess`]), added by the training loop |
//!
//! Loading refuses weights whose parameter names or shapes differ from the model's (all
//! differences are listed), warns when only the model name differs or the graph does,
//! and takes files without metadata (other tools' safetensors) as they are.

use std::collections::HashMap;
use std::path::Path;

use nnc_runtime::checkpoint::{read_weights_with_metadata, Fnv64};
use nnc_runtime::data::Preprocess;
use nnc_runtime::executor::{Executor, StateKind, StateTensor, TaskKind};
use nnc_runtime::tensor::{format_shape, Tensor};
use serde_json::{json, Value};

use super::DriverError;
use crate::ir::print::print_graph;
use crate::pipeline;
use crate::sema::typed::{TypedModel, TypedTrain};

/// The metadata `nnc train` writes into `weights.safetensors` (all but `nnc.preprocess`).
pub(super) fn weights_metadata(
    model: &TypedModel,
    train: &TypedTrain,
    exec: &dyn Executor,
    task: TaskKind,
) -> Result<Vec<(String, String)>, DriverError> {
    let params = param_table(exec)?;
    let mut meta = vec![
        ("nnc.model".to_string(), model.name.clone()),
        (
            "nnc.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "nnc.input".to_string(),
            json!({"name": model.inputs[0].name, "shape": exec.input_shape()}).to_string(),
        ),
        (
            "nnc.output".to_string(),
            json!({"name": output_name(model), "shape": exec.output_shape()}).to_string(),
        ),
        ("nnc.params".to_string(), params_json(&params)),
        ("nnc.params_hash".to_string(), params_hash(&params)),
        ("nnc.graph_hash".to_string(), graph_hash(model, train)?),
    ];
    meta.extend(task_entries(task));
    Ok(meta)
}

/// The output's name in the model (`output probs = …`), or `output`.
pub(super) fn output_name(model: &TypedModel) -> &str {
    model.output_name.as_deref().unwrap_or("output")
}

fn task_entries(task: TaskKind) -> Vec<(String, String)> {
    let (name, extra) = match task {
        TaskKind::Classification { classes } => ("classification", Some(("nnc.classes", classes))),
        TaskKind::Binary => ("binary", None),
        TaskKind::Regression { outputs } => ("regression", Some(("nnc.outputs", outputs))),
    };
    let mut v = vec![("nnc.task".to_string(), name.to_string())];
    if let Some((k, n)) = extra {
        v.push((k.to_string(), n.to_string()));
    }
    v
}

/// Name and shape of every parameter (and buffer) the executor saves as weights.
fn param_table(exec: &dyn Executor) -> Result<Vec<(String, Vec<usize>)>, DriverError> {
    Ok(exec
        .state()
        .map_err(|e| DriverError::Message(e.to_string()))?
        .into_iter()
        .filter(|s| s.kind == StateKind::Param)
        .map(|s| (s.name, s.tensor.shape))
        .collect())
}

fn params_json(params: &[(String, Vec<usize>)]) -> String {
    Value::from(
        params
            .iter()
            .map(|(n, s)| json!([n, s]))
            .collect::<Vec<Value>>(),
    )
    .to_string()
}

fn params_hash(params: &[(String, Vec<usize>)]) -> String {
    let mut h = Fnv64::default();
    for (name, shape) in params {
        h.update(name.as_bytes());
        h.update(&[0]);
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&[1]);
    }
    format!("fnv1a64:{:016x}", h.finish())
}

/// FNV-1a of the printed evaluation graph: changes when what the model computes changes.
pub(super) fn graph_hash(model: &TypedModel, train: &TypedTrain) -> Result<String, DriverError> {
    let graphs = pipeline::step_graphs(model, train).map_err(DriverError::Message)?;
    let mut h = Fnv64::default();
    h.update(print_graph(&graphs.eval).as_bytes());
    Ok(format!("fnv1a64:{:016x}", h.finish()))
}

/// A weights file's tensors and metadata as loaded into a model.
pub(super) struct LoadedWeights {
    pub meta: HashMap<String, String>,
}

impl LoadedWeights {
    /// The recorded preprocessing, if the file has it (a malformed entry is an error).
    pub fn preprocess(&self, path: &Path) -> Result<Option<Preprocess>, DriverError> {
        self.meta
            .get("nnc.preprocess")
            .map(|text| {
                Preprocess::from_json(text).map_err(|e| {
                    DriverError::Message(format!(
                        "`{}`: the recorded preprocessing is malformed: {e}",
                        path.display()
                    ))
                })
            })
            .transpose()
    }
}

/// Replaces the executor's parameters (and buffers) with the tensors of the weights file
/// at `path`, after checking that they are this model's: every difference in names and
/// shapes is listed in one error; a different model name or graph is a warning.
pub(super) fn load_weights(
    exec: &mut dyn Executor,
    path: &Path,
    model: &TypedModel,
    train: &TypedTrain,
) -> Result<LoadedWeights, DriverError> {
    let (tensors, meta) =
        read_weights_with_metadata(path).map_err(|e| DriverError::Message(e.to_string()))?;
    let mut state = exec
        .state()
        .map_err(|e| DriverError::Message(e.to_string()))?;
    state.retain(|s| s.kind == StateKind::Param);
    let differences = differences(&state, &tensors);
    if !differences.is_empty() {
        let trained = meta
            .get("nnc.model")
            .map(|m| format!(" (trained as model `{m}`)"))
            .unwrap_or_default();
        return Err(DriverError::Message(format!(
            "`{}`{trained} does not fit model `{}`:\n{}\nhelp: pass the weights written by `nnc train` for this model, or change the model back to the one they were trained with",
            path.display(),
            model.name,
            differences
                .iter()
                .map(|d| format!("  - {d}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    if let Some(name) = meta.get("nnc.model").filter(|m| **m != model.name) {
        eprintln!(
            "warning: `{}` was trained as model `{name}`; loading it into `{}`, whose parameters have the same names and shapes",
            path.display(),
            model.name
        );
    } else if let Some(hash) = meta.get("nnc.graph_hash") {
        if *hash != graph_hash(model, train)? {
            eprintln!(
                "warning: `{}` was trained with a different computation of model `{}` (same parameters; an activation or layer setting changed?)",
                path.display(),
                model.name
            );
        }
    }
    let updated: Vec<StateTensor> = state
        .into_iter()
        .map(|mut s| {
            if let Some((_, t)) = tensors.iter().find(|(n, _)| *n == s.name) {
                s.tensor = t.clone();
            }
            s
        })
        .collect();
    exec.set_state(&updated)
        .map_err(|e| DriverError::Message(e.to_string()))?;
    Ok(LoadedWeights { meta })
}

/// Starts training from the parameters in the weights file at `path` (`init = "…"`,
/// `--init`): every model parameter the file has, by name, must have the model's shape;
/// parameters the file lacks keep their initializers (a new head on a trained body) and
/// are listed in a note, as are the file's tensors the model does not use.
pub(super) fn init_from(
    exec: &mut dyn Executor,
    path: &Path,
    model: &TypedModel,
    quiet: bool,
) -> Result<(), DriverError> {
    let (tensors, _) =
        read_weights_with_metadata(path).map_err(|e| DriverError::Message(e.to_string()))?;
    let mut state = exec
        .state()
        .map_err(|e| DriverError::Message(e.to_string()))?;
    state.retain(|s| s.kind == StateKind::Param);
    let mut wrong = Vec::new();
    let mut kept = Vec::new();
    for s in &mut state {
        match tensors.iter().find(|(n, _)| *n == s.name) {
            Some((_, t)) if t.shape == s.tensor.shape => s.tensor = t.clone(),
            Some((_, t)) => wrong.push(format!(
                "  - `{}` is {}, the model's is {}",
                s.name,
                format_shape(&t.shape),
                format_shape(&s.tensor.shape)
            )),
            None => kept.push(s.name.clone()),
        }
    }
    if !wrong.is_empty() {
        return Err(DriverError::Message(format!(
            "`{}` cannot initialise model `{}`:\n{}\nhelp: `init` takes weights of the same parameters; leave out the ones that differ by training a model without them, or rename the layer",
            path.display(),
            model.name,
            wrong.join("\n")
        )));
    }
    if kept.len() == state.len() {
        return Err(DriverError::Message(format!(
            "`{}` has none of the parameters of model `{}` ({})\nhelp: `init` takes weights written by `nnc train` for a model with the same layers",
            path.display(),
            model.name,
            state.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let unused: Vec<&str> = tensors
        .iter()
        .filter(|(n, _)| !state.iter().any(|s| s.name == *n))
        .map(|(n, _)| n.as_str())
        .collect();
    if !quiet {
        eprintln!(
            "note: {} of {} parameters start from `{}`",
            state.len() - kept.len(),
            state.len(),
            path.display()
        );
        if !kept.is_empty() {
            eprintln!("note: keeping their initializers: {}", kept.join(", "));
        }
        if !unused.is_empty() {
            eprintln!("note: unused tensors of the file: {}", unused.join(", "));
        }
    }
    exec.set_state(&state)
        .map_err(|e| DriverError::Message(e.to_string()))
}

/// Every way `file` (name, tensor) differs from the model's `state`: missing tensors,
/// tensors of another shape, tensors the model has no parameter for.
fn differences(state: &[StateTensor], file: &[(String, Tensor)]) -> Vec<String> {
    let mut out = Vec::new();
    for s in state {
        match file.iter().find(|(n, _)| *n == s.name) {
            None => out.push(format!(
                "no tensor `{}` (the model's is {})",
                s.name,
                format_shape(&s.tensor.shape)
            )),
            Some((_, t)) if t.shape != s.tensor.shape => out.push(format!(
                "`{}` is {}, the model's is {}",
                s.name,
                format_shape(&t.shape),
                format_shape(&s.tensor.shape)
            )),
            Some(_) => {}
        }
    }
    for (name, t) in file {
        if !state.iter().any(|s| s.name == *name) {
            out.push(format!(
                "`{name}` ({}) is not a parameter of the model",
                format_shape(&t.shape)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_difference_is_listed() {
        let st = |name: &str, shape: Vec<usize>| StateTensor {
            name: name.into(),
            kind: StateKind::Param,
            tensor: Tensor::new(shape.clone(), vec![0.0; shape.iter().product()]).unwrap(),
        };
        let state = vec![st("a", vec![2, 3]), st("b", vec![3]), st("c", vec![1])];
        let file = vec![
            (
                "a".to_string(),
                Tensor::new(vec![3, 2], vec![0.0; 6]).unwrap(),
            ),
            ("c".to_string(), Tensor::new(vec![1], vec![0.0]).unwrap()),
            ("d".to_string(), Tensor::new(vec![4], vec![0.0; 4]).unwrap()),
        ];
        assert_eq!(
            differences(&state, &file),
            vec![
                "`a` is [3, 2], the model's is [2, 3]",
                "no tensor `b` (the model's is [3])",
                "`d` ([4]) is not a parameter of the model",
            ]
        );
    }
}
