//! Small hand-built kernel programs that together use every construct of the kernel IR:
//! shared by the interpreter tests here and the backends' tests (PTX, CPU), so that
//! every backend is checked on the same programs. Each function documents what its
//! program computes; none depends on the compiler.

use crate::build::*;
use crate::ir::*;

/// `out[n, j] = max(x[n, j] + bias[j], 0)` over `[N, 3]`: a coalesced elementwise
/// kernel with a broadcast.
pub fn bias_relu() -> Program {
    let (x, b, out) = (BufId(0), BufId(1), BufId(2));
    let (i, j) = (VarId(0), VarId(1));
    let at = Idx::from(i) * 3 + Idx::from(j);
    let value = binary(
        BinOp::Max,
        binary(BinOp::Add, load(x, at.clone()), load(b, j.into())),
        constant(0.0),
    );
    let body = vec![for_(
        i,
        Idx::N,
        true,
        vec![for_(j, 3usize, false, vec![store(out, at, value)])],
    )];
    let mut k = kernel("k0", vec![x, b, out], body, 2, 0);
    k.note = "bias + relu".into();
    program(
        "bias_relu",
        vec![
            decl("x", Size::per_batch(3), BufferKind::Input),
            decl("bias", Size::fixed(3), BufferKind::InOut),
            decl("out", Size::per_batch(3), BufferKind::Output),
        ],
        vec![k],
    )
}

/// `out[i] = Σ_j x[i, j]` over `[rows, cols]` through a local accumulator, parallel over
/// the rows, with `x` and `out` of the lengths `lens`.
fn row_sums(name: &str, rows: Idx, cols: Idx, lens: [Size; 2]) -> Program {
    let (x, out) = (BufId(0), BufId(1));
    let (i, j, acc) = (VarId(0), VarId(1), LocalId(0));
    let at = Idx::from(i) * cols.clone() + Idx::from(j);
    let body = vec![
        assign(acc, constant(0.0)),
        for_(
            j,
            cols,
            false,
            vec![assign(acc, binary(BinOp::Add, local(acc), load(x, at)))],
        ),
        store(out, i.into(), local(acc)),
    ];
    program(
        name,
        vec![
            decl("x", lens[0], BufferKind::Input),
            decl("out", lens[1], BufferKind::Output),
        ],
        vec![kernel(
            "k0",
            vec![x, out],
            vec![for_(i, rows, true, body)],
            2,
            1,
        )],
    )
}

/// `out[i] = Σ_j x[i, j]` over `[N, 4]`, through a local accumulator.
pub fn row_sum() -> Program {
    let lens = [Size::per_batch(4), Size::per_batch(1)];
    row_sums("rowsum", Idx::N, 4i64.into(), lens)
}

/// `out[i] = Σ_j x[i, j]` over `[4, 2N]`: four long rows (a block reduction on the GPU).
pub fn wide_row_sum() -> Program {
    let lens = [Size::per_batch(8), Size::fixed(4)];
    row_sums("wide_row_sum", 4i64.into(), Idx::N * 2, lens)
}

/// A program `name` of one kernel `k0` computing `g` over buffers `a` (b0) and `b` (b1),
/// inputs, and `c` (b2) of kind `c_kind` (`InOut` when `beta` reads it), of the lengths
/// `lens`.
pub fn gemm_program(name: &str, lens: [Size; 3], c_kind: BufferKind, g: Gemm) -> Program {
    let (a, b, c) = (BufId(0), BufId(1), BufId(2));
    program(
        name,
        vec![
            decl("a", lens[0], BufferKind::Input),
            decl("b", lens[1], BufferKind::Input),
            decl("c", lens[2], c_kind),
        ],
        vec![kernel("k0", vec![a, b, c], vec![Stmt::Gemm(g)], 0, 0)],
    )
}

