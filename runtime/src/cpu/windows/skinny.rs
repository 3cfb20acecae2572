//! Micro-kernels for products with few columns (`n ≤` [`MAX_N`]), where the `gemm`
//! crate's wide register tiles mostly multiply padding (see the module doc of
//! `windows.rs`).
//!
//! Two forms, each with explicit SIMD (AVX-512 or AVX2+FMA, chosen at run time; a
//! portable scalar fallback with the same loops, one lane wide):
//! - [`axpy`]: `out[j·ldo + i] = Σ_l p[l·ldp + i]·b[l·rsb + j·csb]`, vectorised
//!   down `i` (`p` stored `l`-major, `i` contiguous, as a tap-major block); each tile
//!   keeps `R` vectors of `i` × `N` columns in registers, so that each load of `p` feeds
//!   `N` multiply-adds and each broadcast of `b` feeds `R`;
//! - [`dot`]: `out[c·rso + j·cso] = alpha·Σ_l p[c·ldp + l]·bt[j·ldb + l] +
//!   beta·out`, vectorised along the reduction `l` (both operands contiguous along it:
//!   a window-major block against `Bᵀ`, or a tap-major block's rows against a
//!   transposed block of `B`), `CB` rows × `N` columns of partial sums in registers,
//!   each summed across its lanes at the end.
//!
//! Wider `n` is cut into chunks of at most [`chunk`] columns.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The widest product the kernels take.
pub(crate) const MAX_N: usize = 16;

/// The instruction set the kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The best instruction set this machine has (detected at run time: the crate is
/// built for plain x86-64).
pub(crate) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// Every instruction set this machine can run (the tests try each).
#[cfg(test)]
pub(crate) fn all_isas() -> Vec<Isa> {
    let mut v = vec![Isa::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2);
        }
        if is_x86_feature_detected!("avx512f") {
            v.push(Isa::Avx512);
        }
    }
    v
}

/// The most columns one kernel call keeps in registers.
pub(crate) fn chunk(isa: Isa) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => 8,
        _ => 6,
    }
}

/// The columns `0..n` cut into near-equal chunks of at most [`chunk`] each.
fn chunks(isa: Isa, n: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = n.div_ceil(chunk(isa));
    let size = n.div_ceil(count.max(1));
    (0..count).map(move |c| (c * size, (n - c * size).min(size)))
}

/// One vector type's operations.
trait Simd {
    type V: Copy;
    const W: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    /// The first `len < W` lanes from `p`, the others zero.
    unsafe fn load_part(p: *const f32, len: usize) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    unsafe fn store_part(p: *mut f32, v: Self::V, len: usize);
    unsafe fn splat(x: f32) -> Self::V;
    /// `a·b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn sum(v: Self::V) -> f32;
    /// The sums of four vectors' lanes.
    #[inline(always)]
    unsafe fn sum4(v: [Self::V; 4]) -> [f32; 4] {
        // SAFETY: forwarded.
        v.map(|x| unsafe { Self::sum(x) })
    }
}

/// One lane: the portable fallback.
struct Scalar;
impl Simd for Scalar {
    type V = f32;
    const W: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller's.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn load_part(_: *const f32, _: usize) -> f32 {
        0.0 // `len < 1`
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller's.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn store_part(_: *mut f32, _: f32, _: usize) {}
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    unsafe fn sum(v: f32) -> f32 {
        v
    }
}

