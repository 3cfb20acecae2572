//! The implicit GEMM behind the kernels' `sgemm_windows` callback: a product whose `A`
//! operand is the windows view of an image (a convolution's `im2col` matrix, or its
//! transpose; see `nnc_kernels::ir::Windows`), never materialised whole.
//!
//! `A` is packed a block of windows at a time into a scratch buffer that stays in cache,
//! and each block is multiplied with [`Sgemm::run`]. Untransposed (a convolution's
//! forward pass or its input gradient), a block is some windows × all taps, and its rows
//! of `C` follow; transposed (a weight gradient: `A` is `taps × windows` and the windows
//! are the reduction), the blocks accumulate into `C` (`beta = 1` after the first).
//!
//! Packing copies, per window and tap row, the whole run of in-image taps in one go when
//! the taps are adjacent (`tap = 1`, `div = 1` along the image's columns: `kw·c`
//! contiguous floats inside the image, fewer at a border), else one tap's `c` channels at
//! a time; out-of-image elements are zero-filled. The scratch buffers are thread-local and
//! reused from call to call.
//!
//! Called from a kernel without a parallel loop (the executor's `SERIAL_POOL` is set) a
//! product big enough to pay for a hand-off ([`SPLIT_MIN_MACS`]) runs on both lanes:
//! untransposed, each lane takes half of the windows (rows of `C`); transposed, each lane
//! reduces half of the windows, the first into `C` itself (with `alpha` and `beta`), the
//! second into a partial product that is then added with `alpha`. Inside a parallel loop
//! each lane already has a core, and the product runs on the calling thread.
//!
//! Measured with `runtime/examples/conv_bench.rs` (LeNet's convolutions at batch 128, 2
//! AVX-512 cores, the `gemm` crate's AVX-512 kernels; median of 30 calls):
//!
//! ```text
//! MEASUREMENTS
//! ```

use std::cell::Cell;
use std::ops::Range;

use nnc_kernels::abi::WindowsGemm;

use super::gemm::{Sgemm, SPLIT_MIN_MACS};
use super::pool::Pool;

/// Floats of packed `A` per block: 64 KiB, half of a core's L2 at the least. Chosen by
/// measurement (see the module doc).
pub(crate) const BLOCK_FLOATS: i64 = 16 * 1024;

/// Each lane's part of a split keeps at least this many windows.
const SPLIT_MIN_WINDOWS: i64 = 64;

