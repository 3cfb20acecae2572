//! Direct convolution micro-kernels (AVX-512) for window products of 9–64 columns: no
//! packing of windows, no `gemm` crate. [`rows`] takes untransposed products (forward
//! passes and input gradients), [`reduce`] transposed ones (weight gradients over
//! several channels: tiles of a tap row's taps × all columns, the windows streamed
//! through them, adjacent taps read from one pointer; see [`applies_transposed`]).
//!
//! With unit steps, taps of ±1 and no `div`, window `(p, q)`'s tap row `ty` is one run
//! of `kw·c` floats of a zero-padded sample, at `((p + oy(ty))·pw + q)·c` (taps in image
//! order; an input gradient's transposed convolution reads them backwards), and the runs
//! of consecutive windows of a row are `c` floats apart. Tap rows outside the image (the
//! border rows of a padded or transposed convolution) are skipped. A tile of `T`
//! windows (12, 8 for two vectors of columns, 6 for three or four) keeps `T × ⌈n/16⌉`
//! vectors of `C` in registers; for each of the `kh·kw·c` taps it loads one row of `B`
//! and multiplies it by each window's value of that tap, broadcast from the padded
//! sample: every element of `A` is read in place, every row of `B` feeds `T`
//! multiply-adds. Measured with `conv_bench` on one lane, against the path before (the
//! `gemm` crate on packed windows): LeNet's conv2 forward (16 columns) 1.25–1.6 → 0.67 ms,
//! VGG's 3×3 layer of 32 channels 25.2 → 22.9 ms, its one-channel first layer 3.9 →
//! 0.85 ms, a 5×5 layer on RGB images 8.9–10.2 → 3.3 ms.
//!
//! A window row's last tile may hold fewer than `T` windows: it is computed whole (the
//! extra windows read the next row, or the slack after the padded sample) and only the
//! real ones are stored.

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{ceil_div, pad_sample, samples, with_scratch, WindowsGemm, PACKED};

/// The most windows per tile (one vector of columns: 12 accumulators). With two vectors
/// a tile holds 8 windows, with three or four 6: at most 24 accumulators beside the rows
/// of `B` in the 32 vector registers. (12 windows of two vectors, 24 accumulators, ran
/// 3× slower in the runtime's build: the register allocator spilled them.)
const R: usize = 12;

/// Whether [`rows`] takes `g` (an untransposed product; AVX-512 checked by the caller):
/// unit steps, taps of ±1 (an input gradient's transposed convolution has −1), no `div`,
/// a padded sample that holds the image (padding of at least 0 once the taps are put in
/// image order), `B` and `C` with contiguous rows, 9 to 64 columns (fewer have the
/// narrow kernels), and for one channel more than 16 (at most 16 have the one-channel
/// paths).
pub(super) fn applies(g: &WindowsGemm) -> bool {
    g.transposed == 0
        && direct(g)
        && g.csc == 1
        && (9..=64).contains(&g.n)
        && (g.image[2] > 1 || g.n > 16)
}

/// What both kernels need of the geometry: unit steps, taps of ±1, no `div`, a padded
/// sample that holds the image, `B` with contiguous rows.
fn direct(g: &WindowsGemm) -> bool {
    let (sy, sx) = shifts(g);
    g.div == [1, 1]
        && g.step == [1, 1]
        && g.tap.iter().all(|t| t.abs() == 1)
        && sy >= 0
        && sx >= 0
        && g.csb == 1
}

/// Where image pixel `(0, 0)` sits in the padded sample: the smallest row a window's taps
/// read, `p + ty·tap₀ − pad₀`, is padded row 0 (likewise the columns).
fn shifts(g: &WindowsGemm) -> (i64, i64) {
    let [kh, kw] = g.taps;
    (
        g.pad[0] - ((kh - 1) * g.tap[0]).min(0),
        g.pad[1] - ((kw - 1) * g.tap[1]).min(0),
    )
}

