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
//! An epilogue may also be a nest over samples (`for s in 0..N`, `r` rows of the product
//! per sample: an input gradient's max-pool division); then the parts split the samples,
//! `lo(p)·r` being the part's first row. (Before, such a kernel stayed whole: the runtime
//! split the product between the lanes, and the epilogue ran on one of them.)
//! A product with few rows (a small batch's forward products) and many more columns is
//! split by columns instead: each part multiplies all rows of `A` by its half of `B`'s
//! columns and runs the epilogue on its half of each row (measured at batch 32: 5 % more
//! samples/s than the row split, whose 16-row halves are thin for the GEMM kernels).
//!
//! A product over windows (a convolution, `Gemm::windows`) is cut the same way: a part's
//! rows of `A` are windows `first + lo(p) ..` of the view (its `a.offset` is the image's
//! and stays). A transposed view (a weight gradient: its rows are taps, the windows are
//! the reduction) is not cut at all: the runtime splits it between the lanes by windows,
//! each lane with all the columns. (Cut by columns, VGG's first weight gradient, 9 taps
//! × 32 filters, ran 4× slower: each half went to the narrow-product kernels.) A column
//! cut moves only `B` and `C`, so an untransposed view takes it as it is.
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
    if g.batch.is_some() {
        return None;
    }
    let flops = [&g.m, &g.n, &g.k]
        .into_iter()
        .try_fold(2i64, |acc, d| acc.checked_mul(eval_idx(d, n)?))?;
    if flops < MIN_FLOPS {
        return None;
    }
    // After the product: hoisted invariants, then at most one loop over its rows, or
    // over groups of `r` of its rows (an input gradient's epilogue over samples, `m =
    // N·r`): then the parts split that loop's extent, `r` rows of the product per step.
    let mut epilogue = None;
    for s in rest {
        match s {
            Stmt::Assign { .. } => {}
            Stmt::Loop {
                extent,
                parallel: false,
                ..
            } if epilogue.is_none() => {
                epilogue = Some((extent.clone(), rows_per_step(&g.m, extent, n)?));
            }
            _ => return None,
        }
    }
    let (steps, per_step) = epilogue.unwrap_or_else(|| (g.m.clone(), 1));
    let p = VarId(k.num_vars);
    if g.windows.as_ref().is_some_and(|w| w.transposed) {
        // Rows of a transposed windows view are taps, not windows: the runtime splits
        // such a product (a weight gradient) between the lanes itself, by windows, each
        // lane with all the columns (a cut by columns gave each lane a product half as
        // wide over all the windows: 4× slower for VGG's first layer, 9 taps × 32).
        return None;
    }
    if per_step == 1 {
        if let Some(body) = split_columns(g, rest, p, n) {
            return Some(body);
        }
    }
    // The parts split the epilogue loop's steps (the product's rows when it has none or
    // it runs over rows): rows `lo·r ..` of the product, `rows·r` of them.
    let (lo, rows) = part_of(&steps, p);
    let in_rows = |i: &Idx| {
        if per_step == 1 {
            i.clone()
        } else {
            i.clone() * per_step
        }
    };
    let first_row = in_rows(&lo);
    let mut part = g.clone();
    part.m = in_rows(&rows);
    match &g.windows {
        // Rows of a windows view are windows: the part starts `lo` windows further on.
        Some(w) => part.windows = Some(w.map_first(&|f| f.clone() + first_row.clone())),
        None => part.a.offset = g.a.offset.clone() + first_row.clone() * g.a.row_stride.clone(),
    }
    part.c.offset = g.c.offset.clone() + first_row.clone() * g.c.row_stride.clone();
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

