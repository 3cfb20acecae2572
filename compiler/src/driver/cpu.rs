//! The `cpu` target: compiles a `train` block's step graphs through the passes, fusion
//! and lowering into kernel IR, turns both programs into one native shared library with
//! cranelift, writes the manifests the runtime binds buffers with, and loads the result
//! into the runtime's [`CpuExecutor`].
//!
//! The artifact is built in a fresh temporary folder and that folder is removed as soon
//! as the library is loaded (the mapping stays valid), so nothing is left behind;
//! [`build_artifact`] writes the same files into a folder of the caller's choice, and so
//! does training when the environment variable `NNC_ARTIFACT_DIR` names one.
//!
//! Train and eval kernels live in one library; their symbols are prefixed with `train_`
//! and `eval_` so that the two programs' kernel names never collide.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nnc_kernels::manifest::Manifest;
use nnc_runtime::cpu::{CpuExecutor, ModelInfo, EVAL_MANIFEST, TRAIN_MANIFEST};
use nnc_runtime::executor::Executor;
use nnc_runtime::tensor::Tensor as RtTensor;

use super::interp::{model_hash, state_order};
use super::DriverError;
use crate::codegen::cpu::{emit_object_of, link_shared_object};
use crate::ir::train::StepGraphs;
use crate::lower::report::{compile_step, CompiledStep};
use crate::lower::split::split_gemm_rows;
use crate::sema::typed::TypedModel;

/// What building an artifact produced, for reports and benchmarks.
pub struct Artifact {
    pub dir: PathBuf,
    pub train: CompiledStep,
    pub eval: CompiledStep,
    /// Passes, fusion and lowering of both steps.
    pub lower_time: Duration,
    /// Cranelift code generation and linking.
    pub codegen_time: Duration,
}

fn message(what: &str, e: impl std::fmt::Display) -> DriverError {
    DriverError::Message(format!("{what}: {e}"))
}

/// Compiles both steps of `graphs` into `dir` (`kernels.so`, `train.manifest`,
/// `eval.manifest`). `batch` is the expected batch size: it feeds the cost estimates of
/// the reports and the CPU schedule's decision which products use both cores.
pub fn build_artifact(
    graphs: &StepGraphs,
    batch: usize,
    dir: &Path,
) -> Result<Artifact, DriverError> {
    let start = Instant::now();
    let mut train = compile_step(&graphs.train, batch, None)
        .map_err(|e| message("cannot compile the training step", e))?;
    let mut eval = compile_step(&graphs.eval, batch, None)
        .map_err(|e| message("cannot compile the evaluation step", e))?;
    for (step, prefix) in [(&mut train, "train_"), (&mut eval, "eval_")] {
        let program = &mut step.lowered.program;
        split_gemm_rows(&mut program.kernels, batch);
        for k in &mut program.kernels {
            k.name = format!("{prefix}{}", k.name);
        }
        program
            .validate()
            .map_err(|e| message("the CPU schedule broke a kernel", e))?;
    }
    let lower_time = start.elapsed();
    let start = Instant::now();
    let obj = emit_object_of(&[&train.lowered.program, &eval.lowered.program])
        .map_err(|e| message("cannot generate CPU code", e))?;
    link_shared_object(&obj, dir).map_err(|e| message("cannot link CPU code", e))?;
    for (step, file) in [(&train, TRAIN_MANIFEST), (&eval, EVAL_MANIFEST)] {
        let text = Manifest::of(&step.lowered.program)
            .and_then(|m| m.to_text())
            .map_err(|e| message("cannot write the artifact manifest", e))?;
        let path = dir.join(file);
        std::fs::write(&path, text)
            .map_err(|e| message(&format!("cannot write `{}`", path.display()), e))?;
    }
    Ok(Artifact {
        dir: dir.to_path_buf(),
        train,
        eval,
        lower_time,
        codegen_time: start.elapsed(),
    })
}

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

/// Compiles and loads the `cpu` executor of one `train` block.
pub fn cpu_executor(
    graphs: &StepGraphs,
    model: &TypedModel,
    seed: u64,
    batch: usize,
) -> Result<Box<dyn Executor>, DriverError> {
    Ok(Box::new(load_cpu(graphs, model, seed, batch)?.0))
}

/// [`cpu_executor`] with the artifact's description (kernels, timings), for `nnc bench`.
pub fn load_cpu(
    graphs: &StepGraphs,
    model: &TypedModel,
    seed: u64,
    batch: usize,
) -> Result<(CpuExecutor, Artifact), DriverError> {
    // `NNC_ARTIFACT_DIR` keeps the artifact (for profilers, which need the library's
    // symbols, and for `objdump`).
    let keep = std::env::var_os("NNC_ARTIFACT_DIR").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(scratch_dir);
    let loaded = build_artifact(graphs, batch, &dir).and_then(|art| {
        let exec = CpuExecutor::load(&dir, model_info(graphs, model, seed), default_threads())
            .map_err(|e| message("cannot load the CPU artifact", e))?;
        Ok((exec, art))
    });
    // The library stays mapped after its file is gone.
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    loaded
}