/// Rows `range` of `C` (windows counted from `g.first`) for an [`applies`] geometry.
///
/// # Safety
/// As for `windows::run`; the machine has AVX-512F.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn rows(g: &WindowsGemm, range: Range<i64>) {
    let c = g.image[2];
    let [p_n, q_n] = g.grid;
    let [kh, kw] = g.taps;
    let layout = Layout::new(g);
    let (pw, per, image_len) = (layout.pw, p_n * q_n, layout.image_len);
    let vectors = (g.n as usize).div_ceil(16);
    // Tiles of a window row balanced: as few as the widest tile allows, of equal size
    // (a row of 10 windows is one tile of 10, not 12 with 2 junk windows; 28 is 10 + 10
    // + 8), at least 4.
    let widest = [R, 8, 6, 6][vectors - 1] as i64;
    let per_tile = ceil_div(q_n, ceil_div(q_n, widest)).clamp(4, widest) as usize;
    // A tail tile's junk windows read up to `R` windows past a row's last.
    let slack = R * c as usize + (kw * c) as usize;
    with_scratch(&PACKED, image_len + slack, |pimg| {
        pimg[image_len..].fill(0.0);
        for (s, wins) in samples(g, range) {
            // SAFETY: the range's windows of sample `s` read it (the caller's contract).
            unsafe { pad_sample(g, s, &mut pimg[..image_len], pw, shifts(g)) };
            let mut win = wins.start;
            while win < wins.end {
                let p = (win - s * per) / q_n;
                let row_end = wins.end.min(s * per + (p + 1) * q_n);
                // The tap rows inside the image: the others read only zeros.
                let inside = |ty: &i64| window_rows(g, *ty).contains(&p);
                let lo = (0..kh).filter(inside).min().unwrap_or(0) as usize;
                let hi = (0..kh).filter(inside).max().map_or(lo, |t| t as usize + 1);
                while win < row_end {
                    let q = (win - s * per) % q_n;
                    let count = ((row_end - win) as usize).min(per_tile);
                    let a = pimg[((p * pw + q) * c) as usize..].as_ptr();
                    let out = g.c.wrapping_offset(((win - g.first) * g.rsc) as isize);
                    // SAFETY: the tile reads tap rows `lo..hi` of `R` windows inside the
                    // padded sample and its slack, B's rows of those tap rows and C's `count`
                    // rows (the caller's contract).
                    let args = (g, (a, &layout), lo..hi, out, count);
                    unsafe {
                        match (vectors, per_tile) {
                            (1, 4) => tile::<1, 4>(args),
                            (1, 5) => tile::<1, 5>(args),
                            (1, 6) => tile::<1, 6>(args),
                            (1, 7) => tile::<1, 7>(args),
                            (1, 8) => tile::<1, 8>(args),
                            (1, 9) => tile::<1, 9>(args),
                            (1, 10) => tile::<1, 10>(args),
                            (1, 11) => tile::<1, 11>(args),
                            (1, _) => tile::<1, R>(args),
                            (2, 4) => tile::<2, 4>(args),
                            (2, 5) => tile::<2, 5>(args),
                            (2, 6) => tile::<2, 6>(args),
                            (2, 7) => tile::<2, 7>(args),
                            (2, _) => tile::<2, 8>(args),
                            (3, 4) => tile::<3, 4>(args),
                            (3, 5) => tile::<3, 5>(args),
                            (3, _) => tile::<3, 6>(args),
                            (_, 4) => tile::<4, 4>(args),
                            (_, 5) => tile::<4, 5>(args),
                            _ => tile::<4, 6>(args),
                        }
                    };
                    win += count as i64;
                }
            }
        }
    });
}

/// The padded sample (`pw` pixels a row, `image_len` floats) and offsets in it: of each
/// tap row from the tile's first window, of each tap within a tap row (taps in `B`'s
/// order, `(tx, ch)`, read from image order), and between windows (`c`).
struct Layout {
    pw: i64,
    image_len: usize,
    rows: Vec<usize>,
    taps: Vec<usize>,
    c: usize,
}

impl Layout {
    fn new(g: &WindowsGemm) -> Layout {
        let c = g.image[2];
        let [p_n, q_n] = g.grid;
        let [kh, kw] = g.taps;
        let (ph, pw) = (p_n + kh - 1, q_n + kw - 1);
        // Padded row of tap row `ty` (for window row 0), padded column of tap `tx`.
        let oy = |ty: i64| ty * g.tap[0] - ((kh - 1) * g.tap[0]).min(0);
        let ox = |tx: i64| tx * g.tap[1] - ((kw - 1) * g.tap[1]).min(0);
        Layout {
            pw,
            image_len: (ph * pw * c) as usize,
            rows: (0..kh).map(|ty| (oy(ty) * pw * c) as usize).collect(),
            taps: (0..kw * c)
                .map(|k| (ox(k / c) * c + k % c) as usize)
                .collect(),
            c: c as usize,
        }
    }
}

