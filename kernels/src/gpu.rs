//! GPU mapping of kernel IR: how each kernel is spread over a CUDA grid. The PTX
//! renderer translates what [`plan`] decides and the CUDA executor launches with
//! [`launch_dims`]; neither decides anything itself.
//!
//! The mapping (one rule per kernel shape, checked in this order):
//! - a kernel whose body is one top-level `parallel` loop is **grid-stride**: its loop
//!   variable starts at `blockIdx.x·blockDim.x + threadIdx.x` and advances by
//!   `blockDim.x·gridDim.x` while below the extent. Consecutive threads take consecutive
//!   iterations, so an elementwise kernel indexed by the loop variable is coalesced. Any
//!   grid size is correct; [`launch_dims`] picks one thread per iteration up to a cap.
//! - a kernel whose body is exactly one [`Stmt::Gemm`] is **one thread per output
//!   element**: the `count·m·n` elements of `C` are a grid-stride range; each thread
//!   computes its dot product over `k` with f32 fused multiply-adds.
//! - any other kernel (serial statements, reductions to a scalar, optimizer step
//!   counters) runs on **one thread** of one block: correct, and slow for big serial
//!   kernels; the fusion pass keeps such kernels small.
//!
//! Invariant: the mapping never changes what a kernel computes: every iteration of the
//! parallel loop (every element of `C`) is run by exactly one thread.
//! [`simulate_program`] runs a program thread by thread through this mapping so tests
//! can check that against the reference interpreter.

use crate::interp::{run_kernel_with, InterpError};
use crate::ir::{Gemm, Idx, Kernel, Program, Stmt, VarId};

/// Threads per block of every launch.
pub const BLOCK_THREADS: u32 = 256;

/// Blocks at most per launch (grid-stride loops cover the rest): 4 waves of 132 SMs
/// × 8 resident blocks is far below this, so it only bounds pathological sizes.
pub const MAX_BLOCKS: u32 = 65_535;

/// How one kernel runs on a GPU.
#[derive(Clone, Debug, PartialEq)]
pub enum Launch<'k> {
    /// One thread runs the whole body.
    Single,
    /// The top-level parallel loop becomes a grid-stride loop over `var`.
    GridStride {
        var: VarId,
        extent: &'k Idx,
        body: &'k [Stmt],
    },
    /// One thread per element of the product's output.
    GemmPerElement(&'k Gemm),
}

/// A kernel with its launch decision.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuKernel<'k> {
    pub kernel: &'k Kernel,
    pub launch: Launch<'k>,
}

impl GpuKernel<'_> {
    /// The number of work items (loop iterations, output elements; 1 for a single-thread
    /// kernel) as an index expression in `N`.
    pub fn work(&self) -> Idx {
        match &self.launch {
            Launch::Single => Idx::Const(1),
            Launch::GridStride { extent, .. } => (*extent).clone(),
            Launch::GemmPerElement(g) => gemm_elements(g),
        }
    }
}

/// `count·m·n`, the number of output elements of a (batched) product.
pub fn gemm_elements(g: &Gemm) -> Idx {
    let count = g.batch.as_ref().map_or(Idx::Const(1), |(c, _)| c.clone());
    count * g.m.clone() * g.n.clone()
}

/// Decides how `k` runs on a GPU (see the module doc).
pub fn plan(k: &Kernel) -> GpuKernel<'_> {
    let launch = match k.body.as_slice() {
        [Stmt::Loop {
            var,
            extent,
            body,
            parallel: true,
        }] => Launch::GridStride {
            var: *var,
            extent,
            body,
        },
        [Stmt::Gemm(g)] => Launch::GemmPerElement(g),
        _ => Launch::Single,
    };
    GpuKernel { kernel: k, launch }
}

/// Evaluates an index expression without loop variables for batch size `n`; `None`
/// when it reads a loop variable or divides by a non-positive constant.
pub fn eval_idx(i: &Idx, n: i64) -> Option<i64> {
    Some(match i {
        Idx::Const(c) => *c,
        Idx::Var(_) => return None,
        Idx::N => n,
        Idx::Add(a, b) => eval_idx(a, n)?.wrapping_add(eval_idx(b, n)?),
        Idx::Sub(a, b) => eval_idx(a, n)?.wrapping_sub(eval_idx(b, n)?),
        Idx::Mul(a, b) => eval_idx(a, n)?.wrapping_mul(eval_idx(b, n)?),
        Idx::Div(a, c) if *c > 0 => eval_idx(a, n)?.div_euclid(*c),
        Idx::Rem(a, c) if *c > 0 => eval_idx(a, n)?.rem_euclid(*c),
        Idx::Div(..) | Idx::Rem(..) => return None,
        Idx::Min(a, b) => eval_idx(a, n)?.min(eval_idx(b, n)?),
        Idx::Max(a, b) => eval_idx(a, n)?.max(eval_idx(b, n)?),
    })
}

/// `(blocks, threads per block)` for `work` items: one thread per item up to
/// [`MAX_BLOCKS`] blocks, at least one block.
pub fn launch_dims(work: i64) -> (u32, u32) {
    let work = work.max(1) as u64;
    let blocks = work.div_ceil(u64::from(BLOCK_THREADS));
    (blocks.min(u64::from(MAX_BLOCKS)) as u32, BLOCK_THREADS)
}

/// Runs `program` the way a GPU would under [`plan`]: every kernel is launched on the
/// grid [`launch_dims`] gives (with `max_blocks` blocks at most, so small caps exercise
/// the grid-stride loops), and every simulated thread runs the iterations its global
/// thread id selects, one thread after another, with its own locals. The result must
/// equal [`crate::interp::run`]'s.
pub fn simulate_program(
    program: &Program,
    buffers: &mut [Vec<f32>],
    n: usize,
    max_blocks: u32,
) -> Result<(), InterpError> {
    crate::interp::check_buffers(program, buffers, n)?;
    for k in &program.kernels {
        simulate_kernel(k, buffers, n, max_blocks)?;
    }
    Ok(())
}

fn simulate_kernel(
    k: &Kernel,
    buffers: &mut [Vec<f32>],
    n: usize,
    max_blocks: u32,
) -> Result<(), InterpError> {
    let g = plan(k);
    let work = eval_idx(&g.work(), n as i64).ok_or_else(|| {
        InterpError(format!(
            "kernel `{}`: launch size depends on a loop variable",
            k.name
        ))
    })?;
    let (blocks, threads) = match g.launch {
        Launch::Single => (1, 1),
        _ => {
            let (b, t) = launch_dims(work);
            (b.min(max_blocks.max(1)), t)
        }
    };
    let stride = i64::from(blocks) * i64::from(threads);
    for block in 0..blocks {
        for thread in 0..threads {
            let tid = i64::from(block) * i64::from(threads) + i64::from(thread);
            match &g.launch {
                Launch::Single => run_kernel_with(k, &k.body, &[], buffers, n)?,
                Launch::GridStride { var, body, .. } => {
                    let mut i = tid;
                    while i < work {
                        run_kernel_with(k, body, &[(*var, i)], buffers, n)?;
                        i += stride;
                    }
                }
                Launch::GemmPerElement(gemm) => {
                    let mut e = tid;
                    while e < work {
                        crate::interp::gemm_element(k, gemm, e, buffers, n)?;
                        e += stride;
                    }
                }
            }
        }
    }
    Ok(())
}
