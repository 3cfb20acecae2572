//! The implicit GEMM behind the kernels' `sgemm_windows` callback: a product whose `A`
//! operand is the windows view of an image (a convolution's `im2col` matrix, or its
//! transpose; see `nnc_kernels::ir::Windows`), never materialised whole.
//!
//! `A` is packed a block of windows at a time into a thread-local scratch buffer (reused
//! from call to call, sized to stay in cache), and each block is multiplied with
//! [`Sgemm::run`] (the `gemm` crate). Untransposed (a convolution's forward pass or its
//! input gradient), a block is some windows × all taps and makes those rows of `C`;
//! transposed (a weight gradient: `A` is `taps × windows`, the windows are the
//! reduction), the blocks' products are summed into a partial product, added to `C` with
//! `alpha` and `beta` at the end.
//!
//! Two packings ([`Tuning`]):
//! - window-major (row-major `A`: one window's `kh·kw·c` taps after another), for images
//!   of several channels: per window and tap row, the run of in-image taps is copied in
//!   one go when the taps are adjacent (`tap = 1`, `div = 1` along the columns: `kw·c`
//!   contiguous floats, fewer at a border), else one tap's `c` channels at a time;
//! - tap-major (column-major `A`: one tap's value for each window of the block after
//!   another), for images of one channel, where a window-major tap row is a run of only
//!   `kw` floats (copies of 5 floats cost more than the product): a tap's values for a row
//!   of windows are one contiguous run of the image when the step is 1 (else gathered).
//!
//! Out-of-image elements are zero-filled; short copies and fills are inline. The `gemm`
//! crate turns a row-major `C` around (computes `Cᵀ = Bᵀ·Aᵀ`) so that `C`'s rows run down
//! its register tile (16–64 rows × 6 columns): a window-major block then serves as it is
//! (its windows are the tile's columns, their taps contiguous), the filters run down the
//! tile. A tap-major block goes the other way, windows down the tile: its product goes to
//! a column-major temporary, copied into `C` with `beta`. A transposed product's partial
//! sum is row-major (filters down the tile) for either packing.
//!
//! Products with few columns (`n ≤ 16`: LeNet's 6 filters) waste most of the `gemm`
//! crate's tiles, and their packing costs more than their product; they run on the
//! [`skinny`] micro-kernels (explicit AVX-512 or AVX2+FMA, detected at run time; a scalar
//! fallback) and, where the geometry allows, without packing at all:
//! - unit steps, no `div` ([`direct`], [`direct_seg`]): each sample is copied into a
//!   zero-padded image (the padding and the tap order made explicit), in which a tap's
//!   values over a run of windows, or a window's tap row, are contiguous and read in
//!   place. One channel, untransposed ([`direct_rows`], conv1 fwd): [`skinny::axpy`]
//!   down the windows of several window rows at once (with `kw - 1` junk windows per
//!   row, dropped), a per-tap offset for each of the `kh·kw` columns; transposed
//!   ([`direct_reduce`], conv1 wgrad): [`skinny::dot`] of each tap's run against the
//!   same run of `Bᵀ` (zero at the junk windows). Several channels, untransposed, `n ≤ 8`
//!   ([`direct_seg_rows`], conv2 dgrad): [`skinny::dot_segments`] of each window's `kh`
//!   tap rows (`kw·c` floats each) against `Bᵀ`, its columns in image order, restricted
//!   to the tap rows and the run of tap columns inside the image (the border windows
//!   two by two over the union of their runs). The column-major products of
//!   [`direct_rows`] go into a row-major `C`, and a row-major `B` into the columns of
//!   [`direct_reduce`]'s `Bᵀ`, 16 rows at a time through AVX-512 permutes
//!   ([`skinny::interleave`], [`skinny::deinterleave`]: one scalar store per element
//!   before, as long as the product on conv1 fwd);
//! - otherwise the blocks are packed as above: tap-major blocks through
//!   [`skinny::axpy`] (untransposed) or [`skinny::dot`] against the block's rows of `B`
//!   transposed (transposed), window-major ones through [`skinny::dot`] against `Bᵀ`
//!   (untransposed, `n ≤ 8`) or [`skinny::axpy`] into a column-major partial product
//!   (transposed: conv2 wgrad).
//!
//! Untransposed products of 9–64 columns with unit steps and taps of ±1 (forward passes
//! and input gradients of stride-1 convolutions; with one channel, more than 16 columns)
//! run on the direct tiles of [`tiles`] where the machine has AVX-512: windows read in
//! place from a padded sample, a tile of windows × all columns in registers. (Before
//! them, those of 9–16 columns stayed on the `gemm` crate: the dot kernels were 1.5× to
//! 2.3× slower there.) Transposed products (weight gradients) of 9–64 columns over
//! several channels, unit steps and taps of ±1, run on the tiles' other kernel: taps ×
//! all columns in registers, the windows streamed through them.
//!
//! Before all of those, the input gradient of a stride-1 convolution with at most 8
//! columns (taps of −1, unit steps) runs as a scatter ([`scatter`], AVX-512): each pixel
//! of the output gradient times the weights, added into the windows it reaches, so that
//! the transposed convolution's zero padding is never multiplied (LeNet's conv2 input
//! gradient: `direct_seg_rows` 1.75 ms on one lane, the scatter 0.65 ms).
//!
//! Called from a kernel without a parallel loop (the executor's `SERIAL_POOL` is set) a
//! product big enough to pay for a hand-off ([`SPLIT_MIN_MACS`]) runs on both lanes:
//! untransposed, each lane takes half of the windows (rows of `C`); transposed, each lane
//! sums half of the windows into a partial product of its own, and the two are added into
//! `C`. Inside a parallel loop each lane already has a core, and the product runs on the
//! calling thread.
//!
//! Measured with `runtime/examples/conv_bench.rs` on LeNet's convolutions at batch 128
//! (`cargo run --release -p nnc-runtime --example conv_bench`; 2 AVX-512 cores, the
//! `gemm` crate's AVX-512 kernels, a quiet machine; median of 50 calls; GFLOP/s count
//! `2·m·n·k`, the padding's zeros included). `explicit` packs the whole `im2col` matrix
//! and runs one `sgemm` (both halved on two lanes); `sgemm only` is that product alone, on
//! a matrix packed beforehand (a plain GEMM of the same shape). With the small-`n`
//! kernels (`packed 1t`: the same without the in-place paths; `gemm 1t`: no [`skinny`]
//! kernel, as before them, in the same run):
//!
//! ```text
//! µs (GF/s)    m×n×k         implicit 1t  implicit 2t  explicit 1t  sgemm only   packed 1t    gemm 1t
//! conv1 fwd    100352×6×25    649 (46.4)   342 (88.0)  4905 ( 6.1)  1258 (23.9)  1626 (18.5)  1567 (19.2)
//! conv2 fwd    12800×16×150  1132 (54.3)   859 (71.5)  1083 (56.7)   635 (96.7)  1119 (54.9)  1105 (55.6)
//! conv1 wgrad  25×6×100352    896 (33.6)   555 (54.3)  5198 ( 5.8)  1519 (19.8)  1844 (16.3)  2376 (12.7)
//! conv2 wgrad  150×16×12800  1571 (39.1)   816 (75.3)  1293 (47.5)  1631 (37.7)  1122 (54.8)  1143 (53.7)
//! conv2 dgrad  25088×6×400   1325 (90.9)   848 (142)   9068 (13.3)  6708 (18.0)  3321 (36.3)  5119 (23.5)
//! rgb fwd      131072×16×75  7938 (39.6)  6595 (47.7)  8706 (36.1)  3744 (84.0)  8367 (37.6)  8213 (38.3)
//! ```
//!
//! (after the zero tap columns' skip, the permuted copies and the four-at-a-time sums of
//! the dot tiles; before them, in the same quiet conditions: conv1 fwd 787 / 393 µs on
//! one / two lanes, conv1 wgrad 1310 / 678, conv2 dgrad 2160 / 1113. A/B runs of the two
//! binaries, alternated on the busy machine, agree: conv1 fwd 0.76–0.80 → 0.65 ms, conv1
//! wgrad 1.5–1.7 → 0.80–0.84, conv2 dgrad 2.4–2.6 → 1.33–1.37 on one lane.)
//!
//! (conv2 fwd and rgb fwd run on the `gemm` crate as before, conv2 wgrad's packed blocks
//! on [`skinny::axpy`] about as fast as on it: their columns show the spread from run to
//! run, 5–40% on this shared machine.) Before the small-`n` kernels (the `gemm` crate throughout):
//!
//! ```text
//! µs (GFLOP/s)     m×n×k          implicit 1t   implicit 2t   explicit 1t   explicit 2t  sgemm only
//! conv1 fwd        100352×6×25    1604 (18.8)   1313 (22.9)   5133 ( 5.9)   4299 ( 7.0)  1171 (25.7)
//! conv2 fwd        12800×16×150   1163 (52.8)    621 (98.9)   1119 (54.9)    829 (74.1)   627 (97.9)
//! conv1 wgrad      25×6×100352    2223 (13.5)   1117 (26.9)   4990 ( 6.0)   3129 ( 9.6)  1230 (24.5)
//! conv2 wgrad      150×16×12800   1069 (57.5)    770 (79.7)   1144 (53.7)    795 (77.3)   635 (96.7)
//! conv2 dgrad      25088×6×400    5101 (23.6)   3383 (35.6)   9563 (12.6)   4958 (24.3)  6877 (17.5)
//! 32×32×3 5×5 f16  131072×16×75   7928 (39.7)   6208 (50.7)   8471 (37.1)   5272 (59.7)  3492 (90.1)
//! ```
//!
//! Two-lane times vary by ±30% from run to run on this shared machine (the last row's
//! `implicit 2t` ran 4.2–4.8 ms in three reruns, `explicit 2t` 5.2–6.7 ms). The knobs, one
//! lane, before the small-`n` kernels: tap-major packing is 3–4× faster than window-major on one channel (conv1 fwd
//! 1.6 ms against 6.6, conv1 wgrad 2.2 against 4.9) and 1.3–3× slower on 3 or more (conv2
//! fwd 3.4 ms against 1.16); window-major blocks through the column-major temporary are
//! 1.1–1.8× slower than written directly; a row-major partial product is as fast as a
//! column-major one at 6 filters and 1.25× faster at 16; no block size of 8K–64K floats
//! beats 16K's throughout (each is 0–30% off on some case), 4K ones are 1.4× slower on
//! conv1 fwd (with the small-`n` kernels, `block 4K` is within 3% of 16K throughout
//! except conv2 wgrad, 1.35× slower). What remains between the implicit path and a
//! plain GEMM on 16 filters is the packing itself (about as long as the product on conv2
//! fwd). conv2's input gradient multiplies half zeros (the transposed convolution's
//! padding): its 23.6 GFLOP/s before were 12 of useful work; the in-place path skips the
//! all-zero tap rows (not the zero taps within a tap row): it multiplies 71% of the taps,
//! 51% being in the image, so its 55.7 GFLOP/s were about 28 of useful work; it now
//! skips the zero tap columns too (but for the unions of the border pairs), and its
//! 90.9 GFLOP/s (counting all of `k`) are about 46 of useful work.

