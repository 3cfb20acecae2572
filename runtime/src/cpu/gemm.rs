//! The host single-precision GEMM behind the kernels' `sgemm` callback, and the rule for
//! cutting one GEMM into two halves for the runtime's two-lane pool.
//!
//! [`sgemm`] computes `C = alpha·A·B + beta·C` (A is m×k, B is k×n, C is m×n; strides in
//! elements, row stride then column stride, as the kernel IR's `Gemm` passes them) with the
//! `gemm` crate, single-threaded. [`split`] says whether a GEMM is big enough to be worth
//! handing half of it to the second lane, and where to cut it; [`Sgemm::halves`] makes the
//! two halves, which write disjoint parts of C.
//!
//! Both were chosen by measurement with `runtime/examples/gemm_bench.rs` on the GEMMs of one
//! training step of an MLP 784-256-128-10 at batch 128 and 32 (forward, backward data and
//! backward weights, with their real transposed strides), on 2 AVX-512 cores: the `gemm`
//! crate with its AVX-512 kernels (feature `gemm-avx512`) takes 1.0 ms for the 8 GEMMs of a
//! batch-128 step where `matrixmultiply` takes 1.4 ms; cut in two on the pool, 0.6 ms (with
//! the second CPU otherwise idle).
//! `gemm`'s own rayon threading is slower than one thread at these sizes; GEMMs under
//! [`SPLIT_MIN_MACS`] (32×10×128 and the like, ~3 µs) gain under a microsecond from a cut.
//!
//! The file is self-contained (it needs only the `gemm` crate), so it can be declared as
//! `mod gemm;` in `cpu/mod.rs` as is; the benchmark compiles it through `#[path]`.

#![allow(dead_code)] // Until `cpu/mod.rs` calls it; the benchmark uses every item.

use gemm::Parallelism;

/// Below this many multiply-adds (m·n·k) a GEMM runs on one lane: measured, a cut saves at
/// most a microsecond there, not worth the hand-off nor the risk of waiting on a second lane
/// that another process has taken.
pub(crate) const SPLIT_MIN_MACS: usize = 1 << 16;

/// Each half of a split keeps at least this many rows (or columns) of C, a whole number of
/// the micro-kernels' register tiles.
pub(crate) const SPLIT_ALIGN: usize = 16;

/// Where to cut a GEMM in two: each half computes a block of C of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// Rows: the first half computes rows `0..at` of C (from rows `0..at` of A), the second
    /// rows `at..m`.
    M(usize),
    /// Columns: the first half computes columns `0..at` of C (from columns `0..at` of B),
    /// the second columns `at..n`.
    N(usize),
}

/// Rows of C in the `gemm` crate's AVX-512 f32 register tile (4 vectors of 16); its tile is
/// 6 columns wide.
pub(crate) const TILE_M: usize = 64;

/// Whether an m×n×k GEMM is worth running as two halves on two threads, and where to cut.
/// `None` when it is too small to gain (fewer than [`SPLIT_MIN_MACS`] multiply-adds) or
/// too narrow to cut. Cuts the rows when each half keeps a whole [`TILE_M`]-row tile, else
/// the columns (two half-height tiles run slower than one full one on half the columns),
/// else the rows if each half keeps `SPLIT_ALIGN` of them.
pub(crate) fn split(m: usize, n: usize, k: usize) -> Option<Split> {
    if m.saturating_mul(n).saturating_mul(k) < SPLIT_MIN_MACS {
        return None;
    }
    if m >= 2 * TILE_M {
        Some(Split::M(cut(m)))
    } else if n >= 2 * SPLIT_ALIGN {
        Some(Split::N(cut(n)))
    } else if m >= 2 * SPLIT_ALIGN {
        Some(Split::M(cut(m)))
    } else {
        None
    }
}

/// The middle of `len`, rounded to a multiple of `SPLIT_ALIGN` (`len >= 2·SPLIT_ALIGN`).
pub(crate) fn cut(len: usize) -> usize {
    let at = (len / 2 + SPLIT_ALIGN / 2) / SPLIT_ALIGN * SPLIT_ALIGN;
    at.clamp(SPLIT_ALIGN, len - SPLIT_ALIGN)
}

