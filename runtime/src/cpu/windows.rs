//! The implicit GEMM behind the kernels' `sgemm_windows` callback: a product whose `A`
//! operand is the windows view of an image (a convolution's `im2col` matrix, or its
//! transpose; see `nnc_kernels::ir::Windows`), never materialised whole.
//!
//! `A` is packed a block of rows at a time into a scratch buffer that stays in cache, and
//! each block is multiplied with [`Sgemm::run`]. Untransposed, a block is some windows ×
//! all taps, and the product's rows of `C` follow; transposed (a weight gradient, `A` is
//! `taps × windows` and the windows are the reduction), a block is some windows, and the
//! blocks accumulate into `C` (`beta = 1` after the first).

use nnc_kernels::abi::WindowsGemm;

use super::gemm::Sgemm;

/// Floats of packed `A` per block: 64 KiB, half of a core's L2 at the least.
const BLOCK_FLOATS: i64 = 16 * 1024;

/// The image offset element `(row, col)` of the untransposed view reads (`row` counted
/// from window 0), or `None` where the element is zero.
fn source(g: &WindowsGemm, row: i64, col: i64) -> Option<i64> {
    let [h, w, c] = g.image;
    let [p_n, q_n] = g.grid;
    let n = row / (p_n * q_n);
    let p = row / q_n % p_n;
    let q = row % q_n;
    let ty = col / (g.taps[1] * c);
    let tx = col / c % g.taps[1];
    let ch = col % c;
    let axis = |a: usize, p: i64, t: i64, len: i64| -> Option<i64> {
        let pos = p * g.step[a] + t * g.tap[a] - g.pad[a];
        let d = g.div[a];
        (pos >= 0 && pos % d == 0 && pos / d < len).then_some(pos / d)
    };
    let y = axis(0, p, ty, h)?;
    let x = axis(1, q, tx, w)?;
    Some(((n * h + y) * w + x) * c + ch)
}

/// Packs windows `rows` (untransposed rows, from window 0) × all columns into `out`,
/// row-major.
///
/// # Safety
/// Every in-image element of those windows lies inside the image buffer at `g.a`.
unsafe fn pack(g: &WindowsGemm, rows: std::ops::Range<i64>, out: &mut [f32]) {
    let cols = g.taps[0] * g.taps[1] * g.image[2];
    let c = g.image[2];
    for (i, r) in rows.enumerate() {
        let dst = &mut out[i * cols as usize..(i + 1) * cols as usize];
        // A tap's channels are contiguous in the image: copy them as one run.
        for t in 0..g.taps[0] * g.taps[1] {
            let run = &mut dst[(t * c) as usize..((t + 1) * c) as usize];
            match source(g, r, t * c) {
                // SAFETY: the caller vouches for the image's extent.
                Some(s) => run.copy_from_slice(unsafe {
                    std::slice::from_raw_parts(g.a.offset(s as isize), c as usize)
                }),
                None => run.fill(0.0),
            }
        }
    }
}

/// `C = alpha·A·B + beta·C` for one [`WindowsGemm`] on the calling thread.
///
/// # Safety
/// The descriptor's pointers, sizes and strides describe live, non-overlapping matrices
/// (the image holds every sample its windows touch).
pub(crate) unsafe fn run(g: &WindowsGemm) {
    let (m, n, k) = (g.m.max(0), g.n.max(0), g.k.max(0));
    if m == 0 || n == 0 {
        return;
    }
    let cols = g.taps[0] * g.taps[1] * g.image[2];
    let block = (BLOCK_FLOATS / cols.max(1)).max(16);
    let mut scratch = vec![0f32; (block * cols) as usize];
    if g.transposed == 0 {
        // A is m windows × k (= cols) taps.
        let mut r = 0;
        while r < m {
            let rows = block.min(m - r);
            // SAFETY: forwarded from this function's contract.
            unsafe { pack(g, g.first + r..g.first + r + rows, &mut scratch) };
            let part = Sgemm {
                m: rows as usize,
                n: n as usize,
                k: k as usize,
                alpha: g.alpha,
                a: scratch.as_ptr(),
                rsa: cols as isize,
                csa: 1,
                b: g.b,
                rsb: g.rsb as isize,
                csb: g.csb as isize,
                beta: g.beta,
                c: g.c.wrapping_offset((r * g.rsc) as isize),
                rsc: g.rsc as isize,
                csc: g.csc as isize,
            };
            // SAFETY: as above; the block's rows of C are its own.
            unsafe { part.run() };
            r += rows;
        }
    } else {
        // A is m (= cols) taps × k windows: C accumulates one block of windows at a time.
        let mut r = 0;
        let mut beta = g.beta;
        if k == 0 {
            // An empty reduction: C = beta·C.
            scale(g, m, n);
            return;
        }
        while r < k {
            let rows = block.min(k - r);
            // SAFETY: forwarded from this function's contract.
            unsafe { pack(g, g.first + r..g.first + r + rows, &mut scratch) };
            let part = Sgemm {
                m: m as usize,
                n: n as usize,
                k: rows as usize,
                alpha: g.alpha,
                a: scratch.as_ptr(),
                rsa: 1,
                csa: cols as isize,
                b: g.b.wrapping_offset((r * g.rsb) as isize),
                rsb: g.rsb as isize,
                csb: g.csb as isize,
                beta,
                c: g.c,
                rsc: g.rsc as isize,
                csc: g.csc as isize,
            };
            // SAFETY: as above.
            unsafe { part.run() };
            beta = 1.0;
            r += rows;
        }
    }
}

/// `C = beta·C` (a product with nothing to sum).
fn scale(g: &WindowsGemm, m: i64, n: i64) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: C is m×n at its strides (the caller's contract).
            unsafe {
                let p = g.c.offset((i * g.rsc + j * g.csc) as isize);
                *p = if g.beta == 0.0 { 0.0 } else { g.beta * *p };
            }
        }
    }
}
