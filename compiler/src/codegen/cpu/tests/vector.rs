//! Vectorised loops: unit-stride loops run on f32x4 (with private locals, selects that
//! load where the loop stores, in-place updates and split parallel ranges) and match the
//! interpreter bit for bit; loops carrying values between iterations stay scalar.

use std::time::Instant;

use nnc_kernels::build::*;
use nnc_kernels::ir::BufferKind::{InOut, Input, Output};
use nnc_kernels::ir::*;

use super::{
    assert_bitwise, both, build, fixed, loop_kernel, map_binary_kernels, map_unary, one_loop,
    operands, random,
};
use crate::codegen::cpu::compiled_disasm;

#[test]
fn unit_stride_loops_are_vectorised_and_match_interpreter_bitwise() {
    let (x, y, i) = (BufId(0), BufId(1), VarId(0));
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
    // 11 operands: two vector iterations and a scalar remainder of 3.
    let [xs, ys] = operands();
    let len = xs.len();
    let p = map_binary_kernels(exprs, len);
    let (want, got) = both(&p, vec![xs, ys, vec![0.0; len * p.kernels.len()]], 1);
    assert_bitwise(&want, &got);
    let asm = compiled_disasm(&p, 0).expect("compile");
    assert!(
        asm.contains("addps"),
        "the add loop is not vectorised:\n{asm}"
    );
}

