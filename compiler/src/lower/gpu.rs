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
//!   tiles with 2×2 register blocks instead (four times the blocks). `k` advances 16 at a time through two shared tiles (padded to 65 floats per
//!   row against bank conflicts), loaded by all threads in the order that makes the global
//!   reads consecutive for the operand's layout, zero-filled past the edges, between two
//!   barriers. The epilogue runs on each element right after it is stored when it reads
//!   and writes only that element of every buffer it writes; otherwise it becomes a
//!   kernel of its own. The grid is `(⌈n/64⌉, ⌈m/64⌉, count)`; loops around a product fold
//!   into the count, unless two of its z-blocks would write the same elements of `C` (a
//!   sum of products), in which case each block runs them in order.
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

use std::collections::HashSet;

use nnc_kernels::build::{assign, for_, store};
use nnc_kernels::gpu::eval_idx;
use nnc_kernels::ir::{
    BinOp, BufId, CmpOp, Cond, Expr, Gemm, GpuLaunch, Idx, Kernel, LocalId, Program, SharedDecl,
    SharedId, Stmt, VarId,
};
use nnc_kernels::simplify::simplify_kernel;

/// Threads per block of elementwise kernels.
pub const ELEMENTWISE_THREADS: u32 = 256;
/// Threads per block of a kernel reduced cooperatively by one block.
pub const BLOCK_REDUCE_THREADS: u32 = 256;
/// Threads per block when each block reduces one row.
pub const ROW_REDUCE_THREADS: u32 = 128;
/// The tiled product: a `tile × tile` piece of `C` per block, `TILE_K` deep slices of
/// `A` and `B` per step, `GEMM_THREADS` threads (16 × 16) with a `reg × reg` register
/// block each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub tile: i64,
    pub reg: i64,
}

/// 64×64 tiles, 4×4 register blocks: the most reuse per load.
pub const LARGE_TILES: Tiling = Tiling { tile: 64, reg: 4 };
/// 32×32 tiles, 2×2 register blocks: four times the blocks, for products too small to
/// fill the GPU with large tiles.
pub const SMALL_TILES: Tiling = Tiling { tile: 32, reg: 2 };
/// Below this many large tiles (at the nominal batch) a product uses small tiles: a GPU
/// has 100+ multiprocessors, each wanting a block or more.
const FEW_TILES: i64 = 128;
pub const TILE_K: i64 = 16;
pub const GEMM_THREADS: u32 = 256;

impl Tiling {
    /// Threads along a tile's columns (and rows).
    fn threads_per_side(self) -> i64 {
        self.tile / self.reg
    }

    /// Shared tile rows are padded by one float so that a warp's column reads hit
    /// distinct banks.
    fn pitch(self) -> i64 {
        self.tile + 1
    }

    /// The tiling for a product with `m × n` outputs `z` times (at the nominal batch).
    fn for_product(m: &Idx, n: &Idx, z: &Idx) -> Tiling {
        let tiles = |t: i64| {
            let e = |i: &Idx| eval_idx(i, NOMINAL_BATCH);
            Some((e(m)? + t - 1) / t * ((e(n)? + t - 1) / t) * e(z)?.max(1))
        };
        match tiles(LARGE_TILES.tile) {
            Some(count) if count < FEW_TILES => SMALL_TILES,
            _ => LARGE_TILES,
        }
    }
}
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

fn holds_gemm(s: &Stmt) -> bool {
    let mut found = false;
    s.visit(&mut |s| found |= matches!(s, Stmt::Gemm(_)));
    found
}

