//! Loop-invariant code motion on kernel IR.
//!
//! Fusion inlines scalar chains into every element's expression, so an optimizer update
//! fused into a GEMM epilogue evaluates Adam's bias correction (`1 - exp(step·ln β)`)
//! once per weight. This pass moves every maximal subexpression that does not depend on
//! a loop out of it, into a fresh local assigned just before the loop; a value hoisted
//! out of an inner loop moves further out while it stays invariant.
//!
//! A subexpression is invariant in a loop when it reads no variable bound by the loop or
//! inside it, no local assigned inside it, and no buffer stored (or written by a `Gemm`)
//! inside it. Only compound expressions move (a constant, a local or a single load is
//! already as cheap as the local that would replace it), and `rand` never moves. Values
//! are pure f32 arithmetic, so evaluating them once, before the loop, gives bit-identical
//! results. One rewrite is not bit-exact: a division by an invariant becomes a
//! multiplication by its hoisted reciprocal (at most an ulp or two apart, well inside
//! the tolerance compiled code is held to). Nothing moves out of a `parallel` loop: it stays its kernel's only top-level
//! statement, as the kernel IR requires; invariants of its inner loops land inside it.

use std::collections::HashSet;

use nnc_kernels::ir::{BinOp, BufId, Expr, Idx, Kernel, LocalId, Stmt, UnOp, VarId};

/// Hoists the loop invariants of every loop of `k`.
pub fn hoist_invariants(k: &mut Kernel) {
    let mut h = Hoister {
        first_new: k.num_locals,
        next: k.num_locals,
    };
    let body = std::mem::take(&mut k.body);
    k.body = h.block(body);
    k.num_locals = h.next;
}

struct Hoister {
    /// Locals from this index on were created here (each is assigned exactly once).
    first_new: u32,
    next: u32,
}

/// What a loop changes: the variables it binds, the locals it assigns and the buffers it
/// writes.
#[derive(Clone, Default)]
pub(super) struct Variant {
    pub(super) vars: HashSet<VarId>,
    pub(super) locals: HashSet<LocalId>,
    bufs: HashSet<BufId>,
}

impl Variant {
    pub(super) fn collect(&mut self, s: &Stmt) {
        s.visit(&mut |s| match s {
            Stmt::Loop { var, .. } => {
                self.vars.insert(*var);
            }
            Stmt::Store { buf, .. } => {
                self.bufs.insert(*buf);
            }
            Stmt::Assign { local, .. } => {
                self.locals.insert(*local);
            }
            Stmt::Gemm(g) => {
                self.bufs.insert(g.c.buf);
            }
            // Shared loads are never treated as invariant, so shared stores need no record.
            Stmt::If { .. } | Stmt::SharedStore { .. } | Stmt::Barrier => {}
        });
    }

    fn idx_invariant(&self, i: &Idx) -> bool {
        match i {
            Idx::Var(v) => !self.vars.contains(v),
            Idx::Const(_) | Idx::N | Idx::Thread | Idx::Block(_) => true,
            Idx::Div(a, _) | Idx::Rem(a, _) => self.idx_invariant(a),
            Idx::Add(a, b) | Idx::Sub(a, b) | Idx::Mul(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
                self.idx_invariant(a) && self.idx_invariant(b)
            }
        }
    }

    pub(super) fn invariant(&self, e: &Expr) -> bool {
        match e {
            Expr::Const(_) => true,
            Expr::Local(l) => !self.locals.contains(l),
            Expr::Load { buf, index } => !self.bufs.contains(buf) && self.idx_invariant(index),
            Expr::FromIdx(i) => self.idx_invariant(i),
            Expr::Unary(_, a) => self.invariant(a),
            Expr::Binary(_, a, b) => self.invariant(a) && self.invariant(b),
            Expr::Fma(a, b, c) => self.invariant(a) && self.invariant(b) && self.invariant(c),
            Expr::Select {
                a,
                b,
                then,
                otherwise,
                ..
            } => [a, b, then, otherwise].iter().all(|x| self.invariant(x)),
            Expr::Rand { .. } | Expr::SharedLoad { .. } | Expr::ShuffleXor { .. } => false,
        }
    }
}