/// `C[N, 3] = A[N, 4] · Bᵀ` with `B` stored `[3, 4]` (a transposed operand through
/// strides), then `D[N, 3] = 0.5·A·Bᵀ + 2·D` (alpha and beta).
pub fn gemm_transposed() -> Program {
    let (a, b, c, d) = (BufId(0), BufId(1), BufId(2), BufId(3));
    let gemm = |out: BufId, alpha: f32, beta: f32| {
        Stmt::Gemm(Gemm {
            alpha,
            beta,
            ..matmul(
                Idx::N,
                3i64,
                4i64,
                matrix(a, 0i64, 4i64, 1i64),
                matrix(b, 0i64, 1i64, 4i64),
                matrix(out, 0i64, 3i64, 1i64),
            )
        })
    };
    program(
        "gemm_t",
        vec![
            decl("a", Size::per_batch(4), BufferKind::Input),
            decl("b", Size::fixed(12), BufferKind::InOut),
            decl("c", Size::per_batch(3), BufferKind::Output),
            decl("d", Size::per_batch(3), BufferKind::InOut),
        ],
        vec![
            kernel("k0", vec![a, b, c], vec![gemm(c, 1.0, 0.0)], 0, 0),
            kernel("k1", vec![a, b, d], vec![gemm(d, 0.5, 2.0)], 0, 0),
        ],
    )
}

/// `N` products `C[p] = A[p] · B[p]` of `[2, 3] · [3, 2]` matrices stored back to back
/// (attention-style batched products), at an offset of 1 into `C`.
pub fn gemm_batched() -> Program {
    let (a, b, c) = (BufId(0), BufId(1), BufId(2));
    let g = Gemm {
        batch: Some((Idx::N, [6i64.into(), 6i64.into(), 4i64.into()])),
        ..matmul(
            2i64,
            2i64,
            3i64,
            matrix(a, 0i64, 3i64, 1i64),
            matrix(b, 0i64, 2i64, 1i64),
            matrix(c, 1i64, 2i64, 1i64),
        )
    };
    let c_len = Size {
        per_batch: 4,
        fixed: 1,
    };
    gemm_program(
        "gemm_batched",
        [Size::per_batch(6), Size::per_batch(6), c_len],
        BufferKind::Output,
        g,
    )
}

/// `out[i·len + c] = values[c]` for every value, `len` being their number.
pub fn store_each(out: BufId, i: VarId, values: Vec<Expr>) -> Vec<Stmt> {
    let len = values.len() as i64;
    values
        .into_iter()
        .enumerate()
        .map(|(c, value)| store(out, Idx::from(i) * len + c as i64, value))
        .collect()
}

/// Every scalar operation on `x[N, 2]` into `out[N, 16]`: each unary and binary
/// operator, `fma`, a `select` that guards an out-of-range load (only the chosen branch
/// may be evaluated), `float(idx)` with floor division and remainder of negative
/// values, and `rand` keyed by the step counter `step[0]`.
pub fn all_ops() -> Program {
    let (x, step, out) = (BufId(0), BufId(1), BufId(2));
    let i = VarId(0);
    let a = || load(x, Idx::from(i) * 2);
    let b = || load(x, Idx::from(i) * 2 + 1);
    let pos = || unary(UnOp::Abs, a());
    let mut values = vec![
        unary(UnOp::Neg, a()),
        unary(UnOp::Sqrt, pos()),
        unary(UnOp::Exp, a()),
        unary(UnOp::Log, binary(BinOp::Add, pos(), constant(1.0))),
        unary(UnOp::Tanh, a()),
        unary(UnOp::Recip, b()),
        unary(UnOp::Floor, a()),
        binary(BinOp::Sub, binary(BinOp::Div, a(), b()), b()),
        binary(BinOp::Min, binary(BinOp::Mul, a(), b()), a()),
        binary(BinOp::Pow, pos(), b()),
        binary(BinOp::Pow, a(), constant(2.0)),
        fma(a(), b(), constant(0.25)),
    ];
    // x[2i - 2] exists only for i ≥ 1: the select must not evaluate it for i = 0.
    values.push(select(
        CmpOp::Ge,
        Expr::FromIdx(i.into()),
        constant(1.0),
        load(x, Idx::from(i) * 2 - Idx::Const(2)),
        constant(-1.0),
    ));
    values.push(select(CmpOp::Ne, a(), a(), constant(1.0), constant(0.0)));
    values.push(Expr::FromIdx(
        (Idx::from(i) - Idx::Const(3)).div(2) * 10 + (Idx::from(i) - Idx::Const(3)).rem(2),
    ));
    values.push(Expr::Rand {
        seed: 42,
        key: 7,
        step: Box::new(load(step, 0i64.into())),
        counter: i.into(),
    });
    let body = store_each(out, i, values);
    program(
        "all_ops",
        vec![
            decl("x", Size::per_batch(2), BufferKind::Input),
            decl("step", Size::fixed(1), BufferKind::InOut),
            decl("out", Size::per_batch(16), BufferKind::Output),
        ],
        vec![kernel(
            "k0",
            vec![x, step, out],
            vec![for_(i, Idx::N, true, body)],
            1,
            0,
        )],
    )
}

