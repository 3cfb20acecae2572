//! Tests of the implicit GEMM over windows: packing and every product path against
//! naive loops over `nnc_kernels::ir::Windows::source`, on one lane and split.

use super::*;
use nnc_kernels::ir::Windows;

/// Geometries covering every path of both packings: interior runs, both borders,
/// dilation, strides, negative taps (input gradients) with `div` > 1, one channel.
fn geometries() -> Vec<Windows> {
    vec![
        // conv 5×5 pad 2 on 12×12×1.
        Windows::new(
            [12, 12, 1],
            [12, 12],
            [5, 5],
            [1, 1],
            [1, 1],
            [2, 2],
            [1, 1],
        ),
        // 3×3 stride 2, asymmetric padding, c = 3.
        Windows::new([9, 8, 3], [4, 4], [3, 3], [2, 2], [1, 1], [1, 0], [1, 1]),
        // dilation 2.
        Windows::new([10, 7, 2], [10, 7], [3, 3], [1, 1], [2, 2], [2, 2], [1, 1]),
        // input gradient of a 3×3 stride-2 pad-1 conv: dY 6×5×4 into dX 11×9.
        Windows::new(
            [6, 5, 4],
            [11, 9],
            [3, 3],
            [1, 1],
            [-1, -1],
            [-1, -1],
            [2, 2],
        ),
        // input gradient of a 5×5 valid conv: dY 4×4×3 into 8×8.
        Windows::new([4, 4, 3], [8, 8], [5, 5], [1, 1], [-1, -1], [0, 0], [1, 1]),
        // ... and dY 6×7×2 into 10×11: windows with all tap columns inside, between
        // border windows with fewer (`direct_seg_rows` groups them).
        Windows::new(
            [6, 7, 2],
            [10, 11],
            [5, 5],
            [1, 1],
            [-1, -1],
            [0, 0],
            [1, 1],
        ),
        // input gradient of a 3×3 "same" conv (a negative padding), and of a 5×5 valid
        // conv over 20 channels (more than one pass of channels in `scatter`).
        Windows::new(
            [6, 5, 3],
            [6, 5],
            [3, 3],
            [1, 1],
            [-1, -1],
            [-1, -1],
            [1, 1],
        ),
        Windows::new(
            [7, 6, 20],
            [11, 10],
            [5, 5],
            [1, 1],
            [-1, -1],
            [0, 0],
            [1, 1],
        ),
        // a window wider than the image.
        Windows::new([3, 2, 2], [3, 2], [3, 5], [1, 1], [1, 1], [1, 2], [1, 1]),
        // one channel (packed tap-major): strides 2 and 3, an input gradient.
        Windows::new([5, 9, 1], [3, 3], [2, 3], [2, 3], [1, 1], [1, 2], [1, 1]),
        Windows::new(
            [4, 5, 1],
            [7, 9],
            [3, 3],
            [1, 1],
            [-1, -1],
            [-1, -1],
            [2, 2],
        ),
        // one channel, unit steps, dilated taps (read in place: `direct_rows`).
        Windows::new([9, 8, 1], [7, 6], [3, 2], [1, 1], [2, 3], [2, 1], [1, 1]),
        // a step of 0 (every window the same).
        Windows::new([3, 4, 2], [2, 3], [2, 2], [0, 0], [1, 1], [0, 1], [1, 1]),
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
        // Tap-major, with a leading dimension past the block.
        let ld = (rows - from + 3) as usize;
        let mut out = vec![f32::NAN; ld * cols as usize];
        // SAFETY: as above.
        unsafe { pack_tap_major(&g, from..rows, &mut out, ld) };
        for r in from..rows {
            for col in 0..cols {
                let want = w.source(r, col).map_or(0.0, |s| image[s as usize]);
                let got = out[col as usize * ld + (r - from) as usize];
                assert_eq!(got, want, "tap-major {w:?} window {r} column {col}");
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

/// Every geometry and several widths, untransposed and transposed, on one lane and on
/// two, with small blocks (so that blocks end mid-sample), `first` ≠ 0, alpha and beta ≠ (1, 0),
/// against the naive loop.
#[test]
fn products_match_a_naive_loop() {
    let pool = Pool::new(2);
    // Every width up to the skinny kernels' widest (each chunk width, the dot paths'
    // limit), and wider: a temporary copied into C in chunks of 16 columns, the direct
    // tiles of one and two vectors.
    for (n, mut w) in (1..=16)
        .chain([20, 32, 33, 48, 64])
        .flat_map(|n| geometries().into_iter().map(move |w| (n, w)))
    {
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
                // Small blocks (a tile of windows) end mid-sample; tap-major packing
                // for every width, window-major blocks through the temporary and
                // column-major partial products are tried too.
                let small = Tuning {
                    block_floats: 1,
                    ..TUNING
                };
                let tunings = [
                    (None, TUNING),
                    (None, small),
                    (Some(&pool), small),
                    (
                        None,
                        Tuning {
                            tap_major_max_c: i64::MAX,
                            ..small
                        },
                    ),
                    (
                        Some(&pool),
                        Tuning {
                            skinny_max_n: 0,
                            ..small
                        },
                    ),
                    (
                        Some(&pool),
                        Tuning {
                            direct: false,
                            ..small
                        },
                    ),
                    (
                        None,
                        Tuning {
                            skinny_max_n: 0,
                            tap_major_max_c: i64::MAX,
                            ..small
                        },
                    ),
                    (
                        Some(&pool),
                        Tuning {
                            skinny_max_n: 0,
                            window_major_temp: true,
                            partial_col_major_max_n: i64::MAX,
                            ..TUNING
                        },
                    ),
                ];
                for (lanes, tuning) in tunings {
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
                    unsafe { run_tuned(&g, lanes, tuning) };
                    let what = format!("{w:?} alpha {alpha} beta {beta} {tuning:?}");
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
    let w = Windows::new(
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
        let small = Tuning {
            block_floats: 1,
            ..TUNING
        };
        let gemm = Tuning {
            skinny_max_n: 0,
            ..TUNING
        };
        for (lanes, tuning) in [
            (None, TUNING),
            (Some(&pool), TUNING),
            (Some(&pool), small),
            (Some(&pool), gemm),
        ] {
            let mut c = c0.clone();
            let g = descriptor(&w, 0, m, n, k, &image, (&b, n, 1), (&mut c, 1, m), 0.5, 1.0);
            // SAFETY: as above.
            unsafe { run_tuned(&g, lanes, tuning) };
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
        for (got, what) in results
            .iter()
            .zip(["one lane", "two lanes", "two, small", "gemm"])
        {
            assert_close(&want, got, what);
        }
    }
}

/// A part of a wider product's columns (the CPU schedule cuts a weight gradient between
/// the lanes by columns): B and C rows further apart than `n`, every path, one lane and
/// two; the columns outside the part stay as they were.
#[test]
fn column_parts_of_wider_products_match_a_naive_loop() {
    let pool = Pool::new(2);
    for (n, mut w) in [3, 8, 16]
        .into_iter()
        .flat_map(|n| geometries().into_iter().map(move |w| (n, w)))
    {
        for transposed in [false, true] {
            w.transposed = transposed;
            let image = values((w.image_len() * 2) as usize, 8);
            let windows = 2 * w.rows_per_sample();
            let (m, k) = if transposed {
                (w.cols(), windows)
            } else {
                (windows, w.cols())
            };
            // The part is columns `n .. 2n` of rows `3n` wide.
            let wide = 3 * n;
            let b = values((k * wide) as usize, 9);
            let c0 = values((m * wide) as usize, 10);
            let part = |x: &[f32], rows: i64| -> Vec<f32> {
                (0..rows * n)
                    .map(|e| x[((e / n) * wide + n + e % n) as usize])
                    .collect()
            };
            let mut want = part(&c0, m);
            naive(&w, 0, (m, n, k), &image, &part(&b, k), &mut want, 0.5, 1.0);
            for (lanes, tuning) in [(None, TUNING), (Some(&pool), TUNING)] {
                let mut got = c0.clone();
                let g = descriptor(
                    &w,
                    0,
                    m,
                    n,
                    k,
                    &image,
                    (&b[n as usize..], wide, 1),
                    (&mut got[n as usize..], wide, 1),
                    0.5,
                    1.0,
                );
                // SAFETY: B and C hold `k` and `m` rows of `wide` from column `n`.
                unsafe { run_tuned(&g, lanes, tuning) };
                assert_close(&want, &part(&got, m), &format!("{w:?} n {n}"));
                for (e, (x, y)) in c0.iter().zip(&got).enumerate() {
                    let col = e as i64 % wide;
                    if !(n..2 * n).contains(&col) {
                        assert_eq!(x.to_bits(), y.to_bits(), "{w:?} n {n}: column {col} moved");
                    }
                }
            }
        }
    }
}
