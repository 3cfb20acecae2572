//! The GPU execution model of kernel IR, and a simulator that runs GPU kernels on the CPU
//! with their real grid, blocks, threads, shared memory, barriers and warp shuffles.
//!
//! A GPU kernel ([`Kernel::gpu`] is set, by the compiler's GPU schedule) is written for
//! one thread: it reads its position through [`Idx::Thread`] and [`Idx::Block`], and
//! may use block-shared arrays, [`Stmt::Barrier`] and
//! [`Expr::ShuffleXor`](crate::ir::Expr::ShuffleXor). The launch is
//! `grid[0] × grid[1] × grid[2]` blocks of `threads` threads ([`launch_dims`]).
//!
//! The simulator runs each block's threads in lockstep, statement by statement (every
//! active thread evaluates a statement before any of them writes its result, so a
//! shuffle reads the other lane's value from before the statement, as on the hardware).
//! Lockstep execution is one legal interleaving of the block's threads; to make the
//! result stand for all of them, the simulator reports what would make it
//! interleaving-dependent on a real GPU:
//! - reading a shared element that no thread of the block has written (uninitialised
//!   shared memory), or that another thread wrote since the last barrier;
//! - writing a shared element that another thread wrote or read since the last barrier;
//! - two threads storing to the same global element in one statement; a global element
//!   written by one thread and read or written by another of the same block with no
//!   barrier between, or by a thread of another block at all (blocks of one launch never
//!   synchronise);
//! - a barrier that only some threads of the block reach, a shuffle while some lanes of
//!   the warp are inactive.
//!
//! Blocks run one after another (the GPU schedule never lets blocks communicate within a
//! kernel), so the simulated program must equal [`crate::interp::run`] of the CPU-shaped
//! program it came from, up to the order of floating-point sums.

use std::borrow::Cow;
use std::cell::Cell;

use crate::interp::{GpuReads, InterpError, State};
use crate::ir::{BufId, Idx, Kernel, LocalId, Program, SharedId, Stmt};

/// Lanes per warp.
pub const WARP: u32 = 32;

/// Evaluates an index expression without loop variables or GPU indices for batch size
/// `n`; `None` when it reads one or divides by a non-positive constant.
pub fn eval_idx(i: &Idx, n: i64) -> Option<i64> {
    Some(match i {
        Idx::Const(c) => *c,
        Idx::Var(_) | Idx::Thread | Idx::Block(_) => return None,
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

/// The largest grid CUDA launches: `x` up to 2³¹ − 1 blocks, `y` and `z` up to 65,535.
pub const MAX_GRID: [i64; 3] = [(1 << 31) - 1, 65_535, 65_535];

/// `(blocks per grid axis, threads per block)` of GPU kernel `k` for batch size `n`; an
/// error for a CPU kernel or a grid CUDA cannot launch. A zero-sized axis (or one whose
/// size comes out negative, like a loop over `N - 300` at batch 1) means the kernel has no
/// work for this batch size (the launch is skipped).
pub fn launch_dims(k: &Kernel, n: usize) -> Result<([u32; 3], u32), String> {
    let Some(g) = &k.gpu else {
        return Err(format!("kernel `{}` is not a GPU kernel", k.name));
    };
    let mut grid = [0u32; 3];
    for (axis, i) in g.grid.iter().enumerate() {
        let v = eval_idx(i, n as i64)
            .ok_or_else(|| format!("kernel `{}`: grid size is not an index of N", k.name))?;
        // A negative size is a loop with no iterations at this batch size.
        let v = v.max(0);
        if v > MAX_GRID[axis] {
            return Err(format!(
                "kernel `{}`: {v} blocks along grid axis {axis} (CUDA allows 0..={})",
                k.name, MAX_GRID[axis]
            ));
        }
        grid[axis] = v as u32;
    }
    Ok((grid, g.threads))
}

/// Runs every kernel of `program` (all GPU kernels) over `buffers` the way a GPU would,
/// block after block, each block's threads in lockstep; see the module doc for what is
/// reported as an error.
pub fn simulate_program(
    program: &Program,
    buffers: &mut [Vec<f32>],
    n: usize,
) -> Result<(), InterpError> {
    crate::interp::check_buffers(program, buffers, n)?;
    for k in &program.kernels {
        simulate_kernel(k, buffers, n)?;
    }
    Ok(())
}

/// Runs one GPU kernel on its whole grid.
pub fn simulate_kernel(k: &Kernel, buffers: &mut [Vec<f32>], n: usize) -> Result<(), InterpError> {
    let (grid, threads) = launch_dims(k, n).map_err(InterpError)?;
    let shared = k.gpu.as_ref().map_or(&[][..], |g| &g.shared[..]);
    let global = GlobalTracker::new(k, buffers);
    let mut id = 0u32;
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                let block = [i64::from(x), i64::from(y), i64::from(z)];
                let mut sim = BlockSim::new(k, n, threads, block, shared, &global, id);
                id += 1;
                let all: Vec<usize> = (0..threads as usize).collect();
                sim.exec(&k.body, &all, buffers)?;
            }
        }
    }
    Ok(())
}

