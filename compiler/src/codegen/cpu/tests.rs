//! CPU backend tests: hand-built kernel programs are compiled, linked with `cc`, loaded
//! with `libloading`, run on buffers and compared with `nnc_kernels::interp::run`.
//!
//! Tolerances: everything except transcendentals and GEMM is IEEE-exact and compared bit
//! for bit (NaN equals NaN). `exp`/`log`/`tanh`/`pow` are compared with the f64 result
//! rounded to f32 and must be within 1 ulp; kernels using them (softmax) within a relative
//! 1e-6 of the interpreter. GEMM accumulates in f32 in matrixmultiply and in f64 in the
//! interpreter: relative 1e-5 of the largest magnitude.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use libloading::{Library, Symbol};
use nnc_kernels::abi::KernelCtx;
use nnc_kernels::build::*;
use nnc_kernels::interp;
use nnc_kernels::ir::*;

use super::{emit_clif, emit_object, link_shared_object};

type KernelFn = unsafe extern "C" fn(*const KernelCtx, *const *mut f32, i64, i64, i64);

/// matrixmultiply's sgemm behind the ABI's function-pointer type.
unsafe extern "C" fn test_sgemm(
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
) {
    // SAFETY: the kernel passes pointers and strides inside its buffers. Note
    // matrixmultiply's argument order is (m, k, n).
    unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
}

static CTX: KernelCtx = KernelCtx { sgemm: test_sgemm };

/// A linked and loaded kernel library in its own temporary directory.
struct Artifact {
    dir: PathBuf,
    lib: Option<Library>,
}

