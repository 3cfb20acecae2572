//! The GPU schedule on hand-built kernel programs (the samples and unusual shapes):
//! the simulator runs every scheduled kernel on its real grid and must agree with the
//! kernel interpreter. Whole compiled steps are checked in `pipeline`'s tests.

use nnc_kernels::ir::{BufId, BufferKind, Idx, Size, Stmt};
use nnc_kernels::print::print_program;

/// Inputs without repeated values (uniform in `[-1, 1)` from a hash of buffer and
/// element): the samples' periodic inputs tie in max-pooling windows, and which of two
/// tied elements wins depends on the last bit of sums taken in different orders.
pub(crate) fn tie_free_inputs(p: &nnc_kernels::ir::Program, n: usize) -> Vec<Vec<f32>> {
    let mut bufs = nnc_kernels::samples::inputs(p, n);
    for (b, (decl, buf)) in p.buffers.iter().zip(&mut bufs).enumerate() {
        if matches!(decl.kind, BufferKind::Input | BufferKind::InOut) {
            for (e, v) in buf.iter_mut().enumerate() {
                *v = 2.0 * nnc_kernels::ir::rand_uniform(7, b as u64, 0, e as u64) - 1.0;
            }
        }
    }
    bufs
}

/// The same on the hand-built samples (products in loops, batched and transposed
/// products, every operator, long and short reductions), at batch sizes that leave
/// partial tiles and blocks.
#[test]
fn gpu_schedule_of_every_sample_matches_the_kernel_interpreter() {
    for p in nnc_kernels::samples::all() {
        let gpu = super::gpu::schedule(&p).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        gpu.validate().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        for n in [1, 5, 70, 300] {
            let mut want = nnc_kernels::samples::inputs(&p, n);
            nnc_kernels::interp::run(&p, &mut want, n).unwrap();
            let mut got = nnc_kernels::samples::inputs(&p, n);
            nnc_kernels::gpu::simulate_program(&gpu, &mut got, n)
                .unwrap_or_else(|e| panic!("{} n={n}: {e}", p.name));
            for (b, (w, g)) in want.iter().zip(&got).enumerate() {
                for (i, (x, y)) in w.iter().zip(g).enumerate() {
                    let close = (x - y).abs() <= 1e-5 + 1e-5 * x.abs();
                    assert!(
                        close || x.to_bits() == y.to_bits(),
                        "{} n={n} b{b}[{i}]: {y} vs {x}",
                        p.name
                    );
                }
            }
        }
    }
}

/// Schedules `p` for the GPU and checks the simulation against the interpreter at the
/// batch sizes `ns` (within rounding).
fn check_gpu_schedule(p: &nnc_kernels::ir::Program, ns: &[usize]) {
    let gpu = super::gpu::schedule(p).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    gpu.validate().unwrap_or_else(|e| panic!("{}: {e}", p.name));
    for &n in ns {
        let mut want = tie_free_inputs(p, n);
        nnc_kernels::interp::run(p, &mut want, n).unwrap();
        let mut got = tie_free_inputs(p, n);
        nnc_kernels::gpu::simulate_program(&gpu, &mut got, n)
            .unwrap_or_else(|e| panic!("{} n={n}: {e}\n{}", p.name, print_program(&gpu)));
        for (b, (w, g)) in want.iter().zip(&got).enumerate() {
            for (i, (x, y)) in w.iter().zip(g).enumerate() {
                let close = (x - y).abs() <= 1e-5 + 1e-4 * x.abs();
                assert!(
                    close,
                    "{} n={n} b{b}[{i}]: {y} on the GPU, {x} in the interpreter",
                    p.name
                );
            }
        }
    }
}

fn mat(buf: BufId, offset: Idx, rs: i64, cs: i64) -> nnc_kernels::ir::MatRef {
    nnc_kernels::ir::MatRef {
        buf,
        offset,
        row_stride: Idx::Const(rs),
        col_stride: Idx::Const(cs),
    }
}

