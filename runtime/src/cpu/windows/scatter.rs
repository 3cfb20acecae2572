//! The input gradient of a stride-1 convolution as a scatter (AVX-512): each pixel of
//! the output gradient times the weights, added into the windows it reaches, instead of
//! each window gathering its taps from a zero-padded output gradient.
//!
//! An input gradient is an untransposed window product whose taps run backwards (`tap =
//! −1`): window `(p, q)`'s tap `(ty, tx)` reads pixel `(p − ty − pad₀, q − tx − pad₁)`
//! of the image (the output gradient, `c` channels), and `C[(p, q), j] = Σ B[(ty·kw +
//! tx)·c + ch, j]·A[pixel, ch]`. Gathered, most of those pixels are the padding's zeros
//! (LeNet's conv2: a 10×10 image under 14×14 windows of 5×5 taps, 51 % zeros), and a
//! product of few columns (`n = 6`) fills a third of a vector. Turned around, pixel
//! `(y, x)` adds `Σ_ch A[(y, x), ch]·B[(ty·kw + tx)·c + ch, j]` to window `(y + ty +
//! pad₀, x + tx + pad₁)` for every tap: for a tap row `ty` the windows `x + pad₁ .. +
//! kw` of window row `y + ty + pad₀` are `kw·n` adjacent floats of `C` (LeNet: 30, two
//! vectors). So per tap row and vector of those floats, the `c` rows of the weights
//! (`W[ty][ch]`, `kw·n` floats, repacked once per call) stay in registers while the
//! sample's pixels stream by, four at a time: one broadcast multiply-add per channel,
//! then one add into the sample's windows. No zero is multiplied, and every lane but the
//! last vector's tail is a useful one.
//!
//! The windows of a sample are summed in a scratch block laid out as the sample's
//! windows, widened to every window a pixel reaches (`(h + kh − 1) × (w + kw − 1)`;
//! the windows outside the grid are dropped, those no pixel reaches are zero), then
//! copied into `C` with `alpha` and `beta`. When that block is the sample's rows of `C`
//! itself (no padding: LeNet's conv2), it is summed there in place.

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{samples, update, with_scratch, WindowsGemm, BLOCK_OUT, PACKED};

/// The most image channels a pass keeps in registers (one weight vector each).
const CH: usize = 16;

/// The widest product the scatter takes: 8 columns (LeNet's 6; with 9–64 the direct
/// tiles' vectors of columns are full enough, and their gather reads only the border's
/// padding).
const MAX_N: i64 = 8;

/// Whether [`rows`] takes `g` (AVX-512 checked by the caller): an untransposed product
/// over windows of unit steps and taps of −1 without `div` (the input gradient of a
/// stride-1 convolution; its padding is negative for a `"same"` one, whose windows then
/// reach past the grid), `B` and `C` with contiguous rows, at most [`MAX_N`] columns
/// (wider products have the direct tiles) and a tap row of at most four vectors (`kw·n ≤
/// 64`).
pub(super) fn applies(g: &WindowsGemm) -> bool {
    g.n <= MAX_N
        && g.transposed == 0
        && g.step == [1, 1]
        && g.tap == [-1, -1]
        && g.div == [1, 1]
        && g.csb == 1
        && g.csc == 1
        && g.rsc >= g.n
        && (1..=64).contains(&(g.taps[1] * g.n))
}