/// Who wrote and read one element (shared or global) during a launch: blocks by their
/// linear index, threads within their block, epochs counting the block's barriers from 1
/// (0: never). Shared elements only ever see their own block.
#[derive(Clone, Copy, Debug, Default)]
struct Access {
    w_epoch: u32,
    w_block: u32,
    w_thread: u32,
    r_epoch: u32,
    /// The one block (thread) that read it, or [`MANY`].
    r_block: u32,
    r_thread: u32,
}

const MANY: u32 = u32::MAX;

impl Access {
    /// An error if an earlier write of the element races with an access by thread `t` of
    /// `block` in barrier epoch `epoch`: `by_block(w)` when block `w` wrote it (blocks of
    /// one launch never synchronise), `by_thread(w)` when thread `w` of the block wrote it
    /// since the last barrier.
    fn check_writer(
        &self,
        block: u32,
        t: u32,
        epoch: u32,
        by_block: impl FnOnce(u32) -> String,
        by_thread: impl FnOnce(u32) -> String,
    ) -> Result<(), String> {
        if self.w_epoch != 0 && self.w_block != block {
            Err(by_block(self.w_block))
        } else if self.w_epoch == epoch && self.w_thread != t {
            Err(by_thread(self.w_thread))
        } else {
            Ok(())
        }
    }

    /// Records a read of the element `at` (for messages); an error if another block wrote
    /// it in this launch, or another thread of the block since the last barrier.
    fn read(cell: &Cell<Access>, at: &str, block: u32, t: u32, epoch: u32) -> Result<(), String> {
        let mut m = cell.get();
        m.check_writer(
            block,
            t,
            epoch,
            |w| format!("block {block} reads {at}, which block {w} writes in the same launch"),
            |w| {
                format!(
                    "reads {at}, written by thread {w} since the last barrier \
                     (a barrier is missing before the read)"
                )
            },
        )?;
        if m.r_epoch == 0 {
            (m.r_block, m.r_thread) = (block, t);
        } else {
            if m.r_block != block {
                m.r_block = MANY;
            }
            if m.r_epoch != epoch {
                m.r_thread = t;
            } else if m.r_thread != t {
                m.r_thread = MANY;
            }
        }
        m.r_epoch = epoch;
        cell.set(m);
        Ok(())
    }

    /// Records a write; an error if another block touched the element in this launch, or
    /// another thread of the block since the last barrier.
    fn write(cell: &Cell<Access>, at: &str, block: u32, t: u32, epoch: u32) -> Result<(), String> {
        let mut m = cell.get();
        m.check_writer(
            block,
            t,
            epoch,
            |w| format!("blocks {w} and {block} both write {at} in one launch"),
            |w| format!("threads {w} and {t} both write {at} with no barrier between"),
        )?;
        if m.r_epoch != 0 && m.r_block != block {
            return Err(format!(
                "block {block} writes {at}, which another block reads in the same launch"
            ));
        }
        if m.r_epoch == epoch && m.r_thread != t {
            let who = match m.r_thread {
                MANY => "other threads".to_string(),
                r => format!("thread {r}"),
            };
            return Err(format!(
                "thread {t} overwrites {at} that {who} read since the last barrier \
                 (a barrier is missing before the write)"
            ));
        }
        (m.w_epoch, m.w_block, m.w_thread) = (epoch, block, t);
        cell.set(m);
        Ok(())
    }
}

/// The accesses to every buffer a kernel stores to, over one launch (loads of buffers it
/// never stores to cannot race).
struct GlobalTracker {
    bufs: Vec<Option<Vec<Cell<Access>>>>,
}

impl GlobalTracker {
    fn new(k: &Kernel, buffers: &[Vec<f32>]) -> GlobalTracker {
        let mut written = Vec::new();
        for s in &k.body {
            s.visit(&mut |s| {
                if let Stmt::Store { buf, .. } = s {
                    written.push(*buf);
                }
            });
        }
        let bufs = (0..buffers.len())
            .map(|b| {
                written.contains(&BufId(b as u32)).then(|| {
                    (0..buffers[b].len())
                        .map(|_| Cell::new(Access::default()))
                        .collect()
                })
            })
            .collect();
        GlobalTracker { bufs }
    }

