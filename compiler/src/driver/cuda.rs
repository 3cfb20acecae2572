//! The `cuda` target's executor: `make_executor` (in `train.rs`) and `nnc bench` call
//! [`cuda_executor`] for `--target cuda`, with the same arguments as the `cpu` target's
//! `cpu_executor`.
//!
//! With the cargo feature `cuda` this opens the GPU through the runtime (a missing driver
//! or GPU is one clear sentence, exit status 1), takes both steps' PTX from the pipeline
//! and hands them to the runtime's `CudaExecutor`. Without the feature it explains how to
//! rebuild.

use nnc_runtime::executor::Executor;

use super::DriverError;
#[cfg(not(feature = "cuda"))]
use crate::pipeline::emit::CUDA_UNAVAILABLE;
use crate::pipeline::CompiledTrain;
use crate::sema::typed::TypedModel;

/// The executor for `--target cuda`: renders the compiled block's PTX for the GPU's
/// architecture (`sm_90` on compute capability 9.x and newer, `sm_80` on 8.x) and loads
/// it with the model's initial state from `seed`.
#[cfg(feature = "cuda")]
pub fn cuda_executor(
    compiled: &CompiledTrain,
    model: &TypedModel,
    seed: u64,
) -> Result<Box<dyn Executor>, DriverError> {
    cuda_executor_on(compiled, model, seed, 0)
}

/// [`cuda_executor`] on GPU `ordinal` of this machine, with the data-parallel halves of
/// the step when `compiled` has them.
#[cfg(feature = "cuda")]
pub fn cuda_executor_on(
    compiled: &CompiledTrain,
    model: &TypedModel,
    seed: u64,
    ordinal: usize,
) -> Result<Box<dyn Executor>, DriverError> {
    use crate::codegen::ptx::GpuArch;
    use crate::pipeline::artifact::gpu_modules;
    use nnc_runtime::cuda::{open_device, CudaExecutor, GpuProgram};

    let device = open_device(ordinal).map_err(|e| {
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
    let [(train, train_ptx), (eval, eval_ptx)] =
        gpu_modules(compiled, arch).map_err(DriverError::Message)?;
    let mut info = super::cpu::model_info(&compiled.graphs, model, seed);
    if let Some(p) = &compiled.parallel {
        info.grads = p.grads.clone();
    }
    let exec = CudaExecutor::new(
        device,
        GpuProgram {
            program: train,
            ptx: train_ptx,
        },
        GpuProgram {
            program: eval,
            ptx: eval_ptx,
        },
        info,
    )
    .map_err(|e| DriverError::Message(e.message))?;
    let exec = match &compiled.parallel {
        Some(p) => {
            let render = |step: &crate::pipeline::CompiledStep| -> Result<GpuProgram, DriverError> {
                let program = crate::pipeline::gpu_program(step).map_err(DriverError::Message)?;
                let ptx = crate::codegen::ptx::render_program(&program, arch)
                    .map_err(|e| DriverError::Message(format!("cannot generate PTX: {e}")))?;
                Ok(GpuProgram { program, ptx })
            };
            exec.with_parallel(render(&p.grad)?, render(&p.apply)?)
                .map_err(|e| DriverError::Message(e.message))?
        }
        None => exec,
    };
    Ok(Box::new(exec))
}

/// The executor for `--target cuda` in a build without the `cuda` feature: an error that
/// says how to get one.
#[cfg(not(feature = "cuda"))]
pub fn cuda_executor(
    _compiled: &CompiledTrain,
    _model: &TypedModel,
    _seed: u64,
) -> Result<Box<dyn Executor>, DriverError> {
    Err(DriverError::Message(CUDA_UNAVAILABLE.into()))
}

/// [`cuda_executor`] on another GPU, in a build without the `cuda` feature: the same error.
#[cfg(not(feature = "cuda"))]
pub fn cuda_executor_on(
    compiled: &CompiledTrain,
    model: &TypedModel,
    seed: u64,
    _ordinal: usize,
) -> Result<Box<dyn Executor>, DriverError> {
    cuda_executor(compiled, model, seed)
}
