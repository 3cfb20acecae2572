//! Elementwise GPU kernels: one thread per element of a range, and the flattening of a
//! loop nest of independent iterations into such a range.

use nnc_kernels::ir::{BufId, Idx, Kernel, Stmt, VarId};

use super::analysis::{loads_of, locals_private, stores_of};
use super::build::{ceil_div, global_thread, gpu_kernel, lt, one, subst, Fresh};
use super::ELEMENTWISE_THREADS;

/// One thread per element of a `work`-long range: `if gid < work { body(gid) }`.
pub(super) fn elementwise(
    k: &Kernel,
    name: String,
    work: &Idx,
    body: Vec<Stmt>,
    fresh: &mut Fresh,
) -> Kernel {
    let t = ELEMENTWISE_THREADS;
    let guarded = vec![Stmt::If {
        conds: vec![lt(global_thread(t), work.clone())],
        body,
    }];
    let launch = fresh.launch(t, [ceil_div(work.clone(), i64::from(t)), one(), one()]);
    gpu_kernel(k, name, guarded, fresh, launch)
}

/// A perfect loop nest `for v0 { for v1 { … straight-line body } }` whose iterations are
/// independent, as `(iterations, body)` with the variables recovered from one flat index
/// `gid` by division (all extents but the outermost constant).
pub(super) fn flatten_independent_nest(s: &Stmt) -> Option<(Idx, Vec<Stmt>)> {
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