    fn meta(&self, buf: BufId, slot: usize) -> Option<&Cell<Access>> {
        self.bufs.get(buf.0 as usize)?.as_ref()?.get(slot)
    }

    fn read(&self, buf: BufId, slot: usize, block: u32, t: u32, epoch: u32) -> Result<(), String> {
        match self.meta(buf, slot) {
            Some(cell) => Access::read(cell, &format!("b{}[{slot}]", buf.0), block, t, epoch),
            None => Ok(()),
        }
    }

    fn write(&self, buf: BufId, slot: usize, block: u32, t: u32, epoch: u32) -> Result<(), String> {
        match self.meta(buf, slot) {
            Some(cell) => Access::write(cell, &format!("b{}[{slot}]", buf.0), block, t, epoch),
            None => Ok(()),
        }
    }
}

/// One block being simulated.
struct BlockSim<'k> {
    threads: Vec<State<'k>>,
    shared: Vec<Vec<Cell<f32>>>,
    meta: Vec<Vec<Cell<Access>>>,
    names: &'k [crate::ir::SharedDecl],
    /// Barriers passed so far, plus one.
    epoch: u32,
    /// Which threads execute the statement being evaluated.
    active: Vec<bool>,
    /// The launch's record of global accesses, and this block's linear index.
    global: &'k GlobalTracker,
    block_id: u32,
}

impl<'k> BlockSim<'k> {
    fn new(
        k: &'k Kernel,
        n: usize,
        threads: u32,
        block: [i64; 3],
        names: &'k [crate::ir::SharedDecl],
        global: &'k GlobalTracker,
        block_id: u32,
    ) -> BlockSim<'k> {
        let threads = (0..i64::from(threads))
            .map(|t| {
                let mut s = State::new(k, n);
                s.pos = Some((t, block));
                s
            })
            .collect();
        let cells = |len: u32, v| (0..len).map(|_| Cell::new(v)).collect::<Vec<_>>();
        BlockSim {
            threads,
            shared: names.iter().map(|d| cells(d.len, 0.0)).collect(),
            meta: names
                .iter()
                .map(|d| (0..d.len).map(|_| Cell::new(Access::default())).collect())
                .collect(),
            names,
            epoch: 1,
            active: Vec::new(),
            global,
            block_id,
        }
    }

    fn err<T>(&self, msg: String) -> Result<T, InterpError> {
        self.threads[0].err(msg)
    }

    fn set_active(&mut self, active: &[usize]) {
        self.active.clear();
        self.active.resize(self.threads.len(), false);
        for &t in active {
            self.active[t] = true;
        }
    }

    fn shared_name(&self, buf: SharedId) -> String {
        let name = self.names.get(buf.0 as usize).map_or("?", |d| &d.name);
        format!("s{} `{name}`", buf.0)
    }

    fn shared_cell(&self, buf: SharedId, i: i64) -> Result<(&Cell<f32>, &Cell<Access>), String> {
        let (vals, meta) = match (
            self.shared.get(buf.0 as usize),
            self.meta.get(buf.0 as usize),
        ) {
            (Some(v), Some(m)) => (v, m),
            _ => return Err(format!("shared array s{} is not declared", buf.0)),
        };
        if i < 0 || i as usize >= vals.len() {
            return Err(format!(
                "index {i} out of bounds of {} (length {})",
                self.shared_name(buf),
                vals.len()
            ));
        }
        Ok((&vals[i as usize], &meta[i as usize]))
    }

    fn exec(
        &mut self,
        stmts: &[Stmt],
        active: &[usize],
        bufs: &mut [Vec<f32>],
    ) -> Result<(), InterpError> {
        for s in stmts {
            self.stmt(s, active, bufs)?;
        }
        Ok(())
    }

    fn stmt(
        &mut self,
        s: &Stmt,
        active: &[usize],
        bufs: &mut [Vec<f32>],
    ) -> Result<(), InterpError> {
        match s {
            Stmt::Loop {
                var, extent, body, ..
            } => {
                let mut extents = Vec::with_capacity(active.len());
                for &t in active {
                    extents.push(self.threads[t].idx(extent)?);
                }
                let max = extents.iter().copied().max().unwrap_or(0);
                let uniform = extents.iter().all(|&e| e == max);
                for i in 0..max.max(0) {
                    let sub: Cow<[usize]> = if uniform {
                        Cow::Borrowed(active)
                    } else {
                        let still = active.iter().zip(&extents).filter(|(_, &e)| i < e);
                        Cow::Owned(still.map(|(&t, _)| t).collect())
                    };
                    for &t in sub.iter() {
                        self.threads[t].vars[var.0 as usize] = i;
                    }
                    self.exec(body, &sub, bufs)?;
                }
            }
            Stmt::If { conds, body } => {
                let mut sub = Vec::with_capacity(active.len());
                for &t in active {
                    if self.threads[t].conds(conds)? {
                        sub.push(t);
                    }
                }
                if !sub.is_empty() {
                    self.exec(body, &sub, bufs)?;
                }
            }
            Stmt::Assign { local, value } => {
                self.set_active(active);
                let mut values = Vec::with_capacity(active.len());
                for &t in active {
                    values.push(self.threads[t].expr_on(value, bufs, &*self)?);
                }
                for (&t, v) in active.iter().zip(values) {
                    self.threads[t].locals[local.0 as usize] = v;
                }
            }
            Stmt::Store { buf, index, value } => {
                self.set_active(active);
                let mut writes = Vec::with_capacity(active.len());
                for &t in active {
                    let st = &self.threads[t];
                    let v = st.expr_on(value, bufs, &*self)?;
                    let slot = st.slot(*buf, st.idx(index)?, bufs)?;
                    writes.push((slot, t, v));
                }
                if writes.len() > 1 {
                    let mut slots: Vec<(usize, usize)> =
                        writes.iter().map(|w| (w.0, w.1)).collect();
                    slots.sort_unstable();
                    if let Some(w) = slots.windows(2).find(|w| w[0].0 == w[1].0) {
                        return self.err(format!(
                            "threads {} and {} both store b{}[{}] in one statement",
                            w[0].1, w[1].1, buf.0, w[0].0
                        ));
                    }
                }
                for (slot, t, v) in writes {
                    self.global
                        .write(*buf, slot, self.block_id, t as u32, self.epoch)
                        .or_else(|m| self.err(format!("thread {t}: {m}")))?;
                    bufs[buf.0 as usize][slot] = v;
                }
            }
            Stmt::SharedStore { buf, index, value } => {
                self.set_active(active);
                let mut writes = Vec::with_capacity(active.len());
                for &t in active {
                    let st = &self.threads[t];
                    writes.push((t, st.idx(index)?, st.expr_on(value, bufs, &*self)?));
                }
                for (t, i, v) in writes {
                    self.shared_write(t, *buf, i, v)?;
                }
            }
            Stmt::Barrier => {
                if active.len() != self.threads.len() {
                    return self.err(format!(
                        "a barrier reached by {} of the block's {} threads (it would hang)",
                        active.len(),
                        self.threads.len()
                    ));
                }
                self.epoch += 1;
            }
            Stmt::Gemm(_) => {
                return self.err("a `gemm` in a GPU kernel (the GPU schedule tiles it)".into())
            }
        }
        Ok(())
    }

    fn shared_write(&self, t: usize, buf: SharedId, i: i64, v: f32) -> Result<(), InterpError> {
        let at = format!("{}[{i}]", self.shared_name(buf));
        self.shared_cell(buf, i)
            .and_then(|(cell, meta)| {
                Access::write(meta, &at, self.block_id, t as u32, self.epoch)?;
                cell.set(v);
                Ok(())
            })
            .or_else(|m| self.err(format!("thread {t}: {m}")))
    }
}

