//! The CPU schedule: index arithmetic simplified ([`nnc_kernels::simplify`]), then
//! matrix-product kernels split into two halves.
//!
//! A kernel made of a `Gemm` and its epilogue loop over the product's rows has no
//! parallel loop, so it would run on one core. When the product is large enough to pay
//! for waking the second core (estimated at the file's batch size), this pass rewrites
//!
//! ```text
//! gemm m=M ...            parallel for p in 0..2 {
//! acc = <invariant>  ==>    gemm m=rows(p) a=A[lo(p)·rsa ..] c=C[lo(p)·rsc ..]
//! for i in 0..M {...}       acc = <invariant>
//!                           for i in 0..rows(p) { ... with i ↦ lo(p) + i }
//!                         }
//! ```
//! with `h = ⌈M/2⌉`, `lo(p) = min(p·h, M)` and `rows(p) = min(h, M − lo(p))`: each part
//! multiplies its own rows of `A` into its own rows of `C` and runs the epilogue of those
//! rows right away, while they are still in cache. The runtime hands one part to each
//! lane. Epilogues are elementwise over the product, so rows never depend on each other.
//! A product with few rows (a small batch's forward products) and many more columns is
//! split by columns instead: each part multiplies all rows of `A` by its half of `B`'s
//! columns and runs the epilogue on its half of each row (measured at batch 32: 5 % more
//! samples/s than the row split, whose 16-row halves are thin for the GEMM kernels).
//!
//! A kernel that already is one parallel loop is cut the same way when its body holds
//! loop invariants that hoisting could not move (nothing leaves a parallel loop): an
//! optimizer update of a bias evaluates Adam's bias corrections, two `exp`s, per element.
//! As `parallel for p in 0..2 { for i in 0..rows(p) { … } }` the invariants move out of
//! the inner loop and are computed once per part. The runtime splits a parallel loop into
//! halves anyway, so the parts run exactly as the halves did.

use nnc_kernels::gpu::eval_idx;
use nnc_kernels::ir::{Gemm, Idx, Kernel, Stmt, VarId};

/// Products below this many FLOPs (at the batch-size hint) stay on one core: waking the
/// other lane costs about a microsecond.
const MIN_FLOPS: i64 = 1 << 18;

/// Products with fewer rows than this (and many more columns) are split by columns.
const FEW_ROWS: i64 = 64;

/// Splits every eligible matrix-product kernel of `kernels`, and every parallel loop
/// with invariants left in it (see the module doc).
pub fn split_gemm_rows(kernels: &mut [Kernel], batch: usize) {
    for k in kernels {
        // Index arithmetic first: on the CPU it is most of a convolution gradient's work.
        // (Not on the GPU schedule: there the simplified conv gradients spill registers.)
        nnc_kernels::simplify::simplify_kernel(k);
        if let Some(body) = split(k, batch as i64) {
            k.body = body;
            k.num_vars += 1;
        } else if let Some(halved) = halve_parallel_loop(k) {
            *k = halved;
        }
    }
}

/// `parallel for i in 0..E { B }` as two parts with `B`'s invariants hoisted out of each
/// part's loop; `None` when the kernel is not one parallel loop or nothing would move.
fn halve_parallel_loop(k: &Kernel) -> Option<Kernel> {
    let [Stmt::Loop {
        var,
        extent,
        body,
        parallel: true,
    }] = k.body.as_slice()
    else {
        return None;
    };
    let p = VarId(k.num_vars);
    let (lo, rows) = part_of(extent, p);
    let mut out = k.clone();
    out.num_vars += 1;
    out.body = vec![Stmt::Loop {
        var: p,
        extent: Idx::Const(2),
        body: vec![Stmt::Loop {
            var: *var,
            extent: rows,
            body: body.iter().map(|s| shift_stmt(s, *var, &lo)).collect(),
            parallel: false,
        }],
        parallel: true,
    }];
    super::hoist::hoist_invariants(&mut out);
    // Worth it only if something now runs once per part instead of once per element.
    let Stmt::Loop { body: parts, .. } = &out.body[0] else {
        return None;
    };
    parts
        .iter()
        .any(|s| matches!(s, Stmt::Assign { .. }))
        .then_some(out)
}