/// The window rows `p` whose tap row `ty` reads an image row, `p + ty·tap₀ − pad₀` in
/// `0..h` (the others read only the padding's zeros).
fn window_rows(g: &WindowsGemm, ty: i64) -> Range<i64> {
    let from = g.pad[0] - ty * g.tap[0];
    from.max(0)..(g.image[0] + from).min(g.grid[0])
}

/// The load and store masks of `V` vectors holding `n` columns (the last one partial).
fn masks<const V: usize>(n: usize) -> [u16; V] {
    let mut m = [0xffff; V];
    let last = n - 16 * (V - 1);
    if last < 16 {
        m[V - 1] = ((1u32 << last) - 1) as u16;
    }
    m
}

/// One tile: `C[i] = alpha·Σ_k A[i, k]·B[k] + beta·C[i]` for windows `i < count` of the
/// tile of `T` windows starting at `a`, over the taps of tap rows `ty`, `V` vectors of
/// columns.
///
/// # Safety
/// As for [`rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const V: usize, const T: usize>(
    (g, (a, layout), ty, out, count): (
        &WindowsGemm,
        (*const f32, &Layout),
        Range<usize>,
        *mut f32,
        usize,
    ),
) {
    let run = layout.taps.len();
    let c = layout.c;
    let n = g.n as usize;
    let masks = masks::<V>(n);
    let mut acc = [[_mm512_setzero_ps(); V]; T];
    // SAFETY: the caller's contract (see `rows`).
    unsafe {
        for ty in ty {
            let base = a.add(layout.rows[ty]);
            let brow = g.b.offset((ty * run) as isize * g.rsb as isize);
            for (k, &off) in layout.taps.iter().enumerate() {
                let bk = brow.offset(k as isize * g.rsb as isize);
                let mut b = [_mm512_setzero_ps(); V];
                for (v, bv) in b.iter_mut().enumerate() {
                    let m = masks[v];
                    *bv = _mm512_maskz_loadu_ps(m, bk.add(16 * v));
                }
                let x = base.add(off);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*x.add(i * c));
                    for v in 0..V {
                        acc_i[v] = _mm512_fmadd_ps(x, b[v], acc_i[v]);
                    }
                }
            }
        }
        let (alpha, beta) = (_mm512_set1_ps(g.alpha), _mm512_set1_ps(g.beta));
        for (i, acc_i) in acc.iter().enumerate().take(count) {
            let o = out.offset(i as isize * g.rsc as isize);
            for (v, &x) in acc_i.iter().enumerate() {
                let m = masks[v];
                let mut y = _mm512_mul_ps(x, alpha);
                if g.beta != 0.0 {
                    y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, o.add(16 * v)), beta, y);
                }
                _mm512_mask_storeu_ps(o.add(16 * v), m, y);
            }
        }
    }
}

/// Whether [`reduce`] takes `g`: as [`applies`], for a transposed product (a weight
/// gradient: the windows are the reduction, `B`'s rows the output gradient's pixels),
/// of `min_n` (`Tuning::tiles_transposed_min_n`, 9) to 64 columns over several
/// channels. (Measured in the training step: VGG's 3×3 weight gradients of 32 and 64
/// filters 9.8–12.1 → 8.4–9.2 ms, 69–83 → 88–100 % of the GEMM peak. LeNet's conv2, 16
/// filters over 6 channels, ran as slowly as on the `gemm` crate or the narrow kernels,
/// about 37 GFLOP/s on one lane, until a tile's adjacent taps were read from one
/// pointer: 1.55 → 0.92 ms with `conv_bench`. VGG's one-channel first layer stays on the
/// `gemm` crate: its tiles of taps are short and restart for every sample.)
pub(super) fn applies_transposed(g: &WindowsGemm, min_n: i64) -> bool {
    g.transposed == 1 && direct(g) && (min_n.max(1)..=64).contains(&g.n) && g.image[2] > 1
}

