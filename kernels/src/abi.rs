//! The calling convention between compiled CPU kernels and the runtime, in one place.
//!
//! Every kernel is exported as
//! `extern "C" fn(ctx: *const KernelCtx, bufs: *const *mut f32, n: i64, start: i64, end: i64)`:
//! `bufs` are the base pointers of the kernel's buffers in `Kernel::params` order, `n` is
//! the batch size, and `start..end` is the part of the kernel's parallel loop to run
//! (ignored by kernels without one). The runtime fills a [`KernelCtx`] with the services
//! kernels call back into.

/// `C = alpha·A·B + beta·C` on strided f32 matrices (`A: m×k`, `B: k×n`, `C: m×n`),
/// strides in elements (the shape of `matrixmultiply::sgemm`).
pub type SgemmFn = unsafe extern "C" fn(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
);

/// Services the runtime provides to kernels. `#[repr(C)]`: kernels load the fields at
/// their byte offsets ([`KernelCtx::SGEMM_OFFSET`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KernelCtx {
    pub sgemm: SgemmFn,
}

impl KernelCtx {
    /// Byte offset of `sgemm`.
    pub const SGEMM_OFFSET: i32 = 0;
}