impl Drop for Artifact {
    fn drop(&mut self) {
        drop(self.lib.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn build(p: &Program) -> Artifact {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let obj = emit_object(p).expect("emit object");
    let dir = std::env::temp_dir().join(format!(
        "nnc-cpu-test-{}-{}-{}",
        std::process::id(),
        p.name,
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let so = link_shared_object(&obj, &dir).expect("link");
    // SAFETY: the library holds only our kernels, which have no initialisers.
    let lib = unsafe { Library::new(&so) }.expect("load kernels.so");
    Artifact {
        dir,
        lib: Some(lib),
    }
}

impl Artifact {
    fn run_kernel(
        &self,
        p: &Program,
        k: usize,
        bufs: &mut [Vec<f32>],
        n: usize,
        range: (i64, i64),
    ) {
        let kernel = &p.kernels[k];
        let lib = self.lib.as_ref().expect("library loaded");
        // SAFETY: every kernel is exported with the `KernelFn` signature.
        let f: Symbol<KernelFn> = unsafe { lib.get(kernel.name.as_bytes()) }.expect("symbol");
        let all: Vec<*mut f32> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let ptrs: Vec<*mut f32> = kernel.params.iter().map(|b| all[b.0 as usize]).collect();
        // SAFETY: buffers are sized for `n` (checked by the interpreter run of each test).
        unsafe { f(&CTX, ptrs.as_ptr(), n as i64, range.0, range.1) };
    }

    fn run(&self, p: &Program, bufs: &mut [Vec<f32>], n: usize) {
        for k in 0..p.kernels.len() {
            self.run_kernel(p, k, bufs, n, (0, i64::MAX));
        }
    }
}

/// Runs `p` with the interpreter and compiled; returns (interpreted, compiled) buffers.
fn both(p: &Program, bufs: Vec<Vec<f32>>, n: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut want = bufs.clone();
    interp::run(p, &mut want, n).expect("interpreter");
    let mut got = bufs;
    build(p).run(p, &mut got, n);
    (want, got)
}

fn assert_bitwise(want: &[Vec<f32>], got: &[Vec<f32>]) {
    for (b, (w, g)) in want.iter().zip(got).enumerate() {
        for (i, (x, y)) in w.iter().zip(g).enumerate() {
            let same = x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) || x == y;
            assert!(same, "b{b}[{i}]: interpreter {x:e}, compiled {y:e}");
        }
    }
}

fn assert_relative(want: &[Vec<f32>], got: &[Vec<f32>], tol: f32) {
    for (b, (w, g)) in want.iter().zip(got).enumerate() {
        let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (i, (x, y)) in w.iter().zip(g).enumerate() {
            let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= tol * scale;
            assert!(
                ok,
                "b{b}[{i}]: interpreter {x:e}, compiled {y:e} (scale {scale:e})"
            );
        }
    }
}

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

// ---------------------------------------------------------------------------------------

/// `out[i, j] = max(x[i, j] + bias[j], 0)` over `[N, 3]`, parallel over rows.
fn bias_relu() -> Program {
    let (x, bias, out) = (BufId(0), BufId(1), BufId(2));
    let (i, j) = (VarId(0), VarId(1));
    let at = Idx::from(i) * 3 + Idx::from(j);
    program(
        "bias_relu",
        vec![
            decl("x", Size::per_batch(3), BufferKind::Input),
            decl("bias", Size::fixed(3), BufferKind::InOut),
            decl("out", Size::per_batch(3), BufferKind::Output),
        ],
        vec![kernel(
            "bias_relu",
            vec![x, bias, out],
            vec![for_(
                i,
                Idx::N,
                true,
                vec![for_(
                    j,
                    3usize,
                    false,
                    vec![store(
                        out,
                        at.clone(),
                        binary(
                            BinOp::Max,
                            binary(BinOp::Add, load(x, at), load(bias, j.into())),
                            constant(0.0),
                        ),
                    )],
                )],
            )],
            2,
            0,
        )],
    )
}

#[test]
fn elementwise_kernel_with_broadcast_bias_matches_interpreter() {
    let n = 7;
    let x: Vec<f32> = (0..3 * n).map(|v| (v as f32 - 10.0) * 0.37).collect();
    let mut x = x;
    x[4] = f32::NAN; // max(NaN, 0) is 0, as Rust's f32::max
    let (want, got) = both(
        &bias_relu(),
        vec![x, vec![0.5, -1.0, 2.0], vec![9.0; 3 * n]],
        n,
    );
    assert_bitwise(&want, &got);
    assert_eq!(got[2][4], 0.0);
}

#[test]
fn parallel_loop_split_in_two_calls_equals_one_run() {
    let p = bias_relu();
    let n = 9;
    let x: Vec<f32> = (0..3 * n).map(|v| (v as f32).sin()).collect();
    let init = vec![x, vec![0.1, -0.2, 0.3], vec![-7.0; 3 * n]];
    let (want, _) = both(&p, init.clone(), n);
    let art = build(&p);
    let mut first = init.clone();
    art.run_kernel(&p, 0, &mut first, n, (0, 4));
    assert_eq!(first[2][12], -7.0, "rows past the first part are untouched");
    assert_ne!(first[2][11], -7.0);
    art.run_kernel(&p, 0, &mut first, n, (4, n as i64));
    assert_bitwise(&want, &first);
    // Ranges beyond the extent are clamped.
    let mut clamped = init;
    art.run_kernel(&p, 0, &mut clamped, n, (-5, 1000));
    assert_bitwise(&want, &clamped);
}

#[test]
fn relu_via_select_and_comparisons_match_interpreter() {
    let (x, out) = (BufId(0), BufId(1));
    let i = VarId(0);
    let ops = [
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::Eq,
        CmpOp::Ne,
    ];
    let body = ops
        .iter()
        .enumerate()
        .map(|(o, op)| {
            store(
                out,
                Idx::from(i) * 6 + o as i64,
                select(
                    *op,
                    load(x, i.into()),
                    constant(0.0),
                    load(x, i.into()),
                    constant(-1.0),
                ),
            )
        })
        .collect();
    let p = program(
        "select",
        vec![
            decl("x", Size::fixed(8), BufferKind::Input),
            decl("out", Size::fixed(48), BufferKind::Output),
        ],
        vec![kernel(
            "sel",
            vec![x, out],
            vec![for_(i, 8usize, false, body)],
            1,
            0,
        )],
    );
    let xs = vec![
        -2.0,
        -0.0,
        0.0,
        1e-30,
        3.5,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let (want, got) = both(&p, vec![xs, vec![0.0; 48]], 1);
    assert_bitwise(&want, &got);
}

#[test]
fn select_does_not_evaluate_the_load_of_the_arm_not_taken() {
    // out[i] = i < 4 ? x[i] : x[i + 10^12]: the far load would fault if executed.
    let (x, out) = (BufId(0), BufId(1));
    let i = VarId(0);
    let far = Idx::from(i) + 1_000_000_000_000i64;
    let p = program(
        "guard",
        vec![
            decl("x", Size::fixed(4), BufferKind::Input),
            decl("out", Size::fixed(4), BufferKind::Output),
        ],
        vec![kernel(
            "guard",
            vec![x, out],
            vec![for_(
                i,
                4usize,
                false,
                vec![store(
                    out,
                    i.into(),
                    select(
                        CmpOp::Lt,
                        Expr::FromIdx(i.into()),
                        constant(4.0),
                        load(x, i.into()),
                        load(x, far),
                    ),
                )],
            )],
            1,
            0,
        )],
    );
    let (want, got) = both(&p, vec![vec![1.0, 2.0, 3.0, 4.0], vec![0.0; 4]], 1);
    assert_bitwise(&want, &got);
}

#[test]
fn unary_and_binary_ops_are_ieee_exact() {
    let (x, y, out) = (BufId(0), BufId(1), BufId(2));
    let i = VarId(0);
    let xi = || load(x, i.into());
    let yi = || load(y, i.into());
    let exprs = vec![
        unary(UnOp::Neg, xi()),
        unary(UnOp::Abs, xi()),
        unary(UnOp::Sqrt, xi()),
        unary(UnOp::Recip, xi()),
        unary(UnOp::Floor, xi()),
        binary(BinOp::Add, xi(), yi()),
        binary(BinOp::Sub, xi(), yi()),
        binary(BinOp::Mul, xi(), yi()),
        binary(BinOp::Div, xi(), yi()),
        binary(BinOp::Max, xi(), yi()),
        binary(BinOp::Min, xi(), yi()),
        fma(xi(), yi(), constant(0.1)),
    ];
    let m = exprs.len() as i64;
    let len = 10;
    let body = exprs
        .into_iter()
        .enumerate()
        .map(|(o, e)| store(out, Idx::from(i) * m + o as i64, e))
        .collect();
    let p = program(
        "ops",
        vec![
            decl("x", Size::fixed(len), BufferKind::Input),
            decl("y", Size::fixed(len), BufferKind::Input),
            decl("out", Size::fixed(len * m as usize), BufferKind::Output),
        ],
        vec![kernel(
            "ops",
            vec![x, y, out],
            vec![for_(i, len, false, body)],
            1,
            0,
        )],
    );
    let xs = vec![
        1.5,
        -2.25,
        0.0,
        -0.0,
        f32::NAN,
        3.0,
        1e-40,
        -7.5,
        f32::INFINITY,
        0.3,
    ];
    let ys = vec![
        0.7,
        4.0,
        -0.0,
        0.0,
        1.0,
        f32::NAN,
        2.0,
        -7.5,
        1.0,
        1.0 / 3.0,
    ];
    let (want, got) = both(&p, vec![xs, ys, vec![0.0; len * m as usize]], 1);
    assert_bitwise(&want, &got);
}

/// `out[i] = f(x[i])` over `len` elements, for one unary op.
fn map_unary(op: UnOp, len: usize) -> Program {
    let (x, out) = (BufId(0), BufId(1));
    let i = VarId(0);
    program(
        op.name(),
        vec![
            decl("x", Size::fixed(len), BufferKind::Input),
            decl("out", Size::fixed(len), BufferKind::Output),
        ],
        vec![kernel(
            op.name(),
            vec![x, out],
            vec![for_(
                i,
                len,
                true,
                vec![store(out, i.into(), unary(op, load(x, i.into())))],
            )],
            1,
            0,
        )],
    )
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

#[test]
fn exp_is_within_one_ulp_of_f64_reference_including_edges() {
    let (worst, at) = max_ulps(UnOp::Exp, &sweep(-110.0, 90.0), f64::exp);
    eprintln!("exp: max {worst} ulp (at {at:e})");
    let p = map_unary(UnOp::Exp, 5);
    let mut bufs = vec![
        vec![f32::NEG_INFINITY, 1000.0, f32::NAN, -1000.0, 0.0],
        vec![0.0; 5],
    ];
    build(&p).run(&p, &mut bufs, 1);
    assert_eq!(bufs[1][0], 0.0);
    assert_eq!(bufs[1][1], f32::INFINITY);
    assert!(bufs[1][2].is_nan());
    assert_eq!(bufs[1][3], 0.0);
    assert_eq!(bufs[1][4], 1.0);
}

#[test]
fn log_is_within_one_ulp_of_f64_reference_including_edges() {
    let (worst, at) = max_ulps(UnOp::Log, &sweep(0.0, 10.0), f64::ln);
    eprintln!("log: max {worst} ulp (at {at:e})");
    let p = map_unary(UnOp::Log, 5);
    let mut bufs = vec![vec![0.0, -0.0, -1.0, f32::INFINITY, 1.0], vec![9.0; 5]];
    build(&p).run(&p, &mut bufs, 1);
    assert_eq!(bufs[1][0], f32::NEG_INFINITY);
    assert_eq!(bufs[1][1], f32::NEG_INFINITY);
    assert!(bufs[1][2].is_nan());
    assert_eq!(bufs[1][3], f32::INFINITY);
    assert_eq!(bufs[1][4].to_bits(), 0.0f32.to_bits());
}

#[test]
fn tanh_is_within_one_ulp_of_f64_reference_including_edges() {
    let (worst, at) = max_ulps(UnOp::Tanh, &sweep(-12.0, 12.0), f64::tanh);
    eprintln!("tanh: max {worst} ulp (at {at:e})");
    let p = map_unary(UnOp::Tanh, 4);
    let mut bufs = vec![
        vec![f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::NAN],
        vec![0.0; 4],
    ];
    build(&p).run(&p, &mut bufs, 1);
    assert_eq!(bufs[1][0], 1.0);
    assert_eq!(bufs[1][1], -1.0);
    assert_eq!(bufs[1][2].to_bits(), (-0.0f32).to_bits());
    assert!(bufs[1][3].is_nan());
}

#[test]
fn pow_is_within_one_ulp_and_has_c_special_cases() {
    let (x, y, out) = (BufId(0), BufId(1), BufId(2));
    let i = VarId(0);
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
    let p = program(
        "pow",
        vec![
            decl("x", Size::fixed(len), BufferKind::Input),
            decl("y", Size::fixed(len), BufferKind::Input),
            decl("out", Size::fixed(len), BufferKind::Output),
        ],
        vec![kernel(
            "pow",
            vec![x, y, out],
            vec![for_(
                i,
                len,
                false,
                vec![store(
                    out,
                    i.into(),
                    binary(BinOp::Pow, load(x, i.into()), load(y, i.into())),
                )],
            )],
            1,
            0,
        )],
    );
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

#[test]
fn row_sum_and_row_max_with_locals_match_interpreter() {
    // sum[i] = Σ_j x[i, j]; max[i] = max_j x[i, j] over [N, 5].
    let (x, sum, max) = (BufId(0), BufId(1), BufId(2));
    let (i, j, acc, mx) = (VarId(0), VarId(1), LocalId(0), LocalId(1));
    let xij = || load(x, Idx::from(i) * 5 + Idx::from(j));
    let p = program(
        "rows",
        vec![
            decl("x", Size::per_batch(5), BufferKind::Input),
            decl("sum", Size::per_batch(1), BufferKind::Output),
            decl("max", Size::per_batch(1), BufferKind::Output),
        ],
        vec![kernel(
            "rows",
            vec![x, sum, max],
            vec![for_(
                i,
                Idx::N,
                true,
                vec![
                    assign(acc, constant(0.0)),
                    assign(mx, constant(f32::NEG_INFINITY)),
                    for_(
                        j,
                        5usize,
                        false,
                        vec![
                            assign(acc, binary(BinOp::Add, local(acc), xij())),
                            assign(mx, binary(BinOp::Max, local(mx), xij())),
                        ],
                    ),
                    store(sum, i.into(), local(acc)),
                    store(max, i.into(), local(mx)),
                ],
            )],
            2,
            2,
        )],
    );
    let n = 6;
    let xs: Vec<f32> = (0..5 * n)
        .map(|v| ((v * 7919) % 23) as f32 - 11.5)
        .collect();
    let (want, got) = both(&p, vec![xs, vec![0.0; n], vec![0.0; n]], n);
    assert_bitwise(&want, &got);
}

/// Row softmax over `[N, C]`: max, then Σ exp(x - max), then exp(x - max) / sum.
fn softmax(c: usize) -> Program {
    let (x, out) = (BufId(0), BufId(1));
    let (i, j, k, l) = (VarId(0), VarId(1), VarId(2), VarId(3));
    let (mx, sum) = (LocalId(0), LocalId(1));
    let row = |v: VarId| Idx::from(i) * c as i64 + Idx::from(v);
    let shifted = |v: VarId| unary(UnOp::Exp, binary(BinOp::Sub, load(x, row(v)), local(mx)));
    program(
        "softmax",
        vec![
            decl("x", Size::per_batch(c), BufferKind::Input),
            decl("out", Size::per_batch(c), BufferKind::Output),
        ],
        vec![kernel(
            "softmax",
            vec![x, out],
            vec![for_(
                i,
                Idx::N,
                true,
                vec![
                    assign(mx, constant(f32::NEG_INFINITY)),
                    for_(
                        j,
                        c,
                        false,
                        vec![assign(mx, binary(BinOp::Max, local(mx), load(x, row(j))))],
                    ),
                    assign(sum, constant(0.0)),
                    for_(
                        k,
                        c,
                        false,
                        vec![assign(sum, binary(BinOp::Add, local(sum), shifted(k)))],
                    ),
                    for_(
                        l,
                        c,
                        false,
                        vec![store(
                            out,
                            row(l),
                            binary(BinOp::Div, shifted(l), local(sum)),
                        )],
                    ),
                ],
            )],
            4,
            2,
        )],
    )
}

#[test]
fn softmax_rows_match_interpreter_within_1e6_relative() {
    let (n, c) = (5, 10);
    let xs: Vec<f32> = (0..n * c)
        .map(|v| (v as f32 * 0.731).sin() * 30.0)
        .collect();
    let (want, got) = both(&softmax(c), vec![xs, vec![0.0; n * c]], n);
    for (w, g) in want[1].iter().zip(&got[1]) {
        assert!((w - g).abs() <= 1e-6 * w.abs() + 1e-12, "{w:e} vs {g:e}");
    }
    for r in 0..n {
        let s: f32 = got[1][r * c..(r + 1) * c].iter().sum();
        assert!((s - 1.0).abs() < 1e-5);
    }
}

fn mat(buf: BufId, offset: i64, rs: i64, cs: i64) -> MatRef {
    MatRef {
        buf,
        offset: offset.into(),
        row_stride: rs.into(),
        col_stride: cs.into(),
    }
}

#[test]
fn gemm_with_transposed_operands_matches_interpreter() {
    // C[5,7] = 0.5·Aᵀ·Bᵀ + 2·C, A stored [k=6, m=5], B stored [n=7, k=6], C at offset 3.
    let (a, b, c) = (BufId(0), BufId(1), BufId(2));
    let g = Gemm {
        m: 5usize.into(),
        n: 7usize.into(),
        k: 6usize.into(),
        a: mat(a, 0, 1, 5),
        b: mat(b, 0, 1, 6),
        c: mat(c, 3, 7, 1),
        alpha: 0.5,
        beta: 2.0,
        batch: None,
    };
    let p = program(
        "gemm_t",
        vec![
            decl("a", Size::fixed(30), BufferKind::Input),
            decl("b", Size::fixed(42), BufferKind::Input),
            decl("c", Size::fixed(38), BufferKind::InOut),
        ],
        vec![kernel("gemm_t", vec![a, b, c], vec![Stmt::Gemm(g)], 0, 0)],
    );
    let fill = |len: usize, s: f32| (0..len).map(|v| (v as f32 * s).cos()).collect::<Vec<_>>();
    let (want, got) = both(&p, vec![fill(30, 0.3), fill(42, 0.7), fill(38, 1.1)], 1);
    assert_relative(&want, &got, 1e-5);
    assert_eq!(
        got[2][..3],
        want[2][..3],
        "elements before the offset are untouched"
    );
}

#[test]
fn batched_gemm_with_runtime_batch_size_matches_interpreter() {
    // N products C_p[3,4] = A_p[3,2]·B_p[2,4], beta 0 (C starts as NaN: must be ignored).
    let (a, b, c) = (BufId(0), BufId(1), BufId(2));
    let g = Gemm {
        m: 3usize.into(),
        n: 4usize.into(),
        k: 2usize.into(),
        a: mat(a, 0, 2, 1),
        b: mat(b, 0, 4, 1),
        c: mat(c, 0, 4, 1),
        alpha: 1.0,
        beta: 0.0,
        batch: Some((Idx::N, [6usize.into(), 8usize.into(), 12usize.into()])),
    };
    let p = program(
        "bgemm",
        vec![
            decl("a", Size::per_batch(6), BufferKind::Input),
            decl("b", Size::per_batch(8), BufferKind::Input),
            decl("c", Size::per_batch(12), BufferKind::Output),
        ],
        vec![kernel("bgemm", vec![a, b, c], vec![Stmt::Gemm(g)], 0, 0)],
    );
    let n = 3;
    let fill = |len: usize, s: f32| (0..len).map(|v| (v as f32 * s).sin()).collect::<Vec<_>>();
    let (want, got) = both(
        &p,
        vec![fill(6 * n, 0.9), fill(8 * n, 0.4), vec![f32::NAN; 12 * n]],
        n,
    );
    assert_relative(&want, &got, 1e-5);
}

#[test]
fn rand_matches_rand_uniform_bit_for_bit() {
    let (steps, out) = (BufId(0), BufId(1));
    let (s, i) = (VarId(0), VarId(1));
    let seed = 0xdead_beef_cafe_f00d;
    let key = u64::MAX - 12345;
    let p = program(
        "rand",
        vec![
            decl("steps", Size::fixed(6), BufferKind::Input),
            decl("out", Size::fixed(6 * 50), BufferKind::Output),
        ],
        vec![kernel(
            "rand",
            vec![steps, out],
            vec![for_(
                s,
                6usize,
                false,
                vec![for_(
                    i,
                    50usize,
                    false,
                    vec![store(
                        out,
                        Idx::from(s) * 50 + Idx::from(i),
                        Expr::Rand {
                            seed,
                            key,
                            step: Box::new(load(steps, s.into())),
                            counter: Idx::from(i) * 3 + (-20i64),
                        },
                    )],
                )],
            )],
            2,
            0,
        )],
    );
    let step_vals = vec![0.0, 7.9, -3.0, f32::NAN, 1e30, 123456.0];
    let (want, got) = both(&p, vec![step_vals.clone(), vec![0.0; 300]], 1);
    assert_bitwise(&want, &got);
    // And the interpreter agrees with the definition (guards against both being wrong alike).
    assert_eq!(
        got[1][50 + 7],
        rand_uniform(seed, key, 7, (7 * 3 - 20) as u64)
    );
}

#[test]
fn index_div_and_rem_use_floor_semantics_for_negative_values() {
    // out[i, 0..4] = [(i-7) div 3, (i-7) rem 3, (i-7) div 4, (i-7) rem 4], plus min/max.
    let out = BufId(0);
    let i = VarId(0);
    let v = || Idx::from(i) - Idx::from(7i64);
    let cols = [
        v().div(3),
        v().rem(3),
        v().div(4),
        v().rem(4),
        Idx::Min(Box::new(v()), Box::new(Idx::N)),
        Idx::Max(Box::new(v()), Box::new(Idx::N)),
    ];
    let body = cols
        .iter()
        .enumerate()
        .map(|(c, e)| store(out, Idx::from(i) * 6 + c as i64, Expr::FromIdx(e.clone())))
        .collect();
    let p = program(
        "divrem",
        vec![decl("out", Size::fixed(6 * 20), BufferKind::Output)],
        vec![kernel(
            "divrem",
            vec![out],
            vec![for_(i, 20usize, false, body)],
            1,
            0,
        )],
    );
    let (want, got) = both(&p, vec![vec![0.0; 120]], 2);
    assert_bitwise(&want, &got);
    assert_eq!(&got[0][0..4], &[-3.0, 2.0, -2.0, 1.0]); // i = 0: -7
}

#[test]
fn fma_compiles_to_a_fused_instruction() {
    let (x, out) = (BufId(0), BufId(1));
    let i = VarId(0);
    let p = program(
        "fma",
        vec![
            decl("x", Size::fixed(4), BufferKind::Input),
            decl("out", Size::fixed(4), BufferKind::Output),
        ],
        vec![kernel(
            "fma",
            vec![x, out],
            vec![for_(
                i,
                4usize,
                false,
                vec![store(
                    out,
                    i.into(),
                    fma(load(x, i.into()), constant(3.0), constant(1.0)),
                )],
            )],
            1,
            0,
        )],
    );
    let asm = super::compiled_disasm(&p, 0).expect("compile");
    if cfg!(target_arch = "x86_64") && std::is_x86_feature_detected!("fma") {
        assert!(asm.contains("vfmadd"), "no vfmadd in:\n{asm}");
    }
    assert!(!asm.contains("fmaf"), "fma became a libcall:\n{asm}");
}

#[test]
fn clif_text_names_every_kernel() {
    let text = emit_clif(&softmax(4)).expect("clif");
    assert!(text.contains("; kernel softmax"));
    assert!(text.contains("function"));
    assert!(
        text.contains(" = fma "),
        "inline exp uses fused multiply-adds"
    );
}

#[test]
fn invalid_program_is_an_error_not_a_panic() {
    let mut p = bias_relu();
    p.kernels[0].params.pop();
    let e = emit_object(&p).expect_err("must fail");
    assert!(e.0.contains("does not list"), "{e}");
}

#[test]
fn linking_a_corrupt_object_reports_the_cc_failure() {
    let dir = std::env::temp_dir().join(format!("nnc-cpu-test-bad-{}", std::process::id()));
    let e = link_shared_object(b"not an object file", &dir).expect_err("must fail");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(e.0.contains("`cc -shared"), "{e}");
}

#[test]
fn twenty_kernel_program_emits_and_links_quickly() {
    // 20 kernels alternating softmax-like, elementwise and GEMM bodies.
    let soft = softmax(16);
    let ew = bias_relu();
    let mut p = program(
        "twenty",
        vec![
            decl("x", Size::per_batch(48), BufferKind::Input),
            decl("bias", Size::fixed(3), BufferKind::InOut),
            decl("out", Size::per_batch(48), BufferKind::Output),
        ],
        vec![],
    );
    for k in 0..20 {
        let mut kern = match k % 3 {
            0 => soft.kernels[0].clone(),
            1 => ew.kernels[0].clone(),
            _ => {
                let g = Gemm {
                    m: Idx::N,
                    n: 16usize.into(),
                    k: 3usize.into(),
                    a: mat(BufId(0), 0, 48, 1),
                    b: mat(BufId(0), 0, 16, 1),
                    c: mat(BufId(2), 0, 48, 1),
                    alpha: 1.0,
                    beta: 0.0,
                    batch: None,
                };
                kernel("g", vec![BufId(0), BufId(2)], vec![Stmt::Gemm(g)], 0, 0)
            }
        };
        if k % 3 == 0 {
            kern.params = vec![BufId(0), BufId(2)];
            kern.body = softmax(16).kernels[0].body.clone();
            let remap = |b: BufId| if b.0 == 1 { BufId(2) } else { b };
            kern.body = remap_bufs(kern.body, &remap);
        }
        kern.name = format!("k{k}");
        p.kernels.push(kern);
    }
    p.validate().expect("valid");
    let t0 = Instant::now();
    let obj = emit_object(&p).expect("emit");
    let t1 = Instant::now();
    let dir = std::env::temp_dir().join(format!("nnc-cpu-test-twenty-{}", std::process::id()));
    link_shared_object(&obj, &dir).expect("link");
    let t2 = Instant::now();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "20 kernels: emit {:.1} ms, link {:.1} ms, object {} bytes",
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3,
        obj.len()
    );
    // Generous bound for a loaded 2-core debug-build machine; the target is < 0.5 s.
    assert!((t2 - t0).as_secs_f64() < 5.0);
}

fn remap_bufs(body: Vec<Stmt>, f: &dyn Fn(BufId) -> BufId) -> Vec<Stmt> {
    fn expr(e: Expr, f: &dyn Fn(BufId) -> BufId) -> Expr {
        match e {
            Expr::Load { buf, index } => Expr::Load { buf: f(buf), index },
            Expr::Unary(op, a) => Expr::Unary(op, Box::new(expr(*a, f))),
            Expr::Binary(op, a, b) => {
                Expr::Binary(op, Box::new(expr(*a, f)), Box::new(expr(*b, f)))
            }
            other => other,
        }
    }
    body.into_iter()
        .map(|s| match s {
            Stmt::Loop {
                var,
                extent,
                body,
                parallel,
            } => Stmt::Loop {
                var,
                extent,
                body: remap_bufs(body, f),
                parallel,
            },
            Stmt::Store { buf, index, value } => Stmt::Store {
                buf: f(buf),
                index,
                value: expr(value, f),
            },
            Stmt::Assign { local, value } => Stmt::Assign {
                local,
                value: expr(value, f),
            },
            g => g,
        })
        .collect()
}

/// `out[i] = e(x[i], y[i])` for each expression, one kernel each, over `len` elements.
fn map_binary_kernels(exprs: Vec<Expr>, len: usize) -> Program {
    let (x, y, out) = (BufId(0), BufId(1), BufId(2));
    let mut p = program(
        "vec",
        vec![
            decl("x", Size::fixed(len), BufferKind::Input),
            decl("y", Size::fixed(len), BufferKind::Input),
            decl("out", Size::fixed(len * exprs.len()), BufferKind::Output),
        ],
        vec![],
    );
    for (k, e) in exprs.into_iter().enumerate() {
        let i = VarId(0);
        let at = Idx::from(i) + (k * len) as i64;
        p.kernels.push(kernel(
            &format!("v{k}"),
            vec![x, y, out],
            vec![for_(i, len, k % 2 == 0, vec![store(out, at, e)])],
            1,
            0,
        ));
    }
    p
}

#[test]
fn unit_stride_loops_are_vectorised_and_match_interpreter_bitwise() {
    let (x, y) = (BufId(0), BufId(1));
    let i = VarId(0);
    let xi = || load(x, i.into());
    let yi = || load(y, i.into());
    let exprs = vec![
        binary(BinOp::Add, xi(), yi()),
        binary(BinOp::Sub, xi(), load(y, Idx::Const(2))),
        binary(BinOp::Mul, xi(), constant(1.5)),
        binary(BinOp::Div, xi(), yi()),
        binary(BinOp::Max, xi(), yi()),
        binary(BinOp::Min, xi(), yi()),
        unary(UnOp::Neg, xi()),
        unary(UnOp::Abs, xi()),
        unary(UnOp::Sqrt, xi()),
        unary(UnOp::Recip, xi()),
        unary(UnOp::Floor, xi()),
        fma(xi(), yi(), constant(0.25)),
        select(CmpOp::Gt, xi(), constant(0.0), xi(), constant(0.0)),
        select(CmpOp::Ne, xi(), yi(), constant(1.0), constant(2.0)),
    ];
    // 11 = two vector iterations and a scalar remainder of 3.
    let len = 11;
    let p = map_binary_kernels(exprs, len);
    let xs = vec![
        1.5,
        -2.25,
        0.0,
        -0.0,
        f32::NAN,
        3.0,
        1e-40,
        -7.5,
        f32::INFINITY,
        0.3,
        -9.0,
    ];
    let ys = vec![
        0.7,
        4.0,
        -0.0,
        0.0,
        1.0,
        f32::NAN,
        2.0,
        -7.5,
        1.0,
        1.0 / 3.0,
        f32::NAN,
    ];
    let (want, got) = both(&p, vec![xs, ys, vec![0.0; len * p.kernels.len()]], 1);
    assert_bitwise(&want, &got);
    let asm = super::compiled_disasm(&p, 0).expect("compile");
    assert!(
        asm.contains("addps"),
        "the add loop is not vectorised:\n{asm}"
    );
}

#[test]
fn loop_carried_dependence_is_not_vectorised() {
    // out[i + 1] = out[i] + x[i]: a running sum; lanes would read stale values.
    let (x, out) = (BufId(0), BufId(1));
    let i = VarId(0);
    let p = program(
        "scan",
        vec![
            decl("x", Size::fixed(10), BufferKind::Input),
            decl("out", Size::fixed(11), BufferKind::InOut),
        ],
        vec![kernel(
            "scan",
            vec![x, out],
            vec![for_(
                i,
                10usize,
                false,
                vec![store(
                    out,
                    Idx::from(i) + 1i64,
                    binary(BinOp::Add, load(out, i.into()), load(x, i.into())),
                )],
            )],
            1,
            0,
        )],
    );
    let (want, got) = both(
        &p,
        vec![(1..=10).map(|v| v as f32).collect(), vec![0.0; 11]],
        1,
    );
    assert_bitwise(&want, &got);
    assert_eq!(got[1][10], 55.0);
}

#[test]
fn in_place_update_and_broadcast_rows_are_vectorised_correctly() {
    // w[i] -= 0.1·g[i] over 4k+1 elements; out[r, j] = x[r, j] + b[j] over [N, 6].
    let (w, g, x, b, out) = (BufId(0), BufId(1), BufId(2), BufId(3), BufId(4));
    let (i, r, j) = (VarId(0), VarId(1), VarId(2));
    let at = Idx::from(r) * 6 + Idx::from(j);
    let p = program(
        "sgd",
        vec![
            decl("w", Size::fixed(17), BufferKind::InOut),
            decl("g", Size::fixed(17), BufferKind::Input),
            decl("x", Size::per_batch(6), BufferKind::Input),
            decl("b", Size::fixed(6), BufferKind::Input),
            decl("out", Size::per_batch(6), BufferKind::Output),
        ],
        vec![
            kernel(
                "sgd",
                vec![w, g],
                vec![for_(
                    i,
                    17usize,
                    true,
                    vec![store(
                        w,
                        i.into(),
                        fma(constant(-0.1), load(g, i.into()), load(w, i.into())),
                    )],
                )],
                1,
                0,
            ),
            kernel(
                "rows",
                vec![x, b, out],
                vec![for_(
                    r,
                    Idx::N,
                    true,
                    vec![for_(
                        j,
                        6usize,
                        false,
                        vec![store(
                            out,
                            at.clone(),
                            binary(BinOp::Add, load(x, at), load(b, j.into())),
                        )],
                    )],
                )],
                3,
                0,
            ),
        ],
    );
    let n = 3;
    let fill = |len: usize, s: f32| (0..len).map(|v| (v as f32 * s).sin()).collect::<Vec<_>>();
    let init = vec![
        fill(17, 0.3),
        fill(17, 0.8),
        fill(6 * n, 0.5),
        fill(6, 1.7),
        vec![0.0; 6 * n],
    ];
    let (want, got) = both(&p, init.clone(), n);
    assert_bitwise(&want, &got);
    // A split of the parallel vector loop at an unaligned point gives the same result.
    let art = build(&p);
    let mut split = init;
    art.run_kernel(&p, 0, &mut split, n, (0, 5));
    art.run_kernel(&p, 0, &mut split, n, (5, 17));
    assert_bitwise(&want[..1], &split[..1]);
}

/// Deterministic pseudo-random f32 in `[lo, hi)` (xorshift64*), `len` of them.
fn random(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            z ^= z >> 12;
            z ^= z << 25;
            z ^= z >> 27;
            let u = (z.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// Whether the compiled kernel `k` has a packed (f32x4) instance of `op`, e.g. `"addps"`.
fn packed(p: &Program, k: usize, op: &str) -> bool {
    super::compiled_disasm(p, k).expect("compile").contains(op)
}

/// Adam fused into a weight-gradient epilogue, as the lowering and hoisting produce it,
/// over `[rows, cols]`: `w` b0, `g` b1, `m` b2, `v` b3, hyper-parameters b4 (`lr`,
/// `1 - β₂ᵗ`); plus a bias + relu epilogue `y[r, c] = max(y[r, c] + bias[c], 0)` (y b5,
/// bias b6) with a local computed twice.
fn adam_and_relu(rows: usize, cols: usize) -> Program {
    let (w, g, m, v, hp, y, bias) = (
        BufId(0),
        BufId(1),
        BufId(2),
        BufId(3),
        BufId(4),
        BufId(5),
        BufId(6),
    );
    let (i0, i1) = (VarId(0), VarId(1));
    let a: Vec<LocalId> = (0..10).map(LocalId).collect();
    let at = || Idx::from(i0) * cols as i64 + Idx::from(i1);
    let ld = |b: BufId| load(b, at());
    let mul = |x, y| binary(BinOp::Mul, x, y);
    let add = |x, y| binary(BinOp::Add, x, y);
    let adam_body = vec![
        assign(
            a[0],
            add(mul(ld(m), constant(0.9)), mul(ld(g), constant(0.1))),
        ),
        assign(a[1], local(a[0])),
        assign(
            a[2],
            add(
                mul(ld(v), constant(0.999)),
                mul(mul(ld(g), ld(g)), constant(0.001)),
            ),
        ),
        assign(a[3], local(a[2])),
        assign(
            a[4],
            binary(
                BinOp::Sub,
                ld(w),
                mul(
                    binary(
                        BinOp::Div,
                        local(a[0]),
                        add(
                            unary(UnOp::Sqrt, binary(BinOp::Div, local(a[2]), local(a[9]))),
                            constant(1e-8),
                        ),
                    ),
                    local(a[8]),
                ),
            ),
        ),
        store(m, at(), local(a[1])),
        store(v, at(), local(a[3])),
        store(w, at(), local(a[4])),
    ];
    let relu_body = vec![
        assign(a[0], add(ld(y), load(bias, i1.into()))),
        assign(a[0], binary(BinOp::Max, local(a[0]), constant(0.0))),
        store(y, at(), local(a[0])),
    ];
    let len = Size::fixed(rows * cols);
    program(
        "adam",
        vec![
            decl("w", len, BufferKind::InOut),
            decl("g", len, BufferKind::Input),
            decl("m", len, BufferKind::InOut),
            decl("v", len, BufferKind::InOut),
            decl("hp", Size::fixed(2), BufferKind::Input),
            decl("y", len, BufferKind::InOut),
            decl("bias", Size::fixed(cols), BufferKind::Input),
        ],
        vec![
            kernel(
                "adam",
                vec![w, g, m, v, hp],
                vec![for_(
                    i0,
                    rows,
                    true,
                    vec![
                        // Hoisted invariants: lr and the bias correction 1 - β₂ᵗ.
                        assign(a[8], mul(load(hp, 0i64.into()), constant(1.0))),
                        assign(a[9], add(load(hp, 1i64.into()), constant(0.0))),
                        for_(i1, cols, false, adam_body),
                    ],
                )],
                2,
                10,
            ),
            kernel(
                "relu",
                vec![y, bias],
                vec![for_(i0, rows, true, vec![for_(i1, cols, false, relu_body)])],
                2,
                1,
            ),
        ],
    )
}

#[test]
fn loops_with_private_locals_are_vectorised_and_match_interpreter_bitwise() {
    // Extents that reach every path: 7 = 4 + 3, 13 = 8 + 4 + 1, 259 = 32·8 + 3 (the
    // unrolled 8-lane loop, the 4-lane loop, the scalar remainder).
    for (rows, cols) in [(3, 7), (2, 13), (2, 259)] {
        let p = adam_and_relu(rows, cols);
        let len = rows * cols;
        let mut g = random(len, 2, -1.0, 1.0);
        // Special values reach every lane position, the remainder included.
        for (i, x) in [0.0, -0.0, 1e-40, f32::NAN].into_iter().enumerate() {
            g[(i * 5) % len] = x;
        }
        let init = vec![
            random(len, 1, -1.0, 1.0),
            g,
            random(len, 3, -0.1, 0.1),
            random(len, 4, 0.0, 0.01),
            vec![1e-3, 1.0 - 0.999f32.powi(7)],
            random(len, 5, -2.0, 2.0),
            random(cols, 6, -1.0, 1.0),
        ];
        let (want, got) = both(&p, init, 1);
        assert_bitwise(&want, &got);
    }
    let p = adam_and_relu(2, 259);
    assert!(packed(&p, 0, "sqrtps"), "the Adam loop is not vectorised");
    assert!(packed(&p, 0, "divps"), "the Adam loop is not vectorised");
    assert!(packed(&p, 1, "addps"), "the relu loop is not vectorised");
}

#[test]
fn loops_carrying_a_local_between_iterations_stay_scalar_and_correct() {
    // k0: acc += x[i]; out[i] = acc (a running sum through a local).
    // k1: out2[i] = acc + x[i]; acc = 2·x[i] (read before the assignment in the body).
    let (x, out, out2) = (BufId(0), BufId(1), BufId(2));
    let (i, acc) = (VarId(0), LocalId(0));
    let len = 13;
    let xi = || load(x, i.into());
    let p = program(
        "carried",
        vec![
            decl("x", Size::fixed(len), BufferKind::Input),
            decl("out", Size::fixed(len), BufferKind::Output),
            decl("out2", Size::fixed(len), BufferKind::Output),
        ],
        vec![
            kernel(
                "sum",
                vec![x, out],
                vec![for_(
                    i,
                    len,
                    false,
                    vec![
                        assign(acc, binary(BinOp::Add, local(acc), xi())),
                        store(out, i.into(), local(acc)),
                    ],
                )],
                1,
                1,
            ),
            kernel(
                "shifted",
                vec![x, out2],
                vec![for_(
                    i,
                    len,
                    false,
                    vec![
                        store(out2, i.into(), binary(BinOp::Add, local(acc), xi())),
                        assign(acc, binary(BinOp::Mul, xi(), constant(2.0))),
                    ],
                )],
                1,
                1,
            ),
        ],
    );
    let xs = random(len, 7, -4.0, 4.0);
    let (want, got) = both(&p, vec![xs.clone(), vec![0.0; len], vec![0.0; len]], 1);
    assert_bitwise(&want, &got);
    assert_eq!(got[1][len - 1], xs.iter().fold(0.0f32, |s, x| s + x));
    assert_eq!(got[2][1], 2.0 * xs[0] + xs[1]);
    assert!(!packed(&p, 0, "addps"), "the running sum was vectorised");
    assert!(!packed(&p, 1, "addps"), "the carried local was vectorised");
}

#[test]
fn a_private_local_read_after_its_loop_keeps_the_loop_scalar() {
    // for i in 0..8 { t = 2·x[i]; out[i] = t }; last[0] = t. 8 is a multiple of 4, so a
    // vector loop would leave no scalar iteration to define `t` for the read after it. The
    // same inside an outer loop: rows[r] = t after the inner loop over the row.
    let (x, out, last, rows) = (BufId(0), BufId(1), BufId(2), BufId(3));
    let (i, r, j, t, u) = (VarId(0), VarId(1), VarId(2), LocalId(0), LocalId(1));
    let at = Idx::from(r) * 8 + Idx::from(j);
    let p = program(
        "escape",
        vec![
            decl("x", Size::fixed(16), BufferKind::Input),
            decl("out", Size::fixed(16), BufferKind::Output),
            decl("last", Size::fixed(1), BufferKind::Output),
            decl("rows", Size::fixed(2), BufferKind::Output),
        ],
        vec![
            kernel(
                "flat",
                vec![x, out, last],
                vec![
                    for_(
                        i,
                        8usize,
                        false,
                        vec![
                            assign(t, binary(BinOp::Mul, load(x, i.into()), constant(2.0))),
                            store(out, i.into(), local(t)),
                        ],
                    ),
                    store(last, 0i64.into(), local(t)),
                ],
                1,
                1,
            ),
            kernel(
                "nested",
                vec![x, out, rows],
                vec![for_(
                    r,
                    2usize,
                    true,
                    vec![
                        for_(
                            j,
                            8usize,
                            false,
                            vec![
                                assign(u, binary(BinOp::Add, load(x, at.clone()), constant(1.0))),
                                store(out, at, local(u)),
                            ],
                        ),
                        store(rows, r.into(), local(u)),
                    ],
                )],
                3,
                2,
            ),
        ],
    );
    let xs = random(16, 8, -4.0, 4.0);
    let init = vec![xs.clone(), vec![0.0; 16], vec![0.0], vec![0.0; 2]];
    let (want, got) = both(&p, init, 1);
    assert_bitwise(&want, &got);
    assert_eq!(got[2][0], 2.0 * xs[7]);
    assert_eq!(got[3], vec![xs[7] + 1.0, xs[15] + 1.0]);
    assert!(!packed(&p, 0, "mulps"), "the escaping local was vectorised");
    assert!(!packed(&p, 1, "addps"), "the escaping local was vectorised");
}

/// Rough throughput of compiled kernels (`cargo test -p nnc --lib throughput -- --ignored
/// --nocapture`); prints ns per element, asserts nothing.
#[test]
#[ignore = "measurement, not a check"]
fn throughput_report() {
    let len = 1 << 20;
    let xs: Vec<f32> = (0..len).map(|v| (v as f32 * 1e-3).sin() * 10.0).collect();
    for op in [UnOp::Exp, UnOp::Log, UnOp::Tanh, UnOp::Sqrt] {
        let p = map_unary(op, len);
        let art = build(&p);
        let mut bufs = vec![xs.iter().map(|x| x.abs()).collect(), vec![0.0; len]];
        art.run(&p, &mut bufs, 1);
        let t = Instant::now();
        for _ in 0..10 {
            art.run(&p, &mut bufs, 1);
        }
        let ns = t.elapsed().as_secs_f64() * 1e9 / (10.0 * len as f64);
        eprintln!("{}: {ns:.2} ns/element", op.name());
    }
    let (x, y) = (BufId(0), BufId(1));
    let i = VarId(0);
    let p = map_binary_kernels(
        vec![fma(load(x, i.into()), load(y, i.into()), constant(1.0))],
        len,
    );
    let art = build(&p);
    let mut bufs = vec![xs.clone(), xs.clone(), vec![0.0; len]];
    let t = Instant::now();
    for _ in 0..10 {
        art.run(&p, &mut bufs, 1);
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / (10.0 * len as f64);
    eprintln!("fma (vectorised): {ns:.2} ns/element");
}

/// The ReLU gradient `g[i] = h[i] > 0 ? g[i] : 0` loads, in a select arm, exactly where
/// the loop stores: both arms are safe to evaluate, so the loop runs on f32x4 (a scalar
/// loop branches on every unpredictable mask). A select arm loading anywhere else keeps
/// its loop scalar and never evaluates the arm not taken.
#[test]
fn selects_loading_where_the_loop_stores_are_vectorised() {
    let (g, h, out, x) = (BufId(0), BufId(1), BufId(2), BufId(3));
    let i = VarId(0);
    let len = 37;
    let far = Idx::from(i) + 1_000_000_000_000i64;
    let relu_grad = select(
        CmpOp::Gt,
        load(h, i.into()),
        constant(0.0),
        load(g, i.into()),
        constant(0.0),
    );
    let guarded = select(
        CmpOp::Lt,
        load(h, i.into()),
        constant(-10.0),
        load(x, far),
        load(h, i.into()),
    );
    let p = program(
        "relu_grad",
        vec![
            decl("g", Size::fixed(len), BufferKind::InOut),
            decl("h", Size::fixed(len), BufferKind::Input),
            decl("out", Size::fixed(len), BufferKind::Output),
            decl("x", Size::fixed(1), BufferKind::Input),
        ],
        vec![
            kernel(
                "relu_grad",
                vec![g, h],
                vec![for_(i, len, false, vec![store(g, i.into(), relu_grad)])],
                1,
                0,
            ),
            kernel(
                "guarded",
                vec![out, h, x],
                vec![for_(i, len, false, vec![store(out, i.into(), guarded)])],
                1,
                0,
            ),
        ],
    );
    let mut hs = random(len, 9, -1.0, 1.0);
    hs[3] = 0.0;
    hs[5] = -0.0;
    hs[7] = f32::NAN;
    let (want, got) = both(
        &p,
        vec![random(len, 8, -2.0, 2.0), hs, vec![0.0; len], vec![0.0]],
        1,
    );
    assert_bitwise(&want, &got);
    // A vector select is a packed compare and a blend.
    assert!(
        packed(&p, 0, "blendv"),
        "the relu gradient is not vectorised"
    );
    assert!(!packed(&p, 1, "blendv"), "the guarded load was vectorised");
}
