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

#[cfg(test)]
mod tests {
    use super::*;
    use nnc_kernels::ir::{BinOp, Kernel, UnOp};

    fn load(buf: u32, index: Idx) -> Expr {
        Expr::Load {
            buf: BufId(buf),
            index,
        }
    }

    fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    /// `parallel for p in 0..N { for i in 0..6 { for u in 0..4 {
    ///   y[p·24 + i·4 + u] = x[…] / (s[u]·2) + s[u]/3 } } }`: a batch-norm gradient's shape.
    fn sweep() -> Program {
        let (p, i, u) = (VarId(0), VarId(1), VarId(2));
        let at = Idx::from(p) * 24 + Idx::from(i) * 4 + Idx::from(u);
        let s = || load(1, Idx::from(u));
        let value = bin(
            BinOp::Add,
            bin(
                BinOp::Div,
                load(0, at.clone()),
                bin(BinOp::Mul, s(), Expr::Const(2.0)),
            ),
            bin(BinOp::Div, s(), Expr::Const(3.0)),
        );
        let lp = |var, extent: Idx, parallel, body| Stmt::Loop {
            var,
            extent,
            body,
            parallel,
        };
        let body = lp(
            i,
            Idx::Const(6),
            false,
            vec![lp(
                u,
                Idx::Const(4),
                false,
                vec![Stmt::Store {
                    buf: BufId(2),
                    index: at,
                    value,
                }],
            )],
        );
        let per_batch = |n, kind| BufferDecl {
            name: String::new(),
            len: Size {
                per_batch: n,
                fixed: 0,
            },
            kind,
        };
        Program {
            name: "sweep".into(),
            buffers: vec![
                per_batch(24, BufferKind::Input),
                BufferDecl {
                    name: "s".into(),
                    len: Size::fixed(4),
                    kind: BufferKind::Input,
                },
                per_batch(24, BufferKind::Output),
            ],
            kernels: vec![Kernel {
                name: "k0".into(),
                params: vec![BufId(0), BufId(1), BufId(2)],
                body: vec![lp(p, Idx::N, true, vec![body])],
                num_vars: 3,
                num_locals: 0,
                note: String::new(),
                gpu: None,
            }],
            arena: Size::default(),
        }
    }

    /// Both per-channel values leave the sweep (the division by one of them becoming a
    /// multiplication), into rows of their own per parallel part, and the results agree
    /// with the program before the pass.
    #[test]
    fn per_channel_values_leave_the_sweep() {
        let before = sweep();
        let mut after = before.clone();
        hoist_lane_invariants(&mut after);
        after.validate().expect("valid after the pass");
        assert_eq!(after.buffers.len(), 5, "two rows added");
        for row in &after.buffers[3..] {
            assert_eq!(row.len.per_batch, 4, "one row of 4 lanes per part");
            assert!(matches!(row.kind, BufferKind::Temp { .. }));
        }
        let Stmt::Loop { body, .. } = &after.kernels[0].body[0] else {
            panic!("the parallel loop stays the kernel's only statement")
        };
        assert_eq!(body.len(), 3, "two row loops before the sweep");
        let mut slow = 0;
        body[2].visit(&mut |s| {
            if let Stmt::Store { value, .. } = s {
                value.visit(&mut |e| {
                    slow += usize::from(matches!(
                        e,
                        Expr::Binary(BinOp::Div, ..) | Expr::Unary(UnOp::Recip, _)
                    ));
                });
            }
        });
        assert_eq!(slow, 0, "no division left in the sweep");
        for n in [1, 3] {
            let mut want = nnc_kernels::samples::inputs(&before, n);
            nnc_kernels::interp::run(&before, &mut want, n).expect("runs");
            let mut got = nnc_kernels::samples::inputs(&after, n);
            nnc_kernels::interp::run(&after, &mut got, n).expect("runs");
            for (x, y) in want[2].iter().zip(&got[2]) {
                assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{x} vs {y}");
            }
        }
    }

    /// On the hand-built sample programs the pass keeps every kernel valid and every
    /// result (within the reciprocal's rounding).
    #[test]
    fn samples_compute_the_same_after_the_pass() {
        for before in nnc_kernels::samples::all() {
            let mut after = before.clone();
            hoist_lane_invariants(&mut after);
            after
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", before.name));
            for n in [1, 5] {
                let mut want = nnc_kernels::samples::inputs(&before, n);
                nnc_kernels::interp::run(&before, &mut want, n).expect("runs");
                let mut got = nnc_kernels::samples::inputs(&after, n);
                nnc_kernels::interp::run(&after, &mut got, n).expect("runs");
                for (b, (w, g)) in want.iter().zip(&got).enumerate() {
                    for (x, y) in w.iter().zip(g) {
                        assert!(
                            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                            "{} buffer {b}: {x} vs {y}",
                            before.name
                        );
                    }
                }
            }
        }
    }
}