#[test]
fn loop_carried_dependence_is_not_vectorised() {
    // out[i + 1] = out[i] + x[i]: a running sum; lanes would read stale values.
    let (x, out, i) = (BufId(0), BufId(1), VarId(0));
    let value = binary(BinOp::Add, load(out, i.into()), load(x, i.into()));
    let bufs = [("x", 10, Input), ("out", 11, InOut)];
    let body = vec![store(out, Idx::from(i) + 1i64, value)];
    let p = one_loop("scan", &bufs, 10, false, body);
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
    let step = fma(constant(-0.1), load(g, i.into()), load(w, i.into()));
    let row = binary(BinOp::Add, load(x, at.clone()), load(b, j.into()));
    let rows = for_(
        r,
        Idx::N,
        true,
        vec![for_(j, 6usize, false, vec![store(out, at, row)])],
    );
    let p = program(
        "sgd",
        vec![
            decl("w", Size::fixed(17), InOut),
            decl("g", Size::fixed(17), Input),
            decl("x", Size::per_batch(6), Input),
            decl("b", Size::fixed(6), Input),
            decl("out", Size::per_batch(6), Output),
        ],
        vec![
            loop_kernel(
                "sgd",
                vec![w, g],
                17usize,
                true,
                0,
                vec![store(w, i.into(), step)],
            ),
            kernel("rows", vec![x, b, out], vec![rows], 3, 0),
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

/// Whether the compiled kernel `k` has a packed (f32x4) instance of `op`, e.g. `"addps"`.
fn packed(p: &Program, k: usize, op: &str) -> bool {
    compiled_disasm(p, k).expect("compile").contains(op)
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
            decl("w", len, InOut),
            decl("g", len, Input),
            decl("m", len, InOut),
            decl("v", len, InOut),
            decl("hp", Size::fixed(2), Input),
            decl("y", len, InOut),
            decl("bias", Size::fixed(cols), Input),
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
    let sum = vec![
        assign(acc, binary(BinOp::Add, local(acc), xi())),
        store(out, i.into(), local(acc)),
    ];
    let shifted = vec![
        store(out2, i.into(), binary(BinOp::Add, local(acc), xi())),
        assign(acc, binary(BinOp::Mul, xi(), constant(2.0))),
    ];
    let p = program(
        "carried",
        fixed(&[
            ("x", len, Input),
            ("out", len, Output),
            ("out2", len, Output),
        ]),
        vec![
            loop_kernel("sum", vec![x, out], len, false, 1, sum),
            loop_kernel("shifted", vec![x, out2], len, false, 1, shifted),
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
            decl("x", Size::fixed(16), Input),
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
        fixed(&[
            ("g", len, InOut),
            ("h", len, Input),
            ("out", len, Output),
            ("x", 1, Input),
        ]),
        vec![
            loop_kernel(
                "relu_grad",
                vec![g, h],
                len,
                false,
                0,
                vec![store(g, i.into(), relu_grad)],
            ),
            loop_kernel(
                "guarded",
                vec![out, h, x],
                len,
                false,
                0,
                vec![store(out, i.into(), guarded)],
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

/// Per-channel sums as the lowering blocks them: `blocks` parallel blocks of `c` channels
/// of an `[n1, n2, blocks·c]` input; each block zeroes its accumulators `acc[blk·c + j]`,
/// adds every row into them (the lane loop of extent `c` inside two row loops: an
/// accumulation nest) and writes `out = acc · 0.5`.
fn channel_sums(n1: usize, n2: usize, blocks: usize, c: usize) -> Program {
    let (x, acc, out) = (BufId(0), BufId(1), BufId(2));
    let (blk, r1, r2, j) = (VarId(0), VarId(1), VarId(2), VarId(3));
    let ch = || Idx::from(blk) * c as i64 + Idx::from(j);
    let row = (Idx::from(r1) * n2 as i64 + Idx::from(r2)) * (blocks * c) as i64 + ch();
    let add = binary(BinOp::Add, load(acc, ch()), load(x, row));
    let body = vec![
        for_(j, c, false, vec![store(acc, ch(), constant(0.0))]),
        for_(
            r1,
            n1,
            false,
            vec![for_(
                r2,
                n2,
                false,
                vec![for_(j, c, false, vec![store(acc, ch(), add)])],
            )],
        ),
        for_(
            j,
            c,
            false,
            vec![store(
                out,
                ch(),
                binary(BinOp::Mul, load(acc, ch()), constant(0.5)),
            )],
        ),
    ];
    program(
        "sums",
        fixed(&[
            ("x", n1 * n2 * blocks * c, Input),
            ("acc", blocks * c, InOut),
            ("out", blocks * c, Output),
        ]),
        vec![kernel(
            "sums",
            vec![x, acc, out],
            vec![for_(blk, blocks, true, body)],
            4,
            0,
        )],
    )
}

#[test]
fn short_constant_loops_and_register_accumulators_match_interpreter_bitwise() {
    // Channel blocks of every width the straight-line code has (fours, a two, a one)
    // accumulate in vector registers over 5×7 rows; each lane adds its rows in the
    // interpreter's order, so the sums agree bit for bit.
    for c in [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 17] {
        let p = channel_sums(5, 7, 2, c);
        let len = 5 * 7 * 2 * c;
        let init = vec![
            random(len, c as u64, -1.0, 1.0),
            vec![f32::NAN; 2 * c],
            vec![0.0; 2 * c],
        ];
        let (want, got) = both(&p, init, 1);
        assert_bitwise(&want, &got);
        assert!(
            got[2].iter().all(|v| v.is_finite()),
            "c = {c}: {:?}",
            got[2]
        );
        let asm = compiled_disasm(&p, 0).expect("compile");
        assert!(
            c < 4 || asm.contains("addps"),
            "c = {c}: not vectorised:\n{asm}"
        );
    }
    // The accumulators stay in registers: with 8 channels (two 4-lane pieces) the kernel
    // has six vector stores (zeroing, write-back after the rows, `out`), none in the row
    // loops, which would make eight.
    let asm = compiled_disasm(&channel_sums(5, 7, 2, 8), 0).expect("compile");
    let stores = asm
        .lines()
        .filter(|l| {
            l.trim_start()
                .trim_start_matches('v')
                .starts_with("movups %xmm")
        })
        .count();
    assert_eq!(stores, 6, "accumulators not kept in registers:\n{asm}");
}