/// `out` (`m × n` at strides `rso`, `cso`) = the sum over windows `range` (counted from
/// `g.first`) of each window's taps times its row of `B`, for an [`applies_transposed`]
/// geometry: per sample and tap row, tiles of `T` consecutive taps × all columns in
/// registers, the sample's windows streamed through them (each row of `B` loaded once
/// per tile and meeting `T` broadcast taps read in place), window rows whose tap row is
/// outside the image skipped; each tile added into `out` at the end of the sample.
///
/// # Safety
/// As for `windows::reduce_windows`; the machine has AVX-512F.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn reduce(
    g: &WindowsGemm,
    range: Range<i64>,
    (out, rso, cso): (*mut f32, usize, usize),
) {
    let [p_n, q_n] = g.grid;
    let kh = g.taps[0];
    let (m, n) = (g.m as usize, g.n as usize);
    for i in 0..m {
        for j in 0..n {
            // SAFETY: `out` holds the m × n partial product (the caller's contract).
            unsafe { *out.add(i * rso + j * cso) = 0.0 };
        }
    }
    let layout = Layout::new(g);
    let (pw, per, image_len) = (layout.pw, p_n * q_n, layout.image_len);
    let vectors = n.div_ceil(16);
    // Tiles of a tap row balanced, as for `rows` (LeNet's conv2: 30 taps are three tiles
    // of 10, not 12 + 12 + 6 with 6 junk taps); only for adjacent taps.
    let widest = [R, 8, 6, 6][vectors - 1];
    let run = layout.taps.len();
    let balanced = run.div_ceil(run.div_ceil(widest)).clamp(4, widest);
    // Taps adjacent in the padded sample (`tap₁ = 1`: a tap row's `kw·c` taps are one
    // run): a tile's taps are read at constant offsets from one pointer (the last tile's
    // junk taps past the run, up to `R` floats past the sample's last one).
    let adjacent = (0..run).all(|k| layout.taps[k] == layout.taps[0] + k);
    let per_tile = if adjacent { balanced } else { widest };
    with_scratch(&PACKED, image_len + R, |pimg| {
        pimg[image_len..].fill(0.0);
        for (s, wins) in samples(g, range) {
            // SAFETY: the range's windows of sample `s` read it (the caller's contract).
            unsafe { pad_sample(g, s, &mut pimg[..image_len], pw, shifts(g)) };
            let sample = Sample {
                pimg: pimg.as_ptr(),
                pw,
                windows: (wins.start - s * per)..(wins.end - s * per),
                b: g.b.wrapping_offset(((s * per - g.first) * g.rsb) as isize),
            };
            for ty in 0..kh as usize {
                for k0 in (0..layout.taps.len()).step_by(per_tile) {
                    // SAFETY: as above; the tile's taps and `out`'s rows `ty·kw·c + k0 ..`.
                    let args = (g, &sample, &layout, (ty, k0), (out, rso, cso));
                    unsafe {
                        match (vectors, adjacent, per_tile) {
                            (1, true, 4) => reduce_tile::<1, 4, true>(args),
                            (1, true, 5) => reduce_tile::<1, 5, true>(args),
                            (1, true, 6) => reduce_tile::<1, 6, true>(args),
                            (1, true, 7) => reduce_tile::<1, 7, true>(args),
                            (1, true, 8) => reduce_tile::<1, 8, true>(args),
                            (1, true, 9) => reduce_tile::<1, 9, true>(args),
                            (1, true, 10) => reduce_tile::<1, 10, true>(args),
                            (1, true, 11) => reduce_tile::<1, 11, true>(args),
                            (1, true, _) => reduce_tile::<1, R, true>(args),
                            (1, false, _) => reduce_tile::<1, R, false>(args),
                            (2, true, 4) => reduce_tile::<2, 4, true>(args),
                            (2, true, 5) => reduce_tile::<2, 5, true>(args),
                            (2, true, 6) => reduce_tile::<2, 6, true>(args),
                            (2, true, 7) => reduce_tile::<2, 7, true>(args),
                            (2, true, _) => reduce_tile::<2, 8, true>(args),
                            (2, false, _) => reduce_tile::<2, 8, false>(args),
                            (3, true, 4) => reduce_tile::<3, 4, true>(args),
                            (3, true, 5) => reduce_tile::<3, 5, true>(args),
                            (3, true, _) => reduce_tile::<3, 6, true>(args),
                            (3, false, _) => reduce_tile::<3, 6, false>(args),
                            (_, true, 4) => reduce_tile::<4, 4, true>(args),
                            (_, true, 5) => reduce_tile::<4, 5, true>(args),
                            (_, true, _) => reduce_tile::<4, 6, true>(args),
                            (_, false, _) => reduce_tile::<4, 6, false>(args),
                        }
                    };
                }
            }
        }
    });
}