/// The arguments of one `sgemm` call, so that a GEMM can be cut and its halves sent to the
/// pool's lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sgemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub rsa: isize,
    pub csa: isize,
    pub b: *const f32,
    pub rsb: isize,
    pub csb: isize,
    pub beta: f32,
    pub c: *mut f32,
    pub rsc: isize,
    pub csc: isize,
}

// SAFETY: an `Sgemm` is plain data; whoever runs it vouches for its pointers (see `run`).
// The halves of a split write disjoint elements of C and only read A and B.
unsafe impl Send for Sgemm {}
unsafe impl Sync for Sgemm {}

impl Sgemm {
    /// `C = alpha·A·B + beta·C` on the calling thread. When `beta == 0`, C is only
    /// written (it may hold garbage or NaN beforehand), as BLAS does.
    ///
    /// # Safety
    /// `a`, `b` and `c` with their strides must describe m×k, k×n and m×n matrices inside
    /// live allocations; C must not overlap A or B, and no two elements of C may share an
    /// address.
    pub(crate) unsafe fn run(&self) {
        let Sgemm {
            m,
            n,
            k,
            alpha,
            a,
            rsa,
            csa,
            b,
            rsb,
            csb,
            beta,
            c,
            rsc,
            csc,
        } = *self;
        if m == 0 || n == 0 {
            return;
        }
        // The `gemm` crate computes `dst = alpha·dst + beta·lhs·rhs`, reading dst only when
        // `read_dst`: our beta is its alpha and our alpha its beta. Strides go column first.
        // SAFETY: forwarded from this function's contract.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c,
                csc,
                rsc,
                beta != 0.0,
                a,
                csa,
                rsa,
                b,
                csb,
                rsb,
                beta,
                alpha,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }

    /// The two halves of this GEMM cut at `s` (from [`split`]); together they compute
    /// exactly what `run` does, each writing a disjoint block of C.
    pub(crate) fn halves(&self, s: Split) -> [Sgemm; 2] {
        let (mut lo, mut hi) = (*self, *self);
        match s {
            Split::M(at) => {
                debug_assert!(at <= self.m);
                lo.m = at;
                hi.m = self.m - at;
                hi.a = self.a.wrapping_offset(at as isize * self.rsa);
                hi.c = self.c.wrapping_offset(at as isize * self.rsc);
            }
            Split::N(at) => {
                debug_assert!(at <= self.n);
                lo.n = at;
                hi.n = self.n - at;
                hi.b = self.b.wrapping_offset(at as isize * self.csb);
                hi.c = self.c.wrapping_offset(at as isize * self.csc);
            }
        }
        [lo, hi]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rule() {
        // The training step of 784-256-128-10 at batch 128 and 32.
        assert_eq!(split(128, 256, 784), Some(Split::M(64)));
        assert_eq!(split(784, 256, 128), Some(Split::M(400)));
        assert_eq!(split(128, 10, 128), Some(Split::M(64)));
        assert_eq!(split(32, 256, 784), Some(Split::N(128)));
        assert_eq!(split(32, 10, 128), None);
        assert_eq!(split(32, 128, 10), None);
        assert_eq!(split(128, 10, 32), None);
        // Narrow ones.
        assert_eq!(split(16, 4096, 4096), Some(Split::N(2048)));
        assert_eq!(split(64, 10, 4096), Some(Split::M(32)));
        assert_eq!(split(8, 8, 1 << 20), None);
    }

    #[test]
    fn halves_match_whole() {
        let (m, n, k) = (37, 45, 19);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        for s in [Split::M(16), Split::N(32)] {
            let mut whole = vec![1.0f32; m * n];
            let mut parts = whole.clone();
            let g = |c: &mut Vec<f32>| Sgemm {
                m,
                n,
                k,
                alpha: 0.5,
                a: a.as_ptr(),
                rsa: 1,
                csa: m as isize,
                b: b.as_ptr(),
                rsb: n as isize,
                csb: 1,
                beta: 2.0,
                c: c.as_mut_ptr(),
                rsc: n as isize,
                csc: 1,
            };
            // SAFETY: the matrices fill the vectors exactly.
            unsafe {
                g(&mut whole).run();
                for h in g(&mut parts).halves(s) {
                    h.run();
                }
            }
            assert_eq!(whole, parts);
            let i = 5 * n + 7;
            let want: f32 = 2.0 + 0.5 * (0..k).map(|p| a[p * m + 5] * b[p * n + 7]).sum::<f32>();
            assert_eq!(whole[i], want);
        }
    }
}
