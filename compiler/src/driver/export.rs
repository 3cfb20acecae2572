//! `nnc export FILE --weights W --onnx OUT.onnx`: the model with trained weights as an
//! ONNX model (see `crate::export::onnx`), its preprocessing included, written
//! atomically. The weights are checked against the model as for `eval`.

use std::collections::HashMap;
use std::path::PathBuf;

use nnc_runtime::checkpoint::write_atomically;
use nnc_runtime::executor::StateKind;

use super::predict::implied_preprocess;
use super::train::{make_executor, select_train, Target};
use super::weights::load_weights;
use super::DriverError;
use crate::diag::{Code, Diagnostic};
use crate::export::export_onnx;
use crate::sema::typed::Program;

/// The settings of `nnc export`.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub model: Option<String>,
    pub weights: PathBuf,
    pub onnx: PathBuf,
}

/// Writes the ONNX file; returns its size in bytes.
pub fn run_export(program: &Program, opts: &ExportOptions) -> Result<usize, DriverError> {
    let train = select_train(program, opts.model.as_deref())?;
    let model = &program.models[train.model];
    let mut exec = make_executor(Target::Interp, model, train, train.seed)?;
    let loaded = load_weights(exec.as_mut(), &opts.weights, model, train)?;
    let preprocess = match loaded.preprocess(&opts.weights)? {
        Some(p) => p,
        None => implied_preprocess(&train.data)?,
    };
    let weights: HashMap<String, _> = exec
        .state()
        .map_err(|e| DriverError::Message(e.to_string()))?
        .into_iter()
        .filter(|s| s.kind == StateKind::Param)
        .map(|s| (s.name, s.tensor))
        .collect();
    let mut metadata = vec![
        ("nnc.model".to_string(), model.name.clone()),
        ("nnc.preprocess".to_string(), preprocess.to_json()),
    ];
    for key in [
        "nnc.task",
        "nnc.classes",
        "nnc.params_hash",
        "nnc.graph_hash",
    ] {
        if let Some(v) = loaded.meta.get(key) {
            metadata.push((key.to_string(), v.clone()));
        }
    }
    let bytes = export_onnx(model, &weights, &preprocess, &metadata).map_err(|e| {
        Diagnostic::new(Code::NotExportable, e.message)
            .label(e.span, "not exportable to ONNX")
            .help("`nnc predict` and `nnc eval` run every model; see `docs/language.md` for what ONNX export covers")
    })?;
    write_atomically(&opts.onnx, &bytes).map_err(|e| DriverError::Message(e.to_string()))?;
    Ok(bytes.len())
}
