//! Lane-invariant code motion for the CPU schedule: per-channel values out of sweeps.
//!
//! A sweep over an activation `[N, h, w, c]` is a nest whose innermost loop runs over
//! the `c` channels (a short loop of constant extent, the "lane" loop, which the CPU
//! backend turns into straight-line vector code). Fusion inlines per-channel chains into
//! its body, so the gradient of a batch norm divides each element by the channel's
//! standard deviation three times and by the count once: the values depend on the lane
//! alone, but [`hoist`](super::hoist) moves only what depends on no loop variable at all.
//!
//! This pass finds, for each non-parallel loop `L` of a kernel, the compound
//! subexpressions of its lane loops that depend on the lane variable `u` and on nothing
//! else `L` changes, and computes each once per lane before `L`, into a small scratch
//! row:
//!
//! ```text
//!                                       for u in 0..E { t[p·E + u] = f(u) }
//! for i in 0..n {                       for i in 0..n {
//!   for u in 0..E {            ==>        for u in 0..E {
//!     y[i·E + u] = x[..] · f(u)             y[i·E + u] = x[..] · t[p·E + u]
//! ```
//!
//! `p` is the enclosing parallel loop's variable (each part has its own row; the row
//! count is that loop's extent, a constant or a multiple of `N`). A division by a
//! lane-invariant value becomes a multiplication by its hoisted reciprocal, as the scalar
//! hoister does (an ulp or two apart). Only subexpressions with a division, a square root
//! or a transcendental, or at least two operations, move; a copy `acc = other` assigned
//! in `L` from a value `L` does not change counts as that value. The rows are `Temp`
//! buffers, so the arena is planned again when any was added. GPU kernels are scheduled
//! from the lowered program and never see this pass.

use std::collections::HashMap;

use nnc_kernels::ir::{
    BinOp, BufId, BufferDecl, BufferKind, Expr, Idx, Kernel, LocalId, Program, Size, Stmt, UnOp,
    VarId,
};

use super::hoist::{divide_by_reciprocal, Variant};
use super::memory;

/// Lane loops longer than this are left alone (their rows would not stay in registers
/// or L1 beside the sweep's data).
const MAX_LANES: i64 = 64;

/// Moves the lane invariants of every kernel of `p` out of their sweeps; re-plans the
/// arena when rows were added.
pub fn hoist_lane_invariants(p: &mut Program) {
    let mut added = false;
    for k in 0..p.kernels.len() {
        let kernel = &mut p.kernels[k];
        let mut cx = Cx {
            buffers: &mut p.buffers,
            kernel: kernel.name.clone(),
            rows: Vec::new(),
        };
        let body = std::mem::take(&mut kernel.body);
        kernel.body = cx.block(body, Some(Part::Serial));
        added |= !cx.rows.is_empty();
        add_params(kernel, cx.rows);
    }
    if added {
        memory::plan_arena(p);
    }
}

fn add_params(k: &mut Kernel, rows: Vec<BufId>) {
    for b in rows {
        if !k.params.contains(&b) {
            k.params.push(b);
        }
    }
}

/// Where a row goes: one row for a kernel without a parallel loop, or one per iteration
/// of the parallel loop over `var` (`parts` of them).
#[derive(Clone, Copy)]
enum Part {
    Serial,
    Parallel { var: VarId, parts: Size },
}

struct Cx<'a> {
    buffers: &'a mut Vec<BufferDecl>,
    kernel: String,
    rows: Vec<BufId>,
}

/// A hoisted value: its expression (copies resolved), lane count and row.
struct Found {
    value: Expr,
    u: VarId,
    lanes: i64,
    row: BufId,
}