thread_local! {
    /// The packed block of `A`, per thread (each lane packs its own).
    static PACKED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The second lane's partial `C` of a transposed product split on two lanes.
    static PARTIAL: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's buffer `slot`, grown to at least `len` floats (contents
/// unspecified). The buffer is taken out of the slot for the call, so a nested call
/// would get a fresh one instead of aliasing it.
fn with_scratch<R>(
    slot: &'static std::thread::LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = slot.with(Cell::take);
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    slot.with(|s| s.set(buf));
    out
}

/// The untransposed matrix's column count, `kh·kw·c`.
fn cols(g: &WindowsGemm) -> i64 {
    g.taps[0] * g.taps[1] * g.image[2]
}

/// The image row (axis 0) or column (axis 1) that tap `t` of window position `p` reads,
/// or `None` where the element is zero (`nnc_kernels::ir::Windows::axis`).
#[inline]
fn axis(g: &WindowsGemm, a: usize, p: i64, t: i64, len: i64) -> Option<i64> {
    let pos = p * g.step[a] + t * g.tap[a] - g.pad[a];
    let d = g.div[a];
    (pos >= 0 && pos % d == 0 && pos / d < len).then_some(pos / d)
}

/// Copies `dst.len()` floats of the image at offset `at` into `dst`.
///
/// # Safety
/// `g.a + at .. + dst.len()` lies inside the image buffer.
#[inline]
unsafe fn copy_in(g: &WindowsGemm, at: i64, dst: &mut [f32]) {
    // SAFETY: the caller vouches for the range.
    let src = unsafe { std::slice::from_raw_parts(g.a.offset(at as isize), dst.len()) };
    dst.copy_from_slice(src);
}

/// Packs windows `rows` (untransposed rows, counted from window 0) × all columns into
/// `out`, row-major (`cols(g)` floats a window).
///
/// # Safety
/// Every in-image element of those windows lies inside the image buffer at `g.a`.
pub(crate) unsafe fn pack(g: &WindowsGemm, rows: Range<i64>, out: &mut [f32]) {
    let [h, w, c] = g.image;
    let [p_n, q_n] = g.grid;
    let kw = g.taps[1];
    let cols = cols(g) as usize;
    let run = (kw * c) as usize;
    // Adjacent taps along the image's columns: a tap row is one contiguous run.
    let adjacent = g.tap[1] == 1 && g.div[1] == 1;
    let (mut n, mut p, mut q) = (
        rows.start / (p_n * q_n),
        rows.start / q_n % p_n,
        rows.start % q_n,
    );
    for dst in out
        .chunks_exact_mut(cols)
        .take((rows.end - rows.start) as usize)
    {
        // The in-image taps along the columns when they are adjacent: `lo..hi`.
        let x0 = q * g.step[1] - g.pad[1];
        let (lo, hi) = ((-x0).clamp(0, kw) as usize, (w - x0).clamp(0, kw) as usize);
        for (ty, row) in dst.chunks_exact_mut(run).enumerate() {
            let Some(y) = axis(g, 0, p, ty as i64, h) else {
                row.fill(0.0);
                continue;
            };
            let line = (n * h + y) * w * c;
            if adjacent {
                let c = c as usize;
                if lo >= hi {
                    row.fill(0.0);
                    continue;
                }
                row[..lo * c].fill(0.0);
                // SAFETY: taps `lo..hi` read image columns `x0 + lo .. x0 + hi`, inside
                // `0..w` on image row `y` of sample `n` (the caller's contract).
                unsafe {
                    copy_in(
                        g,
                        line + (x0 + lo as i64) * c as i64,
                        &mut row[lo * c..hi * c],
                    )
                };
                row[hi * c..].fill(0.0);
            } else {
                for (tx, t) in row.chunks_exact_mut(c as usize).enumerate() {
                    match axis(g, 1, q, tx as i64, w) {
                        // SAFETY: image column `x` of row `y` of sample `n` (as above).
                        Some(x) => unsafe { copy_in(g, line + x * c, t) },
                        None => t.fill(0.0),
                    }
                }
            }
        }
        q += 1;
        if q == q_n {
            q = 0;
            p += 1;
            if p == p_n {
                p = 0;
                n += 1;
            }
        }
    }
}

/// `C = alpha·A·B + beta·C` for one [`WindowsGemm`], on both lanes of `pool` when there
/// is one and the product is big enough (see the module doc), else on the calling thread.
///
/// # Safety
/// The descriptor's pointers, sizes and strides describe live, non-overlapping matrices
/// (the image holds every sample its windows touch; no two elements of C share an
/// address).
pub(crate) unsafe fn run(g: &WindowsGemm, pool: Option<&Pool>) {
    // SAFETY: forwarded from this function's contract.
    unsafe { run_blocked(g, pool, BLOCK_FLOATS) }
}

/// [`run`] with `block_floats` floats of packed `A` per block (the benchmark tries
/// several).
///
/// # Safety
/// As for [`run`].
pub(crate) unsafe fn run_blocked(g: &WindowsGemm, pool: Option<&Pool>, block_floats: i64) {
    let (m, n, k) = (g.m.max(0), g.n.max(0), g.k.max(0));
    if m == 0 || n == 0 {
        return;
    }
    let windows = if g.transposed == 0 { m } else { k };
    let block = (block_floats / cols(g).max(1)).max(16);
    let two = pool.filter(|p| {
        p.lanes() > 1
            && windows >= 2 * SPLIT_MIN_WINDOWS
            && (m as usize)
                .saturating_mul(n as usize)
                .saturating_mul(k as usize)
                >= SPLIT_MIN_MACS
    });
    let Some(pool) = two else {
        // SAFETY: forwarded from this function's contract.
        unsafe { part(g, 0..windows, g.c, g.alpha, g.beta, block) };
        return;
    };
    let mid = windows / 2;
    if g.transposed == 0 {
        let job = Job(g);
        let half = |range: Range<i64>| {
            let g = job.get();
            // SAFETY: forwarded from this function's contract; the halves write disjoint
            // rows of C.
            unsafe { part(g, range, g.c, g.alpha, g.beta, block) }
        };
        pool.join(&|| half(0..mid), &|| half(mid..windows));
        return;
    }
    // Transposed: the second lane sums its half of the windows into a partial m×n
    // product (contiguous, row-major), added to C once both are done.
    let (mu, nu) = (m as usize, n as usize);
    with_scratch(&PARTIAL, mu * nu, |partial| {
        let into_partial = WindowsGemm {
            c: partial.as_mut_ptr(),
            rsc: n,
            csc: 1,
            ..*g
        };
        let (lo, hi) = (Job(g), Job(&into_partial));
        let first = || {
            let g = lo.get();
            // SAFETY: forwarded from this function's contract; C and the partial product
            // are distinct, each written by one lane.
            unsafe { part(g, 0..mid, g.c, g.alpha, g.beta, block) }
        };
        let second = || {
            let g = hi.get();
            // SAFETY: as above.
            unsafe { part(g, mid..windows, g.c, 1.0, 0.0, block) }
        };
        pool.join(&first, &second);
        for i in 0..mu {
            for j in 0..nu {
                // SAFETY: element (i, j) of C (the caller's contract).
                unsafe {
                    *g.c.offset((i as i64 * g.rsc + j as i64 * g.csc) as isize) +=
                        g.alpha * partial[i * nu + j];
                }
            }
        }
    });
}

/// A descriptor shared by the two lanes of a split.
#[derive(Clone, Copy)]
struct Job<'a>(&'a WindowsGemm);
// SAFETY: the lanes only read the descriptor and the matrices it points to, and write
// disjoint elements of C (or each its own C).
unsafe impl Sync for Job<'_> {}