/// Rows `range` of `C` (windows counted from `g.first`) for an [`applies`] geometry:
/// each sample the range touches is computed whole, its windows in the range stored.
///
/// # Safety
/// As for `windows::run`; the machine has AVX-512F.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn rows(g: &WindowsGemm, range: Range<i64>) {
    let [h, w, c] = g.image;
    let [p_n, q_n] = g.grid;
    let [kh, kw] = g.taps;
    let n = g.n;
    let per = p_n * q_n;
    let (zh, zw) = (h + kh - 1, w + kw - 1);
    let run = (kw * n) as usize;
    let vectors = run.div_ceil(16);
    // The weights per tap row and channel: `kw·n` floats (tap, column), padded to whole
    // vectors with zeros.
    let wlen = (kh * c) as usize * vectors * 16;
    // The sample's windows are the block itself when the block is laid out as they are.
    let in_place = g.pad == [0, 0] && zh == p_n && zw == q_n && g.rsc == n;
    let in_place = in_place && g.alpha == 1.0 && g.beta == 0.0;
    let zlen = (zh * zw * n) as usize;
    // The pixels column by column, each one's offset in the sample and in the block: the
    // next pixel adds into other window rows than this one (row by row, the next one's
    // run overlaps this one's by all but `n` floats, and its load waited for this one's
    // store: 2× slower).
    let order: Vec<(usize, usize)> = (0..w)
        .flat_map(|x| (0..h).map(move |y| (y, x)))
        .map(|(y, x)| (((y * w + x) * c) as usize, ((y * zw + x) * n) as usize))
        .collect();
    with_scratch(&PACKED, wlen, |wts| {
        for ty in 0..kh {
            for ch in 0..c {
                let row = &mut wts[((ty * c + ch) as usize) * vectors * 16..][..vectors * 16];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = if i < run {
                        let (tx, j) = (i as i64 / n, i as i64 % n);
                        // SAFETY: row `(ty·kw + tx)·c + ch`, column `j` of B (the caller's
                        // contract).
                        unsafe { *g.b.offset((((ty * kw + tx) * c + ch) * g.rsb + j) as isize) }
                    } else {
                        0.0
                    };
                }
            }
        }
        with_scratch(&BLOCK_OUT, zlen, |scratch| {
            for (s, wins) in samples(g, range) {
                if in_place && wins == (s * per..(s + 1) * per) {
                    let c0 = g.c.wrapping_offset(((s * per - g.first) * g.rsc) as isize);
                    // SAFETY: the sample's rows of C, contiguous (`rsc == n`), all of
                    // them in the range (the caller's contract).
                    let z = unsafe { std::slice::from_raw_parts_mut(c0, zlen) };
                    // SAFETY: forwarded; `z` holds `zh × zw` windows of `n` floats.
                    unsafe { sample(g, s, (wts, vectors), &order, (z, zw * n)) };
                } else {
                    // SAFETY: as above, into the scratch block, then the range's rows of C.
                    unsafe {
                        sample(g, s, (wts, vectors), &order, (scratch, zw * n));
                        store(g, s, scratch, wins);
                    }
                }
            }
        });
    });
}

/// Windows `wins` (absolute) of sample `s` from its block `z` (`zh × zw` windows of `n`
/// floats, window `(p, q)` at `(p − pad₀, q − pad₁)`; zero outside it) into `C` with
/// `alpha` and `beta`.
///
/// # Safety
/// The windows' rows of C are the caller's.
unsafe fn store(g: &WindowsGemm, s: i64, z: &[f32], wins: Range<i64>) {
    let [h, w, _] = g.image;
    let [p_n, q_n] = g.grid;
    let (zh, zw) = (h + g.taps[0] - 1, w + g.taps[1] - 1);
    let n = g.n;
    for win in wins {
        let (p, q) = ((win - s * p_n * q_n) / q_n, win % q_n);
        let (zp, zq) = (p - g.pad[0], q - g.pad[1]);
        let inside = (0..zh).contains(&zp) && (0..zw).contains(&zq);
        let c = g.c.wrapping_offset(((win - g.first) * g.rsc) as isize);
        for j in 0..n {
            let v = if inside {
                z[((zp * zw + zq) * n + j) as usize]
            } else {
                0.0
            };
            // SAFETY: element (win − first, j) of C (the caller's contract).
            unsafe { update(c.offset(j as isize), g.alpha * v, g.beta) };
        }
    }
}

