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
    pub sgemm_windows: SgemmWindowsFn,
}

impl KernelCtx {
    /// Byte offset of `sgemm`.
    pub const SGEMM_OFFSET: i32 = 0;
}

/// One implicit GEMM over windows (a `Gemm` with `windows`, see `ir::Windows`):
/// `C = alpha·A·B + beta·C` where `A` is the windows view of the image at `a` (its
/// transpose when `transposed != 0`), `B` and `C` strided as for [`SgemmFn`]. `first` is
/// the window the first row (or, transposed, the first column) of `A` stands for. Passed
/// by pointer: kernels fill one on their stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WindowsGemm {
    pub m: i64,
    pub n: i64,
    pub k: i64,
    pub a: *const f32,
    pub image: [i64; 3],
    pub grid: [i64; 2],
    pub taps: [i64; 2],
    pub step: [i64; 2],
    pub tap: [i64; 2],
    pub pad: [i64; 2],
    pub div: [i64; 2],
    pub first: i64,
    pub transposed: i64,
    pub b: *const f32,
    pub rsb: i64,
    pub csb: i64,
    pub c: *mut f32,
    pub rsc: i64,
    pub csc: i64,
    pub alpha: f32,
    pub beta: f32,
}

/// Runs one [`WindowsGemm`].
pub type SgemmWindowsFn = unsafe extern "C" fn(g: *const WindowsGemm);