/// 8 lanes (AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
struct Avx2;
// SAFETY (every method): only inlined into `#[target_feature(enable = "avx2,fma")]`
// functions; pointers as the callers promise.
#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    type V = __m256;
    const W: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, len: usize) -> __m256 {
        unsafe { _mm256_maskload_ps(p, mask8(len)) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: __m256, len: usize) {
        unsafe { _mm256_maskstore_ps(p, mask8(len), v) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
}

/// The AVX2 mask of the first `len` lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn mask8(len: usize) -> __m256i {
    // SAFETY: inlined into AVX2 functions only.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(len as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

/// 16 lanes (AVX-512F).
#[cfg(target_arch = "x86_64")]
struct Avx512;
// SAFETY (every method): only inlined into `#[target_feature(enable = "avx512f")]`
// functions; pointers as the callers promise.
#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    type V = __m512;
    const W: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, len: usize) -> __m512 {
        unsafe { _mm512_maskz_loadu_ps(((1u32 << len) - 1) as u16, p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: __m512, len: usize) {
        unsafe { _mm512_mask_storeu_ps(p, ((1u32 << len) - 1) as u16, v) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn sum(v: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(v) }
    }
    /// Four vectors reduced together (halves, then quarters, of two vectors per
    /// shuffle): 14 operations instead of 4 reductions of 8.
    #[inline(always)]
    unsafe fn sum4(v: [__m512; 4]) -> [f32; 4] {
        // SAFETY: AVX-512F (the callers' target feature).
        unsafe {
            // Quarters (q0 + q2, q1 + q3) of v0 then v1, likewise v2, v3.
            let ab = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(v[0], v[1]),
                _mm512_shuffle_f32x4::<0xEE>(v[0], v[1]),
            );
            let cd = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(v[2], v[3]),
                _mm512_shuffle_f32x4::<0xEE>(v[2], v[3]),
            );
            // Quarter `k` holds four partial sums of `v[k]`.
            let q = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(ab, cd),
                _mm512_shuffle_f32x4::<0xDD>(ab, cd),
            );
            let q = _mm512_add_ps(q, _mm512_permute_ps::<0b1011_0001>(q));
            let q = _mm512_add_ps(q, _mm512_permute_ps::<0b0100_1110>(q));
            let mut lanes = [0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), q);
            [lanes[0], lanes[4], lanes[8], lanes[12]]
        }
    }
}

/// The operands of [`axpy`] (one chunk of columns).
#[derive(Clone, Copy)]
struct Axpy {
    m: usize,
    k: usize,
    p: *const f32,
    ldp: usize,
    /// Column `l` of `p` at `offs[l]` instead of `l·ldp`, when not null.
    offs: *const usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    out: *mut f32,
    ldo: usize,
    acc: bool,
}

/// `R` vectors of rows from `i0` (the last one `len` lanes) × `N` columns of [`axpy`].
// `j` and `r` (or `c`) index two arrays at once: plain ranges read best.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn axpy_tile<S: Simd, const N: usize, const R: usize>(a: &Axpy, i0: usize, len: usize) {
    let load = |p: *const f32, r: usize| {
        // SAFETY: rows `i0 .. i0 + (R - 1)·W + len` of a column of `p` or `out`.
        unsafe {
            if r + 1 == R && len < S::W {
                S::load_part(p, len)
            } else {
                S::load(p)
            }
        }
    };
    // SAFETY: as above, and `b`'s rows `0..k`, columns `0..N` (the caller's).
    unsafe {
        let mut c = [[S::zero(); N]; R];
        if a.acc {
            for (r, cr) in c.iter_mut().enumerate() {
                for (j, v) in cr.iter_mut().enumerate() {
                    *v = load(a.out.add(j * a.ldo + i0 + r * S::W), r);
                }
            }
        }
        for l in 0..a.k {
            let off = if a.offs.is_null() {
                l * a.ldp
            } else {
                *a.offs.add(l)
            };
            let pl = a.p.add(off + i0);
            let x: [S::V; R] = std::array::from_fn(|r| load(pl.add(r * S::W), r));
            let bl = a.b.offset(l as isize * a.rsb);
            for j in 0..N {
                let bj = S::splat(*bl.offset(j as isize * a.csb));
                for r in 0..R {
                    c[r][j] = S::fma(x[r], bj, c[r][j]);
                }
            }
        }
        for (r, cr) in c.iter().enumerate() {
            for (j, v) in cr.iter().enumerate() {
                let o = a.out.add(j * a.ldo + i0 + r * S::W);
                if r + 1 == R && len < S::W {
                    S::store_part(o, *v, len);
                } else {
                    S::store(o, *v);
                }
            }
        }
    }
}

/// [`axpy`] for `N` columns, tiles of `R` vectors of rows, then single vectors.
#[inline(always)]
unsafe fn axpy_n<S: Simd, const N: usize, const R: usize>(a: &Axpy) {
    let mut i = 0;
    // SAFETY: every tile stays inside rows `0..m` (the caller's contract).
    unsafe {
        while i + R * S::W <= a.m {
            axpy_tile::<S, N, R>(a, i, S::W);
            i += R * S::W;
        }
        while i < a.m {
            let len = (a.m - i).min(S::W);
            axpy_tile::<S, N, 1>(a, i, len);
            i += len;
        }
    }
}

