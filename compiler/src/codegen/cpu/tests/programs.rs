//! Kernel shapes compiled and compared with the interpreter: broadcasts, split parallel
//! loops, selects and comparisons, every scalar operator, local accumulators, softmax,
//! strided and batched products, `rand`, index division, fused multiply-adds, and the
//! errors of invalid programs and failed links.

use std::time::Instant;

use nnc_kernels::build::*;
use nnc_kernels::ir::BufferKind::{InOut, Input, Output};
use nnc_kernels::ir::*;
use nnc_kernels::samples::{self, gemm_program, store_each};

use super::{assert_bitwise, assert_relative, both, build, fixed, one_loop, operands};
use crate::codegen::cpu::{compiled_disasm, emit_clif, emit_object, link_shared_object};

#[test]
fn elementwise_kernel_with_broadcast_bias_matches_interpreter() {
    let n = 7;
    let x: Vec<f32> = (0..3 * n).map(|v| (v as f32 - 10.0) * 0.37).collect();
    let mut x = x;
    x[4] = f32::NAN; // max(NaN, 0) is 0, as Rust's f32::max
    let (want, got) = both(
        &samples::bias_relu(),
        vec![x, vec![0.5, -1.0, 2.0], vec![9.0; 3 * n]],
        n,
    );
    assert_bitwise(&want, &got);
    assert_eq!(got[2][4], 0.0);
}

#[test]
fn parallel_loop_split_in_two_calls_equals_one_run() {
    let p = samples::bias_relu();
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
    let (x, out, i) = (BufId(0), BufId(1), VarId(0));
    let ops = [
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::Eq,
        CmpOp::Ne,
    ];
    let xi = || load(x, i.into());
    let values = ops
        .iter()
        .map(|op| select(*op, xi(), constant(0.0), xi(), constant(-1.0)))
        .collect();
    let bufs = [("x", 8, Input), ("out", 48, Output)];
    let p = one_loop("select", &bufs, 8, false, store_each(out, i, values));
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
    let (x, out, i) = (BufId(0), BufId(1), VarId(0));
    let far = Idx::from(i) + 1_000_000_000_000i64;
    let value = select(
        CmpOp::Lt,
        Expr::FromIdx(i.into()),
        constant(4.0),
        load(x, i.into()),
        load(x, far),
    );
    let bufs = [("x", 4, Input), ("out", 4, Output)];
    let p = one_loop("guard", &bufs, 4, false, vec![store(out, i.into(), value)]);
    let (want, got) = both(&p, vec![vec![1.0, 2.0, 3.0, 4.0], vec![0.0; 4]], 1);
    assert_bitwise(&want, &got);
}

#[test]
fn unary_and_binary_ops_are_ieee_exact() {
    let (x, y, out, i) = (BufId(0), BufId(1), BufId(2), VarId(0));
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
    let [xs, ys] = operands();
    let (len, outs) = (xs.len(), xs.len() * exprs.len());
    let bufs = [("x", len, Input), ("y", len, Input), ("out", outs, Output)];
    let p = one_loop("ops", &bufs, len, false, store_each(out, i, exprs));
    let (want, got) = both(&p, vec![xs, ys, vec![0.0; outs]], 1);
    assert_bitwise(&want, &got);
}