impl<'a> Job<'a> {
    /// A method, so that closures capture the whole (`Sync`) wrapper.
    fn get(self) -> &'a WindowsGemm {
        self.0
    }
}

/// The product over windows `range` (counted from `g.first`) on the calling thread, with
/// `C` at `c` (`g.rsc`, `g.csc`) scaled by `alpha` and `beta`. Untransposed, `range` is
/// rows of `A` and `C` (`c` points at row 0 of the whole product); transposed, it is
/// the reduction, and the result is the part of the sum over those windows.
///
/// # Safety
/// As for [`run`], with `c` in place of `g.c`.
unsafe fn part(g: &WindowsGemm, range: Range<i64>, c: *mut f32, alpha: f32, beta: f32, block: i64) {
    let (m, n) = (g.m.max(0), g.n.max(0));
    let cols = cols(g);
    if g.transposed != 0 && range.is_empty() {
        // An empty reduction: C = beta·C.
        scale(c, m, n, g.rsc, g.csc, beta);
        return;
    }
    let len = (block.min(range.end - range.start) * cols) as usize;
    with_scratch(&PACKED, len, |packed| {
        let mut beta = beta;
        let mut r = range.start;
        while r < range.end {
            let rows = block.min(range.end - r);
            // SAFETY: forwarded from this function's contract.
            unsafe { pack(g, g.first + r..g.first + r + rows, packed) };
            let product = if g.transposed == 0 {
                // A is windows × cols(g): these rows of A make these rows of C.
                Sgemm {
                    m: rows as usize,
                    n: n as usize,
                    k: cols as usize,
                    alpha,
                    a: packed.as_ptr(),
                    rsa: cols as isize,
                    csa: 1,
                    b: g.b,
                    rsb: g.rsb as isize,
                    csb: g.csb as isize,
                    beta,
                    c: c.wrapping_offset((r * g.rsc) as isize),
                    rsc: g.rsc as isize,
                    csc: g.csc as isize,
                }
            } else {
                // A is cols(g) × windows: these columns of A meet these rows of B.
                Sgemm {
                    m: m as usize,
                    n: n as usize,
                    k: rows as usize,
                    alpha,
                    a: packed.as_ptr(),
                    rsa: 1,
                    csa: cols as isize,
                    b: g.b.wrapping_offset((r * g.rsb) as isize),
                    rsb: g.rsb as isize,
                    csb: g.csb as isize,
                    beta,
                    c,
                    rsc: g.rsc as isize,
                    csc: g.csc as isize,
                }
            };
            // SAFETY: the packed block is rows × cols floats; B and C are the caller's.
            unsafe { product.run() };
            if g.transposed != 0 {
                beta = 1.0;
            }
            r += rows;
        }
    });
}