use std::cell::Cell;
use std::ops::Range;

use nnc_kernels::abi::WindowsGemm;

use super::gemm::{Sgemm, SPLIT_MIN_MACS, TILE_M};
use super::pool::Pool;

/// The knobs of the implicit GEMM; [`TUNING`] holds the measured choice, the benchmark
/// tries others.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// Floats of packed `A` per block.
    pub block_floats: i64,
    /// Products over images of at most this many channels pack `A` tap-major (see the
    /// module doc), wider ones window-major.
    pub tap_major_max_c: i64,
    /// Untransposed products packed window-major go through the column-major temporary
    /// too (tap-major ones always do, when `C` is row-major).
    pub window_major_temp: bool,
    /// Transposed products with at most this many columns sum into a column-major partial
    /// product (taps down the register tile), wider ones into a row-major one (filters
    /// down the tile).
    pub partial_col_major_max_n: i64,
    /// Products with at most this many columns (and at most [`skinny::MAX_N`]) run on
    /// the [`skinny`] micro-kernels instead of the `gemm` crate.
    pub skinny_max_n: i64,
    /// One-channel untransposed products of unit steps run [`skinny::axpy`] on a
    /// zero-padded copy of each sample, read in place ([`direct_rows`]), not packed.
    pub direct: bool,
    /// Transposed products of at least this many columns (over several channels) run on
    /// the direct tiles of [`tiles::reduce`].
    pub tiles_transposed_min_n: i64,
}

/// The measured choice (see the module doc).
pub(crate) const TUNING: Tuning = Tuning {
    block_floats: 16 * 1024,
    tap_major_max_c: 1,
    window_major_temp: false,
    partial_col_major_max_n: 0,
    skinny_max_n: skinny::MAX_N as i64,
    direct: true,
    tiles_transposed_min_n: 9,
};

/// Each lane's part of a split keeps at least this many windows.
const SPLIT_MIN_WINDOWS: i64 = 64;

/// A transposed product's blocks hold at least this many windows (its reduction): fewer
/// would make each block's product a thin update of all of `C`.
const MIN_REDUCTION_BLOCK: i64 = 256;

thread_local! {
    /// The packed block of `A`, per thread (each lane packs its own).
    static PACKED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// A block's product before it is copied into `C` (untransposed).
    static BLOCK_OUT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// The partial products of a transposed product (one per lane).
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
    nnc_kernels::ir::axis_source([g.step[a], g.tap[a], g.pad[a], g.div[a]], p, t, len)
}