impl GpuReads for BlockSim<'_> {
    fn shared(&self, thread: i64, buf: SharedId, index: i64) -> Result<f32, String> {
        let (cell, meta) = self.shared_cell(buf, index)?;
        let at = format!("{}[{index}]", self.shared_name(buf));
        if meta.get().w_epoch == 0 {
            return Err(format!(
                "reads {at}, which no thread of the block has written \
                 (uninitialised shared memory)"
            ));
        }
        Access::read(meta, &at, self.block_id, thread as u32, self.epoch)?;
        Ok(cell.get())
    }

    fn global_load(&self, thread: i64, buf: BufId, slot: usize) -> Result<(), String> {
        self.global
            .read(buf, slot, self.block_id, thread as u32, self.epoch)
    }

    fn shuffle(&self, thread: i64, local: LocalId, lanes: u32) -> Result<f32, String> {
        let t = thread as usize;
        let warp = t / WARP as usize * WARP as usize;
        let end = (warp + WARP as usize).min(self.threads.len());
        if !self.active[warp..end].iter().all(|&a| a) {
            return Err(format!(
                "shuffles while some lanes of warp {} are inactive",
                warp / WARP as usize
            ));
        }
        let partner = t ^ lanes as usize;
        match self.threads.get(partner) {
            Some(p) if partner < end => Ok(p.locals[local.0 as usize]),
            _ => Err(format!("shuffles with lane {partner}, outside the block")),
        }
    }
}
