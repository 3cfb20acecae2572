//! The reference interpreter of kernel IR: runs a program on `Vec<f32>` buffers for a
//! batch size `N`, with the same f32 semantics as compiled code (a `Gemm` accumulates in
//! f64, so it is at least as accurate as any library). Every index is bounds-checked: an
//! out-of-range access is an error naming the kernel, the buffer and the index.
//!
//! Parallel loops run sequentially here; since their iterations write disjoint elements
//! (an IR invariant) the result is the same as any split between threads.

use std::fmt;

use crate::ir::{rand_value, BufId, Expr, Gemm, Idx, Kernel, LocalId, Program, SharedId, Stmt};

/// A runtime failure of a kernel program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterpError(pub String);

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InterpError {}

/// Runs every kernel of `program` in order over `buffers` (one per `Program::buffers`
/// entry, each at least its declared length for batch size `n`).
pub fn run(program: &Program, buffers: &mut [Vec<f32>], n: usize) -> Result<(), InterpError> {
    check_buffers(program, buffers, n)?;
    for k in &program.kernels {
        run_kernel(k, buffers, n)?;
    }
    Ok(())
}

/// Checks that `buffers` has one buffer per declaration, each long enough for batch
/// size `n`.
pub fn check_buffers(program: &Program, buffers: &[Vec<f32>], n: usize) -> Result<(), InterpError> {
    if buffers.len() != program.buffers.len() {
        return Err(InterpError(format!(
            "{} buffers given, the program has {}",
            buffers.len(),
            program.buffers.len()
        )));
    }
    for (i, (decl, b)) in program.buffers.iter().zip(buffers.iter()).enumerate() {
        if b.len() < decl.len.resolve(n) {
            return Err(InterpError(format!(
                "buffer b{i} `{}` holds {} floats, needs {}",
                decl.name,
                b.len(),
                decl.len.resolve(n)
            )));
        }
    }
    Ok(())
}

/// Runs one kernel.
pub fn run_kernel(k: &Kernel, buffers: &mut [Vec<f32>], n: usize) -> Result<(), InterpError> {
    let mut st = State::new(k, n);
    for s in &k.body {
        st.stmt(s, buffers)?;
    }
    Ok(())
}

/// What only a GPU thread can read: block-shared memory and other lanes' locals. The
/// simulator ([`crate::gpu`]) provides it; the reference interpreter has none.
pub(crate) trait GpuReads {
    /// Element `index` of shared array `buf`, read by thread `thread` of the block.
    fn shared(&self, thread: i64, buf: SharedId, index: i64) -> Result<f32, String>;
    /// `local` of the lane `lanes` away (XOR) from `thread`'s, in its warp.
    fn shuffle(&self, thread: i64, local: LocalId, lanes: u32) -> Result<f32, String>;
    /// Called on every load of global element `slot` of `buf` by `thread`, so that the
    /// simulator can check it against the writes of other threads and blocks.
    fn global_load(&self, _thread: i64, _buf: BufId, _slot: usize) -> Result<(), String> {
        Ok(())
    }
}

/// The reference interpreter's [`GpuReads`]: CPU-shaped kernels never use them.
struct NoGpu;

impl GpuReads for NoGpu {
    fn shared(&self, _: i64, _: SharedId, _: i64) -> Result<f32, String> {
        Err("reads shared memory outside the GPU simulator".into())
    }
    fn shuffle(&self, _: i64, _: LocalId, _: u32) -> Result<f32, String> {
        Err("shuffles outside the GPU simulator".into())
    }
}

/// One thread's view of a kernel: its loop variables and locals, and for a GPU thread its
/// position in the grid.
pub(crate) struct State<'k> {
    pub(crate) kernel: &'k Kernel,
    pub(crate) vars: Vec<i64>,
    pub(crate) locals: Vec<f32>,
    n: i64,
    /// `(thread in block, block index per axis)` of a simulated GPU thread.
    pub(crate) pos: Option<(i64, [i64; 3])>,
}