/// Sample `s`'s block `z` (rows of `zrow` floats, zeroed here): every pixel times the
/// weights `wts` (`vectors` a tap row), added into the windows it reaches, in `order`.
///
/// # Safety
/// As for [`rows`]; `z` holds `(h + kh − 1)` rows of `zrow ≥ (w + kw − 1)·n` floats.
#[cfg(target_arch = "x86_64")]
unsafe fn sample(
    g: &WindowsGemm,
    s: i64,
    (wts, vectors): (&[f32], usize),
    order: &[(usize, usize)],
    (z, zrow): (&mut [f32], i64),
) {
    let [h, w, c] = g.image;
    let [kh, kw] = g.taps;
    let run = (kw * g.n) as usize;
    z.fill(0.0);
    // SAFETY: sample `s` of the image (the caller's contract).
    let img = unsafe { g.a.offset((s * h * w * c) as isize) };
    for ty in 0..kh {
        for v in 0..vectors {
            let len = (run - 16 * v).min(16);
            let mut ch = 0;
            while ch < c {
                let chunk = ((c - ch) as usize).min(CH);
                let at = |k: usize| ((ty * c + ch) as usize + k) * vectors * 16 + 16 * v;
                let pass = Pass {
                    img: img.wrapping_offset(ch as isize),
                    order,
                    wts: wts[at(0)..].as_ptr(),
                    wstride: vectors * 16,
                    z: z[(ty * zrow) as usize + 16 * v..].as_mut_ptr(),
                    mask: if len >= 16 {
                        0xffff
                    } else {
                        ((1u32 << len) - 1) as u16
                    },
                };
                // SAFETY: the pass reads `chunk` channels of every pixel of the sample
                // and `chunk` weight vectors, and adds into window rows `ty ..
                // ty + h` of the block, `x·n + 16v ..` (inside `zrow`).
                unsafe { by_chunk(chunk, &pass) };
                ch += chunk as i64;
            }
        }
    }
}

/// One pass of [`sample`]: a tap row, a vector of its `kw·n` floats, a chunk of channels.
#[derive(Clone, Copy)]
struct Pass {
    /// The sample's first pixel's first channel of the chunk.
    img: *const f32,
    /// The pixels in the order they are added: each one's offset in the image (from
    /// `img`) and in the block (from `z`).
    order: *const [(usize, usize)],
    /// The chunk's first weight vector (`wstride` floats between channels).
    wts: *const f32,
    wstride: usize,
    /// Where pixel `(0, 0)` adds its vector (window row `ty`, the vector's offset).
    z: *mut f32,
    mask: u16,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn by_chunk(chunk: usize, p: &Pass) {
    // SAFETY: forwarded.
    unsafe {
        match chunk {
            1 => pass::<1>(p),
            2 => pass::<2>(p),
            3 => pass::<3>(p),
            4 => pass::<4>(p),
            5 => pass::<5>(p),
            6 => pass::<6>(p),
            7 => pass::<7>(p),
            8 => pass::<8>(p),
            9 => pass::<9>(p),
            10 => pass::<10>(p),
            11 => pass::<11>(p),
            12 => pass::<12>(p),
            13 => pass::<13>(p),
            14 => pass::<14>(p),
            15 => pass::<15>(p),
            _ => pass::<16>(p),
        }
    }
}

/// Pixels per step: four independent sums (each in two halves over the channels, eight
/// chains of multiply-adds in flight) before their four adds into the block.
const PIX: usize = 4;

/// [`Pass`] with `K` channels: the weights in `K` registers, the pixels four at a time.
///
/// # Safety
/// As for [`sample`]; AVX-512F (the caller's target feature).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pass<const K: usize>(p: &Pass) {
    // SAFETY: the pass's reads and writes (see `sample`).
    unsafe {
        let mut wv = [_mm512_setzero_ps(); K];
        for (k, x) in wv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(p.wts.add(k * p.wstride));
        }
        let order = &*p.order;
        let total = order.len();
        let mut i = 0;
        while i < total {
            let count = (total - i).min(PIX);
            let mut acc = [[_mm512_setzero_ps(); 2]; PIX];
            for (t, a) in acc.iter_mut().enumerate().take(count) {
                let px = p.img.add(order.get_unchecked(i + t).0);
                for k in 0..K {
                    let x = _mm512_set1_ps(*px.add(k));
                    a[k % 2] = _mm512_fmadd_ps(x, wv[k], a[k % 2]);
                }
            }
            for (t, a) in acc.iter().enumerate().take(count) {
                let o = p.z.add(order.get_unchecked(i + t).1);
                let sum = _mm512_add_ps(a[0], a[1]);
                let old = _mm512_maskz_loadu_ps(p.mask, o);
                _mm512_mask_storeu_ps(o, p.mask, _mm512_add_ps(old, sum));
            }
            i += count;
        }
    }
}