/// The operands of [`dot`] (one chunk of columns).
#[derive(Clone, Copy)]
struct Dot {
    mc: usize,
    len: usize,
    p: *const f32,
    ldp: usize,
    /// Row `c` of `p` at `offs[c]` instead of `c·ldp`, when not null.
    offs: *const usize,
    /// When not null, `nseg` runs of `len` floats make a row: run `t` at `segs[t]`
    /// past the row's start in `p`, at `t·len` in `bt`'s.
    segs: *const usize,
    nseg: usize,
    /// Run `t` of `bt`'s rows at `t·bseg`.
    bseg: usize,
    bt: *const f32,
    ldb: usize,
    out: *mut f32,
    rso: isize,
    cso: isize,
    alpha: f32,
    beta: f32,
}

/// One vector of the reduction at `l` (`part` lanes) for rows `c0 .. c0 + CB`.
// `j` and `r` (or `c`) index two arrays at once: plain ranges read best.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn dot_step<S: Simd, const N: usize, const CB: usize, const FULL: bool>(
    d: &Dot,
    c0: usize,
    (pofs, bofs): (usize, usize),
    l: usize,
    part: usize,
    s: &mut [[S::V; N]; CB],
) {
    // SAFETY: `part` floats at `l` of rows `c0 .. c0 + CB` of `p` and `0..N` of `bt`
    // (the caller's contract).
    unsafe {
        let ld = |p: *const f32| {
            if FULL {
                S::load(p)
            } else {
                S::load_part(p, part)
            }
        };
        let x: [S::V; CB] = std::array::from_fn(|c| {
            let row = if d.offs.is_null() {
                (c0 + c) * d.ldp
            } else {
                *d.offs.add(c0 + c)
            };
            ld(d.p.add(row + pofs + l))
        });
        for j in 0..N {
            let b = ld(d.bt.add(j * d.ldb + bofs + l));
            for c in 0..CB {
                s[c][j] = S::fma(x[c], b, s[c][j]);
            }
        }
    }
}

/// Rows `c0 .. c0 + CB` × `N` columns of [`dot`].
#[inline(always)]
unsafe fn dot_tile<S: Simd, const N: usize, const CB: usize>(d: &Dot, c0: usize) {
    // SAFETY: rows `c0 .. c0 + CB` of `p` and `0..N` of `bt`, `len` floats each,
    // and those elements of `out` (the caller's contract).
    unsafe {
        let mut s = [[S::zero(); N]; CB];
        for t in 0..d.nseg {
            let seg = if d.segs.is_null() {
                (0, 0)
            } else {
                (*d.segs.add(t), t * d.bseg)
            };
            let mut l = 0;
            while l + S::W <= d.len {
                dot_step::<S, N, CB, true>(d, c0, seg, l, S::W, &mut s);
                l += S::W;
            }
            if l < d.len {
                dot_step::<S, N, CB, false>(d, c0, seg, l, d.len - l, &mut s);
            }
        }
        // The `CB·N` sums four at a time.
        let flat = s.as_flattened();
        for k in (0..CB * N).step_by(4) {
            let take = (CB * N - k).min(4);
            let sums = S::sum4(std::array::from_fn(|i| {
                if i < take {
                    flat[k + i]
                } else {
                    S::zero()
                }
            }));
            for (i, &sum) in sums.iter().enumerate().take(take) {
                let (c, j) = ((k + i) / N, (k + i) % N);
                let o = d.out.offset((c0 + c) as isize * d.rso + j as isize * d.cso);
                let v = d.alpha * sum;
                *o = if d.beta == 0.0 { v } else { v + d.beta * *o };
            }
        }
    }
}

/// [`dot`] for `N` columns, tiles of `CB` rows, then single rows.
#[inline(always)]
unsafe fn dot_n<S: Simd, const N: usize, const CB: usize>(d: &Dot) {
    let mut c = 0;
    // SAFETY: every tile stays inside rows `0..mc` (the caller's contract).
    unsafe {
        while c + CB <= d.mc {
            dot_tile::<S, N, CB>(d, c);
            c += CB;
        }
        if CB > 2 && c + 2 <= d.mc {
            dot_tile::<S, N, 2>(d, c);
            c += 2;
        }
        while c < d.mc {
            dot_tile::<S, N, 1>(d, c);
            c += 1;
        }
    }
}

