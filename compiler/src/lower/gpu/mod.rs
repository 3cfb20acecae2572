//! The GPU schedule: turns each CPU-shaped kernel of a step into GPU kernels, written for
//! one thread of a grid (`Kernel::gpu` set), that the PTX renderer translates 1:1 and
//! `nnc_kernels::gpu` simulates. Every decision about threads, blocks and shared memory
//! is made here; the renderer decides nothing.
//!
//! One rule per kernel shape, tried in this order:
//! - **product** (`gemm`, then an optional elementwise epilogue): a tiled kernel. Each
//!   block computes a 64×64 tile of `C` with 256 threads; each thread owns a 4×4 register
//!   block (rows `ty + 16·i`, columns `tx + 16·j`: conflict-free shared reads, coalesced
//!   stores). Products that would make fewer than 128 such tiles at batch 128 use 32×32
//!   tiles with 2×2 register blocks instead (four times the blocks). `k` advances 16 at a
//!   time through two shared tiles (padded to 65 floats per row against bank conflicts),
//!   loaded by all threads in the order that makes the global reads consecutive for the
//!   operand's layout, zero-filled past the edges, between two barriers. A product whose
//!   `A` is a windows view of an image (an implicit GEMM: a convolution's forward pass,
//!   weight or input gradient; no `im2col` matrix exists) loads its `A` tiles straight
//!   from the image through the window geometry, k fastest, zero where a window reads
//!   padding or, for an input gradient, falls between the strides (`windows.rs`). The
//!   epilogue runs on each element right after it is stored when it reads and writes
//!   only that element of every buffer it writes; otherwise it becomes a kernel of its
//!   own. The grid is `(⌈n/64⌉, ⌈m/64⌉, count)`; loops around a product fold into the
//!   count, unless two of its z-blocks would write the same elements of `C` (a sum of
//!   products), in which case each block runs them in order.
//! - **parallel loop**: when an inner loop of the body is long (≥ 128 iterations at batch
//!   128) and either reads at unit stride or the parallel loop is short (< 128
//!   iterations, e.g. a bias gradient's columns), one block of 128 threads per iteration,
//!   which reduce cooperatively (below); otherwise one thread per iteration (consecutive
//!   threads, consecutive iterations: coalesced for row-major data).
//! - **serial kernel** whose body is one loop nest of independent iterations (each
//!   buffer it writes is read and written at one index, injective over the nest): one
//!   thread per iteration of the whole nest, flattened.
//! - **serial kernel** with a long top-level loop: one block of 256 threads that runs it
//!   cooperatively: thread `t` takes iterations `t, t + 256, …`; each accumulator
//!   (`acc = acc + e`, `max`, `min`) is reduced over the block with warp shuffles
//!   (`shfl_xor` 16, 8, 4, 2, 1), one shared slot per warp and a barrier, after which
//!   every thread holds the total; stores outside loops are made by thread 0, and a
//!   barrier follows every loop or store whose results later statements read.
//! - anything else runs on one thread.
//!
//! Invariant: the schedule never changes what a kernel computes beyond the order of
//! floating-point sums: `compiler/src/lower/tests.rs` simulates every example's GPU
//! program against the reference interpreter of its CPU-shaped program.

mod analysis;
mod build;
mod elementwise;
mod gemm;
mod reduce;
mod windows;

use nnc_kernels::gpu::eval_idx;
use nnc_kernels::ir::{Idx, Kernel, LocalId, Program, Stmt, VarId};
use nnc_kernels::simplify::simplify_kernel;

use analysis::{
    for_each_assigned, gemm_nest, holds_gemm, is_long, is_long_loop, product_loops_fold,
};
use build::{global_thread, gpu_kernel, lt, one, subst, Fresh};
use elementwise::{elementwise, flatten_independent_nest};
use gemm::gemm_kernels;
pub use gemm::{Tiling, GEMM_THREADS, LARGE_TILES, SMALL_TILES, TILE_K};
use reduce::cooperate;

/// Threads per block of elementwise kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Threads per block of a kernel reduced cooperatively by one block.
pub const BLOCK_REDUCE_THREADS: u32 = 256;
/// Threads per block when each block reduces one row.
pub const ROW_REDUCE_THREADS: u32 = 128;

/// The batch size the schedule's size heuristics assume for `N`.
const NOMINAL_BATCH: i64 = 128;
/// A loop this long (at the nominal batch) is worth a block of threads.
const LONG_LOOP: i64 = 128;
/// A parallel loop with fewer iterations than this (at the nominal batch) cannot keep a
/// GPU busy with one thread per iteration.
const FEW_ITERATIONS: i64 = 128;

/// The GPU program of a (validated, CPU-shaped) step program; an error (internal: the
/// lowering never produces such kernels) when a serial kernel holding a product cannot
/// be cut into kernels of their own.
pub fn schedule(p: &Program) -> Result<Program, String> {
    let mut kernels = Vec::with_capacity(p.kernels.len());
    for k in &p.kernels {
        kernels.extend(schedule_kernel(k)?);
    }
    // The index arithmetic the schedule writes (tiles, strided block loops) is
    // simplified; the lowering's own indices are left as they are, because simplified,
    // LeNet's convolution gradient keeps so many index terms live that ptxas spills.
    for k in &mut kernels {
        if k.gpu.as_ref().is_some_and(|g| !g.shared.is_empty()) {
            simplify_kernel(k);
        }
    }
    Ok(Program {
        kernels,
        ..p.clone()
    })
}

