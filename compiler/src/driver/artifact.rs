//! `nnc build FILE -o DIR [--weights W] [--target cpu|cuda]`: a self-contained inference
//! artifact. `DIR` receives `libnnc_model.so` and `nnc_model.h` (the C API, see
//! `crate::pipeline::capi`), `weights.safetensors` (the checked `--weights`, or the seeded
//! initial weights with a warning) with the metadata `nnc train` records, and
//! `manifest.json`: the model, its input and output names and shapes, the preprocessing,
//! the parameter table, the hashes, the nnc version and the files. With `--target cuda`
//! also `eval.ptx`, the evaluation step for the GPU.

use std::path::PathBuf;
use std::time::Duration;

use nnc_runtime::checkpoint::{write_atomically, write_weights};
use serde_json::{json, Value};

use super::predict::implied_preprocess;
use super::train::{make_executor, select_train, task_kind, Target};
use super::weights::{load_weights, weights_metadata};
use super::DriverError;
use crate::pipeline::{self, capi};
use crate::sema::typed::Program;

/// The settings of `nnc build -o`.
#[derive(Clone, Debug)]
pub struct ArtifactOptions {
    pub model: Option<String>,
    pub weights: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub target: Target,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct ArtifactSummary {
    pub files: Vec<PathBuf>,
    /// The front end, graph passes and lowering of both steps, and Cranelift's code
    /// generation and linking of the library.
    pub compile_time: Duration,
}

/// Builds the artifact.
pub fn run_build_artifact(
    program: &Program,
    opts: &ArtifactOptions,
) -> Result<ArtifactSummary, DriverError> {
    let train = select_train(program, opts.model.as_deref())?;
    let model = &program.models[train.model];
    let compiled =
        pipeline::compile_train(model, train, train.batch, None).map_err(DriverError::Message)?;
    let mut exec = make_executor(Target::Interp, model, train, train.seed)?;
    let recorded = match &opts.weights {
        Some(w) => load_weights(exec.as_mut(), w, model, train)?.preprocess(w)?,
        None => {
            eprintln!(
                "warning: no `--weights`: the artifact holds the seeded initial weights of `{}`, not trained ones",
                model.name
            );
            None
        }
    };
    let preprocess = match recorded {
        Some(p) => p,
        None => implied_preprocess(&train.data)?,
    };
    let dir = &opts.out_dir;
    let lib =
        capi::build_inference_library(&compiled, &preprocess, dir).map_err(DriverError::Message)?;
    let task = task_kind(model, train.loss);
    let mut meta = weights_metadata(model, train, exec.as_ref(), task)?;
    meta.push(("nnc.preprocess".into(), preprocess.to_json()));
    let state = exec
        .state()
        .map_err(|e| DriverError::Message(e.to_string()))?;
    let weights_path = dir.join("weights.safetensors");
    write_weights(&weights_path, &state, &meta).map_err(|e| DriverError::Message(e.to_string()))?;
    let mut files = vec![lib.path.clone(), dir.join("nnc_model.h"), weights_path];
    if opts.target == Target::Cuda {
        files.push(write_ptx(&compiled, dir)?);
    }
    let manifest_path = dir.join("manifest.json");
    files.push(manifest_path.clone());
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let parsed = |k: &str| get(k).and_then(|v| serde_json::from_str::<Value>(&v).ok());
    let manifest = json!({
        "format": "nnc-inference-artifact 1",
        "model": model.name,
        "nnc_version": env!("CARGO_PKG_VERSION"),
        "input": parsed("nnc.input"),
        "output": parsed("nnc.output"),
        "task": get("nnc.task"),
        "classes": get("nnc.classes").and_then(|c| c.parse::<u64>().ok()),
        "preprocess": serde_json::from_str::<Value>(&preprocess.to_json()).unwrap_or(Value::Null),
        "parameters": parsed("nnc.params"),
        "params_hash": get("nnc.params_hash"),
        "graph_hash": get("nnc.graph_hash"),
        "trained_weights": opts.weights.is_some(),
        "files": files.iter().filter_map(|f| f.file_name()).map(|f| f.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "eval_kernels": lib.eval.kernels.len(),
    });
    let text = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
    write_atomically(&manifest_path, text.as_bytes())
        .map_err(|e| DriverError::Message(e.to_string()))?;
    Ok(ArtifactSummary {
        files,
        compile_time: compiled.train.elapsed + compiled.eval.elapsed + lib.codegen_time,
    })
}

#[cfg(feature = "cuda")]
fn write_ptx(
    compiled: &pipeline::CompiledTrain,
    dir: &std::path::Path,
) -> Result<PathBuf, DriverError> {
    let [_, (_, ptx)] =
        pipeline::artifact::gpu_modules(compiled, crate::codegen::ptx::GpuArch::Sm80)
            .map_err(DriverError::Message)?;
    let path = dir.join("eval.ptx");
    write_atomically(&path, ptx.as_bytes()).map_err(|e| DriverError::Message(e.to_string()))?;
    Ok(path)
}

#[cfg(not(feature = "cuda"))]
fn write_ptx(_: &pipeline::CompiledTrain, _: &std::path::Path) -> Result<PathBuf, DriverError> {
    Err(DriverError::Message(
        pipeline::emit::CUDA_UNAVAILABLE.to_string(),
    ))
}