/// Kernel shapes the examples do not produce, which the schedule must still map
/// correctly (or refuse): stores to one buffer at two indices in a loop, an epilogue
/// carrying a local from element to element, products summed into one `C` (batched and
/// in a loop), two products in one kernel, a product inside a parallel loop, and a
/// parallel loop with no iterations at small batches.
#[test]
fn gpu_schedule_maps_unusual_kernels_correctly() {
    use nnc_kernels::build::*;
    use nnc_kernels::ir::{BinOp, Gemm, LocalId, VarId};
    let (i, j, v) = (VarId(0), VarId(1), VarId(2));
    let (x, y, o) = (BufId(0), BufId(1), BufId(2));
    let decls = |ox: usize, oy: usize, oo: usize| {
        vec![
            decl("x", Size::per_batch(ox), BufferKind::Input),
            decl("y", Size::per_batch(oy), BufferKind::Input),
            decl(
                "o",
                Size {
                    per_batch: oo,
                    fixed: 1,
                },
                BufferKind::Output,
            ),
        ]
    };
    // o[i] = x[i]; o[i + 1] = y[i]: neighbouring iterations write the same element.
    let body = vec![for_(
        i,
        Idx::N * 4,
        false,
        vec![
            store(o, Idx::Var(i), load(x, Idx::Var(i))),
            store(o, Idx::Var(i) + 1, load(y, Idx::Var(i))),
        ],
    )];
    let p = program(
        "two_stores",
        decls(4, 4, 4),
        vec![kernel("k0", vec![x, y, o], body, 3, 0)],
    );
    check_gpu_schedule(&p, &[1, 40, 100]);

    // C = A·B, then D[e] = C[e] + t; t = C[e]: the epilogue carries t along a row.
    let gemm = |batch, beta, c_off| Gemm {
        m: Idx::N,
        n: Idx::Const(24),
        k: Idx::Const(8),
        a: mat(x, Idx::Const(0), 8, 1),
        b: mat(y, Idx::Const(0), 24, 1),
        c: mat(o, c_off, 24, 1),
        alpha: 1.0,
        beta,
        batch,
        windows: None,
    };
    let t = LocalId(0);
    let at = Idx::Var(i) * 24 + Idx::Var(j);
    let carry = vec![
        Stmt::Gemm(gemm(None, 0.0, Idx::Const(0))),
        for_(
            i,
            Idx::N,
            false,
            vec![for_(
                j,
                24usize,
                false,
                vec![
                    store(
                        BufId(3),
                        at.clone(),
                        binary(BinOp::Add, load(o, at.clone()), local(t)),
                    ),
                    assign(t, load(o, at)),
                ],
            )],
        ),
    ];
    let mut ds = decls(40, 0, 24);
    ds[1] = decl("y", Size::fixed(8 * 24), BufferKind::Input);
    ds[2] = decl(
        "o",
        Size {
            per_batch: 24,
            fixed: 120,
        },
        BufferKind::Output,
    );
    ds.push(decl("d", Size::per_batch(24), BufferKind::Output));
    let p = program(
        "carry",
        ds.clone(),
        vec![kernel("k0", vec![x, y, o, BufId(3)], carry, 3, 1)],
    );
    check_gpu_schedule(&p, &[1, 33, 70]);

    // Σ_p A_p·B_p into one C (batch strides 0 for C, beta 1), and the same as a loop.
    let mut sum = gemm(None, 1.0, Idx::Const(0));
    sum.m = Idx::Const(5);
    sum.batch = Some((Idx::N, [Idx::Const(40), Idx::Const(0), Idx::Const(0)]));
    let p = program(
        "sum_batched",
        ds.clone(),
        vec![kernel(
            "k0",
            vec![x, y, o],
            vec![Stmt::Gemm(sum.clone())],
            3,
            0,
        )],
    );
    check_gpu_schedule(&p, &[1, 6]);
    let mut in_loop = sum.clone();
    in_loop.batch = None;
    in_loop.a.offset = Idx::Var(v) * 40;
    let body = vec![for_(v, 3usize, false, vec![Stmt::Gemm(in_loop.clone())])];
    let p = program(
        "sum_looped",
        ds.clone(),
        vec![kernel("k0", vec![x, y, o], body, 3, 0)],
    );
    check_gpu_schedule(&p, &[3, 6]);

    // Two products in one kernel; a product inside a parallel loop.
    let two = vec![
        Stmt::Gemm(in_loop.map_indices(&|i| i.map_vars(&|_| Idx::Const(1)))),
        Stmt::Gemm(sum.clone()),
    ];
    let p = program(
        "two_products",
        ds.clone(),
        vec![kernel("k0", vec![x, y, o], two, 3, 0)],
    );
    check_gpu_schedule(&p, &[3]);
    let mut per_row = in_loop.clone();
    per_row.c.offset = Idx::Var(v) * 120;
    let body = vec![for_(v, 3usize, true, vec![Stmt::Gemm(per_row)])];
    let mut ds_rows = ds.clone();
    ds_rows[2] = decl("o", Size::fixed(3 * 120), BufferKind::Output);
    let p = program(
        "parallel_products",
        ds_rows,
        vec![kernel("k0", vec![x, y, o], body, 3, 0)],
    );
    check_gpu_schedule(&p, &[3]);

    // A parallel loop over N - 300: no iterations at small batches.
    let body = vec![for_(
        i,
        Idx::N - Idx::Const(300),
        true,
        vec![store(o, Idx::Var(i), load(x, Idx::Var(i)))],
    )];
    let p = program(
        "empty",
        decls(4, 4, 4),
        vec![kernel("k0", vec![x, y, o], body, 3, 0)],
    );
    check_gpu_schedule(&p, &[1, 301]);
}