/// Whether replacing `e` by a local saves work.
fn worth_hoisting(e: &Expr) -> bool {
    !matches!(
        e,
        Expr::Const(_) | Expr::Local(_) | Expr::Load { .. } | Expr::FromIdx(_)
    )
}

impl Hoister {
    fn block(&mut self, stmts: Vec<Stmt>) -> Vec<Stmt> {
        let mut out = Vec::with_capacity(stmts.len());
        for mut s in stmts {
            if let Stmt::Loop {
                var,
                body,
                parallel,
                ..
            } = &mut s
            {
                *body = self.block(std::mem::take(body));
                if !*parallel {
                    out.extend(self.hoist_from(*var, body));
                }
            }
            out.push(s);
        }
        out
    }

    /// Removes the invariants of the loop over `var` from `body`; returns the statements
    /// to run before the loop.
    fn hoist_from(&mut self, var: VarId, body: &mut Vec<Stmt>) -> Vec<Stmt> {
        let mut variant = Variant::default();
        variant.vars.insert(var);
        body.iter().for_each(|s| variant.collect(s));
        let mut pre = Vec::new();
        // Values already hoisted out of inner loops move on while they stay invariant
        // (each such local has exactly one assignment, so moving it is safe).
        loop {
            let at = body.iter().position(|s| match s {
                Stmt::Assign { local, value } => {
                    local.0 >= self.first_new && variant.invariant(value)
                }
                _ => false,
            });
            let Some(at) = at else { break };
            if let Stmt::Assign { local, .. } = &body[at] {
                variant.locals.remove(local);
            }
            pre.push(body.remove(at));
        }
        let mut found: Vec<(Expr, LocalId)> = Vec::new();
        for s in body.iter_mut() {
            self.stmt(s, &variant, &mut found);
        }
        pre.extend(
            found
                .into_iter()
                .map(|(value, local)| Stmt::Assign { local, value }),
        );
        pre
    }

    fn stmt(&mut self, s: &mut Stmt, v: &Variant, found: &mut Vec<(Expr, LocalId)>) {
        match s {
            Stmt::Store { value, .. }
            | Stmt::Assign { value, .. }
            | Stmt::SharedStore { value, .. } => self.expr(value, v, found),
            Stmt::Loop { body, .. } => body.iter_mut().for_each(|s| self.stmt(s, v, found)),
            // What an `if` guards must not run unguarded before the loop.
            Stmt::Gemm(_) | Stmt::If { .. } | Stmt::Barrier => {}
        }
    }

    fn expr(&mut self, e: &mut Expr, v: &Variant, found: &mut Vec<(Expr, LocalId)>) {
        // `x / c` with an invariant `c` becomes `x · (1/c)`: one division per loop instead
        // of one per iteration (a multiply is several times cheaper than a divide).
        divide_by_reciprocal(e, |x| v.invariant(x), |x| v.invariant(x));
        if worth_hoisting(e) && v.invariant(e) {
            let local = match found.iter().find(|(x, _)| x == e) {
                Some((_, l)) => *l,
                None => {
                    let l = LocalId(self.next);
                    self.next += 1;
                    found.push((e.clone(), l));
                    l
                }
            };
            *e = Expr::Local(local);
            return;
        }
        for x in e.children_mut() {
            self.expr(x, v, found);
        }
    }
}

/// Rewrites `e = x / c` into `x · recip(c)` when the divisor `c` may move (`movable`)
/// and `x` is not `invariant` (else the whole quotient moves, divided exactly), so that
/// the reciprocal can leave the loop.
pub(super) fn divide_by_reciprocal(
    e: &mut Expr,
    movable: impl Fn(&Expr) -> bool,
    invariant: impl Fn(&Expr) -> bool,
) {
    if let Expr::Binary(BinOp::Div, a, b) = e {
        if movable(b) && !invariant(a) {
            let (a, b) = (
                std::mem::replace(a.as_mut(), Expr::Const(0.0)),
                b.as_ref().clone(),
            );
            *e = Expr::Binary(
                BinOp::Mul,
                Box::new(a),
                Box::new(Expr::Unary(UnOp::Recip, Box::new(b))),
            );
        }
    }
}
