//! The `cuda` target's executor. `make_executor` (in `train.rs`) is meant to call
//! [`cuda_executor`] for `--target cuda`, with the same arguments as the `cpu` target's
//! `cpu_executor`.
//!
//! With the cargo feature `cuda` this opens the GPU through the runtime (a missing driver
//! or GPU is one clear sentence, exit status 1); launching the step's PTX kernels is not
//! implemented yet, so it then says so. Without the feature it explains how to rebuild.

use nnc_runtime::executor::Executor;

use super::DriverError;
use crate::ir::train::StepGraphs;
use crate::sema::typed::TypedModel;

/// The executor for `--target cuda`. `graphs`, `model`, `seed` and `batch` are those
/// `cpu_executor` takes; they are not used until kernels run on the GPU.
#[cfg(feature = "cuda")]
pub fn cuda_executor(
    _graphs: &StepGraphs,
    _model: &TypedModel,
    _seed: u64,
    _batch: usize,
) -> Result<Box<dyn Executor>, DriverError> {
    let device = nnc_runtime::cuda::open_device(0).map_err(|e| DriverError::Message(e.message))?;
    Err(DriverError::Message(format!(
        "found GPU `{}` (compute capability {}.{}), but running training steps on it is not \
         implemented yet\nhelp: use `--target cpu` or `--target interp`",
        device.name, device.compute_capability.0, device.compute_capability.1
    )))
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
    Err(DriverError::Message(
        "the `cuda` target is not available in this build\nhelp: rebuild with \
         `cargo build --features cuda` (needs LLVM 19: the Debian package `llvm-19-dev`), \
         or use `--target cpu` or `--target interp`"
            .into(),
    ))
}