impl Cx<'_> {
    /// `part` is `None` inside a parallel loop whose extent is no [`Size`] (nothing moves
    /// there).
    fn block(&mut self, stmts: Vec<Stmt>, part: Option<Part>) -> Vec<Stmt> {
        let mut out = Vec::with_capacity(stmts.len());
        for mut s in stmts {
            if let Stmt::Loop {
                var,
                extent,
                body,
                parallel,
            } = &mut s
            {
                if *parallel {
                    let inner = size_of(extent).map(|parts| Part::Parallel { var: *var, parts });
                    *body = self.block(std::mem::take(body), inner);
                } else if let Some(part) = part {
                    let pre = self.hoist_from(&mut s, part);
                    out.extend(pre);
                    if let Stmt::Loop { body, .. } = &mut s {
                        *body = self.block(std::mem::take(body), Some(part));
                    }
                }
            }
            out.push(s);
        }
        out
    }

    /// Replaces the lane invariants of loop `l` by loads of their rows; returns the loops
    /// that fill the rows, to run before `l`.
    fn hoist_from(&mut self, l: &mut Stmt, part: Part) -> Vec<Stmt> {
        let mut variant = Variant::default();
        variant.collect(l);
        let copies = copies_in(l, &variant);
        let mut found: Vec<Found> = Vec::new();
        let Stmt::Loop { body, .. } = l else {
            return Vec::new();
        };
        for s in body.iter_mut() {
            self.lane_loops(s, &variant, &copies, part, &mut found);
        }
        found
            .into_iter()
            .map(|f| Stmt::Loop {
                var: f.u,
                extent: Idx::Const(f.lanes),
                parallel: false,
                body: vec![Stmt::Store {
                    buf: f.row,
                    index: row_index(part, f.lanes, f.u),
                    value: f.value,
                }],
            })
            .collect()
    }

    fn lane_loops(
        &mut self,
        s: &mut Stmt,
        variant: &Variant,
        copies: &HashMap<LocalId, Expr>,
        part: Part,
        found: &mut Vec<Found>,
    ) {
        let Stmt::Loop {
            var,
            extent,
            body,
            parallel: false,
        } = s
        else {
            return;
        };
        let lanes = match extent {
            Idx::Const(e) if (2..=MAX_LANES).contains(e) => Some(*e),
            _ => None,
        };
        let leaf = body
            .iter()
            .all(|s| matches!(s, Stmt::Assign { .. } | Stmt::Store { .. }));
        match lanes {
            Some(lanes) if leaf => {
                let mut inner = variant.clone();
                inner.vars.remove(var);
                inner.locals.retain(|l| !copies.contains_key(l));
                let mut lane = LaneCx {
                    variant: inner,
                    copies,
                    u: *var,
                    lanes,
                    part,
                };
                for s in body.iter_mut() {
                    if let Stmt::Assign { value, .. } | Stmt::Store { value, .. } = s {
                        self.expr(value, &mut lane, found);
                    }
                }
            }
            _ => {
                for s in body.iter_mut() {
                    self.lane_loops(s, variant, copies, part, found);
                }
            }
        }
    }

    fn expr(&mut self, e: &mut Expr, lane: &mut LaneCx, found: &mut Vec<Found>) {
        divide_by_reciprocal(
            e,
            |x| lane.invariant(x) && reads_var(x, lane.u),
            |x| lane.invariant(x),
        );
        if lane.invariant(e) && reads_var(e, lane.u) && cost(e) >= 2 {
            let mut value = e.clone();
            lane.resolve(&mut value);
            let row = match found
                .iter()
                .find(|f| f.value == value && f.u == lane.u && f.lanes == lane.lanes)
            {
                Some(f) => f.row,
                None => {
                    let row = self.row(lane.part, lane.lanes);
                    found.push(Found {
                        value,
                        u: lane.u,
                        lanes: lane.lanes,
                        row,
                    });
                    row
                }
            };
            *e = Expr::Load {
                buf: row,
                index: row_index(lane.part, lane.lanes, lane.u),
            };
            return;
        }
        for x in e.children_mut() {
            self.expr(x, lane, found);
        }
    }

    /// A fresh scratch row (one per part) of `lanes` floats.
    fn row(&mut self, part: Part, lanes: i64) -> BufId {
        let parts = match part {
            Part::Serial => Size::fixed(1),
            Part::Parallel { parts, .. } => parts,
        };
        let len = Size {
            per_batch: parts.per_batch * lanes as usize,
            fixed: parts.fixed * lanes as usize,
        };
        let id = BufId(self.buffers.len() as u32);
        self.buffers.push(BufferDecl {
            name: format!("{}.lanes{}", self.kernel, self.rows.len()),
            len,
            kind: BufferKind::Temp {
                offset: Size::default(),
            },
        });
        self.rows.push(id);
        id
    }
}