fn schedule_kernel(k: &Kernel) -> Result<Vec<Kernel>, String> {
    Ok(match k.body.as_slice() {
        [Stmt::Gemm(g), rest @ ..] if !rest.iter().any(holds_gemm) => {
            gemm_kernels(k, k.name.clone(), g, &[], rest)?
        }
        body if body.iter().any(holds_gemm) => serial_with_products(k, body)?,
        [Stmt::Loop {
            var,
            extent,
            body,
            parallel: true,
        }] => vec![parallel_kernel(k, *var, extent, body)],
        body => vec![serial_kernel(k, body)],
    })
}

/// A serial kernel with products among its statements becomes a kernel per product (its
/// enclosing loops folded into the grid) and one per run of other statements, in order.
/// Locals do not survive a kernel boundary, so no two parts may share one.
fn serial_with_products(k: &Kernel, body: &[Stmt]) -> Result<Vec<Kernel>, String> {
    let fail = |why: &str| {
        Err(format!(
            "cannot schedule kernel `{}` for the GPU: {why}",
            k.name
        ))
    };
    let mut parts: Vec<Vec<Stmt>> = Vec::new();
    let mut run = Vec::new();
    for s in body {
        if holds_gemm(s) {
            if !run.is_empty() {
                parts.push(std::mem::take(&mut run));
            }
            parts.push(vec![s.clone()]);
        } else {
            run.push(s.clone());
        }
    }
    if !run.is_empty() {
        parts.push(run);
    }
    let mut owner: std::collections::HashMap<LocalId, usize> = Default::default();
    for (i, part) in parts.iter().enumerate() {
        let mut locals = Vec::new();
        for s in part {
            s.for_each_value(&mut |e| e.for_each_local(&mut |l| locals.push(l)));
            for_each_assigned(s, &mut |l| locals.push(l));
        }
        for l in locals {
            if *owner.entry(l).or_insert(i) != i {
                return fail("a local crosses a product");
            }
        }
    }
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let name = if i == 0 {
            k.name.clone()
        } else {
            format!("{}_{i}", k.name)
        };
        match part.as_slice() {
            [s] if holds_gemm(s) => {
                let Some((loops, g)) = gemm_nest(s) else {
                    return fail("a product inside loops with other statements");
                };
                if !product_loops_fold(&loops, g) {
                    return fail("a product whose loops do not fold into the grid");
                }
                out.extend(gemm_kernels(k, name, g, &loops, &[])?);
            }
            _ => out.push(serial_kernel_named(k, name, part)),
        }
    }
    Ok(out)
}

fn parallel_kernel(k: &Kernel, var: VarId, extent: &Idx, body: &[Stmt]) -> Kernel {
    let mut fresh = Fresh::new(k);
    // A block per iteration when an inner loop is long and either reads consecutively
    // (rows of a row-major matrix) or the iterations are too few to occupy threads
    // (a bias gradient over 10 columns sums N strided values per column).
    let few = eval_idx(extent, NOMINAL_BATCH).is_some_and(|e| e < FEW_ITERATIONS);
    if body.iter().any(|s| is_long_loop(s, few)) {
        let row = subst(body, var, &Idx::Block(0));
        if let Some(b) = cooperate(&row, ROW_REDUCE_THREADS, &mut fresh) {
            let launch = fresh.launch(ROW_REDUCE_THREADS, [extent.clone(), one(), one()]);
            return gpu_kernel(k, k.name.clone(), b, &fresh, launch);
        }
        fresh = Fresh::new(k);
    }
    let gid = global_thread(ELEMENTWISE_THREADS);
    elementwise(
        k,
        k.name.clone(),
        extent,
        subst(body, var, &gid),
        &mut fresh,
    )
}

fn serial_kernel(k: &Kernel, body: &[Stmt]) -> Kernel {
    serial_kernel_named(k, k.name.clone(), body)
}

fn serial_kernel_named(k: &Kernel, name: String, body: &[Stmt]) -> Kernel {
    let mut fresh = Fresh::new(k);
    if let [nest @ Stmt::Loop { .. }] = body {
        if let Some((work, flat)) = flatten_independent_nest(nest) {
            return elementwise(k, name, &work, flat, &mut fresh);
        }
    }
    if body
        .iter()
        .any(|s| matches!(s, Stmt::Loop { extent, .. } if is_long(extent)))
    {
        if let Some(b) = cooperate(body, BLOCK_REDUCE_THREADS, &mut fresh) {
            let launch = fresh.launch(BLOCK_REDUCE_THREADS, [one(), one(), one()]);
            return gpu_kernel(k, name, b, &fresh, launch);
        }
        fresh = Fresh::new(k);
    }
    let single = vec![Stmt::If {
        conds: vec![lt(Idx::Thread, one())],
        body: body.to_vec(),
    }];
    let launch = fresh.launch(32, [one(), one(), one()]);
    gpu_kernel(k, name, single, &fresh, launch)
}