#[test]
fn row_sum_and_row_max_with_locals_match_interpreter() {
    // sum[i] = Σ_j x[i, j]; max[i] = max_j x[i, j] over [N, 5].
    let (x, sum, max) = (BufId(0), BufId(1), BufId(2));
    let (i, j, acc, mx) = (VarId(0), VarId(1), LocalId(0), LocalId(1));
    let xij = || load(x, Idx::from(i) * 5 + Idx::from(j));
    let row = vec![
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
    ];
    let p = program(
        "rows",
        vec![
            decl("x", Size::per_batch(5), Input),
            decl("sum", Size::per_batch(1), Output),
            decl("max", Size::per_batch(1), Output),
        ],
        vec![kernel(
            "rows",
            vec![x, sum, max],
            vec![for_(i, Idx::N, true, row)],
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

/// Kernel `name`: row softmax of `x` into `out` over `[N, c]`: max, then Σ exp(x - max),
/// then exp(x - max) / sum.
fn softmax_kernel(name: &str, c: usize, x: BufId, out: BufId) -> Kernel {
    let (i, j, k, l) = (VarId(0), VarId(1), VarId(2), VarId(3));
    let (mx, sum) = (LocalId(0), LocalId(1));
    let row = |v: VarId| Idx::from(i) * c as i64 + Idx::from(v);
    let shifted = |v: VarId| unary(UnOp::Exp, binary(BinOp::Sub, load(x, row(v)), local(mx)));
    let body = vec![
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
    ];
    kernel(name, vec![x, out], vec![for_(i, Idx::N, true, body)], 4, 2)
}

/// Row softmax over `[N, c]` (see [`softmax_kernel`]).
fn softmax(c: usize) -> Program {
    program(
        "softmax",
        vec![
            decl("x", Size::per_batch(c), Input),
            decl("out", Size::per_batch(c), Output),
        ],
        vec![softmax_kernel("softmax", c, BufId(0), BufId(1))],
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

#[test]
fn gemm_with_transposed_operands_matches_interpreter() {
    // C[5,7] = 0.5·Aᵀ·Bᵀ + 2·C, A stored [k=6, m=5], B stored [n=7, k=6], C at offset 3.
    let (a, b, c) = (BufId(0), BufId(1), BufId(2));
    let g = Gemm {
        alpha: 0.5,
        beta: 2.0,
        ..matmul(
            5usize,
            7usize,
            6usize,
            matrix(a, 0i64, 1i64, 5i64),
            matrix(b, 0i64, 1i64, 6i64),
            matrix(c, 3i64, 7i64, 1i64),
        )
    };
    let lens = [Size::fixed(30), Size::fixed(42), Size::fixed(38)];
    let p = gemm_program("gemm_t", lens, InOut, g);
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
    // N products C_p[2,2] = A_p[2,3]·B_p[3,2] at an offset of 1 into C, beta 0 (C starts
    // as NaN: must be ignored).
    let p = samples::gemm_batched();
    let n = 3;
    let fill = |len: usize, s: f32| (0..len).map(|v| (v as f32 * s).sin()).collect::<Vec<_>>();
    let (want, got) = both(
        &p,
        vec![
            fill(6 * n, 0.9),
            fill(6 * n, 0.4),
            vec![f32::NAN; 4 * n + 1],
        ],
        n,
    );
    assert_relative(&want, &got, 1e-5);
    assert!(
        got[2][0].is_nan(),
        "the element before the offset is untouched"
    );
    assert!(got[2][1..].iter().all(|v| v.is_finite()));
}

#[test]
fn rand_matches_rand_uniform_bit_for_bit() {
    let (steps, out) = (BufId(0), BufId(1));
    let (s, i) = (VarId(0), VarId(1));
    let seed = 0xdead_beef_cafe_f00d;
    let key = u64::MAX - 12345;
    let value = Expr::Rand {
        seed,
        key,
        step: Box::new(load(steps, s.into())),
        counter: Idx::from(i) * 3 + (-20i64),
    };
    let body = vec![for_(
        s,
        6usize,
        false,
        vec![for_(
            i,
            50usize,
            false,
            vec![store(out, Idx::from(s) * 50 + Idx::from(i), value)],
        )],
    )];
    let p = program(
        "rand",
        fixed(&[("steps", 6, Input), ("out", 6 * 50, Output)]),
        vec![kernel("rand", vec![steps, out], body, 2, 0)],
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
    let (out, i) = (BufId(0), VarId(0));
    let v = || Idx::from(i) - Idx::from(7i64);
    let cols = [
        v().div(3),
        v().rem(3),
        v().div(4),
        v().rem(4),
        Idx::Min(Box::new(v()), Box::new(Idx::N)),
        Idx::Max(Box::new(v()), Box::new(Idx::N)),
    ];
    let values = cols.into_iter().map(Expr::FromIdx).collect();
    let bufs = [("out", 6 * 20, Output)];
    let p = one_loop("divrem", &bufs, 20, false, store_each(out, i, values));
    let (want, got) = both(&p, vec![vec![0.0; 120]], 2);
    assert_bitwise(&want, &got);
    assert_eq!(&got[0][0..4], &[-3.0, 2.0, -2.0, 1.0]); // i = 0: -7
}

#[test]
fn fma_compiles_to_a_fused_instruction() {
    let (x, out, i) = (BufId(0), BufId(1), VarId(0));
    let value = fma(load(x, i.into()), constant(3.0), constant(1.0));
    let bufs = [("x", 4, Input), ("out", 4, Output)];
    let p = one_loop("fma", &bufs, 4, false, vec![store(out, i.into(), value)]);
    let asm = compiled_disasm(&p, 0).expect("compile");
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
    let mut p = samples::bias_relu();
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
    // 20 kernels alternating softmax, elementwise and GEMM bodies.
    let (x, out) = (BufId(0), BufId(2));
    let mut p = samples::bias_relu();
    p.name = "twenty".into();
    p.buffers[0].len = Size::per_batch(48);
    p.buffers[2].len = Size::per_batch(48);
    let elementwise = p.kernels.pop().expect("one kernel");
    let product = matmul(
        Idx::N,
        16usize,
        3usize,
        matrix(x, 0i64, 48i64, 1i64),
        matrix(x, 0i64, 16i64, 1i64),
        matrix(out, 0i64, 48i64, 1i64),
    );
    for k in 0..20 {
        let name = format!("k{k}");
        p.kernels.push(match k % 3 {
            0 => softmax_kernel(&name, 16, x, out),
            1 => Kernel {
                name,
                ..elementwise.clone()
            },
            _ => kernel(&name, vec![x, out], vec![Stmt::Gemm(product.clone())], 0, 0),
        });
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