/// What the lane loop over `u` may read in a hoisted value.
struct LaneCx<'a> {
    variant: Variant,
    copies: &'a HashMap<LocalId, Expr>,
    u: VarId,
    lanes: i64,
    part: Part,
}

impl LaneCx<'_> {
    fn invariant(&self, e: &Expr) -> bool {
        self.variant.invariant(e)
    }

    /// Replaces every copy local in `e` by the value it copies.
    fn resolve(&self, e: &mut Expr) {
        if let Expr::Local(l) = e {
            if let Some(v) = self.copies.get(l) {
                *e = v.clone();
            }
            return;
        }
        for x in e.children_mut() {
            self.resolve(x);
        }
    }
}

/// Locals assigned exactly once in `l`, to a constant or to a local `l` does not assign.
fn copies_in(l: &Stmt, variant: &Variant) -> HashMap<LocalId, Expr> {
    let mut count: HashMap<LocalId, (usize, Expr)> = HashMap::new();
    l.visit(&mut |s| {
        if let Stmt::Assign { local, value } = s {
            let e = count.entry(*local).or_insert((0, value.clone()));
            e.0 += 1;
        }
    });
    count
        .into_iter()
        .filter(|(_, (n, v))| {
            *n == 1
                && match v {
                    Expr::Const(_) => true,
                    Expr::Local(o) => !variant.locals.contains(o),
                    _ => false,
                }
        })
        .map(|(l, (_, v))| (l, v))
        .collect()
}

/// `p·lanes + u` (or `u` for a serial kernel).
fn row_index(part: Part, lanes: i64, u: VarId) -> Idx {
    match part {
        Part::Serial => Idx::Var(u),
        Part::Parallel { var, .. } => Idx::Add(
            Box::new(Idx::Mul(
                Box::new(Idx::Var(var)),
                Box::new(Idx::Const(lanes)),
            )),
            Box::new(Idx::Var(u)),
        ),
    }
}

/// A parallel loop's extent as a buffer size (a constant or a multiple of `N`).
fn size_of(extent: &Idx) -> Option<Size> {
    match extent {
        Idx::Const(c) if *c > 0 => Some(Size::fixed(*c as usize)),
        Idx::N => Some(Size {
            per_batch: 1,
            fixed: 0,
        }),
        Idx::Mul(a, b) => match (a.as_ref(), b.as_ref()) {
            (Idx::Const(c), Idx::N) | (Idx::N, Idx::Const(c)) if *c > 0 => Some(Size {
                per_batch: *c as usize,
                fixed: 0,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `e` reads variable `v` in an index.
fn reads_var(e: &Expr, v: VarId) -> bool {
    let mut hit = false;
    e.visit(&mut |x| match x {
        Expr::Load { index, .. } | Expr::FromIdx(index) => hit |= index.stride(v) != Some(0),
        _ => {}
    });
    hit
}

/// Operations in `e`, a division, square root or transcendental counting as several.
fn cost(e: &Expr) -> u32 {
    let mut c = 0;
    e.visit(&mut |x| {
        c += match x {
            Expr::Binary(BinOp::Div, ..) => 8,
            Expr::Unary(UnOp::Sqrt | UnOp::Exp | UnOp::Log | UnOp::Tanh | UnOp::Recip, _) => 8,
            Expr::Unary(..) | Expr::Binary(..) | Expr::Fma(..) | Expr::Select { .. } => 1,
            _ => 0,
        }
    });
    c
}
