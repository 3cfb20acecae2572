//! Shape rules of the typed ops, as pure functions over per-sample [`Shape`]s.
//!
//! Every rule works on the per-sample `dims`; the implicit batch dimension is a leading
//! dimension that broadcasts against a missing one, so a result is batched when any
//! operand is. Rules return a diagnostic (with the caller's spans) instead of a shape when
//! the operands do not fit, and never panic: element counts are computed with checked
//! arithmetic ([`checked_elems`]).

use crate::diag::{Code, Diagnostic};
use crate::sema::typed::{Padding, Shape};
use crate::syntax::ast::Span;

/// The largest element count accepted: counts must fit in `usize` and in `i64`.
pub const MAX_ELEMS: u64 = i64::MAX as u64;

/// The element count of `dims`, or `None` when it exceeds [`MAX_ELEMS`].
pub fn checked_elems(dims: &[usize]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| {
        acc.checked_mul(u64::try_from(d).ok()?)
            .filter(|&n| n <= MAX_ELEMS)
    })
}

/// E0307 unless the shape's element count fits.
pub fn check_size(shape: &Shape, span: Span) -> Result<(), Diagnostic> {
    match checked_elems(&shape.dims) {
        Some(_) => Ok(()),
        None => Err(Diagnostic::new(
            Code::ShapeOverflow,
            format!("the shape {shape} has too many elements"),
        )
        .label(span, "element count overflows")
        .help(format!(
            "a tensor may hold at most {MAX_ELEMS} elements per sample"
        ))),
    }
}

/// NumPy broadcasting of per-sample dims (right-aligned; a 1 stretches).
pub fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
    let rank = a.dims.len().max(b.dims.len());
    let mut dims = vec![0; rank];
    for (i, d) in dims.iter_mut().enumerate() {
        let da = dim_from_right(&a.dims, rank - 1 - i);
        let db = dim_from_right(&b.dims, rank - 1 - i);
        *d = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(Shape {
        batched: a.batched || b.batched,
        dims,
    })
}

/// The dim `k` places from the right, 1 when the shape is shorter.
fn dim_from_right(dims: &[usize], k: usize) -> usize {
    if k < dims.len() {
        dims[dims.len() - 1 - k]
    } else {
        1
    }
}

/// NumPy `matmul` on per-sample dims: `[.., m, n] @ [.., n, k] → [.., m, k]`; a rank-1 left
/// operand is a row vector and a rank-1 right operand a column vector, and their added
/// dimension is dropped from the result. Leading dims broadcast. Rank-0 operands are
/// rejected.
pub fn matmul(a: &Shape, b: &Shape) -> Result<Shape, String> {
    if a.dims.is_empty() || b.dims.is_empty() {
        return Err("`@` needs operands with at least one dimension; use `*` for scalars".into());
    }
    let a2: Vec<usize> = if a.dims.len() == 1 {
        vec![1, a.dims[0]]
    } else {
        a.dims.clone()
    };
    let b2: Vec<usize> = if b.dims.len() == 1 {
        vec![b.dims[0], 1]
    } else {
        b.dims.clone()
    };
    let (m, n) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (n2, k) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if n != n2 {
        return Err(format!("inner dimensions differ: {n} and {n2}"));
    }
    let lead_a = Shape::fixed(a2[..a2.len() - 2].to_vec());
    let lead_b = Shape::fixed(b2[..b2.len() - 2].to_vec());
    let Some(lead) = broadcast(&lead_a, &lead_b) else {
        return Err("leading (stacked) dimensions do not broadcast".into());
    };
    let mut dims = lead.dims;
    if a.dims.len() > 1 {
        dims.push(m);
    }
    if b.dims.len() > 1 {
        dims.push(k);
    }
    Ok(Shape {
        batched: a.batched || b.batched,
        dims,
    })
}

/// Normalises a possibly negative `axis` against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let a = if axis < 0 { axis.checked_add(r)? } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Output side of a convolution or pooling window, or `None` when the window does not fit.
/// Window positions along an axis of `input` for a window spanning `window` (its taps
/// and the gaps of a dilation), or `None` when no window fits.
pub fn window_out(input: usize, window: usize, stride: usize, padding: Padding) -> Option<usize> {
    match padding {
        Padding::Same => Some(input.div_ceil(stride)),
        Padding::Valid if window > input => None,
        Padding::Valid => Some((input - window) / stride + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy_and_batch_is_leading() {
        let a = Shape::batched(vec![3, 1]);
        let b = Shape::fixed(vec![4]);
        assert_eq!(broadcast(&a, &b), Some(Shape::batched(vec![3, 4])));
        assert_eq!(
            broadcast(&Shape::fixed(vec![3]), &Shape::fixed(vec![4])),
            None
        );
        assert_eq!(
            broadcast(&Shape::batched(vec![3]), &Shape::fixed(vec![2, 3])),
            Some(Shape::batched(vec![2, 3]))
        );
    }

    #[test]
    fn matmul_handles_rank_one_like_numpy() {
        assert_eq!(
            matmul(&Shape::batched(vec![1]), &Shape::fixed(vec![1, 1])),
            Ok(Shape::batched(vec![1]))
        );
        assert_eq!(
            matmul(&Shape::fixed(vec![2, 3]), &Shape::fixed(vec![3])),
            Ok(Shape::fixed(vec![2]))
        );
        assert_eq!(
            matmul(&Shape::batched(vec![5, 2, 3]), &Shape::fixed(vec![3, 4])),
            Ok(Shape::batched(vec![5, 2, 4]))
        );
        assert!(matmul(&Shape::fixed(vec![2, 3]), &Shape::fixed(vec![4, 5])).is_err());
        assert!(matmul(&Shape::scalar(), &Shape::fixed(vec![4, 5])).is_err());
    }

    #[test]
    fn element_counts_above_i64_are_rejected() {
        assert_eq!(checked_elems(&[28, 28]), Some(784));
        assert_eq!(checked_elems(&[100_000_000_000, 100_000_000_000]), None);
        assert_eq!(checked_elems(&[1 << 32, 1 << 31]), None);
    }

    #[test]
    fn windows_follow_same_and_valid_rules() {
        assert_eq!(window_out(28, 5, 1, Padding::Same), Some(28));
        assert_eq!(window_out(28, 3, 2, Padding::Same), Some(14));
        assert_eq!(window_out(29, 3, 2, Padding::Same), Some(15));
        assert_eq!(window_out(14, 5, 1, Padding::Valid), Some(10));
        assert_eq!(window_out(4, 5, 1, Padding::Valid), None);
    }

    #[test]
    fn axes_normalise_from_the_end() {
        assert_eq!(normalize_axis(-1, 3), Some(2));
        assert_eq!(normalize_axis(0, 3), Some(0));
        assert_eq!(normalize_axis(3, 3), None);
        assert_eq!(normalize_axis(-4, 3), None);
        assert_eq!(normalize_axis(i64::MIN, 3), None);
        assert_eq!(normalize_axis(0, 0), None);
    }
}