fn split(k: &Kernel, n: i64) -> Option<Vec<Stmt>> {
    let (Stmt::Gemm(g), rest) = k.body.split_first()? else {
        return None;
    };
    if g.batch.is_some() || g.windows.is_some() {
        return None;
    }
    let flops = [&g.m, &g.n, &g.k]
        .into_iter()
        .try_fold(2i64, |acc, d| acc.checked_mul(eval_idx(d, n)?))?;
    if flops < MIN_FLOPS {
        return None;
    }
    // After the product: hoisted invariants, then at most one loop over its rows.
    let mut loops = 0;
    for s in rest {
        match s {
            Stmt::Assign { .. } => {}
            Stmt::Loop {
                extent,
                parallel: false,
                ..
            } if *extent == g.m && loops == 0 => loops += 1,
            _ => return None,
        }
    }
    let p = VarId(k.num_vars);
    if let Some(body) = split_columns(g, rest, p, n) {
        return Some(body);
    }
    let (lo, rows) = part_of(&g.m, p);
    let mut part = g.clone();
    part.m = rows.clone();
    part.a.offset = g.a.offset.clone() + lo.clone() * g.a.row_stride.clone();
    part.c.offset = g.c.offset.clone() + lo.clone() * g.c.row_stride.clone();
    let mut body = vec![Stmt::Gemm(Gemm { ..part })];
    for s in rest {
        body.push(match s {
            Stmt::Loop {
                var,
                body: inner,
                parallel,
                ..
            } => Stmt::Loop {
                var: *var,
                extent: rows.clone(),
                body: inner.iter().map(|s| shift_stmt(s, *var, &lo)).collect(),
                parallel: *parallel,
            },
            s => s.clone(),
        });
    }
    Some(vec![Stmt::Loop {
        var: p,
        extent: Idx::Const(2),
        body,
        parallel: true,
    }])
}

/// The column split (see the module doc) of a product with few rows (fewer than
/// [`FEW_ROWS`] at the batch-size hint: a small batch's forward and input-gradient
/// products) and at least twice as many columns, whose epilogue is one loop nest over
/// rows and columns; `None` otherwise, and the rows are split.
fn split_columns(g: &Gemm, rest: &[Stmt], p: VarId, n: i64) -> Option<Vec<Stmt>> {
    let (m, cols_n) = (eval_idx(&g.m, n)?, eval_idx(&g.n, n)?);
    if m >= FEW_ROWS || cols_n < 2 * m {
        return None;
    }
    let (lo, cols) = part_of(&g.n, p);
    let mut part = g.clone();
    part.n = cols.clone();
    part.b.offset = g.b.offset.clone() + lo.clone() * g.b.col_stride.clone();
    part.c.offset = g.c.offset.clone() + lo.clone() * g.c.col_stride.clone();
    let mut body = vec![Stmt::Gemm(part)];
    for s in rest {
        body.push(match s {
            Stmt::Assign { .. } => s.clone(),
            Stmt::Loop {
                var: row,
                extent,
                body: inner,
                parallel: false,
            } if *extent == g.m => {
                let [Stmt::Loop {
                    var: col,
                    extent: col_extent,
                    body: elems,
                    parallel: false,
                }] = inner.as_slice()
                else {
                    return None;
                };
                if *col_extent != g.n {
                    return None;
                }
                Stmt::Loop {
                    var: *row,
                    extent: extent.clone(),
                    body: vec![Stmt::Loop {
                        var: *col,
                        extent: cols.clone(),
                        body: elems.iter().map(|s| shift_stmt(s, *col, &lo)).collect(),
                        parallel: false,
                    }],
                    parallel: false,
                }
            }
            _ => return None,
        });
    }
    Some(vec![Stmt::Loop {
        var: p,
        extent: Idx::Const(2),
        body,
        parallel: true,
    }])
}

/// Part `p` (0 or 1) of `0..extent`: its start `min(p·⌈extent/2⌉, extent)` and length.
fn part_of(extent: &Idx, p: VarId) -> (Idx, Idx) {
    let half = (extent.clone() + 1).div(2);
    let lo = Idx::Min(
        Box::new(Idx::Var(p) * half.clone()),
        Box::new(extent.clone()),
    );
    let len = Idx::Min(Box::new(half), Box::new(extent.clone() - lo.clone()));
    (lo, len)
}

/// `s` with every use of `var` replaced by `by + var`.
fn shift_stmt(s: &Stmt, var: VarId, by: &Idx) -> Stmt {
    s.map_indices(&|i| shift_idx(i, var, by))
}

fn shift_idx(i: &Idx, var: VarId, by: &Idx) -> Idx {
    i.map_vars(&|v| {
        if v == var {
            by.clone() + Idx::Var(var)
        } else {
            Idx::Var(v)
        }
    })
}
