//! Sliding windows of a channels-last image read as a matrix: the operand of an implicit
//! GEMM (a convolution never materialises its `im2col` matrix).
//!
//! A [`Windows`] view of an image buffer `[N, h, w, c]` is the matrix with one row per
//! window position `(n, p, q)` (`N·P·Q` rows, row-major over `[N, P, Q]`) and one column
//! per tap and channel `(ty, tx, ch)` (`kh·kw·c` columns, row-major over `[kh, kw, c]`).
//! Along each axis the tap `t` of window `p` sits at position `pos = p·step + t·tap − pad`
//! and reads image row `pos / div` when `pos ≥ 0`, `pos % div == 0` and `pos / div < h`;
//! any other element is zero. With `div = 1` this is the `im2col` matrix of a convolution
//! (`step` = stride, `tap` = dilation); the gradient of a convolution's input is the same
//! kind of product over the output gradient with `step = 1`, `tap = −dilation`,
//! `pad = −pad` and `div = stride` (a transposed convolution, no scatter).
//!
//! One definition of an element, [`Windows::source`], is shared by the reference
//! interpreter, the GPU schedule's tile loads and the runtime's packing routine (through
//! the same formula on the ABI's descriptor).

use super::Idx;

/// The geometry of a windows view (see the module doc). Row and column counts follow from
/// it: `cols() = kh·kw·c`, `rows_per_sample() = P·Q`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Windows {
    /// `[h, w, c]`: the image of one sample.
    pub image: [i64; 3],
    /// `[P, Q]`: window positions per sample.
    pub grid: [i64; 2],
    /// `[kh, kw]`: taps per window.
    pub taps: [i64; 2],
    /// Per axis (rows, columns of the image): `pos = p·step + t·tap − pad`.
    pub step: [i64; 2],
    pub tap: [i64; 2],
    pub pad: [i64; 2],
    /// Per axis: only positions divisible by `div` read the image (at `pos / div`).
    pub div: [i64; 2],
    /// The window (row of the untransposed matrix) this operand's first row or, when
    /// `transposed`, its first column stands for: a product cut into parts offsets it.
    pub first: Idx,
    /// The operand is the transpose: `kh·kw·c` rows, one column per window.
    pub transposed: bool,
}

/// Along one axis of length `len` with `[step, tap, pad, div]`: the image position tap
/// `t` of window `p` reads, or `None` where it reads zero. The one formula behind
/// [`Windows::source`] and the runtime's packing (which has only the ABI's descriptor).
#[inline]
pub fn axis_source([step, tap, pad, div]: [i64; 4], p: i64, t: i64, len: i64) -> Option<i64> {
    let pos = p * step + t * tap - pad;
    if div == 1 {
        // No division (a convolution, not its input gradient's strided form).
        return (0..len).contains(&pos).then_some(pos);
    }
    (pos >= 0 && pos % div == 0 && pos / div < len).then_some(pos / div)
}

impl Windows {
    /// The untransposed view of this geometry, starting at window 0.
    pub fn new(
        image: [i64; 3],
        grid: [i64; 2],
        taps: [i64; 2],
        step: [i64; 2],
        tap: [i64; 2],
        pad: [i64; 2],
        div: [i64; 2],
    ) -> Windows {
        Windows {
            image,
            grid,
            taps,
            step,
            tap,
            pad,
            div,
            first: Idx::Const(0),
            transposed: false,
        }
    }

    /// Columns of the untransposed matrix: `kh·kw·c`.
    pub fn cols(&self) -> i64 {
        self.taps[0] * self.taps[1] * self.image[2]
    }

    /// Windows (untransposed rows) per sample: `P·Q`.
    pub fn rows_per_sample(&self) -> i64 {
        self.grid[0] * self.grid[1]
    }

    /// Floats of one image.
    pub fn image_len(&self) -> i64 {
        self.image[0] * self.image[1] * self.image[2]
    }

    /// The image element (offset from the image buffer's start, sample 0 at 0) that
    /// untransposed element `(row, col)` reads, or `None` where it is zero. `row` counts
    /// from window 0 (add `first` before calling); `col < cols()`.
    pub fn source(&self, row: i64, col: i64) -> Option<i64> {
        let [h, w, c] = self.image;
        let [p_n, q_n] = self.grid;
        let n = row / (p_n * q_n);
        let p = row / q_n % p_n;
        let q = row % q_n;
        let ty = col / (self.taps[1] * c);
        let tx = col / c % self.taps[1];
        let ch = col % c;
        let y = self.axis(0, p, ty, h)?;
        let x = self.axis(1, q, tx, w)?;
        Some(((n * h + y) * w + x) * c + ch)
    }

    /// The image row (axis 0) or column (axis 1) tap `t` of window position `p` reads.
    pub fn axis(&self, axis: usize, p: i64, t: i64, len: i64) -> Option<i64> {
        let a = axis;
        axis_source(
            [self.step[a], self.tap[a], self.pad[a], self.div[a]],
            p,
            t,
            len,
        )
    }

    /// Why this geometry is unusable, if it is: sizes must be positive, `div ≥ 1`.
    pub fn check(&self) -> Result<(), String> {
        let positive = self
            .image
            .iter()
            .chain(&self.grid)
            .chain(&self.taps)
            .chain(&self.div)
            .all(|&v| v > 0);
        if !positive {
            return Err(format!("windows with an empty size: {self:?}"));
        }
        Ok(())
    }

    /// This view with `first` replaced by `f(first)`.
    pub fn map_first(&self, f: &impl Fn(&Idx) -> Idx) -> Windows {
        Windows {
            first: f(&self.first),
            ..self.clone()
        }
    }
}
