//! Subnormal floats flushed to zero while compiled kernels run.
//!
//! Adam's moment estimates of weights that never receive a gradient (the always-black
//! border pixels of MNIST) decay geometrically into the subnormal range, where every x86
//! multiply takes a microcode assist costing about a hundred cycles: training slowed to
//! half its speed within three epochs before this. Like XLA, the `cpu` executor runs its
//! kernels with FTZ (results) and DAZ (inputs) set in MXCSR, so such values become zero.
//! The interpreter keeps IEEE subnormals; the two agree within the documented tolerance.

/// Sets FTZ and DAZ on the calling thread and restores the previous mode on drop.
pub struct FlushToZero {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

impl FlushToZero {
    pub fn enable() -> FlushToZero {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: reading and writing MXCSR only changes this thread's float mode;
            // FTZ/DAZ are valid bits on every x86-64 CPU with SSE2.
            #[allow(deprecated)]
            let saved = unsafe { std::arch::x86_64::_mm_getcsr() };
            #[allow(deprecated)]
            unsafe {
                std::arch::x86_64::_mm_setcsr(saved | FTZ_DAZ)
            };
            FlushToZero { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushToZero {}
    }

    /// Sets the mode for the rest of the thread's life (the pool's worker).
    pub fn forever() {
        std::mem::forget(FlushToZero::enable());
    }
}

impl Drop for FlushToZero {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the mode read in `enable`.
        #[allow(deprecated)]
        unsafe {
            std::arch::x86_64::_mm_setcsr(self.saved)
        };
    }
}
