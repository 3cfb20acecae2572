//! The last stage: code for a target. The CPU artifact is a folder the runtime loads
//! (`kernels.so` with the kernels of both steps, `train.manifest`, `eval.manifest`, and
//! for data-parallel training `grad.manifest` and `apply.manifest`); the
//! GPU's code is one PTX module per step (feature `cuda`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nnc_kernels::ir::Program as KernelProgram;
use nnc_kernels::manifest::Manifest;
use nnc_runtime::artifact::{APPLY_MANIFEST, EVAL_MANIFEST, GRAD_MANIFEST, TRAIN_MANIFEST};

use super::{CompiledTrain, StepKind};
use crate::codegen::cpu::{emit_object_of, link_shared_object};

/// What building a CPU artifact produced, for reports and benchmarks.
pub struct CpuArtifact {
    pub dir: PathBuf,
    /// The CPU programs of the train and eval steps, as compiled into the library.
    pub train: KernelProgram,
    pub eval: KernelProgram,
    /// Cranelift code generation, linking and the manifests.
    pub codegen_time: Duration,
}

/// Compiles both steps of `compiled` into `dir` (`kernels.so`, `train.manifest`,
/// `eval.manifest`) through the CPU schedule ([`CompiledTrain::cpu_program`]).
pub fn build_cpu_artifact(compiled: &CompiledTrain, dir: &Path) -> Result<CpuArtifact, String> {
    let train = compiled.cpu_program(StepKind::Train)?;
    let eval = compiled.cpu_program(StepKind::Eval)?;
    let parallel = compiled.parallel_cpu_programs()?;
    let start = Instant::now();
    let mut programs = vec![(&train, TRAIN_MANIFEST), (&eval, EVAL_MANIFEST)];
    if let Some([grad, apply]) = &parallel {
        programs.push((grad, GRAD_MANIFEST));
        programs.push((apply, APPLY_MANIFEST));
    }
    let all: Vec<&KernelProgram> = programs.iter().map(|(p, _)| *p).collect();
    let obj = emit_object_of(&all).map_err(|e| format!("cannot generate CPU code: {e}"))?;
    link_shared_object(&obj, dir).map_err(|e| format!("cannot link CPU code: {e}"))?;
    for (program, file) in programs {
        let text = Manifest::of(program)
            .and_then(|m| m.to_text())
            .map_err(|e| format!("cannot write the artifact manifest: {e}"))?;
        let path = dir.join(file);
        std::fs::write(&path, text)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    }
    Ok(CpuArtifact {
        dir: dir.to_path_buf(),
        train,
        eval,
        codegen_time: start.elapsed(),
    })
}

/// The GPU program and PTX of each step, train first, for the architecture `arch`.
#[cfg(feature = "cuda")]
pub fn gpu_modules(
    compiled: &CompiledTrain,
    arch: crate::codegen::ptx::GpuArch,
) -> Result<[(KernelProgram, String); 2], String> {
    let module = |kind: StepKind| -> Result<(KernelProgram, String), String> {
        let program = compiled.gpu_program(kind)?;
        let ptx = crate::codegen::ptx::render_program(&program, arch)
            .map_err(|e| format!("cannot generate PTX: {e}"))?;
        Ok((program, ptx))
    };
    Ok([module(StepKind::Train)?, module(StepKind::Eval)?])
}