/// One sample of [`reduce`]: its padded image, the range of its windows, its first row
/// of `B`.
struct Sample {
    pimg: *const f32,
    pw: i64,
    windows: Range<i64>,
    b: *const f32,
}

/// The operands of [`reduce_tile`]: the product, the sample, its layout, the tile's tap
/// row and first tap, the partial product and its strides.
type ReduceTile<'a> = (
    &'a WindowsGemm,
    &'a Sample,
    &'a Layout,
    (usize, usize),
    (*mut f32, usize, usize),
);

/// Taps `k0 .. k0 + T` of tap row `ty` (those inside the row) × all columns, summed over
/// the sample's windows, added into `out`; `ADJACENT`: the taps are consecutive floats
/// of the padded sample, read at constant offsets from one pointer (with twelve
/// offsets of their own, twelve pointers did not fit the registers beside the loop's
/// and were reloaded for every window: LeNet's conv2 weight gradient ran at a third of
/// the peak).
///
/// # Safety
/// As for [`reduce`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn reduce_tile<const V: usize, const T: usize, const ADJACENT: bool>(
    (g, sample, layout, (ty, k0), (out, rso, cso)): ReduceTile,
) {
    let q_n = g.grid[1];
    let c = layout.c as i64;
    let run = layout.taps.len();
    let n = g.n as usize;
    let masks = masks::<V>(n);
    // The tile's taps (past the row's end: its last tap again, summed and dropped).
    let mut offs = [0usize; T];
    for (i, o) in offs.iter_mut().enumerate() {
        *o = layout.rows[ty] + layout.taps[(k0 + i).min(run - 1)];
    }
    let mut acc = [[_mm512_setzero_ps(); V]; T];
    let (w0, w1) = (sample.windows.start, sample.windows.end);
    let inside = window_rows(g, ty as i64);
    let rows = inside.start.max(w0 / q_n)..inside.end.min((w1 + q_n - 1) / q_n);
    // SAFETY: the caller's contract (see `reduce`).
    unsafe {
        for p in rows {
            let qa = (w0 - p * q_n).max(0);
            let qb = (w1 - p * q_n).min(q_n);
            for q in qa..qb {
                let w = p * q_n + q;
                let bw = sample.b.offset(w as isize * g.rsb as isize);
                let mut b = [_mm512_setzero_ps(); V];
                for (v, bv) in b.iter_mut().enumerate() {
                    let m = masks[v];
                    *bv = _mm512_maskz_loadu_ps(m, bw.add(16 * v));
                }
                let a = sample.pimg.offset(((p * sample.pw + q) * c) as isize);
                let a0 = a.add(offs[0]);
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(if ADJACENT {
                        *a0.add(i)
                    } else {
                        *a.add(offs[i])
                    });
                    for v in 0..V {
                        acc_i[v] = _mm512_fmadd_ps(x, b[v], acc_i[v]);
                    }
                }
            }
        }
        let row0 = ty * run + k0;
        for (i, acc_i) in acc.iter().enumerate().take(run - k0) {
            let o = out.add((row0 + i) * rso);
            if cso == 1 {
                for (v, &x) in acc_i.iter().enumerate() {
                    let m = masks[v];
                    let y = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o.add(16 * v)), x);
                    _mm512_mask_storeu_ps(o.add(16 * v), m, y);
                }
            } else {
                let mut lanes = [0f32; 64];
                for (v, &x) in acc_i.iter().enumerate() {
                    _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * v), x);
                }
                for (j, &x) in lanes.iter().enumerate().take(n) {
                    *o.add(j * cso) += x;
                }
            }
        }
    }
}