/// `C = beta·C` (a product with nothing to sum), writing zeros when `beta == 0`.
fn scale(c: *mut f32, m: i64, n: i64, rsc: i64, csc: i64, beta: f32) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: C is m×n at its strides (the caller's contract).
            unsafe {
                let p = c.offset((i * rsc + j * csc) as isize);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nnc_kernels::ir::{Idx, Windows};

    /// A geometry with `image`, `grid`, `taps`, `step`, `tap`, `pad`, `div`, `first` 0.
    fn view(
        image: [i64; 3],
        grid: [i64; 2],
        taps: [i64; 2],
        step: [i64; 2],
        tap: [i64; 2],
        pad: [i64; 2],
        div: [i64; 2],
    ) -> Windows {
        Windows {
            image,
            grid,
            taps,
            step,
            tap,
            pad,
            div,
            first: Idx::Const(0),
            transposed: false,
        }
    }

    /// Geometries covering every path of `pack`: interior runs, both borders, dilation,
    /// strides, negative taps (input gradients) with `div` > 1.
    fn geometries() -> Vec<Windows> {
        vec![
            // conv 5×5 pad 2 on 12×12×1.
            view(
                [12, 12, 1],
                [12, 12],
                [5, 5],
                [1, 1],
                [1, 1],
                [2, 2],
                [1, 1],
            ),
            // 3×3 stride 2, asymmetric padding, c = 3.
            view([9, 8, 3], [4, 4], [3, 3], [2, 2], [1, 1], [1, 0], [1, 1]),
            // dilation 2.
            view([10, 7, 2], [10, 7], [3, 3], [1, 1], [2, 2], [2, 2], [1, 1]),
            // input gradient of a 3×3 stride-2 pad-1 conv: dY 6×5×4 into dX 11×9.
            view(
                [6, 5, 4],
                [11, 9],
                [3, 3],
                [1, 1],
                [-1, -1],
                [-1, -1],
                [2, 2],
            ),
            // input gradient of a 5×5 valid conv: dY 4×4×3 into 8×8.
            view([4, 4, 3], [8, 8], [5, 5], [1, 1], [-1, -1], [0, 0], [1, 1]),
            // a window wider than the image.
            view([3, 2, 2], [3, 2], [3, 5], [1, 1], [1, 1], [1, 2], [1, 1]),
        ]
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len as u64)
            .map(|i| nnc_kernels::ir::rand_uniform(seed, 0, 0, i) * 2.0 - 1.0)
            .collect()
    }

    /// A descriptor for `w` over `image` with B (k×n) and C as given.
    #[allow(clippy::too_many_arguments)]
    fn descriptor(
        w: &Windows,
        first: i64,
        m: i64,
        n: i64,
        k: i64,
        image: &[f32],
        b: (&[f32], i64, i64),
        c: (&mut [f32], i64, i64),
        alpha: f32,
        beta: f32,
    ) -> WindowsGemm {
        WindowsGemm {
            m,
            n,
            k,
            a: image.as_ptr(),
            image: w.image,
            grid: w.grid,
            taps: w.taps,
            step: w.step,
            tap: w.tap,
            pad: w.pad,
            div: w.div,
            first,
            transposed: i64::from(w.transposed),
            b: b.0.as_ptr(),
            rsb: b.1,
            csb: b.2,
            c: c.0.as_mut_ptr(),
            rsc: c.1,
            csc: c.2,
            alpha,
            beta,
        }
    }

    #[test]
    fn packing_matches_the_definition() {
        for w in geometries() {
            let samples = 2;
            let image = values((w.image_len() * samples) as usize, 1);
            let rows = samples * w.rows_per_sample();
            let cols = w.cols();
            let mut out = vec![f32::NAN; (rows * cols) as usize];
            let mut c = [0f32];
            let g = descriptor(
                &w,
                0,
                1,
                1,
                1,
                &image,
                (&[0.0], 1, 1),
                (&mut c, 1, 1),
                1.0,
                0.0,
            );
            // From a window inside the first sample, to check the running (n, p, q).
            let from = w.grid[1] + 1;
            // SAFETY: the image holds both samples.
            unsafe { pack(&g, from..rows, &mut out) };
            for r in from..rows {
                for col in 0..cols {
                    let want = w.source(r, col).map_or(0.0, |s| image[s as usize]);
                    let got = out[((r - from) * cols + col) as usize];
                    assert_eq!(got, want, "{w:?} window {r} column {col}");
                }
            }
        }
    }

    /// The naive product: `C = alpha·A·B + beta·C` from `Windows::source`, in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        w: &Windows,
        first: i64,
        (m, n, k): (i64, i64, i64),
        image: &[f32],
        b: &[f32],
        c: &mut [f32],
        alpha: f32,
        beta: f32,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for l in 0..k {
                    let s = if w.transposed {
                        w.source(first + l, i)
                    } else {
                        w.source(first + i, l)
                    };
                    if let Some(s) = s {
                        acc += f64::from(image[s as usize]) * f64::from(b[(l * n + j) as usize]);
                    }
                }
                let old = &mut c[(i * n + j) as usize];
                let prev = if beta == 0.0 { 0.0 } else { beta * *old };
                *old = (f64::from(alpha) * acc) as f32 + prev;
            }
        }
    }

    fn assert_close(want: &[f32], got: &[f32], what: &str) {
        let scale = want.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        for (i, (x, y)) in want.iter().zip(got).enumerate() {
            assert!((x - y).abs() <= 1e-5 * scale, "{what}[{i}]: {y} vs {x}");
        }
    }

    /// Every geometry, untransposed and transposed, on one lane and on two, with small
    /// blocks (so that blocks end mid-sample), `first` ≠ 0, alpha and beta ≠ (1, 0),
    /// against the naive loop.
    #[test]
    fn products_match_a_naive_loop() {
        let pool = Pool::new(2);
        let n = 5;
        for mut w in geometries() {
            for transposed in [false, true] {
                w.transposed = transposed;
                let samples = 3;
                let image = values((w.image_len() * samples) as usize, 2);
                let first = 3;
                let windows = samples * w.rows_per_sample() - first - 2;
                let (m, k) = if transposed {
                    (w.cols(), windows)
                } else {
                    (windows, w.cols())
                };
                let b = values((k * n) as usize, 3);
                let c0 = values((m * n) as usize, 4);
                for (alpha, beta) in [(1.0, 0.0), (0.5, 2.0), (-1.0, 1.0)] {
                    let mut want = c0.clone();
                    naive(&w, first, (m, n, k), &image, &b, &mut want, alpha, beta);
                    for (lanes, block) in [(None, BLOCK_FLOATS), (None, 1), (Some(&pool), 1)] {
                        let mut got = c0.clone();
                        if beta == 0.0 {
                            got.fill(f32::NAN); // C is only written
                        }
                        let g = descriptor(
                            &w,
                            first,
                            m,
                            n,
                            k,
                            &image,
                            (&b, n, 1),
                            (&mut got, n, 1),
                            alpha,
                            beta,
                        );
                        // SAFETY: the buffers hold the matrices the descriptor names.
                        unsafe { run_blocked(&g, lanes, block) };
                        let what = format!("{w:?} alpha {alpha} beta {beta} block {block}");
                        assert_close(&want, &got, &what);
                    }
                }
            }
        }
    }

    /// A big enough product is split between the lanes: both halves agree with one lane
    /// (a transposed C with strides, as a weight gradient stored `[f, taps]` would be).
    #[test]
    fn split_products_match_one_lane() {
        let pool = Pool::new(2);
        let w = view(
            [14, 14, 6],
            [10, 10],
            [5, 5],
            [1, 1],
            [1, 1],
            [0, 0],
            [1, 1],
        );
        let image = values((w.image_len() * 4) as usize, 5);
        let n = 16;
        for transposed in [false, true] {
            let w = Windows {
                transposed,
                ..w.clone()
            };
            let windows = 4 * w.rows_per_sample();
            let (m, k) = if transposed {
                (w.cols(), windows)
            } else {
                (windows, w.cols())
            };
            let b = values((k * n) as usize, 6);
            let c0 = values((m * n) as usize, 7);
            let mut results = Vec::new();
            for lanes in [None, Some(&pool)] {
                let mut c = c0.clone();
                let g = descriptor(&w, 0, m, n, k, &image, (&b, n, 1), (&mut c, 1, m), 0.5, 1.0);
                // SAFETY: as above.
                unsafe { run(&g, lanes) };
                results.push(c);
            }
            let mut want = c0.clone();
            let mut rowmajor: Vec<f32> = (0..m * n)
                .map(|e| want[((e % n) * m + e / n) as usize])
                .collect();
            naive(&w, 0, (m, n, k), &image, &b, &mut rowmajor, 0.5, 1.0);
            for (e, v) in rowmajor.iter().enumerate() {
                want[(e as i64 % n * m + e as i64 / n) as usize] = *v;
            }
            assert_close(&want, &results[0], "one lane");
            assert_close(&want, &results[1], "two lanes");
        }
    }
}