/// Copies `dst.len()` floats from `src`: short runs (a tap row of a narrow image) as a
/// few fixed-size moves, inline, longer ones with `memcpy`.
///
/// # Safety
/// `src .. src + dst.len()` is readable and does not overlap `dst`.
#[inline(always)]
unsafe fn copy_run(src: *const f32, dst: &mut [f32]) {
    let len = dst.len();
    let d = dst.as_mut_ptr();
    // SAFETY: every move stays inside `0..len` of both (the caller's contract).
    unsafe {
        if len >= 32 {
            std::ptr::copy_nonoverlapping(src, d, len);
            return;
        }
        let mut i = 0;
        macro_rules! chunk {
            ($n:literal) => {
                if len - i >= $n {
                    let v = std::ptr::read_unaligned(src.add(i).cast::<[f32; $n]>());
                    std::ptr::write_unaligned(d.add(i).cast::<[f32; $n]>(), v);
                    i += $n;
                }
            };
        }
        chunk!(16);
        chunk!(8);
        chunk!(4);
        chunk!(2);
        chunk!(1);
        debug_assert_eq!(i, len);
    }
}

/// The window `(n, p, q)` that untransposed row `r` (from window 0) stands for.
fn window(g: &WindowsGemm, r: i64) -> (i64, i64, i64) {
    let [p_n, q_n] = g.grid;
    (r / (p_n * q_n), r / q_n % p_n, r % q_n)
}

