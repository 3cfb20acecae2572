//! The tensor that passes between the runtime and executors: a row-major `f32` buffer
//! with its shape.
//!
//! Invariant: `data.len()` equals the product of `shape` (1 for a scalar, shape `[]`).
//! The constructors that take user-controlled input check it and return an error.

use std::fmt;

/// A dense row-major `f32` tensor owned on the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A shape and a buffer length that disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub shape: Vec<usize>,
    pub len: usize,
}

impl fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shape {} needs {} values, the buffer has {}",
            format_shape(&self.shape),
            element_count(&self.shape),
            self.len
        )
    }
}

impl std::error::Error for ShapeMismatch {}

impl Tensor {
    /// A tensor from a shape and data; fails when the lengths disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, ShapeMismatch> {
        if element_count(&shape) != data.len() {
            return Err(ShapeMismatch {
                len: data.len(),
                shape,
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = element_count(&shape);
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The size of the leading (batch) dimension; 1 for a scalar.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The number of elements in one row (everything after the leading dimension).
    pub fn row_len(&self) -> usize {
        element_count(self.shape.get(1..).unwrap_or(&[]))
    }

    /// The same data under another shape with the same element count.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Tensor, ShapeMismatch> {
        Tensor::new(shape, self.data)
    }

    /// The first element that is NaN or infinite, as (flat index, value).
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        first_non_finite(&self.data)
    }

    /// Rows `start..end` as a tensor of their own (`end` clamped to the row count).
    pub fn rows_range(&self, start: usize, end: usize) -> Tensor {
        let (w, end) = (self.row_len(), end.min(self.rows()));
        let start = start.min(end);
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = end - start;
        }
        Tensor {
            shape,
            data: self.data[start * w..end * w].to_vec(),
        }
    }

    /// The rows `indices` of this tensor stacked into a new tensor (a batch).
    ///
    /// Every index must be below [`Tensor::rows`]; callers pass indices from a permutation
    /// of `0..rows`, so a bad index is a bug in the runtime and panics.
    pub fn gather_rows(&self, indices: &[usize]) -> Tensor {
        let mut out = Tensor {
            shape: Vec::new(),
            data: Vec::with_capacity(indices.len() * self.row_len()),
        };
        self.gather_rows_into(indices, &mut out);
        out
    }

    /// [`Tensor::gather_rows`] into `out`, reusing its allocation (the training loop's
    /// batches: a fresh 400 kB buffer per step costs page faults).
    pub fn gather_rows_into(&self, indices: &[usize], out: &mut Tensor) {
        let row = self.row_len();
        out.data.clear();
        for &i in indices {
            out.data
                .extend_from_slice(&self.data[i * row..(i + 1) * row]);
        }
        out.shape.clone_from(&self.shape);
        if out.shape.is_empty() {
            out.shape.push(indices.len());
        } else {
            out.shape[0] = indices.len();
        }
    }
}

/// The product of the dimensions (1 for the empty shape).
pub fn element_count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A shape as `[28, 28]`.
pub fn format_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// The first element of `data` that is NaN or infinite, with its index. The common case
/// (all finite) is one branch-free pass over the bits ([`any_non_finite`]); the position
/// is only looked for once something was found.
pub fn first_non_finite(data: &[f32]) -> Option<(usize, f32)> {
    if !any_non_finite(data) {
        return None;
    }
    data.iter()
        .copied()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
}

/// Whether `data` holds a NaN or an infinity; with AVX2 where the CPU has it (the
/// training loop scans every parameter after every step, so this runs at memory speed).
pub fn any_non_finite(data: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { any_non_finite_avx2(data) };
    }
    any_non_finite_lanes(data)
}

/// [`any_non_finite_lanes`] with explicit AVX2: 16 values per iteration, two
/// independent accumulators (about 2.5× what the compiler made of the portable loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn any_non_finite_avx2(data: &[f32]) -> bool {
    use std::arch::x86_64::*;
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let finite_max = _mm256_set1_epi32(0x7f7f_ffff);
    let (mut acc0, mut acc1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let chunks = data.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        let p = c.as_ptr().cast::<__m256i>();
        // SAFETY: `c` holds 16 f32, i.e. two unaligned 32-byte loads in bounds.
        let (a, b) = unsafe { (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1))) };
        // Magnitude bits above the largest finite value's: NaN or infinity.
        let a = _mm256_cmpgt_epi32(_mm256_and_si256(a, abs), finite_max);
        let b = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs), finite_max);
        acc0 = _mm256_or_si256(acc0, a);
        acc1 = _mm256_or_si256(acc1, b);
    }
    let acc = _mm256_or_si256(acc0, acc1);
    _mm256_testz_si256(acc, acc) == 0 || tail.iter().any(|v| !v.is_finite())
}

/// A value is NaN or infinite exactly when its magnitude bits are at least those of
/// infinity. Lanes OR their findings, so no dependency chain is longer than one `or` per
/// 32 values and the loop vectorises.
fn any_non_finite_lanes(data: &[f32]) -> bool {
    const ABS: u32 = 0x7fff_ffff;
    const INF: u32 = 0x7f80_0000;
    let mut lanes = [0u32; 32];
    let chunks = data.chunks_exact(32);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l |= u32::from(x.to_bits() & ABS >= INF);
        }
    }
    lanes.iter().any(|&l| l != 0) || tail.iter().any(|v| !v.is_finite())
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_non_finite_finds_every_position() {
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100] {
            let ok = vec![1.5f32; len];
            assert_eq!(super::first_non_finite(&ok), None);
            for at in 0..len {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut v = ok.clone();
                    v[at] = bad;
                    let (i, x) = super::first_non_finite(&v).expect("found");
                    assert_eq!(i, at);
                    assert!(!x.is_finite());
                }
            }
        }
        assert_eq!(super::first_non_finite(&[f32::MAX, -f32::MAX, 1e-45]), None);
        // The portable scan (the AVX2 one runs above where the CPU has it).
        for len in [0usize, 1, 31, 32, 33, 100] {
            let mut v = vec![-f32::MAX; len];
            assert!(!super::any_non_finite_lanes(&v));
            if len > 0 {
                v[len - 1] = f32::NEG_INFINITY;
                assert!(super::any_non_finite_lanes(&v));
            }
        }
    }

    use super::*;

    #[test]
    fn new_rejects_a_buffer_of_the_wrong_length() {
        let err = Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape [2, 3] needs 6 values, the buffer has 5"
        );
    }

    #[test]
    fn gather_rows_stacks_the_chosen_rows_in_order() {
        let t = Tensor::new(vec![3, 2], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let b = t.gather_rows(&[2, 0]);
        assert_eq!(b.shape, vec![2, 2]);
        assert_eq!(b.data, vec![4.0, 5.0, 0.0, 1.0]);
    }
}
