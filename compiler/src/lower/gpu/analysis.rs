//! What the GPU schedule's rules ask of a CPU-shaped kernel body: where its products
//! and long loops are, which buffers and indices it loads and stores, and which locals it
//! assigns or keeps private to an iteration.

use std::collections::HashSet;

use nnc_kernels::gpu::eval_idx;
use nnc_kernels::ir::{BufId, Gemm, Idx, LocalId, Stmt, VarId};

use super::{LONG_LOOP, NOMINAL_BATCH};

pub(super) fn holds_gemm(s: &Stmt) -> bool {
    let mut found = false;
    s.visit(&mut |s| found |= matches!(s, Stmt::Gemm(_)));
    found
}

/// `for v0 { for v1 { … gemm } }`: the loops (outermost first) and the product.
pub(super) fn gemm_nest(s: &Stmt) -> Option<(Vec<(VarId, Idx)>, &Gemm)> {
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

/// Whether the loops around a product fold into the grid: every extent but the
/// outermost, and the batch count when there are loops, are constants.
pub(super) fn product_loops_fold(loops: &[(VarId, Idx)], g: &Gemm) -> bool {
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
pub(super) fn for_each_assigned(s: &Stmt, f: &mut impl FnMut(LocalId)) {
    s.visit(&mut |s| {
        if let Stmt::Assign { local, .. } = s {
            f(*local);
        }
    });
}

/// Whether a loop of this extent is long enough to spread over a block.
pub(super) fn is_long(extent: &Idx) -> bool {
    eval_idx(extent, NOMINAL_BATCH).is_some_and(|e| e >= LONG_LOOP)
}

/// A long loop that reads some buffer at unit stride in its variable (any stride when
/// `any_stride`).
pub(super) fn is_long_loop(s: &Stmt, any_stride: bool) -> bool {
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
pub(super) fn stores_of(s: &Stmt, out: &mut Vec<(BufId, Idx)>) -> bool {
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

pub(super) fn loads_of(s: &Stmt) -> Vec<(BufId, Idx)> {
    let mut out = Vec::new();
    s.for_each_value(&mut |e| e.for_each_load(&mut |b, i| out.push((b, i.clone()))));
    out
}

/// Whether every local a straight-line body reads was assigned earlier in it (so that
/// no value flows from one iteration to the next).
pub(super) fn locals_private(body: &[Stmt]) -> bool {
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