/// Instantiates `$f::<$S, N, R>` for `N` up to [`chunk`], `R` rows or vectors of rows
/// per tile such that the `R·N` sums and `R` operand vectors fit the registers.
macro_rules! by_n {
    ($n:expr, $f:ident, $S:ty, $arg:expr, [$($N:literal => $R:literal),*]) => {
        match $n {
            $($N => $f::<$S, $N, $R>($arg),)*
            _ => unreachable!("a chunk of {} columns", $n),
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_avx512(n: usize, a: &Axpy) {
    // SAFETY: forwarded.
    unsafe {
        by_n!(n, axpy_n, Avx512, a,
            [1 => 8, 2 => 8, 3 => 6, 4 => 5, 5 => 4, 6 => 4, 7 => 3, 8 => 3])
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(n: usize, a: &Axpy) {
    // SAFETY: forwarded.
    unsafe { by_n!(n, axpy_n, Avx2, a, [1 => 6, 2 => 4, 3 => 3, 4 => 2, 5 => 2, 6 => 2]) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(n: usize, d: &Dot) {
    // SAFETY: forwarded.
    unsafe {
        by_n!(n, dot_n, Avx512, d,
            [1 => 8, 2 => 8, 3 => 6, 4 => 5, 5 => 4, 6 => 4, 7 => 3, 8 => 3])
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(n: usize, d: &Dot) {
    // SAFETY: forwarded.
    unsafe { by_n!(n, dot_n, Avx2, d, [1 => 6, 2 => 4, 3 => 3, 4 => 2, 5 => 2, 6 => 2]) }
}

/// `out[j·ldo + i] (+)= Σ_{l<k} p[l·ldp + i]·b[l·rsb + j·csb]` for `i < m`, `j < n`:
/// added to `out` when `acc`, else written (`out` not read). With `offs`, column `l`
/// of `p` starts at `offs[l]` instead of `l·ldp` (a padded image read in place).
///
/// # Safety
/// `offs` has `k` entries; `p` is readable at `l·ldp + i` (or `offs[l] + i`), `b` at `l·rsb + j·csb`, `out` writable (and
/// readable when `acc`) at `j·ldo + i`, for those `i`, `j`, `l`; `n ≤ MAX_N`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn axpy(
    isa: Isa,
    (m, n, k): (usize, usize, usize),
    (p, ldp, offs): (*const f32, usize, Option<&[usize]>),
    (b, rsb, csb): (*const f32, isize, isize),
    (out, ldo): (*mut f32, usize),
    acc: bool,
) {
    debug_assert!(n <= MAX_N);
    for (j0, nj) in chunks(isa, n) {
        let a = Axpy {
            m,
            k,
            p,
            ldp,
            offs: offs.map_or(std::ptr::null(), |o| {
                debug_assert!(o.len() >= k);
                o.as_ptr()
            }),
            b: b.wrapping_offset(j0 as isize * csb),
            rsb,
            csb,
            out: out.wrapping_add(j0 * ldo),
            ldo,
            acc,
        };
        // SAFETY: the chunk's columns are inside `0..n` (the caller's contract); the
        // SIMD kernels run only where `isa()` found their instructions.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => axpy_avx512(nj, &a),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => axpy_avx2(nj, &a),
                Isa::Scalar => by_n!(nj, axpy_n, Scalar, &a,
                    [1 => 4, 2 => 4, 3 => 3, 4 => 2, 5 => 2, 6 => 2]),
            }
        }
    }
}

/// Lane permutations between `n` columns of 16 rows (16 consecutive elements each)
/// and the same 16 rows stored row-major (`16·n` contiguous floats, `n` vectors), for
/// [`interleave`] and [`deinterleave`]: output vector `o` = the blend, over pairs
/// `q` of input vectors, of `permutex2var(in[2q], idx[o][q], in[2q + 1])` under
/// `mask[o][q]`. (Gathers would do without tables but are microcoded slow here.)
pub(crate) struct Transpose {
    n: usize,
    /// Columns to rows (`true`) or rows to columns.
    to_rows: bool,
    idx: Vec<[i32; 16]>,
    mask: Vec<u16>,
}

impl Transpose {
    /// The tables for `n ≤ MAX_N` columns, `to_rows` as in [`Transpose`].
    // `l` indexes a lane of two tables at once: a plain range reads best.
    #[allow(clippy::needless_range_loop)]
    pub(crate) fn new(n: usize, to_rows: bool) -> Transpose {
        assert!(n <= MAX_N);
        let pairs = n.div_ceil(2);
        let mut idx = vec![[0i32; 16]; n * pairs];
        let mut mask = vec![0u16; n * pairs];
        for o in 0..n {
            for l in 0..16 {
                // Output lane `l` of vector `o` comes from lane `sl` of input `src`.
                let (src, sl) = if to_rows {
                    let e = 16 * o + l;
                    (e % n, e / n)
                } else {
                    let e = l * n + o;
                    (e / 16, e % 16)
                };
                let q = src / 2;
                idx[o * pairs + q][l] = (sl | (src % 2) << 4) as i32;
                mask[o * pairs + q] |= 1 << l;
            }
        }
        Transpose {
            n,
            to_rows,
            idx,
            mask,
        }
    }
}

/// `N` vectors permuted by `tr`'s tables (see [`Transpose`]; `tr.n == N`): straight-line
/// code once `N` is a constant (with a run-time `n`, the loops over pairs and outputs
/// and the arrays of vectors went through memory and took longer than the product they
/// transposed on LeNet's conv1).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn permute<const N: usize>(tr: &Transpose, x: &[__m512; N]) -> [__m512; N] {
    let pairs = N.div_ceil(2);
    // (Loops, not `array::from_fn`: a closure does not inherit the target feature, and
    // its intrinsics would be calls.)
    let mut y = [_mm512_setzero_ps(); N];
    // SAFETY: the tables hold `N·pairs` entries; AVX-512F (the callers' target feature).
    unsafe {
        for (o, yo) in y.iter_mut().enumerate() {
            for q in 0..pairs {
                let (a, b) = (x[2 * q], x[(2 * q + 1).min(N - 1)]);
                let i = _mm512_loadu_si512(tr.idx.get_unchecked(o * pairs + q).as_ptr().cast());
                let m = *tr.mask.get_unchecked(o * pairs + q);
                *yo = _mm512_mask_mov_ps(*yo, m, _mm512_permutex2var_ps(a, i, b));
            }
        }
    }
    y
}

/// The first `len` of 16 lanes.
#[cfg(target_arch = "x86_64")]
fn lanes(len: usize) -> u16 {
    if len >= 16 {
        0xffff
    } else {
        ((1u32 << len) - 1) as u16
    }
}

/// `out[t·ldo + j] = alpha·src[j·ld + t] + beta·out[t·ldo + j]` for `t < count`,
/// `j < n` (`out` not read when `beta == 0`; `ldo ≥ n`): a column-major block (an
/// [`axpy`] product) written into row-major rows; with AVX-512, 16 rows at a time
/// through `tr` (`to_rows`, `n` columns) instead of one scalar store per element.
///
/// # Safety
/// `src` is readable at `j·ld + t`, `out` writable (and readable when `beta != 0`)
/// at `t·ldo + j`, for those `t`, `j`.
pub(crate) unsafe fn interleave(
    isa: Isa,
    tr: &Transpose,
    (src, ld): (*const f32, usize),
    count: usize,
    (out, ldo): (*mut f32, usize),
    (alpha, beta): (f32, f32),
) {
    let n = tr.n;
    debug_assert!(tr.to_rows && ldo >= n);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the caller's contract; `isa()` found AVX-512.
        unsafe { interleave_avx512(tr, (src, ld), count, (out, ldo), (alpha, beta)) };
        return;
    }
    let _ = isa;
    for t in 0..count {
        for j in 0..n {
            // SAFETY: the caller's contract.
            unsafe {
                let o = out.add(t * ldo + j);
                let v = alpha * *src.add(j * ld + t);
                *o = if beta == 0.0 { v } else { v + beta * *o };
            }
        }
    }
}

/// Instantiates `$f::<N>` for the `n ≤ MAX_N` columns of a transpose.
#[cfg(target_arch = "x86_64")]
macro_rules! by_cols {
    ($n:expr, $f:ident($($arg:expr),*)) => {
        match $n {
            0 => (), 1 => $f::<1>($($arg),*), 2 => $f::<2>($($arg),*), 3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*), 5 => $f::<5>($($arg),*), 6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*), 8 => $f::<8>($($arg),*), 9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*), 11 => $f::<11>($($arg),*), 12 => $f::<12>($($arg),*),
            13 => $f::<13>($($arg),*), 14 => $f::<14>($($arg),*), 15 => $f::<15>($($arg),*),
            16 => $f::<16>($($arg),*),
            n => unreachable!("a transpose of {n} columns"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave_avx512(
    tr: &Transpose,
    src: (*const f32, usize),
    count: usize,
    out: (*mut f32, usize),
    scale: (f32, f32),
) {
    // SAFETY: forwarded.
    unsafe { by_cols!(tr.n, interleave_n(tr, src, count, out, scale)) }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn interleave_n<const N: usize>(
    tr: &Transpose,
    (src, ld): (*const f32, usize),
    count: usize,
    (out, ldo): (*mut f32, usize),
    (alpha, beta): (f32, f32),
) {
    let (av, bv) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    // Rows apart: the 16 rows go through this block, not zeroed (all `16·N` floats
    // are written before any is read).
    let mut block = std::mem::MaybeUninit::<[f32; 16 * MAX_N]>::uninit();
    let block = block.as_mut_ptr().cast::<f32>();
    let mut t = 0;
    // SAFETY: rows `t .. t + 16` (the tail masked) of the caller's contract; AVX-512F
    // (the caller's target feature).
    unsafe {
        while t < count {
            let rows = (count - t).min(16);
            let m = lanes(rows);
            let mut x = [_mm512_setzero_ps(); N];
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = _mm512_maskz_loadu_ps(m, src.add(j * ld + t));
            }
            let y = permute::<N>(tr, &x);
            if ldo != N {
                // Rows apart: the 16 rows through a stack block, one masked row each.
                for (k, yk) in y.iter().enumerate() {
                    _mm512_storeu_ps(block.add(16 * k), _mm512_mul_ps(*yk, av));
                }
                let mn = lanes(N);
                for r in 0..rows {
                    let o = out.add((t + r) * ldo);
                    let mut v = _mm512_maskz_loadu_ps(mn, block.add(r * N));
                    if beta != 0.0 {
                        v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mn, o), bv, v);
                    }
                    _mm512_mask_storeu_ps(o, mn, v);
                }
                t += 16;
                continue;
            }
            let o = out.add(t * N);
            for (k, yk) in y.iter().enumerate() {
                let m = lanes((rows * N).saturating_sub(16 * k));
                if m == 0 {
                    break;
                }
                let mut v = if alpha == 1.0 {
                    *yk
                } else {
                    _mm512_mul_ps(*yk, av)
                };
                if beta != 0.0 {
                    v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, o.add(16 * k)), bv, v);
                }
                _mm512_mask_storeu_ps(o.add(16 * k), m, v);
            }
            t += 16;
        }
    }
}

/// `dst[j·ld + t] = src[t·lds + j]` for `t < count`, `j < n` (`lds ≥ n`): row-major
/// rows of `B` copied into columns (`Bᵀ` for [`dot`]); with AVX-512, 16 rows at a
/// time through `tr` (not `to_rows`).
///
/// # Safety
/// `src` is readable at `t·lds + j`, `dst` writable at `j·ld + t`, for those `t`, `j`.
pub(crate) unsafe fn deinterleave(
    isa: Isa,
    tr: &Transpose,
    (src, lds): (*const f32, usize),
    count: usize,
    (dst, ld): (*mut f32, usize),
) {
    let n = tr.n;
    debug_assert!(!tr.to_rows && lds >= n);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the caller's contract; `isa()` found AVX-512.
        unsafe { deinterleave_avx512(tr, (src, lds), count, (dst, ld)) };
        return;
    }
    let _ = isa;
    for t in 0..count {
        for j in 0..n {
            // SAFETY: the caller's contract.
            unsafe { *dst.add(j * ld + t) = *src.add(t * lds + j) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave_avx512(
    tr: &Transpose,
    src: (*const f32, usize),
    count: usize,
    dst: (*mut f32, usize),
) {
    // SAFETY: forwarded.
    unsafe { by_cols!(tr.n, deinterleave_n(tr, src, count, dst)) }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn deinterleave_n<const N: usize>(
    tr: &Transpose,
    (src, lds): (*const f32, usize),
    count: usize,
    (dst, ld): (*mut f32, usize),
) {
    // Not zeroed (1 KiB per call, most calls a row of windows): only its first `rows·N`
    // floats are written, and only those are read.
    let mut block = std::mem::MaybeUninit::<[f32; 16 * MAX_N]>::uninit();
    let block = block.as_mut_ptr().cast::<f32>();
    let mut t = 0;
    // SAFETY: rows `t .. t + 16` (the tail masked) of the caller's contract; AVX-512F
    // (the caller's target feature).
    unsafe {
        while t < count {
            let rows = (count - t).min(16);
            let mut s = src.add(t * lds);
            if lds != N {
                // Rows apart: gathered into a stack block of contiguous rows first.
                let mn = lanes(N);
                for r in 0..rows {
                    let v = _mm512_maskz_loadu_ps(mn, src.add((t + r) * lds));
                    _mm512_mask_storeu_ps(block.add(r * N), mn, v);
                }
                s = block;
            }
            let mut x = [_mm512_setzero_ps(); N];
            for (k, xk) in x.iter_mut().enumerate() {
                let m = lanes((rows * N).saturating_sub(16 * k));
                *xk = _mm512_maskz_loadu_ps(m, s.add(16 * k));
            }
            let y = permute::<N>(tr, &x);
            let m = lanes(rows);
            for (j, yj) in y.iter().enumerate() {
                _mm512_mask_storeu_ps(dst.add(j * ld + t), m, *yj);
            }
            t += 16;
        }
    }
}

/// `out[c·rso + j·cso] = alpha·Σ_{l<len} p[c·ldp + l]·bt[j·ldb + l] + beta·out` for
/// `c < mc`, `j < n`; `out` is not read when `beta == 0`. With `offs`, row `c` of `p`
/// starts at `offs[c]` instead of `c·ldp` (a padded image read in place).
///
/// # Safety
/// `offs` has `mc` entries; `p` is readable at `c·ldp + l` (or `offs[c] + l`), `bt` at `j·ldb + l`, `out` at `c·rso + j·cso`
/// (writable, no two the same), for those `c`, `j`, `l`; `n ≤ MAX_N`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn dot(
    isa: Isa,
    (mc, n, len): (usize, usize, usize),
    (p, ldp, offs): (*const f32, usize, Option<&[usize]>),
    (bt, ldb): (*const f32, usize),
    (out, rso, cso): (*mut f32, isize, isize),
    (alpha, beta): (f32, f32),
) {
    // SAFETY: the caller's contract.
    unsafe {
        dot_segments(
            isa,
            (mc, n, len),
            (p, ldp, offs),
            None,
            (bt, ldb),
            (out, rso, cso),
            (alpha, beta),
        )
    }
}

/// [`dot`] with rows made of runs: with `segs = (at, bseg)`, row `c`'s reduction is
/// `at.len()` runs of `len` floats, run `t` at `offs[c] + at[t]` (or `c·ldp + at[t]`)
/// in `p` and at `t·bseg` in `bt`'s rows (a window's tap rows in a padded image).
///
/// # Safety
/// As for [`dot`], each run readable.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn dot_segments(
    isa: Isa,
    (mc, n, len): (usize, usize, usize),
    (p, ldp, offs): (*const f32, usize, Option<&[usize]>),
    segs: Option<(&[usize], usize)>,
    (bt, ldb): (*const f32, usize),
    (out, rso, cso): (*mut f32, isize, isize),
    (alpha, beta): (f32, f32),
) {
    debug_assert!(n <= MAX_N);
    for (j0, nj) in chunks(isa, n) {
        let d = Dot {
            mc,
            len,
            p,
            ldp,
            offs: offs.map_or(std::ptr::null(), |o| {
                debug_assert!(o.len() >= mc);
                o.as_ptr()
            }),
            segs: segs.map_or(std::ptr::null(), |t| t.0.as_ptr()),
            nseg: segs.map_or(1, |t| t.0.len()),
            bseg: segs.map_or(len, |t| t.1),
            bt: bt.wrapping_add(j0 * ldb),
            ldb,
            out: out.wrapping_offset(j0 as isize * cso),
            rso,
            cso,
            alpha,
            beta,
        };
        // SAFETY: as in `axpy`.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => dot_avx512(nj, &d),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => dot_avx2(nj, &d),
                Isa::Scalar => by_n!(nj, dot_n, Scalar, &d,
                    [1 => 4, 2 => 4, 3 => 3, 4 => 2, 5 => 2, 6 => 2]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn close(want: f64, got: f32, what: &str) {
        assert!(
            (want - f64::from(got)).abs() <= 1e-4 * (1.0 + want.abs()),
            "{what}: {got} vs {want}"
        );
    }

    /// [`interleave`] and [`deinterleave`] against naive loops: every `n` up to
    /// `MAX_N`, counts with tails of every length, rows contiguous (`n` apart) or
    /// further apart (a column chunk of wider rows), alpha and beta, every ISA here.
    #[test]
    fn transposes_match_naive_loops() {
        for isa in all_isas() {
            for n in 0..=MAX_N {
                let (to_rows, to_cols) = (Transpose::new(n, true), Transpose::new(n, false));
                for count in [1, 7, 15, 16, 17, 28, 33, 48] {
                    for row in [n, n + 3, 2 * n + 1] {
                        check_transposes(isa, (&to_rows, &to_cols), n, count, row);
                    }
                }
            }
        }
    }

    fn check_transposes(
        isa: Isa,
        (to_rows, to_cols): (&Transpose, &Transpose),
        n: usize,
        count: usize,
        row: usize,
    ) {
        let ld = count + 5;
        let src = values(n * ld, 5);
        for (alpha, beta) in [(1.0, 0.0), (0.5, 2.0)] {
            let out0 = values(count * row + 3, 6);
            let mut out = out0.clone();
            // SAFETY: `src` holds n columns of `ld`, `out` count rows of `row`.
            unsafe {
                interleave(
                    isa,
                    to_rows,
                    (src.as_ptr(), ld),
                    count,
                    (out.as_mut_ptr(), row),
                    (alpha, beta),
                )
            };
            for (e, &o) in out.iter().enumerate() {
                let (t, j) = (e / row.max(1), e % row.max(1));
                let want = if t < count && j < n {
                    alpha * src[j * ld + t] + beta * out0[e]
                } else {
                    out0[e]
                };
                close(
                    f64::from(want),
                    o,
                    &format!("{isa:?} n={n} row={row} e={e}"),
                );
            }
        }
        let rows = values(count * row, 7);
        let mut cols = vec![9.0; n * ld];
        // SAFETY: `rows` holds count rows of `row`, `cols` n columns of `ld`.
        unsafe {
            deinterleave(
                isa,
                to_cols,
                (rows.as_ptr(), row),
                count,
                (cols.as_mut_ptr(), ld),
            )
        };
        for j in 0..n {
            for t in 0..ld {
                let want = if t < count { rows[t * row + j] } else { 9.0 };
                assert_eq!(cols[j * ld + t], want, "{isa:?} n={n} t={t} j={j}");
            }
        }
    }

    /// Both kernels against naive loops: every `n` up to `MAX_N`, odd sizes (tails
    /// of every length), strided `b`, accumulation and alpha/beta, every ISA here.
    #[test]
    fn kernels_match_naive_loops() {
        for isa in all_isas() {
            for n in 1..=MAX_N {
                for (m, k) in [(1, 1), (7, 3), (37, 25), (70, 9)] {
                    // axpy: p is k × ldp, b is k × n with rsb = n + 1, csb = 1.
                    let ldp = m + 3;
                    let p = values(k * ldp, 1);
                    let b = values(k * (n + 1), 2);
                    for acc in [false, true] {
                        let ldo = m + 2;
                        let out0 = values(n * ldo, 3);
                        let mut out = out0.clone();
                        // SAFETY: the buffers hold what the arguments name.
                        unsafe {
                            axpy(
                                isa,
                                (m, n, k),
                                (p.as_ptr(), ldp, None),
                                (b.as_ptr(), n as isize + 1, 1),
                                (out.as_mut_ptr(), ldo),
                                acc,
                            )
                        };
                        for j in 0..n {
                            for i in 0..m {
                                let mut s: f64 = (0..k)
                                    .map(|l| {
                                        f64::from(p[l * ldp + i]) * f64::from(b[l * (n + 1) + j])
                                    })
                                    .sum();
                                if acc {
                                    s += f64::from(out0[j * ldo + i]);
                                }
                                close(
                                    s,
                                    out[j * ldo + i],
                                    &format!("axpy {isa:?} {n} {m} {k} {acc}"),
                                );
                            }
                            for i in m..ldo {
                                assert_eq!(out[j * ldo + i], out0[j * ldo + i]);
                            }
                        }
                    }
                    // dot: p is m × ldp, bt is n × ldb, out column-major.
                    let (mc, len) = (m, k * 3 + 2);
                    let p = values(mc * (len + 1), 4);
                    let bt = values(n * (len + 5), 5);
                    for (alpha, beta) in [(1.0, 0.0), (0.5, 2.0), (-1.0, 1.0)] {
                        let out0 = values(mc * n, 6);
                        let mut out = if beta == 0.0 {
                            vec![f32::NAN; mc * n]
                        } else {
                            out0.clone()
                        };
                        // SAFETY: as above.
                        unsafe {
                            dot(
                                isa,
                                (mc, n, len),
                                (p.as_ptr(), len + 1, None),
                                (bt.as_ptr(), len + 5),
                                (out.as_mut_ptr(), 1, mc as isize),
                                (alpha, beta),
                            )
                        };
                        for c in 0..mc {
                            for j in 0..n {
                                let s: f64 = (0..len)
                                    .map(|l| {
                                        f64::from(p[c * (len + 1) + l])
                                            * f64::from(bt[j * (len + 5) + l])
                                    })
                                    .sum();
                                let mut want = f64::from(alpha) * s;
                                if beta != 0.0 {
                                    want += f64::from(beta) * f64::from(out0[j * mc + c]);
                                }
                                close(
                                    want,
                                    out[j * mc + c],
                                    &format!("dot {isa:?} {n} {mc} {len}"),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
