//! The `cpu` target's executor: the pipeline's CPU artifact of a compiled `train` block
//! (`crate::pipeline::build_cpu_artifact`), loaded into the runtime's [`CpuExecutor`]
//! with the model's initial state.
//!
//! The artifact is built in a fresh temporary folder and that folder is removed as soon
//! as the library is loaded (the mapping stays valid), so nothing is left behind; when
//! the environment variable `NNC_ARTIFACT_DIR` names a folder, the artifact is kept there.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use nnc_runtime::artifact::ModelInfo;
use nnc_runtime::cpu::CpuExecutor;
use nnc_runtime::executor::Executor;
use nnc_runtime::tensor::Tensor as RtTensor;

use super::interp::{model_hash, state_order};
use super::DriverError;
use crate::pipeline::{build_cpu_artifact, CompiledTrain, CpuArtifact};
use crate::sema::typed::TypedModel;
use crate::step::StepGraphs;

/// The runtime's description of the model: shapes, state in checkpoint order with
/// initial values from `seed`, and the model hash (the same as the interpreter's, so
/// checkpoints move between targets).
pub fn model_info(graphs: &StepGraphs, model: &TypedModel, seed: u64) -> ModelInfo {
    let mut values: std::collections::HashMap<String, crate::ir::tensor::Tensor> =
        graphs.initial_values(model, seed).into_iter().collect();
    let state = state_order(graphs)
        .into_iter()
        .filter_map(|(name, kind)| {
            let t = values.remove(&name)?;
            Some((
                name,
                kind,
                RtTensor {
                    shape: t.shape.clone(),
                    data: t.data,
                },
            ))
        })
        .collect();
    ModelInfo {
        input_shape: model.inputs[0].shape.dims.clone(),
        output_shape: model.nodes[model.output.0 as usize].shape.dims.clone(),
        state,
        hash: model_hash(graphs),
        grads: Vec::new(),
        buffers: graphs.buffers.iter().map(|b| b.name.clone()).collect(),
    }
}

/// A fresh, unique folder under the system's temporary directory.
fn scratch_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "nnc-cpu-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The number of threads the executor uses: both cores of a two-core machine, never
/// more than two lanes (the runtime's pool has two); `NNC_THREADS=1` keeps everything on
/// the calling thread.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::env::var("NNC_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(cores)
        .clamp(1, 2)
}

/// Compiles and loads the `cpu` executor of one compiled `train` block.
pub fn cpu_executor(
    compiled: &CompiledTrain,
    model: &TypedModel,
    seed: u64,
) -> Result<Box<dyn Executor>, DriverError> {
    Ok(Box::new(load_cpu(compiled, model, seed)?.0))
}

/// [`cpu_executor`] with the artifact's description (kernels, timings), for `nnc bench`.
pub fn load_cpu(
    compiled: &CompiledTrain,
    model: &TypedModel,
    seed: u64,
) -> Result<(CpuExecutor, CpuArtifact), DriverError> {
    // `NNC_ARTIFACT_DIR` keeps the artifact (for profilers, which need the library's
    // symbols, and for `objdump`).
    let keep = std::env::var_os("NNC_ARTIFACT_DIR").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(scratch_dir);
    let loaded = build_cpu_artifact(compiled, &dir)
        .map_err(DriverError::Message)
        .and_then(|art| {
            let mut info = model_info(&compiled.graphs, model, seed);
            if let Some(p) = &compiled.parallel {
                info.grads = p.grads.clone();
            }
            let exec = CpuExecutor::load(&dir, info, default_threads())
                .map_err(|e| DriverError::Message(format!("cannot load the CPU artifact: {e}")))?;
            Ok((exec, art))
        });
    // The library stays mapped after its file is gone.
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    loaded
}
