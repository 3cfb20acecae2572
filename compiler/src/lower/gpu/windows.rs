//! The `A` operand of an implicit GEMM (a product whose `A` is a windows view of an
//! image, [`nnc_kernels::ir::Windows`]) inside the tiled kernel: which image element a
//! tile element reads, and when it reads none.
//!
//! Element `(row, col)` of `A` is element `(first + row, col)` of the untransposed view
//! (a convolution's forward pass or input gradient: one row per window) or, when the view
//! is `transposed`, element `(first + col, row)` (a weight gradient: one column per
//! window, `k = N·P·Q`). The window `(n, p, q)` and the tap `(ty, tx, ch)` are decomposed
//! with constant divisions; along each image axis `pos = p·step + t·tap − pad` must be
//! `≥ 0`, divisible by `div` and below `len·div`, exactly as in [`Windows::source`].
//! Conditions that hold for every window and tap of the geometry are left out when the
//! product's tap extent (`k`, or `m` when transposed) is known to stay within the view's
//! `kh·kw·c` columns.
//!
//! The tile loads take `k` fastest for these operands (see `gemm.rs`), so a thread's
//! `k` index, and with it one decomposition, changes once per `k` step while its rows'
//! decompositions do not depend on the step at all: the optimiser computes them once per
//! thread, outside the loop over `k`.

use nnc_kernels::ir::{CmpOp, Cond, Idx, Windows};

/// What the tile element `(row, col)` of a windows operand over the image at `offset`
/// reads: the conditions under which it reads the image (besides the tile's own
/// `row < m`, `col < k`, which the caller adds), and the image element it then reads.
/// `taps` is the product's extent along the view's columns (`k`, or `m` when transposed).
pub(super) fn windows_element(
    w: &Windows,
    offset: &Idx,
    taps: &Idx,
    row: Idx,
    col: Idx,
) -> (Vec<Cond>, Idx) {
    let (window, tap) = if w.transposed { (col, row) } else { (row, col) };
    // Within the view's columns every tap is one of the geometry's, and conditions that
    // hold for all of them can go.
    let elide = matches!(taps, Idx::Const(t) if *t <= w.cols());
    let window = w.first.clone() + window;
    let [h, wd, c] = w.image;
    let [p_n, q_n] = w.grid;
    let n = window.clone().div(p_n * q_n);
    let p = window.clone().div(q_n).rem(p_n);
    let q = window.rem(q_n);
    let ty = tap.clone().div(w.taps[1] * c);
    let tx = tap.clone().div(c).rem(w.taps[1]);
    let ch = tap.rem(c);
    let mut conds = Vec::new();
    let y = axis(w, 0, p, ty, h, elide, &mut conds);
    let x = axis(w, 1, q, tx, wd, elide, &mut conds);
    let elem = offset.clone() + ((n * h + y) * wd + x) * c + ch;
    (conds, elem)
}

/// The image row (axis 0) or column (axis 1) that tap `t` of window position `p` reads,
/// with the conditions for it to exist pushed onto `conds` (those that hold for every
/// window and tap of the geometry only unless `elide`).
fn axis(
    w: &Windows,
    axis: usize,
    p: Idx,
    t: Idx,
    len: i64,
    elide: bool,
    conds: &mut Vec<Cond>,
) -> Idx {
    let (step, tap, pad, div) = (w.step[axis], w.tap[axis], w.pad[axis], w.div[axis]);
    let pos = p * step + t * tap - Idx::Const(pad);
    // The range of `pos` over every window position and tap of the view.
    let span = |count: i64, by: i64| [0, (count - 1) * by];
    let [p0, p1] = span(w.grid[axis], step);
    let [t0, t1] = span(w.taps[axis], tap);
    let lo = p0.min(p1) + t0.min(t1) - pad;
    let hi = p0.max(p1) + t0.max(t1) - pad;
    let cond = |a: &Idx, op, b: i64| Cond {
        a: a.clone(),
        op,
        b: Idx::Const(b),
    };
    if lo < 0 || !elide {
        conds.push(cond(&pos, CmpOp::Ge, 0));
    }
    if hi >= len * div || !elide {
        conds.push(cond(&pos, CmpOp::Lt, len * div));
    }
    if div > 1 {
        conds.push(cond(&pos.clone().rem(div), CmpOp::Eq, 0));
    }
    pos.div(div)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nnc_kernels::gpu::eval_idx;

    /// Every element of several views, through the conditions and index built here,
    /// is `Windows::source`'s, with the conditions every tap meets left out or not.
    #[test]
    fn elements_agree_with_windows_source() {
        // image, grid, taps, step, tap, pad, div, transposed
        #[rustfmt::skip]
        let views = [
            ([6, 5, 2], [6, 5], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], false),
            ([7, 6, 3], [4, 3], [3, 2], [2, 2], [1, 1], [0, 1], [1, 1], true),
            ([9, 9, 1], [5, 5], [3, 3], [1, 1], [2, 2], [2, 2], [1, 1], false),
            ([3, 4, 2], [6, 7], [3, 3], [1, 1], [-1, -1], [-1, -1], [2, 2], false),
            ([4, 4, 1], [4, 4], [1, 1], [1, 1], [1, 1], [0, 0], [1, 1], true),
        ];
        let views = views.map(
            |(image, grid, taps, step, tap, pad, div, transposed)| Windows {
                image,
                grid,
                taps,
                step,
                tap,
                pad,
                div,
                first: Idx::Const(3),
                transposed,
            },
        );
        for w in views {
            let (windows, taps) = (3 * w.rows_per_sample() - 3, w.cols());
            for win in 0..windows {
                for tap in 0..taps {
                    let (row, col) = if w.transposed { (tap, win) } else { (win, tap) };
                    for extent in [Idx::Const(taps), Idx::N] {
                        let (conds, elem) = windows_element(
                            &w,
                            &Idx::Const(100),
                            &extent,
                            Idx::Const(row),
                            Idx::Const(col),
                        );
                        let holds = conds.iter().all(|c| {
                            let (a, b) = (eval_idx(&c.a, 1).unwrap(), eval_idx(&c.b, 1).unwrap());
                            match c.op {
                                CmpOp::Ge => a >= b,
                                CmpOp::Lt => a < b,
                                CmpOp::Eq => a == b,
                                op => panic!("unexpected {op:?}"),
                            }
                        });
                        let got = holds.then(|| eval_idx(&elem, 1).unwrap() - 100);
                        assert_eq!(got, w.source(3 + win, tap), "{w:?} ({win}, {tap})");
                    }
                }
            }
        }
    }
}
