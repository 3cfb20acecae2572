//! Interpreter, printer and validator tests on hand-built kernels.

use crate::build::*;
use crate::interp::run;
use crate::ir::*;
use crate::print::print_program;
use crate::samples::{bias_relu, gemm_transposed, row_sum};

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
    // C[2,3] = A[2,4] · Bᵀ where B is stored [3,4]; then D = 0.5·A·Bᵀ + 2·D.
    let p = gemm_transposed();
    let av: Vec<f32> = (0..8).map(|v| v as f32).collect();
    let bv: Vec<f32> = (0..12).map(|v| (v as f32) * 0.5).collect();
    let mut bufs = vec![av.clone(), bv.clone(), vec![0.0; 6], vec![1.0; 6]];
    run(&p, &mut bufs, 2).unwrap();
    for i in 0..2 {
        for j in 0..3 {
            let want: f32 = (0..4).map(|l| av[i * 4 + l] * bv[j * 4 + l]).sum();
            assert_eq!(bufs[2][i * 3 + j], want);
            assert_eq!(bufs[3][i * 3 + j], 0.5 * want + 2.0);
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
    // A pinned value, computed independently (splitmix64 over the four words, the top 24
    // bits as the fraction).
    assert_eq!(rand_uniform(7, 3, 1, 42), 11_090_180.0 / 16_777_216.0);
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

/// A one-block GPU kernel over buffers `x` (input, `len`) and `out` (output, 4).
fn gpu_program(body: Vec<Stmt>, shared: u32, len: usize, locals: u32) -> Program {
    let mut k = kernel("k", vec![BufId(0), BufId(1)], body, 2, locals);
    k.gpu = Some(GpuLaunch {
        threads: 64,
        grid: [Idx::Const(1), Idx::Const(1), Idx::Const(1)],
        shared: vec![SharedDecl {
            name: "tile".into(),
            len: shared,
        }],
    });
    program(
        "p",
        vec![
            decl("x", Size::fixed(len), BufferKind::Input),
            decl("out", Size::fixed(4), BufferKind::Output),
        ],
        vec![k],
    )
}

fn simulate(p: &Program, x: Vec<f32>) -> Result<Vec<f32>, String> {
    p.validate().map_err(|e| e.to_string())?;
    let mut bufs = vec![x, vec![0.0; 4]];
    crate::gpu::simulate_program(p, &mut bufs, 1).map_err(|e| e.0)?;
    Ok(bufs.pop().unwrap())
}

fn shared_store(index: Idx, value: Expr) -> Stmt {
    Stmt::SharedStore {
        buf: SharedId(0),
        index,
        value,
    }
}

fn shared_load(index: Idx) -> Expr {
    Expr::SharedLoad {
        buf: SharedId(0),
        index,
    }
}

fn thread_zero(body: Vec<Stmt>) -> Stmt {
    Stmt::If {
        conds: vec![Cond {
            a: Idx::Thread,
            op: CmpOp::Eq,
            b: Idx::Const(0),
        }],
        body,
    }
}

/// A block sum as the GPU schedule writes it: each thread loads one element, warps
/// reduce with butterfly shuffles, warp totals meet in shared memory after a barrier.
fn block_sum(barrier: bool) -> Program {
    let l = LocalId(0);
    let mut body = vec![assign(l, load(BufId(0), Idx::Thread))];
    for lanes in [16, 8, 4, 2, 1] {
        let partner = Expr::ShuffleXor { local: l, lanes };
        body.push(assign(l, binary(BinOp::Add, local(l), partner)));
    }
    body.push(Stmt::If {
        conds: vec![Cond {
            a: Idx::Thread.rem(32),
            op: CmpOp::Eq,
            b: Idx::Const(0),
        }],
        body: vec![shared_store(Idx::Thread.div(32), local(l))],
    });
    if barrier {
        body.push(Stmt::Barrier);
    }
    let total = binary(
        BinOp::Add,
        shared_load(Idx::Const(0)),
        shared_load(Idx::Const(1)),
    );
    body.push(thread_zero(vec![store(BufId(1), Idx::Const(0), total)]));
    gpu_program(body, 2, 64, 1)
}

#[test]
fn simulated_block_sum_with_shuffles_and_shared_memory_is_exact() {
    let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let out = simulate(&block_sum(true), x).unwrap();
    assert_eq!(out[0], (0..64).sum::<i32>() as f32);
}

#[test]
fn simulator_reports_a_read_of_shared_memory_written_since_the_last_barrier() {
    let e = simulate(&block_sum(false), vec![1.0; 64]).unwrap_err();
    assert!(
        e.contains("written by thread 32 since the last barrier"),
        "{e}"
    );
}

#[test]
fn simulator_reports_uninitialised_shared_memory() {
    // Threads write slots 0..32 only; thread 40 reads slot 40.
    let body = vec![
        Stmt::If {
            conds: vec![Cond {
                a: Idx::Thread,
                op: CmpOp::Lt,
                b: Idx::Const(32),
            }],
            body: vec![shared_store(Idx::Thread, Expr::Const(1.0))],
        },
        Stmt::Barrier,
        assign(LocalId(0), shared_load(Idx::Thread)),
    ];
    let e = simulate(&gpu_program(body, 64, 64, 1), vec![0.0; 64]).unwrap_err();
    assert!(
        e.contains("thread 32: reads s0 `tile`[32], which no thread"),
        "{e}"
    );
    assert!(e.contains("uninitialised shared memory"), "{e}");
}

#[test]
fn simulator_reports_an_overwrite_of_shared_memory_another_thread_read() {
    // Each thread reads its neighbour's slot, then overwrites its own: without a barrier
    // between, the neighbour may read the new value on a GPU.
    let write = |v: f32| shared_store(Idx::Thread, Expr::Const(v));
    let read = assign(LocalId(0), shared_load((Idx::Thread + 1).rem(64)));
    let racy = vec![write(1.0), Stmt::Barrier, read.clone(), write(2.0)];
    let e = simulate(&gpu_program(racy, 64, 64, 1), vec![0.0; 64]).unwrap_err();
    assert!(e.contains("a barrier is missing before the write"), "{e}");
    let fixed = vec![write(1.0), Stmt::Barrier, read, Stmt::Barrier, write(2.0)];
    simulate(&gpu_program(fixed, 64, 64, 1), vec![0.0; 64]).unwrap();
}

#[test]
fn simulator_reports_divergent_barriers_shuffles_and_conflicting_stores() {
    let divergent = vec![thread_zero(vec![Stmt::Barrier])];
    let e = simulate(&gpu_program(divergent, 1, 64, 1), vec![0.0; 64]).unwrap_err();
    assert!(
        e.contains("a barrier reached by 1 of the block's 64 threads"),
        "{e}"
    );
    let shuffle = Expr::ShuffleXor {
        local: LocalId(0),
        lanes: 1,
    };
    let partial = vec![thread_zero(vec![assign(LocalId(0), shuffle)])];
    let e = simulate(&gpu_program(partial, 1, 64, 1), vec![0.0; 64]).unwrap_err();
    assert!(e.contains("some lanes of warp 0 are inactive"), "{e}");
    let conflict = vec![store(BufId(1), Idx::Const(0), Expr::FromIdx(Idx::Thread))];
    let e = simulate(&gpu_program(conflict, 1, 64, 1), vec![0.0; 64]).unwrap_err();
    assert!(e.contains("both store b1[0] in one statement"), "{e}");
}

#[test]
fn launch_dims_evaluate_the_grid_and_reject_cpu_kernels_and_oversized_grids() {
    use crate::gpu::launch_dims;
    let mut p = block_sum(true);
    assert_eq!(launch_dims(&p.kernels[0], 7), Ok(([1, 1, 1], 64)));
    let k = &mut p.kernels[0];
    k.gpu.as_mut().unwrap().grid[0] = (Idx::N + 255).div(256);
    assert_eq!(launch_dims(k, 257), Ok(([2, 1, 1], 64)));
    assert_eq!(launch_dims(k, 0), Ok(([0, 1, 1], 64)));
    k.gpu.as_mut().unwrap().grid[1] = Idx::N;
    assert!(launch_dims(k, 70_000).unwrap_err().contains("grid axis 1"));
    k.gpu = None;
    assert!(launch_dims(k, 1).unwrap_err().contains("not a GPU kernel"));
}

#[test]
fn gpu_constructs_outside_gpu_kernels_are_invalid() {
    let mut p = block_sum(true);
    p.kernels[0].gpu = None;
    let e = p.validate().unwrap_err().to_string();
    assert!(e.contains("is not a GPU kernel"), "{e}");
}

#[test]
fn simulator_reports_global_races_between_blocks_and_unsynchronised_threads() {
    // Every block's thread 0 writes out[0]: blocks of one launch never synchronise.
    let mut p = gpu_program(
        vec![thread_zero(vec![store(
            BufId(1),
            Idx::Const(0),
            Expr::Const(1.0),
        )])],
        1,
        64,
        1,
    );
    p.kernels[0].gpu.as_mut().unwrap().grid[0] = Idx::Const(2);
    let e = simulate(&p, vec![0.0; 64]).unwrap_err();
    assert!(
        e.contains("blocks 0 and 1 both write b1[0] in one launch"),
        "{e}"
    );
    // Thread 0 writes out[1], thread 1 reads it: only a barrier between makes that safe.
    let write = thread_zero(vec![store(BufId(1), Idx::Const(1), Expr::Const(2.0))]);
    let read = Stmt::If {
        conds: vec![Cond {
            a: Idx::Thread,
            op: CmpOp::Eq,
            b: Idx::Const(1),
        }],
        body: vec![store(
            BufId(1),
            Idx::Const(2),
            load(BufId(1), Idx::Const(1)),
        )],
    };
    let racy = gpu_program(vec![write.clone(), read.clone()], 1, 64, 1);
    let e = simulate(&racy, vec![0.0; 64]).unwrap_err();
    assert!(
        e.contains("written by thread 0 since the last barrier"),
        "{e}"
    );
    let fixed = gpu_program(vec![write, Stmt::Barrier, read], 1, 64, 1);
    assert_eq!(simulate(&fixed, vec![0.0; 64]).unwrap()[2], 2.0);
}
