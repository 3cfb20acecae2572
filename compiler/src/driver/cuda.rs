//! The `cuda` target's executor: `make_executor` (in `train.rs`) and `nnc bench` call
//! [`cuda_executor`] for `--target cuda`, with the same arguments as the `cpu` target's
//! `cpu_executor`.
//!
//! With the cargo feature `cuda` this opens the GPU through the runtime (a missing driver
//! or GPU is one clear sentence, exit status 1), compiles both steps, renders their PTX for
//! the GPU and hands them to the runtime's `CudaExecutor`. Without the feature it explains
//! how to rebuild.

use nnc_runtime::executor::Executor;

use super::DriverError;
use crate::ir::train::StepGraphs;
use crate::sema::typed::TypedModel;

/// The executor for `--target cuda`: compiles both steps for batch `batch`, renders their
/// PTX for the GPU's architecture (`sm_90` on compute capability 9.x and newer, `sm_80`
/// on 8.x) and loads it with the model's initial state from `seed`.
#[cfg(feature = "cuda")]
pub fn cuda_executor(
    graphs: &StepGraphs,
    model: &TypedModel,
    seed: u64,
    batch: usize,
) -> Result<Box<dyn Executor>, DriverError> {
    use crate::codegen::ptx::{render_program, GpuArch};
    use crate::lower::report::compile_step;
    use nnc_runtime::cuda::{open_device, CudaExecutor, GpuProgram};

    let device = open_device(0).map_err(|e| {
        DriverError::Message(format!(
            "{}\nhelp: use `--target cpu` on machines without an NVIDIA GPU",
            e.message
        ))
    })?;
    let arch = match device.compute_capability {
        (major, _) if major >= 9 => GpuArch::Sm90,
        (8, _) => GpuArch::Sm80,
        (major, minor) => {
            return Err(DriverError::Message(format!(
                "GPU `{}` has compute capability {major}.{minor}; the cuda target needs 8.0 or \
                 newer (A100, H100 and later)\nhelp: use `--target cpu`",
                device.name
            )))
        }
    };
    let mut programs = Vec::new();
    for g in [&graphs.train, &graphs.eval] {
        let step = compile_step(g, batch, None).map_err(DriverError::Message)?;
        let program =
            crate::lower::gpu::schedule(&step.lowered.program).map_err(DriverError::Message)?;
        let ptx = render_program(&program, arch)
            .map_err(|e| DriverError::Message(format!("cannot generate PTX: {e}")))?;
        programs.push(GpuProgram { program, ptx });
    }
    let eval = programs.pop().expect("two programs");
    let train = programs.pop().expect("two programs");
    let info = super::cpu::model_info(graphs, model, seed);
    let exec = CudaExecutor::new(device, train, eval, info)
        .map_err(|e| DriverError::Message(e.message))?;
    Ok(Box::new(exec))
}

/// The executor for `--target cuda` in a build without the `cuda` feature: an error that
/// says how to get one.
#[cfg(not(feature = "cuda"))]
pub fn cuda_executor(
    _graphs: &StepGraphs,
    _model: &TypedModel,
    _seed: u64,
    _batch: usize,
) -> Result<Box<dyn Executor>, DriverError> {
    Err(DriverError::Message(UNAVAILABLE.into()))
}

/// Why the `cuda` target (running on it, or emitting its code) is missing from a build
/// without the `cuda` feature, and how to get it.
pub const UNAVAILABLE: &str = "the `cuda` target is not available in this build\n\
     help: rebuild with `cargo build --release --features cuda` (needs LLVM 19: the Debian \
     package `llvm-19-dev`), or use `--target cpu` or `--target interp`";