impl<'k> State<'k> {
    pub(crate) fn new(kernel: &'k Kernel, n: usize) -> State<'k> {
        State {
            kernel,
            vars: vec![0; kernel.num_vars as usize],
            locals: vec![0.0; kernel.num_locals as usize],
            n: n as i64,
            pos: None,
        }
    }

    pub(crate) fn err<T>(&self, msg: String) -> Result<T, InterpError> {
        Err(InterpError(format!("kernel `{}`: {msg}", self.kernel.name)))
    }

    /// Whether every condition of an `if` holds.
    pub(crate) fn conds(&self, conds: &[crate::ir::Cond]) -> Result<bool, InterpError> {
        for c in conds {
            if !c.op.apply_i64(self.idx(&c.a)?, self.idx(&c.b)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn stmt(&mut self, s: &Stmt, bufs: &mut [Vec<f32>]) -> Result<(), InterpError> {
        match s {
            Stmt::Loop {
                var, extent, body, ..
            } => {
                let extent = self.idx(extent)?;
                for i in 0..extent.max(0) {
                    self.vars[var.0 as usize] = i;
                    for s in body {
                        self.stmt(s, bufs)?;
                    }
                }
            }
            Stmt::Store { buf, index, value } => {
                let v = self.expr(value, bufs)?;
                let i = self.idx(index)?;
                let slot = self.slot(*buf, i, bufs)?;
                bufs[buf.0 as usize][slot] = v;
            }
            Stmt::Assign { local, value } => {
                let v = self.expr(value, bufs)?;
                self.locals[local.0 as usize] = v;
            }
            Stmt::Gemm(g) => self.gemm(g, bufs)?,
            Stmt::If { conds, body } => {
                if self.conds(conds)? {
                    for s in body {
                        self.stmt(s, bufs)?;
                    }
                }
            }
            Stmt::SharedStore { .. } | Stmt::Barrier => {
                return self.err("a GPU-only statement outside the GPU simulator".into())
            }
        }
        Ok(())
    }

    pub(crate) fn slot(&self, buf: BufId, i: i64, bufs: &[Vec<f32>]) -> Result<usize, InterpError> {
        let len = bufs.get(buf.0 as usize).map_or(0, Vec::len);
        if i < 0 || i as usize >= len {
            return self.err(format!(
                "index {i} out of bounds of b{} (length {len})",
                buf.0
            ));
        }
        Ok(i as usize)
    }

    pub(crate) fn idx(&self, i: &Idx) -> Result<i64, InterpError> {
        Ok(match i {
            Idx::Thread | Idx::Block(_) => match (self.pos, i) {
                (Some((t, _)), Idx::Thread) => t,
                (Some((_, b)), Idx::Block(a)) if *a < 3 => b[usize::from(*a)],
                _ => return self.err("a GPU index outside the GPU simulator".into()),
            },
            Idx::Const(c) => *c,
            Idx::Var(v) => self.vars[v.0 as usize],
            Idx::N => self.n,
            Idx::Add(a, b) => self.idx(a)?.wrapping_add(self.idx(b)?),
            Idx::Sub(a, b) => self.idx(a)?.wrapping_sub(self.idx(b)?),
            Idx::Mul(a, b) => self.idx(a)?.wrapping_mul(self.idx(b)?),
            Idx::Div(a, c) if *c > 0 => self.idx(a)?.div_euclid(*c),
            Idx::Rem(a, c) if *c > 0 => self.idx(a)?.rem_euclid(*c),
            Idx::Div(_, c) | Idx::Rem(_, c) => return self.err(format!("index division by {c}")),
            Idx::Min(a, b) => self.idx(a)?.min(self.idx(b)?),
            Idx::Max(a, b) => self.idx(a)?.max(self.idx(b)?),
        })
    }

    fn expr(&self, e: &Expr, bufs: &[Vec<f32>]) -> Result<f32, InterpError> {
        self.expr_on(e, bufs, &NoGpu)
    }

    /// Evaluates `e` for this thread; `gpu` answers shared loads and shuffles.
    pub(crate) fn expr_on(
        &self,
        e: &Expr,
        bufs: &[Vec<f32>],
        gpu: &dyn GpuReads,
    ) -> Result<f32, InterpError> {
        let thread = self.pos.map_or(-1, |(t, _)| t);
        let ex = |x: &Expr| self.expr_on(x, bufs, gpu);
        Ok(match e {
            Expr::SharedLoad { buf, index } => {
                let i = self.idx(index)?;
                gpu.shared(thread, *buf, i)
                    .or_else(|m| self.err(format!("thread {thread}: {m}")))?
            }
            Expr::ShuffleXor { local, lanes } => gpu
                .shuffle(thread, *local, *lanes)
                .or_else(|m| self.err(format!("thread {thread}: {m}")))?,
            Expr::Const(c) => *c,
            Expr::Load { buf, index } => {
                let i = self.idx(index)?;
                let slot = self.slot(*buf, i, bufs)?;
                gpu.global_load(thread, *buf, slot)
                    .or_else(|m| self.err(format!("thread {thread}: {m}")))?;
                bufs[buf.0 as usize][slot]
            }
            Expr::Local(l) => self.locals[l.0 as usize],
            Expr::Unary(op, a) => op.apply(ex(a)?),
            Expr::Binary(op, a, b) => op.apply(ex(a)?, ex(b)?),
            Expr::Fma(a, b, c) => ex(a)?.mul_add(ex(b)?, ex(c)?),
            Expr::Select {
                op,
                a,
                b,
                then,
                otherwise,
            } => {
                if op.apply(ex(a)?, ex(b)?) {
                    ex(then)?
                } else {
                    ex(otherwise)?
                }
            }
            Expr::FromIdx(i) => self.idx(i)? as f32,
            Expr::Rand {
                seed,
                key,
                step,
                counter,
            } => rand_value(*seed, *key, ex(step)?, self.idx(counter)?),
        })
    }

    fn gemm(&self, g: &Gemm, bufs: &mut [Vec<f32>]) -> Result<(), InterpError> {
        let geo = self.gemm_geometry(g)?;
        for p in 0..geo.count {
            for i in 0..geo.m {
                for j in 0..geo.n {
                    self.gemm_at(g, &geo, p, i, j, bufs)?;
                }
            }
        }
        Ok(())
    }

    fn gemm_geometry(&self, g: &Gemm) -> Result<GemmGeometry, InterpError> {
        let (count, strides) = match &g.batch {
            Some((c, s)) => (
                self.idx(c)?,
                [self.idx(&s[0])?, self.idx(&s[1])?, self.idx(&s[2])?],
            ),
            None => (1, [0, 0, 0]),
        };
        let at = |r: &crate::ir::MatRef| -> Result<[i64; 3], InterpError> {
            Ok([
                self.idx(&r.offset)?,
                self.idx(&r.row_stride)?,
                self.idx(&r.col_stride)?,
            ])
        };
        Ok(GemmGeometry {
            m: self.idx(&g.m)?,
            n: self.idx(&g.n)?,
            k: self.idx(&g.k)?,
            count,
            strides,
            a: at(&g.a)?,
            b: at(&g.b)?,
            c: at(&g.c)?,
        })
    }

    /// Element `(p, i, j)` of a product: `C[p][i, j] = alpha·Σ A·B + beta·C`.
    fn gemm_at(
        &self,
        g: &Gemm,
        geo: &GemmGeometry,
        p: i64,
        i: i64,
        j: i64,
        bufs: &mut [Vec<f32>],
    ) -> Result<(), InterpError> {
        let (a, b, c, strides) = (geo.a, geo.b, geo.c, geo.strides);
        let mut acc = 0.0f64;
        let first = match &g.windows {
            Some(w) => self.idx(&w.first)?,
            None => 0,
        };
        for l in 0..geo.k {
            let ai = match &g.windows {
                None => Some(a[0] + p * strides[0] + i * a[1] + l * a[2]),
                Some(w) if w.transposed => w.source(first + l, i).map(|s| a[0] + s),
                Some(w) => w.source(first + i, l).map(|s| a[0] + s),
            };
            let Some(ai) = ai else { continue };
            let bi = b[0] + p * strides[1] + l * b[1] + j * b[2];
            let av = bufs[g.a.buf.0 as usize][self.slot(g.a.buf, ai, bufs)?];
            let bv = bufs[g.b.buf.0 as usize][self.slot(g.b.buf, bi, bufs)?];
            acc += f64::from(av) * f64::from(bv);
        }
        let ci = c[0] + p * strides[2] + i * c[1] + j * c[2];
        let slot = self.slot(g.c.buf, ci, bufs)?;
        let old = if g.beta == 0.0 {
            0.0
        } else {
            g.beta * bufs[g.c.buf.0 as usize][slot]
        };
        bufs[g.c.buf.0 as usize][slot] = (g.alpha as f64 * acc) as f32 + old;
        Ok(())
    }
}

/// A product's sizes, batch strides and operand `[offset, row stride, col stride]`s.
struct GemmGeometry {
    m: i64,
    n: i64,
    k: i64,
    count: i64,
    strides: [i64; 3],
    a: [i64; 3],
    b: [i64; 3],
    c: [i64; 3],
}