/// `r` when the product's `m` is `extent·r` for a constant `r ≥ 1` at every batch size
/// (checked at the hint `n` and a few others); `None` otherwise.
fn rows_per_step(m: &Idx, extent: &Idx, n: i64) -> Option<i64> {
    if m == extent {
        return Some(1);
    }
    let mut r = None;
    for b in [n, 1, 2, 3, 7, n + 5] {
        let (mb, eb) = (eval_idx(m, b)?, eval_idx(extent, b)?);
        if eb <= 0 || mb % eb != 0 || r.is_some_and(|r| r != mb / eb) {
            return None;
        }
        r = Some(mb / eb);
    }
    r
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

#[cfg(test)]
mod tests {
    use nnc_kernels::build::*;
    use nnc_kernels::ir::{BinOp, BufId, BufferKind, Idx, Program, Size, Stmt, VarId, Windows};

    /// A 5×5 valid convolution of 14×14×`c` with `f` filters (LeNet's conv2 with `c` = 6
    /// and `f` = 16) as a product over windows: forward (`transposed` false:
    /// `[N·100, 25c]·[25c, f]`, then a ReLU epilogue over its rows) or weight gradient
    /// (`[25c, N·100]·[N·100, f]`, no epilogue).
    fn conv(transposed: bool, c: i64, f: i64) -> Program {
        let (x, w, y) = (BufId(0), BufId(1), BufId(2));
        let windows = Some(Windows {
            image: [14, 14, c],
            grid: [10, 10],
            taps: [5, 5],
            step: [1, 1],
            tap: [1, 1],
            pad: [0, 0],
            div: [1, 1],
            first: Idx::Const(0),
            transposed,
        });
        let windows_n = Idx::N * 100;
        let (taps, f_len) = (25 * c, f as usize);
        let (m, k, lens) = if transposed {
            let lens = [
                Size::per_batch(100 * f_len),
                Size::fixed(taps as usize * f_len),
            ];
            (Idx::Const(taps), windows_n, lens)
        } else {
            let lens = [
                Size::fixed(taps as usize * f_len),
                Size::per_batch(100 * f_len),
            ];
            (windows_n, Idx::Const(taps), lens)
        };
        let gemm = Stmt::Gemm(nnc_kernels::ir::Gemm {
            windows,
            ..matmul(
                m.clone(),
                f,
                k,
                matrix(x, 0i64, 0i64, 0i64),
                matrix(w, 0i64, f, 1i64),
                matrix(y, 0i64, f, 1i64),
            )
        });
        let (i, j) = (VarId(0), VarId(1));
        let at = Idx::from(i) * f + Idx::from(j);
        let relu = binary(BinOp::Max, load(y, at.clone()), constant(0.0));
        let epilogue = for_(
            i,
            m,
            false,
            vec![for_(j, f, false, vec![store(y, at, relu)])],
        );
        let body = if transposed {
            vec![gemm]
        } else {
            vec![gemm, epilogue]
        };
        program(
            "conv",
            vec![
                decl("x", Size::per_batch(196 * c as usize), BufferKind::Input),
                decl("w", lens[0], BufferKind::Input),
                decl("y", lens[1], BufferKind::Output),
            ],
            vec![kernel("conv", vec![x, w, y], body, 2, 0)],
        )
    }

    /// The split program computes what the whole one does, at batch sizes that leave an
    /// odd number of windows or none.
    fn same_results(whole: &Program, split: &Program) {
        split.validate().expect("valid split");
        for n in [0, 1, 3] {
            let mut want = nnc_kernels::samples::inputs(whole, n);
            let mut got = want.clone();
            nnc_kernels::interp::run(whole, &mut want, n).unwrap();
            nnc_kernels::interp::run(split, &mut got, n).unwrap();
            assert_eq!(want, got, "batch {n}");
        }
    }

    /// The product of the split kernel's parts (its parallel loop's first statement), or
    /// `None` if the kernel was not split.
    fn part_gemm(p: &Program) -> Option<&nnc_kernels::ir::Gemm> {
        match p.kernels[0].body.as_slice() {
            [Stmt::Loop {
                body,
                parallel: true,
                ..
            }] => match body.first() {
                Some(Stmt::Gemm(g)) => Some(g),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn forward_conv_is_cut_by_windows() {
        let whole = conv(false, 6, 16);
        let mut split = whole.clone();
        super::split_gemm_rows(&mut split.kernels, 128);
        let g = part_gemm(&split).expect("cut in two parts");
        let w = g.windows.as_ref().expect("still over windows");
        assert_ne!(w.first, Idx::Const(0), "each part starts at its own window");
        assert_eq!(g.a.offset, Idx::Const(0), "the image is not moved");
        same_results(&whole, &split);
    }

    #[test]
    fn epilogue_over_samples_is_cut_by_samples() {
        // The forward conv with its ReLU as a nest over samples, window rows and filters
        // (`m = N·100` rows in `N` steps of 100, as an input gradient's max-pool epilogue).
        let mut whole = conv(false, 6, 16);
        let (s, r, j, y) = (VarId(0), VarId(1), VarId(2), BufId(2));
        let at = (Idx::from(s) * 100 + Idx::from(r)) * 16 + Idx::from(j);
        let relu = binary(BinOp::Max, load(y, at.clone()), constant(0.0));
        let nest = for_(
            s,
            Idx::N,
            false,
            vec![for_(
                r,
                100i64,
                false,
                vec![for_(j, 16i64, false, vec![store(y, at, relu)])],
            )],
        );
        whole.kernels[0].body[1] = nest;
        whole.kernels[0].num_vars = 3;
        let mut split = whole.clone();
        super::split_gemm_rows(&mut split.kernels, 128);
        let g = part_gemm(&split).expect("cut in two parts");
        let first = &g.windows.as_ref().expect("still over windows").first;
        let parts: Vec<i64> = (0..2)
            .map(|p| {
                let at_p = first.map_vars(&|_| Idx::Const(p));
                nnc_kernels::gpu::eval_idx(&at_p, 128).unwrap()
            })
            .collect();
        assert_eq!(
            parts,
            [0, 64 * 100],
            "each part starts at its first sample's window"
        );
        same_results(&whole, &split);
    }

    #[test]
    fn epilogue_over_a_non_multiple_is_not_cut() {
        let mut whole = conv(false, 6, 16);
        let Stmt::Loop { extent, .. } = &mut whole.kernels[0].body[1] else {
            panic!("the epilogue loop")
        };
        *extent = Idx::N * 7;
        let mut split = whole.clone();
        super::split_gemm_rows(&mut split.kernels, 128);
        assert!(
            part_gemm(&split).is_none(),
            "100·N rows are not 7·N steps of equal rows"
        );
    }

    #[test]
    fn weight_gradient_is_not_cut_by_rows() {
        let whole = conv(true, 6, 16);
        let mut split = whole.clone();
        super::split_gemm_rows(&mut split.kernels, 128);
        assert!(
            part_gemm(&split).is_none(),
            "the runtime splits it by windows"
        );
        assert!(matches!(split.kernels[0].body[..], [Stmt::Gemm(_)]));
        same_results(&whole, &split);
    }

    #[test]
    fn wide_weight_gradient_is_left_to_the_runtime() {
        // 25 taps × 64 filters: few rows, many columns, still one product over all the
        // windows (the runtime gives each lane half of them).
        let whole = conv(true, 1, 64);
        let mut split = whole.clone();
        super::split_gemm_rows(&mut split.kernels, 128);
        assert!(
            part_gemm(&split).is_none(),
            "the runtime splits it by windows"
        );
        assert!(matches!(split.kernels[0].body[..], [Stmt::Gemm(_)]));
        same_results(&whole, &split);
    }
}
