//! The compiled transcendental functions (`exp`, `log`, `tanh`, `pow`) against the f64
//! reference rounded to f32: within one ulp over sweeps and edge values, with C's special
//! cases.

use nnc_kernels::build::*;
use nnc_kernels::ir::BufferKind::{Input, Output};
use nnc_kernels::ir::*;

use super::{both, build, map_unary, one_loop};

/// Distance in units in the last place between two f32 (NaN only matches NaN).
fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() {
            0
        } else {
            u64::MAX
        };
    }
    if a == b {
        return 0;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        i64::from(if i < 0 { i32::MIN - i } else { i })
    };
    (key(a) - key(b)).unsigned_abs()
}

fn edge_values() -> Vec<f32> {
    vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        f32::MAX,
        f32::MIN,
        1.0,
        -1.0,
        1.0 + f32::EPSILON,
        1.0 - f32::EPSILON / 2.0,
        88.72,
        88.7228,
        88.73,
        89.0,
        -87.33,
        -103.0,
        -103.97,
        -104.0,
        -110.0,
        1e-4,
        1e-3,
        9.0,
        9.1,
        20.0,
    ]
}

/// The sweep: edge values, a uniform grid over `[lo, hi]` and magnitudes from 1e-38 to 1e38.
fn sweep(lo: f32, hi: f32) -> Vec<f32> {
    let mut v = edge_values();
    let steps = 20_000;
    v.extend((0..=steps).map(|s| lo + (hi - lo) * s as f32 / steps as f32));
    for e in -38..=38 {
        for m in [1.0f32, 1.234_567, 3.3, 7.77] {
            let x = m * 10f32.powi(e);
            v.extend([x, -x]);
        }
    }
    v
}

/// Max ulp error of the compiled `op` against the f64 reference rounded to f32.
fn max_ulps(op: UnOp, xs: &[f32], reference: fn(f64) -> f64) -> (u64, f32) {
    let p = map_unary(op, xs.len());
    let mut bufs = vec![xs.to_vec(), vec![0.0; xs.len()]];
    build(&p).run(&p, &mut bufs, 1);
    let mut worst = (0, 0.0);
    for (x, y) in xs.iter().zip(&bufs[1]) {
        let want = reference(f64::from(*x)) as f32;
        let e = ulps(want, *y);
        assert!(e <= 1, "{}({x:e}) = {y:e}, reference {want:e}", op.name());
        if e > worst.0 {
            worst = (e, *x);
        }
    }
    worst
}

/// `op` of each of `xs`, compiled.
fn apply(op: UnOp, xs: Vec<f32>) -> Vec<f32> {
    let n = xs.len();
    let p = map_unary(op, n);
    let mut bufs = vec![xs, vec![9.0; n]];
    build(&p).run(&p, &mut bufs, 1);
    bufs.pop().expect("output")
}

#[test]
fn exp_is_within_one_ulp_of_f64_reference_including_edges() {
    let (worst, at) = max_ulps(UnOp::Exp, &sweep(-110.0, 90.0), f64::exp);
    eprintln!("exp: max {worst} ulp (at {at:e})");
    let y = apply(
        UnOp::Exp,
        vec![f32::NEG_INFINITY, 1000.0, f32::NAN, -1000.0, 0.0],
    );
    assert_eq!(y[0], 0.0);
    assert_eq!(y[1], f32::INFINITY);
    assert!(y[2].is_nan());
    assert_eq!(y[3], 0.0);
    assert_eq!(y[4], 1.0);
}

#[test]
fn log_is_within_one_ulp_of_f64_reference_including_edges() {
    let (worst, at) = max_ulps(UnOp::Log, &sweep(0.0, 10.0), f64::ln);
    eprintln!("log: max {worst} ulp (at {at:e})");
    let y = apply(UnOp::Log, vec![0.0, -0.0, -1.0, f32::INFINITY, 1.0]);
    assert_eq!(y[0], f32::NEG_INFINITY);
    assert_eq!(y[1], f32::NEG_INFINITY);
    assert!(y[2].is_nan());
    assert_eq!(y[3], f32::INFINITY);
    assert_eq!(y[4].to_bits(), 0.0f32.to_bits());
}

#[test]
fn tanh_is_within_one_ulp_of_f64_reference_including_edges() {
    let (worst, at) = max_ulps(UnOp::Tanh, &sweep(-12.0, 12.0), f64::tanh);
    eprintln!("tanh: max {worst} ulp (at {at:e})");
    let y = apply(
        UnOp::Tanh,
        vec![f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::NAN],
    );
    assert_eq!(y[0], 1.0);
    assert_eq!(y[1], -1.0);
    assert_eq!(y[2].to_bits(), (-0.0f32).to_bits());
    assert!(y[3].is_nan());
}

#[test]
fn pow_is_within_one_ulp_and_has_c_special_cases() {
    let (x, y, out, i) = (BufId(0), BufId(1), BufId(2), VarId(0));
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let bases = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.0,
        -2.0,
        0.5,
        -0.5,
        10.0,
        1e-3,
        3.7,
        -3.0,
        1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    let exps = [
        0.0,
        -0.0,
        1.0,
        2.0,
        3.0,
        -1.0,
        -3.0,
        0.5,
        -0.5,
        2.5,
        1e-3,
        40.0,
        -40.0,
        1e10,
        16777217.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for a in bases {
        for b in exps {
            xs.push(a);
            ys.push(b);
        }
    }
    for s in 0..2000 {
        xs.push(s as f32 * 0.013 + 1e-3);
        ys.push((s as f32 * 0.37).sin() * 20.0);
    }
    let len = xs.len();
    let value = binary(BinOp::Pow, load(x, i.into()), load(y, i.into()));
    let bufs = [("x", len, Input), ("y", len, Input), ("out", len, Output)];
    let p = one_loop("pow", &bufs, len, false, vec![store(out, i.into(), value)]);
    let (want, got) = both(&p, vec![xs.clone(), ys.clone(), vec![0.0; len]], 1);
    let mut worst = 0;
    for k in 0..len {
        let reference = f64::from(xs[k]).powf(f64::from(ys[k])) as f32;
        let e = ulps(reference, got[2][k]);
        worst = worst.max(e);
        assert!(
            e <= 1,
            "pow({:e}, {:e}) = {:e}, reference {reference:e}",
            xs[k],
            ys[k],
            got[2][k]
        );
        assert!(
            ulps(want[2][k], got[2][k]) <= 2,
            "interpreter {:e}",
            want[2][k]
        );
    }
    eprintln!("pow: max {worst} ulp");
}
