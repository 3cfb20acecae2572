//! Interpreter, printer and validator tests on hand-built kernels.

use crate::build::*;
use crate::interp::run;
use crate::ir::*;
use crate::print::print_program;
use crate::samples::{bias_relu, row_sum};

#[test]
fn elementwise_kernel_broadcasts_the_bias() {
    let p = bias_relu();
    p.validate().unwrap();
    let mut bufs = vec![
        vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0],
        vec![0.5, 0.5, -10.0],
        vec![0.0; 6],
    ];
    run(&p, &mut bufs, 2).unwrap();
    assert_eq!(bufs[2], vec![1.5, 0.0, 0.0, 0.0, 5.5, 0.0]);
}

#[test]
fn printer_is_stable_and_readable() {
    let text = print_program(&bias_relu());
    assert_eq!(
        text,
        "program bias_relu  # 1 kernels, arena 0 floats\n\
         \x20 b0: input [3*N] \"x\"\n\
         \x20 b1: inout [3] \"bias\"\n\
         \x20 b2: output [3*N] \"out\"\n\
         # bias + relu\n\
         kernel k0(b0, b1, b2) {\n\
         \x20 parallel for i0 in 0..N {\n\
         \x20   for i1 in 0..3 {\n\
         \x20     b2[i0*3 + i1] = max((b0[i0*3 + i1] + b1[i1]), 0.0)\n\
         \x20   }\n\
         \x20 }\n\
         }\n"
    );
}

#[test]
fn row_sum_uses_a_local_accumulator() {
    // out[i] = sum_j x[i, j] over [N, 4].
    let p = row_sum();
    p.validate().unwrap();
    let mut bufs = vec![(1..=8).map(|v| v as f32).collect(), vec![0.0; 2]];
    run(&p, &mut bufs, 2).unwrap();
    assert_eq!(bufs[1], vec![10.0, 26.0]);
}

#[test]
fn gemm_with_transposed_operand_matches_naive_product() {
    // C[2,3] = A[2,4] · Bᵀ where B is stored [3,4].
    let (a, b, c) = (BufId(0), BufId(1), BufId(2));
    let m = |buf, rs: i64, cs: i64| MatRef {
        buf,
        offset: Idx::Const(0),
        row_stride: rs.into(),
        col_stride: cs.into(),
    };
    let gemm = Stmt::Gemm(Gemm {
        m: 2i64.into(),
        n: 3i64.into(),
        k: 4i64.into(),
        a: m(a, 4, 1),
        b: m(b, 1, 4),
        c: m(c, 3, 1),
        alpha: 1.0,
        beta: 0.0,
        batch: None,
    });
    let p = program(
        "g",
        vec![
            decl("a", Size::fixed(8), BufferKind::Input),
            decl("b", Size::fixed(12), BufferKind::Input),
            decl("c", Size::fixed(6), BufferKind::Output),
        ],
        vec![kernel("k0", vec![a, b, c], vec![gemm], 0, 0)],
    );
    let av: Vec<f32> = (0..8).map(|v| v as f32).collect();
    let bv: Vec<f32> = (0..12).map(|v| (v as f32) * 0.5).collect();
    let mut bufs = vec![av.clone(), bv.clone(), vec![0.0; 6]];
    run(&p, &mut bufs, 1).unwrap();
    for i in 0..2 {
        for j in 0..3 {
            let want: f32 = (0..4).map(|l| av[i * 4 + l] * bv[j * 4 + l]).sum();
            assert_eq!(bufs[2][i * 3 + j], want);
        }
    }
}

#[test]
fn out_of_bounds_access_is_an_error_naming_kernel_and_buffer() {
    let mut p = bias_relu();
    p.buffers[0].len = Size::per_batch(3);
    let mut bufs = vec![vec![0.0; 3], vec![0.0; 3], vec![0.0; 6]];
    // N = 2 but x holds only one row: the second row reads out of bounds.
    let err = run(&p, &mut bufs, 2).unwrap_err();
    assert!(err.0.contains("holds 3 floats, needs 6"), "{err}");
    p.buffers[0].len = Size::fixed(3);
    let err = run(&p, &mut bufs, 2).unwrap_err();
    assert!(
        err.0.contains("kernel `k0`") && err.0.contains("b0"),
        "{err}"
    );
}

#[test]
fn validation_rejects_unbound_variables_and_unlisted_buffers() {
    let mut p = bias_relu();
    p.kernels[0].params.retain(|b| *b != BufId(1));
    assert!(p.validate().is_err());
    let mut p = bias_relu();
    p.kernels[0].body = vec![Stmt::Store {
        buf: BufId(2),
        index: VarId(0).into(),
        value: constant(1.0),
    }];
    assert!(p.validate().unwrap_err().0.contains("unbound"));
}

#[test]
fn rand_is_uniform_in_unit_interval_and_deterministic() {
    let xs: Vec<f32> = (0..10_000).map(|c| rand_uniform(7, 3, 1, c)).collect();
    assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / xs.len() as f64;
    assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    assert_eq!(rand_uniform(7, 3, 1, 42), rand_uniform(7, 3, 1, 42));
    assert_ne!(rand_uniform(7, 3, 1, 42), rand_uniform(7, 3, 2, 42));
}

#[test]
fn every_sample_program_is_valid_and_runs() {
    for p in crate::samples::all() {
        p.validate().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        let mut bufs = crate::samples::inputs(&p, 5);
        run(&p, &mut bufs, 5).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
}

#[test]
fn gpu_plan_maps_parallel_loops_gemms_and_serial_kernels() {
    use crate::gpu::{eval_idx, plan, Launch};
    let p = crate::samples::bias_relu();
    let g = plan(&p.kernels[0]);
    assert!(matches!(g.launch, Launch::GridStride { .. }));
    assert_eq!(eval_idx(&g.work(), 7), Some(7));
    let p = crate::samples::gemm_batched();
    let g = plan(&p.kernels[0]);
    assert!(matches!(g.launch, Launch::GemmPerElement(_)));
    assert_eq!(eval_idx(&g.work(), 5), Some(5 * 2 * 2));
    let p = crate::samples::serial_step();
    let g = plan(&p.kernels[0]);
    assert_eq!(g.launch, Launch::Single);
    assert_eq!(eval_idx(&g.work(), 5), Some(1));
}

#[test]
fn launch_dims_cover_the_work_with_one_thread_per_item_up_to_the_cap() {
    use crate::gpu::{launch_dims, BLOCK_THREADS, MAX_BLOCKS};
    assert_eq!(launch_dims(0), (1, BLOCK_THREADS));
    assert_eq!(launch_dims(256), (1, BLOCK_THREADS));
    assert_eq!(launch_dims(257), (2, BLOCK_THREADS));
    assert_eq!(launch_dims(i64::MAX), (MAX_BLOCKS, BLOCK_THREADS));
}

/// The GPU mapping computes what the reference interpreter computes, both with one
/// thread per work item and with a single block whose threads stride over the work.
#[test]
fn gpu_simulation_matches_the_interpreter_on_every_sample() {
    for p in crate::samples::all() {
        for n in [1, 5, 300] {
            let mut want = crate::samples::inputs(&p, n);
            run(&p, &mut want, n).unwrap();
            for max_blocks in [1, u32::MAX] {
                let mut got = crate::samples::inputs(&p, n);
                crate::gpu::simulate_program(&p, &mut got, n, max_blocks)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.name));
                for (b, (w, g)) in want.iter().zip(&got).enumerate() {
                    let same = w.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{} n={n} blocks≤{max_blocks}: b{b} differs", p.name);
                }
            }
        }
    }
}