/// `for v0 { for v1 { … gemm } }`: the loops (outermost first) and the product.
fn gemm_nest(s: &Stmt) -> Option<(Vec<(VarId, Idx)>, &Gemm)> {
    let mut loops = Vec::new();
    let mut cur = s;
    loop {
        match cur {
            Stmt::Gemm(g) => return Some((loops, g)),
            Stmt::Loop {
                var, extent, body, ..
            } if body.len() == 1 => {
                loops.push((*var, extent.clone()));
                cur = &body[0];
            }
            _ => return None,
        }
    }
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

/// Whether the loops around a product fold into the grid: every extent but the
/// outermost, and the batch count when there are loops, are constants.
fn product_loops_fold(loops: &[(VarId, Idx)], g: &Gemm) -> bool {
    let constant = |i: &Idx| matches!(i, Idx::Const(_));
    let count_ok = loops.is_empty() || g.batch.as_ref().is_none_or(|(c, _)| constant(c));
    // The grid is sized by m, n and the count: they may not move with the loops.
    let fixed = |i: &Idx| loops.iter().all(|(v, _)| i.stride(*v) == Some(0));
    let sizes_fixed = [&g.m, &g.n, &g.k].into_iter().all(fixed)
        && g.batch
            .as_ref()
            .is_none_or(|(c, st)| fixed(c) && st.iter().all(fixed))
        && [&g.a, &g.b, &g.c]
            .iter()
            .all(|r| fixed(&r.row_stride) && fixed(&r.col_stride));
    count_ok && sizes_fixed && loops.iter().skip(1).all(|(_, e)| constant(e))
}

/// Calls `f` on every local a statement assigns (nested ones included).
fn for_each_assigned(s: &Stmt, f: &mut impl FnMut(LocalId)) {
    s.visit(&mut |s| {
        if let Stmt::Assign { local, .. } = s {
            f(*local);
        }
    });
}

/// A kernel like `k` with a new body and launch.
fn gpu_kernel(
    k: &Kernel,
    name: String,
    body: Vec<Stmt>,
    fresh: &Fresh,
    launch: GpuLaunch,
) -> Kernel {
    Kernel {
        name,
        params: k.params.clone(),
        body,
        num_vars: fresh.vars,
        num_locals: fresh.locals,
        note: k.note.clone(),
        gpu: Some(launch),
    }
}

/// Allocates new loop variables, locals and shared arrays for a kernel being scheduled.
struct Fresh {
    vars: u32,
    locals: u32,
    shared: Vec<SharedDecl>,
}

impl Fresh {
    fn new(k: &Kernel) -> Fresh {
        Fresh {
            vars: k.num_vars,
            locals: k.num_locals,
            shared: Vec::new(),
        }
    }

    fn var(&mut self) -> VarId {
        self.vars += 1;
        VarId(self.vars - 1)
    }

    fn local(&mut self) -> LocalId {
        self.locals += 1;
        LocalId(self.locals - 1)
    }

    fn shared(&mut self, name: String, len: i64) -> SharedId {
        self.shared.push(SharedDecl {
            name,
            len: len as u32,
        });
        SharedId(self.shared.len() as u32 - 1)
    }

    fn launch(&mut self, threads: u32, grid: [Idx; 3]) -> GpuLaunch {
        GpuLaunch {
            threads,
            grid,
            shared: std::mem::take(&mut self.shared),
        }
    }
}

fn lt(a: Idx, b: Idx) -> Cond {
    Cond {
        a,
        op: CmpOp::Lt,
        b,
    }
}

fn ceil_div(a: Idx, d: i64) -> Idx {
    (a + (d - 1)).div(d)
}

fn one() -> Idx {
    Idx::Const(1)
}

/// `Block(0)·threads + Thread`, the global index of a thread on a one-dimensional grid.
fn global_thread(threads: u32) -> Idx {
    Idx::Block(0) * i64::from(threads) + Idx::Thread
}

/// `body` with loop variable `var` replaced by `by`.
fn subst(body: &[Stmt], var: VarId, by: &Idx) -> Vec<Stmt> {
    let f = |i: &Idx| i.map_vars(&|v| if v == var { by.clone() } else { Idx::Var(v) });
    body.iter().map(|s| s.map_indices(&f)).collect()
}

/// One thread per element of a `work`-long range: `if gid < work { body(gid) }`.
fn elementwise(k: &Kernel, name: String, work: &Idx, body: Vec<Stmt>, fresh: &mut Fresh) -> Kernel {
    let t = ELEMENTWISE_THREADS;
    let guarded = vec![Stmt::If {
        conds: vec![lt(global_thread(t), work.clone())],
        body,
    }];
    let launch = fresh.launch(t, [ceil_div(work.clone(), i64::from(t)), one(), one()]);
    gpu_kernel(k, name, guarded, fresh, launch)
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

/// Whether a loop of this extent is long enough to spread over a block.
fn is_long(extent: &Idx) -> bool {
    eval_idx(extent, NOMINAL_BATCH).is_some_and(|e| e >= LONG_LOOP)
}

/// A long loop that reads some buffer at unit stride in its variable (any stride when
/// `any_stride`).
fn is_long_loop(s: &Stmt, any_stride: bool) -> bool {
    let Stmt::Loop {
        var, extent, body, ..
    } = s
    else {
        return false;
    };
    let mut unit = false;
    for s in body {
        s.for_each_value(&mut |e| e.for_each_load(&mut |_, i| unit |= i.stride(*var) == Some(1)));
    }
    is_long(extent) && (unit || any_stride)
}

/// Every `(buffer, index)` a statement stores to, and whether it holds anything but
/// loops, assignments and stores.
fn stores_of(s: &Stmt, out: &mut Vec<(BufId, Idx)>) -> bool {
    match s {
        Stmt::Loop { body, .. } => body.iter().all(|s| stores_of(s, out)),
        Stmt::Store { buf, index, .. } => {
            out.push((*buf, index.clone()));
            true
        }
        Stmt::Assign { .. } => true,
        _ => false,
    }
}

fn loads_of(s: &Stmt) -> Vec<(BufId, Idx)> {
    let mut out = Vec::new();
    s.for_each_value(&mut |e| e.for_each_load(&mut |b, i| out.push((b, i.clone()))));
    out
}

/// A perfect loop nest `for v0 { for v1 { … straight-line body } }` whose iterations are
/// independent, as `(iterations, body)` with the variables recovered from one flat index
/// `gid` by division (all extents but the outermost constant).
fn flatten_independent_nest(s: &Stmt) -> Option<(Idx, Vec<Stmt>)> {
    let mut vars: Vec<(VarId, Idx)> = Vec::new();
    let mut cur = s;
    let body = loop {
        match cur {
            Stmt::Loop {
                var, extent, body, ..
            } => {
                vars.push((*var, extent.clone()));
                match body.as_slice() {
                    [inner @ Stmt::Loop { .. }] => cur = inner,
                    b => break b,
                }
            }
            _ => return None,
        }
    };
    if !body
        .iter()
        .all(|s| matches!(s, Stmt::Assign { .. } | Stmt::Store { .. }))
    {
        return None;
    }
    if !locals_private(body) {
        return None;
    }
    let inner: Vec<i64> = vars[1..]
        .iter()
        .map(|(_, e)| match e {
            Idx::Const(c) if *c > 0 => Some(*c),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if !iterations_write_disjoint(body, &vars, &inner) {
        return None;
    }
    let mut work = vars[0].1.clone();
    for &e in &inner {
        work = work * e;
    }
    // v_last = gid % e_last, v_{j} = (gid / Π_{>j} e) % e_j, v0 = gid / Π e.
    let gid = global_thread(ELEMENTWISE_THREADS);
    let mut flat = body.to_vec();
    let mut div = 1i64;
    for (j, (var, _)) in vars.iter().enumerate().rev() {
        let q = gid.clone().div(div);
        let value = if j == 0 { q } else { q.rem(inner[j - 1]) };
        flat = subst(&flat, *var, &value);
        if j > 0 {
            div *= inner[j - 1];
        }
    }
    Some((work, flat))
}

/// Whether every local a straight-line body reads was assigned earlier in it (so that
/// no value flows from one iteration to the next).
fn locals_private(body: &[Stmt]) -> bool {
    let mut assigned = HashSet::new();
    for s in body {
        if let Stmt::Assign { value, .. } | Stmt::Store { value, .. } = s {
            let mut ok = true;
            value.for_each_local(&mut |l| ok &= assigned.contains(&l));
            if !ok {
                return false;
            }
        }
        if let Stmt::Assign { local, .. } = s {
            assigned.insert(*local);
        }
    }
    true
}

/// Whether the iterations of a nest over `vars` (inner extents `inner`) touch disjoint
/// elements of every buffer the body writes: each such buffer is loaded and stored at
/// one index, affine in the variables with strides that make it injective.
fn iterations_write_disjoint(body: &[Stmt], vars: &[(VarId, Idx)], inner: &[i64]) -> bool {
    let mut stores = Vec::new();
    for s in body {
        if !stores_of(s, &mut stores) {
            return false;
        }
    }
    let loads: Vec<(BufId, Idx)> = body.iter().flat_map(loads_of).collect();
    for (buf, index) in &stores {
        let same = |(b, i): &(BufId, Idx)| b != buf || i == index;
        if !stores.iter().all(same) || !loads.iter().all(same) {
            return false;
        }
        if !injective(index, vars, inner) {
            return false;
        }
    }
    true
}

/// Whether `index` takes a different value for every point of the nest: affine with
/// constant strides which, sorted by size, each exceed the span of all smaller ones.
fn injective(index: &Idx, vars: &[(VarId, Idx)], inner: &[i64]) -> bool {
    let mut terms = Vec::new();
    for (j, (v, _)) in vars.iter().enumerate() {
        let Some(s) = index.stride(*v) else {
            return false;
        };
        // The outermost extent may be unknown (it is the largest stride's, checked last).
        let extent = if j == 0 { None } else { Some(inner[j - 1]) };
        terms.push((s.unsigned_abs(), extent));
    }
    terms.sort_by_key(|t| t.0);
    let mut span: u64 = 0;
    for (stride, extent) in terms {
        if stride == 0 || stride <= span {
            return false;
        }
        match extent {
            Some(e) => span = span.saturating_add(stride.saturating_mul(e as u64 - 1)),
            None => span = u64::MAX,
        }
    }
    true
}

/// An accumulator of a cooperative loop: every assignment to it in the loop is
/// `local = local op e`.
#[derive(Clone, Copy)]
struct Accumulator {
    local: LocalId,
    op: BinOp,
}

fn identity(op: BinOp) -> f32 {
    match op {
        BinOp::Max => f32::NEG_INFINITY,
        BinOp::Min => f32::INFINITY,
        _ => 0.0,
    }
}

fn combine(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary(op, Box::new(a), Box::new(b))
}

/// `body` run by a block of `threads` threads together (see the module doc), or `None`
/// when some statement does not fit the pattern.
fn cooperate(body: &[Stmt], threads: u32, fresh: &mut Fresh) -> Option<Vec<Stmt>> {
    let t = i64::from(threads);
    let warps = t / 32;
    let mut out = Vec::new();
    // Buffers read or written since the last barrier: a statement that stores to one of
    // them waits for the block first (another thread may still read or write it).
    let mut touched: HashSet<BufId> = HashSet::new();
    for (at, s) in body.iter().enumerate() {
        let later = &body[at + 1..];
        let mut stored = Vec::new();
        stores_of(s, &mut stored);
        if stored.iter().any(|(b, _)| touched.contains(b)) {
            out.push(Stmt::Barrier);
            touched.clear();
        }
        touched.extend(stored.iter().map(|(b, _)| *b));
        touched.extend(loads_of(s).into_iter().map(|(b, _)| b));
        let later_reads = |bufs: &[BufId]| {
            later
                .iter()
                .flat_map(loads_of)
                .any(|(b, _)| bufs.contains(&b))
        };
        match s {
            Stmt::Assign { .. } => out.push(s.clone()),
            Stmt::Store { buf, .. } => {
                out.push(Stmt::If {
                    conds: vec![lt(Idx::Thread, one())],
                    body: vec![s.clone()],
                });
                if later_reads(&[*buf]) {
                    out.push(Stmt::Barrier);
                    touched.clear();
                }
            }
            Stmt::Loop {
                var,
                extent,
                body: lb,
                parallel: false,
            } => {
                let accs = accumulators(lb);
                let acc_locals: Vec<LocalId> = accs.iter().map(|a| a.local).collect();
                private_locals_ok(lb, &acc_locals, later)?;
                let stored = cooperative_stores_ok(lb, *var)?;
                let mut saved = Vec::new();
                for a in &accs {
                    let keep = fresh.local();
                    out.push(assign(keep, Expr::Local(a.local)));
                    out.push(assign(a.local, Expr::Const(identity(a.op))));
                    saved.push(keep);
                }
                let it = Idx::Thread + Idx::Var(*var) * t;
                out.push(for_(
                    *var,
                    (extent.clone() - Idx::Thread + (t - 1)).div(t),
                    false,
                    subst(lb, *var, &it),
                ));
                if !accs.is_empty() {
                    block_reduce(&accs, &saved, warps, fresh, &mut out);
                    touched.clear();
                } else if later_reads(&stored) {
                    out.push(Stmt::Barrier);
                    touched.clear();
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Combines each accumulator over the block: a butterfly within each warp, one shared
/// slot per warp, a barrier, then every thread folds the slots in the same order (so all
/// hold the same total) and the value from before the loop.
fn block_reduce(
    accs: &[Accumulator],
    saved: &[LocalId],
    warps: i64,
    fresh: &mut Fresh,
    out: &mut Vec<Stmt>,
) {
    let mut slots = Vec::new();
    for a in accs {
        for lanes in [16, 8, 4, 2, 1] {
            let partner = Expr::ShuffleXor {
                local: a.local,
                lanes,
            };
            out.push(assign(
                a.local,
                combine(a.op, Expr::Local(a.local), partner),
            ));
        }
        let s = fresh.shared(format!("acc{}.warps", a.local.0), warps);
        slots.push(s);
        out.push(Stmt::If {
            conds: vec![Cond {
                a: Idx::Thread.rem(32),
                op: CmpOp::Eq,
                b: Idx::Const(0),
            }],
            body: vec![Stmt::SharedStore {
                buf: s,
                index: Idx::Thread.div(32),
                value: Expr::Local(a.local),
            }],
        });
    }
    out.push(Stmt::Barrier);
    for ((a, s), keep) in accs.iter().zip(slots).zip(saved) {
        let slot = |w: i64| Expr::SharedLoad {
            buf: s,
            index: Idx::Const(w),
        };
        let mut total = slot(0);
        for w in 1..warps {
            total = combine(a.op, total, slot(w));
        }
        out.push(assign(a.local, combine(a.op, Expr::Local(*keep), total)));
    }
}

/// The accumulators of a loop body: locals whose every assignment in it is
/// `l = l op e` (op `+`, `max` or `min`, one op per local, `e` free of `l`) and which it
/// reads nowhere else. (Other locals must be private to an iteration.)
fn accumulators(body: &[Stmt]) -> Vec<Accumulator> {
    let mut assigns: Vec<(LocalId, Option<BinOp>)> = Vec::new();
    let mut reads: Vec<LocalId> = Vec::new();
    fn walk(s: &Stmt, assigns: &mut Vec<(LocalId, Option<BinOp>)>, reads: &mut Vec<LocalId>) {
        match s {
            Stmt::Loop { body, .. } => body.iter().for_each(|s| walk(s, assigns, reads)),
            Stmt::Assign { local, value } => {
                let op = match value {
                    Expr::Binary(op @ (BinOp::Add | BinOp::Max | BinOp::Min), a, b) => {
                        match (&**a, &**b) {
                            (Expr::Local(l), e) | (e, Expr::Local(l)) if l == local => {
                                let mut free = true;
                                e.for_each_local(&mut |x| free &= x != *local);
                                free.then_some((*op, e))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                match op {
                    Some((op, e)) => {
                        e.for_each_local(&mut |l| reads.push(l));
                        assigns.push((*local, Some(op)));
                    }
                    None => {
                        value.for_each_local(&mut |l| reads.push(l));
                        assigns.push((*local, None));
                    }
                }
            }
            Stmt::Store { value, .. } => value.for_each_local(&mut |l| reads.push(l)),
            _ => {}
        }
    }
    body.iter().for_each(|s| walk(s, &mut assigns, &mut reads));
    let mut out: Vec<Accumulator> = Vec::new();
    let mut not = HashSet::new();
    for (l, op) in &assigns {
        match op {
            None => {
                not.insert(*l);
            }
            Some(op) => match out.iter().find(|a| a.local == *l) {
                Some(a) if a.op != *op => {
                    not.insert(*l);
                }
                Some(_) => {}
                None => out.push(Accumulator { local: *l, op: *op }),
            },
        }
    }
    out.retain(|a| !not.contains(&a.local) && !reads.contains(&a.local));
    out
}

/// Every other local the loop assigns must be private to an iteration: assigned before
/// anything reads it (in the same loop body or an enclosing one), and not read after the
/// loop.
fn private_locals_ok(body: &[Stmt], accs: &[LocalId], later: &[Stmt]) -> Option<()> {
    let mut all_assigned = HashSet::new();
    for s in body {
        for_each_assigned(s, &mut |l| {
            all_assigned.insert(l);
        });
    }
    // Reads in program order: a loop's own assignments do not outlive it (it may not run).
    fn defined_before_use(
        stmts: &[Stmt],
        mut assigned: HashSet<LocalId>,
        ok: &dyn Fn(LocalId, &HashSet<LocalId>) -> bool,
    ) -> bool {
        for s in stmts {
            match s {
                Stmt::Loop { body, .. } => {
                    if !defined_before_use(body, assigned.clone(), ok) {
                        return false;
                    }
                }
                Stmt::Assign { value, .. } | Stmt::Store { value, .. } => {
                    let mut good = true;
                    value.for_each_local(&mut |l| good &= ok(l, &assigned));
                    if !good {
                        return false;
                    }
                    if let Stmt::Assign { local, .. } = s {
                        assigned.insert(*local);
                    }
                }
                _ => return false,
            }
        }
        true
    }
    let ok = |l: LocalId, assigned: &HashSet<LocalId>| {
        accs.contains(&l) || !all_assigned.contains(&l) || assigned.contains(&l)
    };
    if !defined_before_use(body, HashSet::new(), &ok) {
        return None;
    }
    let mut read_later = false;
    for s in later {
        s.for_each_value(&mut |e| {
            e.for_each_local(&mut |l| read_later |= all_assigned.contains(&l) && !accs.contains(&l))
        });
    }
    (!read_later).then_some(())
}

/// The buffers a cooperative loop over `var` stores to, if its stores are safe to spread
/// over threads: only at the top of the body, at indices that move with `var` (so each
/// element has one writer), and the body reads a buffer it stores only where it stores.
fn cooperative_stores_ok(body: &[Stmt], var: VarId) -> Option<Vec<BufId>> {
    let mut stores: Vec<(BufId, Idx)> = Vec::new();
    for s in body {
        match s {
            Stmt::Store { buf, index, .. } => {
                if !matches!(index.stride(var), Some(s) if s != 0) {
                    return None;
                }
                stores.push((*buf, index.clone()));
            }
            Stmt::Assign { .. } => {}
            Stmt::Loop { .. } => {
                let mut inner = Vec::new();
                if !stores_of(s, &mut inner) || !inner.is_empty() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    // One index per stored buffer, for its stores and its loads alike: two stores at
    // `o[i]` and `o[i + 1]` would make neighbouring iterations (threads) collide.
    let accesses = stores.iter().cloned().chain(body.iter().flat_map(loads_of));
    for (b, i) in accesses.collect::<Vec<_>>() {
        if stores.iter().any(|(sb, si)| *sb == b && *si != i) {
            return None;
        }
    }
    Some(stores.into_iter().map(|(b, _)| b).collect())
}

/// The tiled product (inside `loops`, folded into the grid's third axis), with its
/// epilogue fused or as a kernel of its own.
fn gemm_kernels(
    k: &Kernel,
    name: String,
    g: &Gemm,
    loops: &[(VarId, Idx)],
    epilogue: &[Stmt],
) -> Result<Vec<Kernel>, String> {
    if g.c.buf == g.a.buf || g.c.buf == g.b.buf {
        return Err(format!(
            "cannot schedule kernel `{}` for the GPU: a product writes one of its operands",
            k.name
        ));
    }
    let mut fresh = Fresh::new(k);
    let fused = if loops.is_empty() {
        fusable_epilogue(g, epilogue)
    } else {
        None
    };
    let (body, launch) = tiled_gemm(g, loops, fused.as_ref(), &mut fresh);
    let mut out = vec![gpu_kernel(k, name.clone(), body, &fresh, launch)];
    if fused.is_none() && !epilogue.is_empty() {
        out.push(serial_kernel_named(k, format!("{name}_epilogue"), epilogue));
    }
    Ok(out)
}

/// Whether every `(z, row, col)` of a product (z over the enclosing `loops`, then the
/// batch) names its own element of `C`, checked at several batch sizes: the strides,
/// sorted by size, must each exceed the span of the smaller ones. When they do not (a sum
/// of products into one `C`, say), the z-blocks may not run side by side.
fn c_cells_disjoint(g: &Gemm, loops: &[(VarId, Idx)]) -> bool {
    [1, 2, 3, 7, 64, 128, 1000].into_iter().all(|n| {
        let e = |i: &Idx| eval_idx(i, n);
        let mut terms: Vec<(Option<i64>, Option<i64>)> =
            vec![(e(&g.c.row_stride), e(&g.m)), (e(&g.c.col_stride), e(&g.n))];
        if let Some((count, st)) = &g.batch {
            terms.push((e(&st[2]), e(count)));
        }
        for (v, extent) in loops {
            terms.push((g.c.offset.stride(*v), e(extent)));
        }
        let Some(mut terms) = terms
            .into_iter()
            .map(|(s, x)| Some((s?.unsigned_abs(), x?)))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        terms.retain(|&(_, extent)| extent > 1);
        terms.sort_unstable();
        let mut span: u64 = 0;
        terms.into_iter().all(|(stride, extent)| {
            let ok = stride > span;
            span = span.saturating_add(stride.saturating_mul(extent as u64 - 1));
            ok
        })
    })
}

/// `i` with the block index along axis 2 replaced by loop variable `v`.
fn block_z_to_var(i: &Idx, v: VarId) -> Idx {
    i.map_leaves(&|leaf| (*leaf == Idx::Block(2)).then_some(Idx::Var(v)))
}

/// An epilogue `for i0 in 0..m { for i1 in 0..n { body } }` of an unbatched product whose
/// straight-line body touches every buffer it writes only at `C`'s element `(i0, i1)`:
/// `(i0, i1, body)`.
struct Epilogue {
    row: VarId,
    col: VarId,
    body: Vec<Stmt>,
}

fn fusable_epilogue(g: &Gemm, epilogue: &[Stmt]) -> Option<Epilogue> {
    let [Stmt::Loop {
        var: row,
        extent: m,
        body: outer,
        ..
    }] = epilogue
    else {
        return None;
    };
    let [Stmt::Loop {
        var: col,
        extent: n,
        body,
        ..
    }] = outer.as_slice()
    else {
        return None;
    };
    if g.batch.is_some() || *m != g.m || *n != g.n {
        return None;
    }
    let element = g.c.offset.clone()
        + Idx::Var(*row) * g.c.row_stride.clone()
        + Idx::Var(*col) * g.c.col_stride.clone();
    let mut stores = Vec::new();
    for s in body {
        if !matches!(s, Stmt::Assign { .. } | Stmt::Store { .. }) || !stores_of(s, &mut stores) {
            return None;
        }
    }
    let written: HashSet<BufId> = stores.iter().map(|(b, _)| *b).chain([g.c.buf]).collect();
    if written.contains(&g.a.buf) || written.contains(&g.b.buf) {
        return None;
    }
    let loads: Vec<(BufId, Idx)> = body.iter().flat_map(loads_of).collect();
    let at_element = |(b, i): &(BufId, Idx)| !written.contains(b) || *i == element;
    if !stores.iter().all(at_element) || !loads.iter().all(at_element) {
        return None;
    }
    // Each thread runs the epilogue on its own elements: no local may carry a value from
    // one element to the next.
    if !locals_private(body) {
        return None;
    }
    Some(Epilogue {
        row: *row,
        col: *col,
        body: body.clone(),
    })
}

/// The tiled kernel body of `C = alpha·A·B + beta·C` (see the module doc), with the
/// epilogue applied to each stored element.
fn tiled_gemm(
    g: &Gemm,
    loops: &[(VarId, Idx)],
    epilogue: Option<&Epilogue>,
    fresh: &mut Fresh,
) -> (Vec<Stmt>, GpuLaunch) {
    // The third grid axis enumerates the enclosing loops' iterations (outermost
    // slowest), then the batch: z = ((v0·E1 + v1)·…)·count + p.
    let count = g.batch.as_ref().map_or(one(), |(c, _)| c.clone());
    let mut z_extent = count.clone();
    let mut g = g.clone();
    let mut inner_size = count.clone();
    for (var, extent) in loops.iter().rev() {
        let value = match (&inner_size, extent) {
            (Idx::Const(d), Idx::Const(e)) => Idx::Block(2).div(*d).rem(*e),
            // An outermost loop of unknown extent takes what is left.
            (Idx::Const(d), _) if loops[0].0 == *var => Idx::Block(2).div(*d),
            // `product_loops_fold` rules this out; the grid would be wrong.
            _ => panic!("internal error: a product's loops do not fold into the grid"),
        };
        g = g.map_indices(&|i| {
            i.map_vars(&|v| {
                if v == *var {
                    value.clone()
                } else {
                    Idx::Var(v)
                }
            })
        });
        z_extent = extent.clone() * z_extent;
        inner_size = extent.clone() * inner_size;
    }
    let batch_index = match &count {
        Idx::Const(1) => Idx::Const(0),
        Idx::Const(c) => Idx::Block(2).rem(*c),
        _ => Idx::Block(2),
    };
    let g = &g;
    let t = Tiling::for_product(&g.m, &g.n, &z_extent);
    let (tile, reg, side, pitch) = (t.tile, t.reg, t.threads_per_side(), t.pitch());
    let threads = i64::from(GEMM_THREADS);
    let a_tile = fresh.shared("a_tile".into(), TILE_K * pitch);
    let b_tile = fresh.shared("b_tile".into(), TILE_K * pitch);
    let (kt, q, kk) = (fresh.var(), fresh.var(), fresh.var());
    let acc: Vec<LocalId> = (0..reg * reg).map(|_| fresh.local()).collect();
    let av: Vec<LocalId> = (0..reg).map(|_| fresh.local()).collect();
    let bv: Vec<LocalId> = (0..reg).map(|_| fresh.local()).collect();
    let (tx, ty) = (Idx::Thread.rem(side), Idx::Thread.div(side));
    let row0 = Idx::Block(1) * tile;
    let col0 = Idx::Block(0) * tile;
    let (sa, sb, sc) = match &g.batch {
        Some((_, s)) => (
            batch_index.clone() * s[0].clone(),
            batch_index.clone() * s[1].clone(),
            batch_index.clone() * s[2].clone(),
        ),
        None => (Idx::Const(0), Idx::Const(0), Idx::Const(0)),
    };
    let mut body: Vec<Stmt> = acc.iter().map(|&l| assign(l, Expr::Const(0.0))).collect();

    // One slice of each operand into shared memory: element e = q·threads + thread of the
    // tile × TILE_K (A) or TILE_K × tile (B) slice; consecutive threads take consecutive
    // addresses of the operand's unit-stride dimension.
    let e = Idx::Var(q) * threads + Idx::Thread;
    let k_of = |e: &Idx, k_fast: bool| {
        if k_fast {
            (e.clone().rem(TILE_K), e.clone().div(TILE_K))
        } else {
            (e.clone().div(tile), e.clone().rem(tile))
        }
    };
    // A[r, kk]: k fastest unless A is stored column-major (row stride 1).
    let (a_k, a_r) = k_of(&e, g.a.row_stride != Idx::Const(1));
    let a_row = row0.clone() + a_r.clone();
    let a_kg = Idx::Var(kt) * TILE_K + a_k.clone();
    let a_elem = g.a.offset.clone()
        + sa
        + a_row.clone() * g.a.row_stride.clone()
        + a_kg.clone() * g.a.col_stride.clone();
    let a_slot = a_k * pitch + a_r;
    // B[kk, c]: columns fastest unless B is stored column-major (row stride 1).
    let (b_k, b_c) = k_of(&e, g.b.row_stride == Idx::Const(1));
    let b_col = col0.clone() + b_c.clone();
    let b_kg = Idx::Var(kt) * TILE_K + b_k.clone();
    let b_elem = g.b.offset.clone()
        + sb
        + b_kg.clone() * g.b.row_stride.clone()
        + b_col.clone() * g.b.col_stride.clone();
    let b_slot = b_k * pitch + b_c;
    let fill = |tile: SharedId, slot: Idx, conds: Vec<Cond>, buf: BufId, elem: Idx| {
        vec![
            Stmt::SharedStore {
                buf: tile,
                index: slot.clone(),
                value: Expr::Const(0.0),
            },
            Stmt::If {
                conds,
                body: vec![Stmt::SharedStore {
                    buf: tile,
                    index: slot,
                    value: Expr::Load { buf, index: elem },
                }],
            },
        ]
    };
    let per_thread = tile * TILE_K / threads;
    let mut load = fill(
        a_tile,
        a_slot,
        vec![lt(a_row, g.m.clone()), lt(a_kg, g.k.clone())],
        g.a.buf,
        a_elem,
    );
    load.extend(fill(
        b_tile,
        b_slot,
        vec![lt(b_kg, g.k.clone()), lt(b_col, g.n.clone())],
        g.b.buf,
        b_elem,
    ));
    let mut step = vec![for_(q, per_thread, false, load), Stmt::Barrier];
    // The register block: `reg` values of each tile, `reg²` fused multiply-adds.
    let mut inner = Vec::new();
    for (i, &l) in av.iter().enumerate() {
        let slot = Idx::Var(kk) * pitch + ty.clone() + i as i64 * side;
        inner.push(assign(
            l,
            Expr::SharedLoad {
                buf: a_tile,
                index: slot,
            },
        ));
    }
    for (j, &l) in bv.iter().enumerate() {
        let slot = Idx::Var(kk) * pitch + tx.clone() + j as i64 * side;
        inner.push(assign(
            l,
            Expr::SharedLoad {
                buf: b_tile,
                index: slot,
            },
        ));
    }
    for i in 0..reg as usize {
        for j in 0..reg as usize {
            let c = acc[i * reg as usize + j];
            let fma = Expr::Fma(
                Box::new(Expr::Local(av[i])),
                Box::new(Expr::Local(bv[j])),
                Box::new(Expr::Local(c)),
            );
            inner.push(assign(c, fma));
        }
    }
    step.push(for_(kk, TILE_K, false, inner));
    step.push(Stmt::Barrier);
    body.push(for_(kt, ceil_div(g.k.clone(), TILE_K), false, step));

    // Store each element of the register block (and run the epilogue on it).
    for i in 0..reg {
        for j in 0..reg {
            let row = row0.clone() + ty.clone() + i * side;
            let col = col0.clone() + tx.clone() + j * side;
            let c_elem = g.c.offset.clone()
                + sc.clone()
                + row.clone() * g.c.row_stride.clone()
                + col.clone() * g.c.col_stride.clone();
            let mut value = Expr::Local(acc[(i * reg + j) as usize]);
            if g.alpha != 1.0 {
                value = combine(BinOp::Mul, Expr::Const(g.alpha), value);
            }
            if g.beta != 0.0 {
                let old = Expr::Load {
                    buf: g.c.buf,
                    index: c_elem.clone(),
                };
                value = combine(
                    BinOp::Add,
                    value,
                    combine(BinOp::Mul, Expr::Const(g.beta), old),
                );
            }
            let mut then = vec![store(g.c.buf, c_elem, value)];
            if let Some(ep) = epilogue {
                let at_row = subst(&ep.body, ep.row, &row);
                then.extend(subst(&at_row, ep.col, &col));
            }
            body.push(Stmt::If {
                conds: vec![lt(row, g.m.clone()), lt(col, g.n.clone())],
                body: then,
            });
        }
    }
    // Products whose z-blocks would write the same elements of C run z in order inside
    // each block instead (a block's tile of C is its own for every z).
    let (body, z_blocks) = if c_cells_disjoint(g, loops) {
        (body, z_extent)
    } else {
        let zv = fresh.var();
        let inner = body
            .iter()
            .map(|s| s.map_indices(&|i| block_z_to_var(i, zv)))
            .collect();
        (vec![for_(zv, z_extent, false, inner)], one())
    };
    let grid = [
        ceil_div(g.n.clone(), tile),
        ceil_div(g.m.clone(), tile),
        z_blocks,
    ];
    (body, fresh.launch(GEMM_THREADS, grid))
}