/// A serial kernel (one GPU thread): `step += 1`, then for each of 2 heads a product
/// inside a loop, then the mean of `x` into `mean[0]`.
pub fn serial_step() -> Program {
    let (x, w, out, step, mean) = (BufId(0), BufId(1), BufId(2), BufId(3), BufId(4));
    let (h, r, acc) = (VarId(0), VarId(1), LocalId(0));
    let head = matmul(
        Idx::N,
        2i64,
        2i64,
        matrix(x, Idx::from(h) * 2, 4i64, 1i64),
        matrix(w, Idx::from(h) * 4, 2i64, 1i64),
        matrix(out, Idx::from(h) * 2, 4i64, 1i64),
    );
    let body = vec![
        store(
            step,
            0i64.into(),
            binary(BinOp::Add, load(step, 0i64.into()), constant(1.0)),
        ),
        for_(h, 2usize, false, vec![Stmt::Gemm(head)]),
        assign(acc, constant(0.0)),
        for_(
            r,
            Idx::N * 4,
            false,
            vec![assign(
                acc,
                binary(BinOp::Add, local(acc), load(x, r.into())),
            )],
        ),
        store(
            mean,
            0i64.into(),
            binary(BinOp::Div, local(acc), Expr::FromIdx(Idx::N * 4)),
        ),
    ];
    program(
        "serial_step",
        vec![
            decl("x", Size::per_batch(4), BufferKind::Input),
            decl("w", Size::fixed(8), BufferKind::InOut),
            decl("out", Size::per_batch(4), BufferKind::Output),
            decl("step", Size::fixed(1), BufferKind::InOut),
            decl("mean", Size::fixed(1), BufferKind::Output),
        ],
        vec![kernel("k0", vec![x, w, out, step, mean], body, 2, 1)],
    )
}

/// Every sample program, by name.
pub fn all() -> Vec<Program> {
    vec![
        bias_relu(),
        row_sum(),
        wide_row_sum(),
        gemm_transposed(),
        gemm_batched(),
        all_ops(),
        serial_step(),
    ]
}

/// Deterministic input buffers for `p` at batch size `n`: inputs and in/out buffers
/// hold small values of both signs (never zero, so divisions are defined); outputs and
/// temporaries are zero.
pub fn inputs(p: &Program, n: usize) -> Vec<Vec<f32>> {
    p.buffers
        .iter()
        .enumerate()
        .map(|(b, decl)| {
            let len = decl.len.resolve(n);
            match decl.kind {
                BufferKind::Input | BufferKind::InOut => (0..len)
                    .map(|e| {
                        let v = ((e * 7 + b * 3) % 11) as f32 * 0.25 - 1.3;
                        if v == 0.0 {
                            0.5
                        } else {
                            v
                        }
                    })
                    .collect(),
                _ => vec![0.0; len],
            }
        })
        .collect()
}
