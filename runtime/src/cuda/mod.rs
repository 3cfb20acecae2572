//! The `cuda` executor's device side (runtime feature `cuda`): finding an NVIDIA GPU
//! through the CUDA driver, loaded at run time by cudarc (`dynamic-loading`), so the
//! runtime builds and runs on machines without CUDA.
//!
//! Invariant: nothing here panics when the driver or the GPU is missing: cudarc's
//! `CudaContext::new` panics when `libcuda.so` cannot be loaded, so [`open_device`]
//! checks `is_culib_present` first and every failure becomes one [`ExecError`] sentence.
//!
//! [`CudaExecutor`] (in `executor.rs`) loads a step's PTX and launches its kernels.

pub mod data;
mod executor;

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext};

use crate::executor::ExecError;
pub use executor::{CudaExecutor, GpuProgram};

/// A GPU the runtime can use.
pub struct Device {
    pub context: Arc<CudaContext>,
    pub name: String,
    /// `(major, minor)`, e.g. `(8, 0)` for an A100.
    pub compute_capability: (i32, i32),
}

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to `dlopen` the driver library; no driver call is made.
    unsafe { sys::is_culib_present() }
}

/// Opens GPU `ordinal`, or explains in one sentence why there is none.
pub fn open_device(ordinal: usize) -> Result<Device, ExecError> {
    if !driver_present() {
        return Err(ExecError::new(
            "the cuda target needs an NVIDIA GPU and its driver, but the CUDA driver \
             library (libcuda.so) was not found on this machine",
        ));
    }
    let count = CudaContext::device_count()
        .map_err(|e| ExecError::new(format!("the CUDA driver cannot list GPUs: {e}")))?;
    if count <= 0 || ordinal >= count as usize {
        return Err(ExecError::new(format!(
            "the cuda target needs an NVIDIA GPU, but the CUDA driver reports {} \
             (wanted device {ordinal})",
            match count {
                c if c <= 0 => "none".to_string(),
                1 => "1 device".to_string(),
                c => format!("{c} devices"),
            }
        )));
    }
    let context = CudaContext::new(ordinal)
        .map_err(|e| ExecError::new(format!("cannot open GPU {ordinal}: {e}")))?;
    // SAFETY: the runtime uses one stream per context, where every operation is ordered,
    // so cudarc's per-allocation events would only cost time.
    unsafe { context.disable_event_tracking() };
    let name = context
        .name()
        .map_err(|e| ExecError::new(format!("cannot query GPU {ordinal}: {e}")))?;
    let compute_capability = context
        .compute_capability()
        .map_err(|e| ExecError::new(format!("cannot query GPU {ordinal}: {e}")))?;
    Ok(Device {
        context,
        name,
        compute_capability,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a driver the answer is one clear error, never a panic; with one, a device
    /// or an error (a machine may have a driver but no GPU).
    #[test]
    fn opening_a_device_never_panics_and_explains_a_missing_driver() {
        match open_device(0) {
            Ok(d) => assert!(d.compute_capability.0 >= 1, "{}", d.name),
            Err(e) if !driver_present() => {
                assert!(e.message.contains("libcuda.so"), "{e}");
                assert!(!e.message.contains('\n'), "{e}");
            }
            Err(e) => assert!(!e.message.is_empty()),
        }
    }
}
