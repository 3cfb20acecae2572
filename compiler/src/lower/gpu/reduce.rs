//! Cooperative GPU kernels: a loop run by a whole block of threads, its accumulators
//! (`+`, `max`, `min`) reduced over the block with warp shuffles and shared memory.

use std::collections::HashSet;

use nnc_kernels::build::{assign, for_};
use nnc_kernels::ir::{BinOp, BufId, CmpOp, Cond, Expr, Idx, LocalId, Stmt, VarId};

use super::analysis::{for_each_assigned, loads_of, stores_of};
use super::build::{combine, lt, one, subst, Fresh};

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

/// `body` run by a block of `threads` threads together (see the `gpu` module doc), or `None`
/// when some statement does not fit the pattern.
pub(super) fn cooperate(body: &[Stmt], threads: u32, fresh: &mut Fresh) -> Option<Vec<Stmt>> {
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