/// Packs windows `rows` (untransposed rows, counted from window 0) × all columns into
/// `out` window-major (row-major `A`, `cols(g)` floats a window).
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
    let (mut n, mut p, mut q) = window(g, rows.start);
    for dst in out
        .chunks_exact_mut(cols)
        .take((rows.end - rows.start) as usize)
    {
        // The in-image taps along the columns when they are adjacent: `lo..hi`.
        let x0 = q * g.step[1] - g.pad[1];
        let (lo, hi) = ((-x0).clamp(0, kw) as usize, (w - x0).clamp(0, kw) as usize);
        for (ty, row) in dst.chunks_exact_mut(run).enumerate() {
            let Some(y) = axis(g, 0, p, ty as i64, h) else {
                zero(row);
                continue;
            };
            let line = (n * h + y) * w * c;
            if adjacent {
                let c = c as usize;
                if lo >= hi {
                    zero(row);
                    continue;
                }
                zero(&mut row[..lo * c]);
                let at = line + (x0 + lo as i64) * c as i64;
                // SAFETY: taps `lo..hi` read image columns `x0 + lo .. x0 + hi`, inside
                // `0..w` on image row `y` of sample `n` (the caller's contract).
                unsafe { copy_run(g.a.offset(at as isize), &mut row[lo * c..hi * c]) };
                zero(&mut row[hi * c..]);
            } else {
                for (tx, t) in row.chunks_exact_mut(c as usize).enumerate() {
                    match axis(g, 1, q, tx as i64, w) {
                        // SAFETY: image column `x` of row `y` of sample `n` (as above).
                        Some(x) => unsafe { copy_run(g.a.offset((line + x * c) as isize), t) },
                        None => zero(t),
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

/// The samples that windows `range` (counted from `g.first`) reach, in order: each
/// sample `s` with its part of the range, as windows counted from 0 (the kernels that
/// read a sample in place copy it once per item).
fn samples(g: &WindowsGemm, range: Range<i64>) -> impl Iterator<Item = (i64, Range<i64>)> {
    let per = g.grid[0] * g.grid[1];
    let (mut win, end) = (g.first + range.start, g.first + range.end);
    std::iter::from_fn(move || {
        (win < end).then(|| {
            let s = win / per;
            let part = win..end.min((s + 1) * per);
            win = part.end;
            (s, part)
        })
    })
}

/// `⌈a / b⌉` for `b > 0` (no division for `b = 1`, a convolution of stride 1).
#[inline]
fn ceil_div(a: i64, b: i64) -> i64 {
    if b == 1 {
        return a;
    }
    a.div_euclid(b) + i64::from(a.rem_euclid(b) != 0)
}

/// Zero-fills `dst`: short runs (a border's taps, a row of windows) as a few fixed-size
/// stores, inline, longer ones with `memset`.
#[inline(always)]
fn zero(dst: &mut [f32]) {
    let len = dst.len();
    if len >= 32 {
        dst.fill(0.0);
        return;
    }
    let mut rest = dst;
    macro_rules! chunk {
        ($n:literal) => {
            if rest.len() >= $n {
                let (head, tail) = rest.split_at_mut($n);
                head.copy_from_slice(&[0.0; $n]);
                rest = tail;
            }
        };
    }
    chunk!(16);
    chunk!(8);
    chunk!(4);
    chunk!(2);
    chunk!(1);
    debug_assert!(rest.is_empty());
}

/// Packs windows `rows` (counted from window 0) × all columns into `out` tap-major
/// (column-major `A`: column `col` at `out[col·ld ..]`, one float per window).
///
/// # Safety
/// As for [`pack`]; `ld ≥ rows.len()`.
pub(crate) unsafe fn pack_tap_major(g: &WindowsGemm, rows: Range<i64>, out: &mut [f32], ld: usize) {
    let [h, w, c] = g.image;
    let [p_n, q_n] = g.grid;
    let [kh, kw] = g.taps;
    let len = (rows.end - rows.start) as usize;
    let (mut n, mut p, mut q) = window(g, rows.start);
    let mut i = 0;
    while i < len {
        // Windows `q .. q + seg` of window row `(n, p)`, at `i ..` of the block.
        let seg = ((q_n - q) as usize).min(len - i);
        for ty in 0..kh {
            let y = axis(g, 0, p, ty, h);
            for tx in 0..kw {
                // Image column of window `q`: `x0 + q·step` (over `div`).
                let x0 = tx * g.tap[1] - g.pad[1];
                let step = g.step[1];
                for ch in 0..c {
                    let col = ((ty * kw + tx) * c + ch) as usize;
                    let dst = &mut out[col * ld + i..col * ld + i + seg];
                    let Some(y) = y else {
                        zero(dst);
                        continue;
                    };
                    let line = (n * h + y) * w * c + ch;
                    if g.div[1] != 1 || step < 1 {
                        // The general case, element by element (a strided input gradient;
                        // a step of 0 or less, which no convolution makes, but valid).
                        for (j, d) in dst.iter_mut().enumerate() {
                            *d = match axis(g, 1, q + j as i64, tx, w) {
                                // SAFETY: an in-image element (the caller's contract).
                                Some(x) => unsafe { *g.a.offset((line + x * c) as isize) },
                                None => 0.0,
                            };
                        }
                        continue;
                    }
                    // In-image windows: `0 ≤ x0 + q·step < w`.
                    let lo = (ceil_div(-x0, step) - q).clamp(0, seg as i64) as usize;
                    let hi = (ceil_div(w - x0, step) - q).clamp(0, seg as i64) as usize;
                    if lo >= hi {
                        zero(dst);
                        continue;
                    }
                    zero(&mut dst[..lo]);
                    zero(&mut dst[hi..]);
                    let at = line + (x0 + (q + lo as i64) * step) * c;
                    let stride = step * c;
                    if stride == 1 {
                        // SAFETY: image columns `x0 + q + lo .. x0 + q + hi`, in `0..w`.
                        unsafe { copy_run(g.a.offset(at as isize), &mut dst[lo..hi]) };
                    } else {
                        for (j, d) in dst[lo..hi].iter_mut().enumerate() {
                            // SAFETY: as above, every `step`-th column.
                            *d = unsafe { *g.a.offset((at + j as i64 * stride) as isize) };
                        }
                    }
                }
            }
        }
        i += seg;
        q += seg as i64;
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
    unsafe { run_tuned(g, pool, TUNING) }
}

/// [`run`] with the knobs `t` (the benchmark tries several).
///
/// # Safety
/// As for [`run`].
pub(crate) unsafe fn run_tuned(g: &WindowsGemm, pool: Option<&Pool>, t: Tuning) {
    let (m, n, k) = (g.m.max(0), g.n.max(0), g.k.max(0));
    if m == 0 || n == 0 {
        return;
    }
    let windows = if g.transposed == 0 { m } else { k };
    let two = pool.filter(|p| {
        p.lanes() > 1
            && windows >= 2 * SPLIT_MIN_WINDOWS
            && (m as usize)
                .saturating_mul(n as usize)
                .saturating_mul(k as usize)
                >= SPLIT_MIN_MACS
    });
    let mid = windows / 2;
    let job = Job(g);
    if g.transposed == 0 {
        let rows = |range: Range<i64>| {
            // SAFETY: forwarded from this function's contract; parts write disjoint rows
            // of C.
            unsafe { product_rows(job.get(), range, t) }
        };
        match two {
            Some(pool) => pool.join(&|| rows(0..mid), &|| rows(mid..windows)),
            None => rows(0..windows),
        }
        return;
    }
    // Transposed: partial sums over windows, m×n, one per lane.
    let (mu, nu) = (m as usize, n as usize);
    // Element (i, j) of a partial product at `i·ri + j·rj`.
    let skinny_axpy = uses_skinny(g, t) && g.image[2] > t.tap_major_max_c;
    let (ri, rj) = if n <= t.partial_col_major_max_n || skinny_axpy {
        (1, mu)
    } else {
        (nu, 1)
    };
    let lanes = if two.is_some() { 2 } else { 1 };
    with_scratch(&PARTIAL, lanes * mu * nu, |partials| {
        let (first, second) = partials.split_at_mut(mu * nu);
        match two {
            Some(pool) => {
                let (lo, hi) = (Out(first.as_mut_ptr()), Out(second.as_mut_ptr()));
                let sum = |range: Range<i64>, out: Out| {
                    // SAFETY: forwarded from this function's contract; each lane writes
                    // its own partial product.
                    unsafe { reduce_windows(job.get(), range, (out.get(), ri, rj), t) }
                };
                pool.join(&|| sum(0..mid, lo), &|| sum(mid..windows, hi));
            }
            // SAFETY: forwarded from this function's contract.
            None => unsafe { reduce_windows(g, 0..windows, (first.as_mut_ptr(), ri, rj), t) },
        }
        for i in 0..mu {
            for j in 0..nu {
                let mut v = first[i * ri + j * rj];
                if lanes == 2 {
                    v += second[i * ri + j * rj];
                }
                // SAFETY: element (i, j) of C (the caller's contract).
                unsafe {
                    update(
                        g.c.offset(i as isize * g.rsc as isize + j as isize * g.csc as isize),
                        g.alpha * v,
                        g.beta,
                    )
                };
            }
        }
    });
}

/// `*c = v + beta·*c`, not reading `*c` when `beta == 0` (it may be garbage).
///
/// # Safety
/// `c` is valid for reads and writes.
#[inline(always)]
unsafe fn update(c: *mut f32, v: f32, beta: f32) {
    // SAFETY: the caller's contract.
    unsafe { *c = if beta == 0.0 { v } else { v + beta * *c } };
}

/// A descriptor shared by the two lanes of a split.
#[derive(Clone, Copy)]
struct Job<'a>(&'a WindowsGemm);
// SAFETY: the lanes only read the descriptor and the matrices it points to, and write
// disjoint elements of C (or each its own partial product).
unsafe impl Sync for Job<'_> {}

impl<'a> Job<'a> {
    /// A method, so that closures capture the whole (`Sync`) wrapper.
    fn get(self) -> &'a WindowsGemm {
        self.0
    }
}

/// A lane's partial product.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: each lane writes its own.
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

impl Out {
    /// A method, so that closures capture the whole (`Sync`) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Untransposed: rows `range` (windows counted from `g.first`) of `C = alpha·A·B +
/// beta·C`, a block at a time, on the calling thread.
///
/// # Safety
/// As for [`run`].
unsafe fn product_rows(g: &WindowsGemm, range: Range<i64>, t: Tuning) {
    let (n, cols) = (g.n, cols(g));
    if range.is_empty() {
        return;
    }
    // Whole register tiles of rows per block.
    let tile = TILE_M as i64;
    let block = (t.block_floats / cols / tile * tile).max(tile);
    let block = block.min(range.end - range.start);
    let tap_major = g.image[2] <= t.tap_major_max_c;
    #[cfg(target_arch = "x86_64")]
    if t.direct && skinny::isa() == skinny::Isa::Avx512 {
        if scatter::applies(g) {
            // SAFETY: forwarded from this function's contract; the machine has AVX-512.
            unsafe { scatter::rows(g, range) };
            return;
        }
        if tiles::applies(g) {
            // SAFETY: as above.
            unsafe { tiles::rows(g, range) };
            return;
        }
    }
    if uses_skinny(g, t) && tap_major && t.direct && direct(g) {
        // SAFETY: forwarded from this function's contract.
        unsafe { direct_rows(g, range) };
        return;
    }
    if uses_skinny(g, t) && !tap_major && g.n <= SKINNY_DOT_MAX_N && t.direct && direct_seg(g) {
        // SAFETY: forwarded from this function's contract.
        unsafe { direct_seg_rows(g, range) };
        return;
    }
    if uses_skinny(g, t) && (tap_major || g.n <= SKINNY_DOT_MAX_N) {
        // SAFETY: forwarded from this function's contract.
        unsafe { skinny_rows(g, range, block, tap_major) };
        return;
    }
    // The gemm crate turns a row-major C around (see the module doc).
    let via_temp = (tap_major || t.window_major_temp) && g.csc.abs() < g.rsc.abs();
    let out_len = if via_temp { (block * n) as usize } else { 0 };
    let isa = skinny::isa();
    // The temporary's columns in chunks of at most `MAX_N`, each with its transpose.
    let transposes: Vec<(usize, skinny::Transpose)> = if via_temp {
        (0..n as usize)
            .step_by(skinny::MAX_N)
            .map(|j0| {
                let w = (n as usize - j0).min(skinny::MAX_N);
                (j0, skinny::Transpose::new(w, true))
            })
            .collect()
    } else {
        Vec::new()
    };
    with_scratch(&PACKED, (block * cols) as usize, |packed| {
        with_scratch(&BLOCK_OUT, out_len, |temp| {
            let mut r = range.start;
            while r < range.end {
                let rows = block.min(range.end - r);
                let windows = g.first + r..g.first + r + rows;
                let (rsa, csa) = if tap_major {
                    // SAFETY: forwarded from this function's contract.
                    unsafe { pack_tap_major(g, windows, packed, rows as usize) };
                    (1, rows as isize)
                } else {
                    // SAFETY: forwarded from this function's contract.
                    unsafe { pack(g, windows, packed) };
                    (cols as isize, 1)
                };
                let c = g.c.wrapping_offset((r * g.rsc) as isize);
                let product = Sgemm {
                    m: rows as usize,
                    n: n as usize,
                    k: cols as usize,
                    alpha: g.alpha,
                    a: packed.as_ptr(),
                    rsa,
                    csa,
                    b: g.b,
                    rsb: g.rsb as isize,
                    csb: g.csb as isize,
                    beta: if via_temp { 0.0 } else { g.beta },
                    c: if via_temp { temp.as_mut_ptr() } else { c },
                    rsc: if via_temp { 1 } else { g.rsc as isize },
                    csc: if via_temp {
                        rows as isize
                    } else {
                        g.csc as isize
                    },
                };
                // SAFETY: the packed block is rows × cols floats, the temporary rows × n;
                // B and C are the caller's.
                unsafe { product.run() };
                if via_temp && g.csc == 1 && g.rsc >= n {
                    // Row-major C: the column-major block goes in 16 columns at a time
                    // through the narrow kernels' transposes.
                    for (j0, tr) in &transposes {
                        // SAFETY: columns `j0 ..` of the temporary (rows × n) into rows
                        // `r ..` of C (the caller's contract).
                        unsafe {
                            skinny::interleave(
                                isa,
                                tr,
                                (temp.as_ptr().add(*j0 * rows as usize), rows as usize),
                                rows as usize,
                                (c.add(*j0), g.rsc as usize),
                                (1.0, g.beta),
                            )
                        };
                    }
                } else if via_temp {
                    for i in 0..rows {
                        for j in 0..n {
                            let v = temp[(j * rows + i) as usize];
                            // SAFETY: element (r + i, j) of C (the caller's contract).
                            unsafe {
                                update(c.offset((i * g.rsc + j * g.csc) as isize), v, g.beta)
                            };
                        }
                    }
                }
                r += rows;
            }
        })
    });
}

/// Transposed: `out` (an m×n matrix, contiguous, at the given row and column strides) =
/// the sum of `A·B` over windows `range` (counted from `g.first`), on the calling thread.
///
/// # Safety
/// As for [`run`]; `out` holds m·n floats.
unsafe fn reduce_windows(
    g: &WindowsGemm,
    range: Range<i64>,
    (out, rso, cso): (*mut f32, usize, usize),
    t: Tuning,
) {
    let (m, n, cols) = (g.m, g.n, cols(g));
    if range.is_empty() {
        // SAFETY: `out` holds m·n floats.
        unsafe { std::slice::from_raw_parts_mut(out, (m * n) as usize).fill(0.0) };
        return;
    }
    let block = (t.block_floats / cols).max(MIN_REDUCTION_BLOCK);
    let block = block.min(range.end - range.start);
    let tap_major = g.image[2] <= t.tap_major_max_c;
    #[cfg(target_arch = "x86_64")]
    if t.direct
        && tiles::applies_transposed(g, t.tiles_transposed_min_n)
        && skinny::isa() == skinny::Isa::Avx512
    {
        // SAFETY: forwarded from this function's contract; the machine has AVX-512.
        unsafe { tiles::reduce(g, range, (out, rso, cso)) };
        return;
    }
    if uses_skinny(g, t) && tap_major && t.direct && direct(g) {
        // SAFETY: forwarded from this function's contract.
        unsafe { direct_reduce(g, range, (out, rso, cso)) };
        return;
    }
    if uses_skinny(g, t) {
        // SAFETY: forwarded from this function's contract.
        unsafe { skinny_reduce(g, range, block, tap_major, (out, rso, cso)) };
        return;
    }
    with_scratch(&PACKED, (block * cols) as usize, |packed| {
        let mut beta = 0.0;
        let mut r = range.start;
        while r < range.end {
            let rows = block.min(range.end - r);
            let windows = g.first + r..g.first + r + rows;
            // A is cols(g) × windows: these columns of A meet these rows of B.
            let (rsa, csa) = if tap_major {
                // SAFETY: forwarded from this function's contract.
                unsafe { pack_tap_major(g, windows, packed, rows as usize) };
                (rows as isize, 1)
            } else {
                // SAFETY: forwarded from this function's contract.
                unsafe { pack(g, windows, packed) };
                (1, cols as isize)
            };
            let product = Sgemm {
                m: m as usize,
                n: n as usize,
                k: rows as usize,
                alpha: 1.0,
                a: packed.as_ptr(),
                rsa,
                csa,
                b: g.b.wrapping_offset((r * g.rsb) as isize),
                rsb: g.rsb as isize,
                csb: g.csb as isize,
                beta,
                c: out,
                rsc: rso as isize,
                csc: cso as isize,
            };
            // SAFETY: the packed block is rows × cols floats; B is the caller's.
            unsafe { product.run() };
            beta = 1.0;
            r += rows;
        }
    });
}

/// Untransposed window-major blocks run on [`skinny::dot`] up to this many columns; wider
/// ones (16 filters: conv2 fwd, rgb fwd) are 1.8× faster on the `gemm` crate.
const SKINNY_DOT_MAX_N: i64 = 8;

/// Whether [`direct_rows`] takes `g`: one channel, unit steps, no `div`, dilations and
/// paddings of at least 0 (a forward convolution of a one-channel image).
fn direct(g: &WindowsGemm) -> bool {
    g.image[2] == 1
        && g.div == [1, 1]
        && g.step == [1, 1]
        && g.tap.iter().all(|&t| t >= 1)
        && g.pad.iter().all(|&p| p >= 0)
}

/// Untransposed rows `range` of `C` (windows counted from `g.first`) for a [`direct`]
/// geometry, without packing: each sample is copied into a zero-padded image `ph × pw`
/// (`pw = q_n + (kw-1)·tap`), where window `(p, q)`'s tap `(ty, tx)` is at `(p +
/// ty·tap₀)·pw + q + tx·tap₁`, so that for a fixed tap the windows of a run of window
/// rows are one contiguous run (`q ≥ q_n` are junk rows, computed and dropped): an
/// [`skinny::axpy`] over that run with a per-tap offset, into a column-major temporary
/// copied into `C` with `alpha` and `beta`.
///
/// # Safety
/// As for [`run`].
unsafe fn direct_rows(g: &WindowsGemm, range: Range<i64>) {
    let Padded {
        q_n,
        ph,
        pw,
        slack,
        n,
        offs,
        chunk,
        per,
    } = Padded::new(g);
    let [kh, kw] = g.taps;
    let isa = skinny::isa();
    let to_rows = skinny::Transpose::new(n, true);
    let pimg_len = (ph * pw) as usize + slack;
    with_scratch(&PACKED, pimg_len, |pimg| {
        with_scratch(&BLOCK_OUT, chunk as usize * pw as usize * n, |temp| {
            for (s, wins) in samples(g, range) {
                // SAFETY: the range's windows of sample `s` read it (the caller's
                // contract).
                unsafe { load_padded(g, s, pimg, (ph, pw)) };
                let (mut win, sample_end) = (wins.start, wins.end);
                while win < sample_end {
                    let p0 = (win - s * per) / q_n;
                    let p1 = (p0 + chunk).min(ceil_div(sample_end - s * per, q_n));
                    let rows = ((p1 - p0) * pw) as usize;
                    // SAFETY: window rows `p0..p1` read `p0·pw + i + offs[l]` for `i < rows`,
                    // inside the padded image and its slack; the temporary holds rows × n.
                    unsafe {
                        skinny::axpy(
                            isa,
                            (rows, n, (kh * kw) as usize),
                            (pimg.as_ptr().add((p0 * pw) as usize), 0, Some(&offs)),
                            (g.b, g.rsb as isize, g.csb as isize),
                            (temp.as_mut_ptr(), rows),
                            false,
                        )
                    };
                    let stop = sample_end.min(s * per + p1 * q_n);
                    // Window `wi` is row `(p - p0)·pw + q` of the temporary, a window row at
                    // a time (no division per window).
                    let mut wi = win;
                    while wi < stop {
                        let (p, q) = ((wi - s * per) / q_n, (wi - s * per) % q_n);
                        let run_end = stop.min(wi - q + q_n);
                        let i0 = ((p - p0) * pw + q) as usize;
                        let c0 = g.c.wrapping_offset(((wi - g.first) * g.rsc) as isize);
                        if g.csc == 1 && g.rsc >= g.n {
                            // SAFETY: rows `i0..` of the temporary's `n` columns (`rows`
                            // floats each, 16K in all); C's rows `wi - first ..` are the
                            // caller's, contiguous.
                            unsafe {
                                skinny::interleave(
                                    isa,
                                    &to_rows,
                                    (temp.as_ptr().add(i0), rows),
                                    (run_end - wi) as usize,
                                    (c0, g.rsc as usize),
                                    (g.alpha, g.beta),
                                )
                            };
                            wi = run_end;
                            continue;
                        }
                        for (t, i) in (i0..i0 + (run_end - wi) as usize).enumerate() {
                            let c = c0.wrapping_offset(t as isize * g.rsc as isize);
                            for j in 0..n {
                                let v = g.alpha * temp[j * rows + i];
                                // SAFETY: element (wi + t - first, j) of C (the caller's
                                // contract).
                                unsafe { update(c.offset(j as isize * g.csc as isize), v, g.beta) };
                            }
                        }
                        wi = run_end;
                    }
                    win = stop;
                }
            }
        })
    });
}

/// The padded-image layout of [`direct_rows`] and [`direct_reduce`] (derived from the
/// geometry and the product's width): `ph × pw` pixels, `slack` floats after them for the
/// last window row's junk windows, each tap's offset in it, and how many window rows one
/// temporary of up to 16K floats holds.
struct Padded {
    q_n: i64,
    ph: i64,
    pw: i64,
    slack: usize,
    n: usize,
    offs: Vec<usize>,
    chunk: i64,
    per: i64,
}

impl Padded {
    fn new(g: &WindowsGemm) -> Padded {
        let [p_n, q_n] = g.grid;
        let [kh, kw] = g.taps;
        let (ph, pw) = (p_n + (kh - 1) * g.tap[0], q_n + (kw - 1) * g.tap[1]);
        let n = g.n as usize;
        Padded {
            q_n,
            ph,
            pw,
            // The last window row's junk windows read this far past the padded image.
            slack: ((kw - 1) * g.tap[1]) as usize,
            n,
            offs: direct_offsets(g, pw),
            chunk: (16 * 1024 / (pw as usize * n)).max(1) as i64,
            per: p_n * q_n,
        }
    }
}

/// Sample `s` into `pimg` padded by `g.pad` (`ph × pw` pixels), its slack zeroed.
///
/// # Safety
/// As for [`pad_sample`].
unsafe fn load_padded(g: &WindowsGemm, s: i64, pimg: &mut [f32], (ph, pw): (i64, i64)) {
    let (image, slack) = pimg.split_at_mut((ph * pw) as usize);
    // SAFETY: forwarded from this function's contract.
    unsafe { pad_sample(g, s, image, pw, (g.pad[0], g.pad[1])) };
    slack.fill(0.0);
}

/// Copies sample `s` of `g`'s image into `pimg`, rows of `pw` pixels (`c` floats each),
/// image pixel `(y, x)` at `(y + sy, x + sx)`, zeros around it (the padded images of
/// [`direct_rows`] and [`direct_seg_rows`]).
///
/// # Safety
/// The image buffer holds sample `s`.
unsafe fn pad_sample(g: &WindowsGemm, s: i64, pimg: &mut [f32], pw: i64, (sy, sx): (i64, i64)) {
    let [h, w, c] = g.image;
    let ph = pimg.len() as i64 / (pw * c);
    pimg.fill(0.0);
    let (x0, x1) = ((-sx).max(0), w.min(pw - sx));
    if x1 <= x0 {
        return;
    }
    for y in (-sy).max(0)..h.min(ph - sy) {
        let at = (((y + sy) * pw + x0 + sx) * c) as usize;
        // SAFETY: columns `x0..x1` of image row `y` of sample `s` (the caller's contract).
        unsafe {
            copy_run(
                g.a.offset((((s * h + y) * w + x0) * c) as isize),
                &mut pimg[at..at + ((x1 - x0) * c) as usize],
            )
        };
    }
}

/// Whether [`direct_seg_rows`] takes `g`: unit steps, no `div`, adjacent taps along the
/// columns (`tap₁ = ±1`: a tap row is one run of `kw·c` floats of the padded image).
fn direct_seg(g: &WindowsGemm) -> bool {
    g.div == [1, 1] && g.step == [1, 1] && g.tap[1].abs() == 1 && g.tap[0] != 0
}

/// Untransposed rows `range` of `C` for a [`direct_seg`] geometry without packing: each
/// sample is copied into a zero-padded image where window `(p, q)`'s tap row `ty` is the
/// run of `kw·c` floats at `((p + oy(ty))·pw + q)·c` (the taps in image order: reversed
/// when `tap₁ = -1`, `Bᵀ`'s columns permuted to match); [`skinny::dot_segments`] meets
/// each window's `kh` runs with `Bᵀ` and writes its row of `C` with `alpha` and `beta`,
/// a window row at a time, skipping the tap rows outside the image (all zero: 20 of conv2
/// dgrad's 70 pairs of a window row and a tap row).
///
/// # Safety
/// As for [`run`].
unsafe fn direct_seg_rows(g: &WindowsGemm, range: Range<i64>) {
    let [h, w, c] = g.image;
    let [p_n, q_n] = g.grid;
    let [kh, kw] = g.taps;
    let (ph, pw) = (p_n + (kh - 1) * g.tap[0].abs(), q_n + kw - 1);
    // Image row `y` is padded row `y + sy`: the smallest row read, `p + ty·tap₀ - pad₀`,
    // is padded row 0 (likewise the columns).
    let sy = g.pad[0] - ((kh - 1) * g.tap[0]).min(0);
    let sx = g.pad[1] - ((kw - 1) * g.tap[1]).min(0);
    let oy = |ty: i64| ty * g.tap[0] - ((kh - 1) * g.tap[0]).min(0);
    let segs: Vec<usize> = (0..kh).map(|ty| (oy(ty) * pw * c) as usize).collect();
    let (n, run) = (g.n as usize, (kw * c) as usize);
    let cols = kh as usize * run;
    let per = p_n * q_n;
    let isa = skinny::isa();
    let mut bt = vec![0f32; n * cols];
    for ty in 0..kh {
        for u in 0..kw {
            let tx = if g.tap[1] == 1 { u } else { kw - 1 - u };
            for ch in 0..c {
                let l = (ty * kw + tx) * c + ch;
                for j in 0..n {
                    // SAFETY: element (l, j) of B (the caller's contract).
                    bt[j * cols + (ty * kw + u) as usize * c as usize + ch as usize] =
                        unsafe { *g.b.offset((l * g.rsb + j as i64 * g.csb) as isize) };
                }
            }
        }
    }
    with_scratch(&PACKED, (ph * pw * c) as usize, |pimg| {
        let mut offs = Vec::new();
        for (s, wins) in samples(g, range) {
            // SAFETY: the range's windows of sample `s` read it (the caller's contract).
            unsafe { pad_sample(g, s, pimg, pw, (sy, sx)) };
            let mut win = wins.start;
            while win < wins.end {
                // The rest of window row `p` (in the range).
                let p = (win - s * per) / q_n;
                let row_end = wins.end.min(s * per + (p + 1) * q_n);
                // The tap rows inside the image (contiguous): the others are all zero.
                let inside = |ty: &i64| (0..h).contains(&(p + ty * g.tap[0] - g.pad[0]));
                let lo = (0..kh).find(inside).unwrap_or(kh) as usize;
                let hi = (0..kh).rfind(inside).map_or(lo, |t| t as usize + 1);
                while win < row_end {
                    // Window `q`'s in-image tap columns (image order: padded column `q + u` is
                    // image column `q + u - sx`) are the run `span(q)`, the others zeros,
                    // skipped: the windows with all `kw` inside go together, the others two
                    // by two over the union of their runs (one `Bᵀ` load for both).
                    let q = (win - s * per) % q_n;
                    let span = |q: i64| ((sx - q).clamp(0, kw), (w + sx - q).clamp(0, kw));
                    let (mut u0, mut u1) = span(q);
                    let mut stop = win + 1;
                    if (u0, u1) == (0, kw) {
                        while stop < row_end && span((stop - s * per) % q_n) == (0, kw) {
                            stop += 1;
                        }
                    } else if stop < row_end {
                        let (v0, v1) = span(q + 1);
                        if (v0, v1) != (0, kw) {
                            (u0, u1) = (u0.min(v0), u1.max(v1));
                            stop += 1;
                        }
                    }
                    offs.clear();
                    offs.extend(
                        (win..stop).map(|wi| ((p * pw + (wi - s * per) % q_n + u0) * c) as usize),
                    );
                    let len = ((u1 - u0) * c) as usize;
                    let out = g.c.wrapping_offset(((win - g.first) * g.rsc) as isize);
                    if len == 0 || lo == hi {
                        // All taps zero: C = beta·C.
                        for i in 0..(stop - win) as isize {
                            for j in 0..n as isize {
                                // SAFETY: these windows' rows of C are the caller's.
                                unsafe {
                                    let o = out.offset(i * g.rsc as isize + j * g.csc as isize);
                                    *o = if g.beta == 0.0 { 0.0 } else { g.beta * *o };
                                }
                            }
                        }
                    } else {
                        // SAFETY: window `(p, q)`'s runs end by `((p + oy(kh-1))·pw + q +
                        // kw)·c ≤ ph·pw·c`; `Bᵀ`'s rows from tap row `lo`, column `u0·c` on,
                        // a tap row every `run` floats; these windows' rows of C are the
                        // caller's.
                        unsafe {
                            skinny::dot_segments(
                                isa,
                                (offs.len(), n, len),
                                (pimg.as_ptr(), 0, Some(&offs)),
                                Some((&segs[lo..hi], run)),
                                (bt.as_ptr().add(lo * run + (u0 * c) as usize), cols),
                                (out, g.rsc as isize, g.csc as isize),
                                (g.alpha, g.beta),
                            )
                        };
                    }
                    win = stop;
                }
            }
        }
    });
}

/// Transposed, for a [`direct`] geometry: `out` (m×n at strides `rso`, `cso`) = the sum
/// over windows `range` (counted from `g.first`) of `A·B`, without packing: on each
/// sample's padded image (as in [`direct_rows`]) tap `l`'s values for a run of window
/// rows are one contiguous run at `offs[l]`, met by [`skinny::dot`] with the same run of
/// `Bᵀ` (`B`'s rows transposed, zero at the junk windows `q ≥ q_n` and outside `range`).
///
/// # Safety
/// As for [`reduce_windows`].
unsafe fn direct_reduce(
    g: &WindowsGemm,
    range: Range<i64>,
    (out, rso, cso): (*mut f32, usize, usize),
) {
    let Padded {
        q_n,
        ph,
        pw,
        slack,
        n,
        offs,
        chunk,
        per,
    } = Padded::new(g);
    let isa = skinny::isa();
    let to_cols = skinny::Transpose::new(n, false);
    with_scratch(&PACKED, (ph * pw) as usize + slack, |pimg| {
        with_scratch(&BLOCK_OUT, chunk as usize * pw as usize * n, |bt| {
            let mut beta = 0.0;
            for (s, wins) in samples(g, range) {
                // SAFETY: the range's windows of sample `s` read it (the caller's
                // contract).
                unsafe { load_padded(g, s, pimg, (ph, pw)) };
                let (mut win, sample_end) = (wins.start, wins.end);
                while win < sample_end {
                    let p0 = (win - s * per) / q_n;
                    let p1 = (p0 + chunk).min(ceil_div(sample_end - s * per, q_n));
                    let len = ((p1 - p0) * pw) as usize;
                    let stop = sample_end.min(s * per + p1 * q_n);
                    let bt = &mut bt[..n * len];
                    bt.fill(0.0);
                    let mut wi = win;
                    while wi < stop {
                        let (p, q) = ((wi - s * per) / q_n, (wi - s * per) % q_n);
                        let run_end = stop.min(wi - q + q_n);
                        let i0 = ((p - p0) * pw + q) as usize;
                        let b0 = g.b.wrapping_offset(((wi - g.first) * g.rsb) as isize);
                        if g.csb == 1 && g.rsb >= g.n {
                            // SAFETY: rows `wi - first ..` of B (the caller's contract,
                            // contiguous); the columns from `i0` of Bᵀ's `n` rows of `len`
                            // floats.
                            unsafe {
                                skinny::deinterleave(
                                    isa,
                                    &to_cols,
                                    (b0, g.rsb as usize),
                                    (run_end - wi) as usize,
                                    (bt.as_mut_ptr().add(i0), len),
                                )
                            };
                            wi = run_end;
                            continue;
                        }
                        for (t, i) in (i0..i0 + (run_end - wi) as usize).enumerate() {
                            let b = b0.wrapping_offset(t as isize * g.rsb as isize);
                            for j in 0..n {
                                // SAFETY: element (wi + t - first, j) of B (the caller's
                                // contract).
                                bt[j * len + i] = unsafe { *b.offset(j as isize * g.csb as isize) };
                            }
                        }
                        wi = run_end;
                    }
                    // SAFETY: as in `direct_rows`; Bᵀ holds n × len floats, out m × n.
                    unsafe {
                        skinny::dot(
                            isa,
                            (offs.len(), n, len),
                            (pimg.as_ptr().add((p0 * pw) as usize), 0, Some(&offs)),
                            (bt.as_ptr(), len),
                            (out, rso as isize, cso as isize),
                            (1.0, beta),
                        )
                    };
                    beta = 1.0;
                    win = stop;
                }
            }
        })
    });
}

/// Tap `(ty, tx)`'s offset in a padded image of rows of `pw` floats.
fn direct_offsets(g: &WindowsGemm, pw: i64) -> Vec<usize> {
    let [kh, kw] = g.taps;
    (0..kh)
        .flat_map(|ty| (0..kw).map(move |tx| (ty * g.tap[0] * pw + tx * g.tap[1]) as usize))
        .collect()
}

/// Whether `g` runs on the [`skinny`] micro-kernels with knobs `t`.
fn uses_skinny(g: &WindowsGemm, t: Tuning) -> bool {
    g.n <= skinny::MAX_N as i64 && g.n <= t.skinny_max_n
}

/// [`product_rows`] on the [`skinny`] kernels, blocks of `block` windows: a tap-major
/// block (windows contiguous per tap) through [`skinny::axpy`] into a column-major
/// temporary, copied into `C` with `alpha` and `beta`; a window-major one (taps
/// contiguous per window) through [`skinny::dot`] against `Bᵀ`, straight into `C`.
///
/// # Safety
/// As for [`run`].
unsafe fn skinny_rows(g: &WindowsGemm, range: Range<i64>, block: i64, tap_major: bool) {
    let (n, cols) = (g.n as usize, cols(g) as usize);
    let isa = skinny::isa();
    let block = block as usize;
    // The temporary (tap-major) or Bᵀ (window-major).
    let side = if tap_major { block * n } else { n * cols };
    with_scratch(&PACKED, block * cols, |packed| {
        with_scratch(&BLOCK_OUT, side, |side| {
            if !tap_major {
                for (j, row) in side.chunks_exact_mut(cols).enumerate() {
                    for (l, v) in row.iter_mut().enumerate() {
                        // SAFETY: element (l, j) of B (the caller's contract).
                        *v = unsafe { *g.b.offset((l as i64 * g.rsb + j as i64 * g.csb) as isize) };
                    }
                }
            }
            let mut r = range.start;
            while r < range.end {
                let rows = (block as i64).min(range.end - r);
                let windows = g.first + r..g.first + r + rows;
                let rows = rows as usize;
                let c = g.c.wrapping_offset((r * g.rsc) as isize);
                if tap_major {
                    // SAFETY: forwarded from this function's contract; the block is
                    // rows × cols floats, the temporary rows × n; B is the caller's.
                    unsafe {
                        pack_tap_major(g, windows, packed, rows);
                        skinny::axpy(
                            isa,
                            (rows, n, cols),
                            (packed.as_ptr(), rows, None),
                            (g.b, g.rsb as isize, g.csb as isize),
                            (side.as_mut_ptr(), rows),
                            false,
                        );
                    }
                    for i in 0..rows {
                        for j in 0..n {
                            let v = g.alpha * side[j * rows + i];
                            // SAFETY: element (r + i, j) of C (the caller's contract).
                            unsafe {
                                update(
                                    c.offset(
                                        i as isize * g.rsc as isize + j as isize * g.csc as isize,
                                    ),
                                    v,
                                    g.beta,
                                )
                            };
                        }
                    }
                } else {
                    // SAFETY: as above; these rows of C are the caller's.
                    unsafe {
                        pack(g, windows, packed);
                        skinny::dot(
                            isa,
                            (rows, n, cols),
                            (packed.as_ptr(), cols, None),
                            (side.as_ptr(), cols),
                            (c, g.rsc as isize, g.csc as isize),
                            (g.alpha, g.beta),
                        );
                    }
                }
                r += rows as i64;
            }
        })
    });
}

/// [`reduce_windows`] on the [`skinny`] kernels, blocks of `block` windows: a tap-major
/// block (taps × windows, windows contiguous) through [`skinny::dot`] against the block's
/// rows of `B` transposed; a window-major one (taps contiguous) through
/// [`skinny::axpy`], `out` column-major (`rso == 1`).
///
/// # Safety
/// As for [`reduce_windows`].
unsafe fn skinny_reduce(
    g: &WindowsGemm,
    range: Range<i64>,
    block: i64,
    tap_major: bool,
    (out, rso, cso): (*mut f32, usize, usize),
) {
    let (m, n, cols) = (g.m as usize, g.n as usize, cols(g) as usize);
    let isa = skinny::isa();
    let block = block as usize;
    let side = if tap_major { n * block } else { 0 };
    with_scratch(&PACKED, block * cols, |packed| {
        with_scratch(&BLOCK_OUT, side, |bt| {
            let mut first = true;
            let mut r = range.start;
            while r < range.end {
                let rows = (block as i64).min(range.end - r);
                let windows = g.first + r..g.first + r + rows;
                let rows = rows as usize;
                let b = g.b.wrapping_offset((r * g.rsb) as isize);
                if tap_major {
                    for (j, row) in bt.chunks_exact_mut(rows).take(n).enumerate() {
                        for (w, v) in row.iter_mut().enumerate() {
                            // SAFETY: element (r + w, j) of B (the caller's contract).
                            *v = unsafe {
                                *b.offset((w as i64 * g.rsb + j as i64 * g.csb) as isize)
                            };
                        }
                    }
                    // SAFETY: forwarded from this function's contract; the block is
                    // cols × rows floats, Bᵀ n × rows, out m × n.
                    unsafe {
                        pack_tap_major(g, windows, packed, rows);
                        skinny::dot(
                            isa,
                            (m, n, rows),
                            (packed.as_ptr(), rows, None),
                            (bt.as_ptr(), rows),
                            (out, rso as isize, cso as isize),
                            (1.0, if first { 0.0 } else { 1.0 }),
                        );
                    }
                } else {
                    debug_assert_eq!(rso, 1);
                    // SAFETY: as above; the block is rows × cols floats.
                    unsafe {
                        pack(g, windows, packed);
                        skinny::axpy(
                            isa,
                            (m, n, rows),
                            (packed.as_ptr(), cols, None),
                            (b, g.rsb as isize, g.csb as isize),
                            (out, cso),
                            !first,
                        );
                    }
                }
                first = false;
                r += rows as i64;
            }
        })
    });
}

mod scatter;
pub(crate) mod skinny;
mod tiles;

#[cfg(test)]
mod tests;
