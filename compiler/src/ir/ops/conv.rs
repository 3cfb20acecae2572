//! Convolution over channels-last images as three products, each a GEMM whose left
//! operand is a windows view of an image (`nnc_kernels::ir::Windows`: an implicit
//! `im2col` matrix, never materialised):
//! - `conv(x, w)`: `[B, h, w, c]`, `[kh·kw·c, f]` → `[B, oh, ow, f]`, the layer;
//! - `conv_data(dy, wt)`: `[B, oh, ow, f]`, `[kh·kw·f, c]` → `[B, h, w, c]`, the gradient
//!   of the input, a transposed convolution (`wt` holds each tap's `c×f` block
//!   transposed);
//! - `conv_filter(x, dy)`: `[B, h, w, c]`, `[B, oh, ow, f]` → `[kh·kw·c, f]`, the gradient
//!   of the weights (the windows matrix transposed, times `dy`).
//!
//! All three carry the forward geometry [`Conv`], so each is the others' gradient. The
//! reference evaluation walks [`Windows::source`], the one definition of which image
//! element a window tap reads that the backends share, and accumulates in f64.

use nnc_kernels::ir::Windows;

use super::{Attr, Attrs};
use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::tensor::Tensor;
use crate::ir::{ir_bail, IrResult, Op};

/// The geometry of a 2-D convolution: per axis (rows, columns) the image size, the
/// number of output positions, the kernel size, the stride, the dilation and the zero
/// padding before the image (the padding after it is whatever the last window needs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conv {
    pub image: [usize; 2],
    pub out: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad: [usize; 2],
}

/// How an axis is padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding: the windows that fit.
    Valid,
    /// `ceil(size / stride)` windows, the padding split with the extra row or column at
    /// the end (as TensorFlow and Keras do).
    Same,
}

impl Conv {
    /// The geometry of a convolution of `kernel` taps over an `image`, or why it has
    /// no window.
    pub fn new(
        image: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        padding: Padding,
    ) -> IrResult<Conv> {
        let mut out = [0; 2];
        let mut pad = [0; 2];
        for a in 0..2 {
            let (size, k, s, d) = (image[a], kernel[a], stride[a], dilation[a]);
            if size == 0 || k == 0 || s == 0 || d == 0 {
                ir_bail!("a convolution needs positive sizes, got image {image:?}, kernel {kernel:?}, stride {stride:?}, dilation {dilation:?}");
            }
            let Some(extent) = d.checked_mul(k - 1).and_then(|e| e.checked_add(1)) else {
                ir_bail!("a kernel of {k} taps dilated by {d} overflows");
            };
            match padding {
                Padding::Valid => {
                    if extent > size {
                        ir_bail!("a kernel spanning {extent} does not fit an image of {size}");
                    }
                    out[a] = (size - extent) / s + 1;
                }
                Padding::Same => {
                    out[a] = size.div_ceil(s);
                    pad[a] = ((out[a] - 1) * s + extent).saturating_sub(size) / 2;
                }
            }
        }
        let conv = Conv {
            image,
            out,
            kernel,
            stride,
            dilation,
            pad,
        };
        conv.check()?;
        Ok(conv)
    }

    /// Taps per window: `kh·kw`.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Every window must start within its padding and touch the image.
    fn check(&self) -> IrResult<()> {
        const LIMIT: usize = 1 << 20;
        let all = [
            self.image,
            self.out,
            self.kernel,
            self.stride,
            self.dilation,
            self.pad,
        ];
        if all.iter().flatten().any(|&v| v > LIMIT) {
            ir_bail!("convolution geometry {self:?} is too large");
        }
        for a in 0..2 {
            let extent = self.dilation[a] * (self.kernel[a] - 1) + 1;
            let ok = self.image[a] > 0
                && self.out[a] > 0
                && self.kernel[a] > 0
                && self.stride[a] > 0
                && self.dilation[a] > 0
                && self.pad[a] < extent
                && (self.out[a] - 1) * self.stride[a] < self.image[a] + self.pad[a];
            if !ok {
                ir_bail!("inconsistent convolution geometry {self:?}");
            }
        }
        Ok(())
    }

    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let pair = |v: [usize; 2]| Attr::Ints(v.to_vec());
        vec![
            ("image", pair(self.image)),
            ("out", pair(self.out)),
            ("kernel", pair(self.kernel)),
            ("stride", pair(self.stride)),
            ("dilation", pair(self.dilation)),
            ("pad", pair(self.pad)),
        ]
    }

    pub fn from_attrs(a: &Attrs) -> IrResult<Conv> {
        let pair = |key: &str| -> IrResult<[usize; 2]> {
            match a.usizes(key)?.as_slice() {
                [x, y] => Ok([*x, *y]),
                _ => ir_bail!("attribute `{key}` must have two values"),
            }
        };
        let conv = Conv {
            image: pair("image")?,
            out: pair("out")?,
            kernel: pair("kernel")?,
            stride: pair("stride")?,
            dilation: pair("dilation")?,
            pad: pair("pad")?,
        };
        conv.check()?;
        Ok(conv)
    }

    /// The windows of the forward product over an image of `c` channels: one row per
    /// output position, one column per tap and channel.
    pub fn windows(&self, c: usize) -> Windows {
        let i = |v: [usize; 2]| v.map(|x| x as i64);
        Windows::new(
            [self.image[0] as i64, self.image[1] as i64, c as i64],
            i(self.out),
            i(self.kernel),
            i(self.stride),
            i(self.dilation),
            i(self.pad),
            [1, 1],
        )
    }

    /// The windows of the input gradient over an output gradient of `f` channels: one
    /// row per input pixel; tap `t` of pixel `i` reads output position
    /// `(i + pad − t·dilation) / stride` when that divides exactly and is in range.
    pub fn data_windows(&self, f: usize) -> Windows {
        let i = |v: [usize; 2]| v.map(|x| x as i64);
        Windows::new(
            [self.out[0] as i64, self.out[1] as i64, f as i64],
            i(self.image),
            i(self.kernel),
            [1, 1],
            i(self.dilation).map(|d| -d),
            i(self.pad).map(|p| -p),
            i(self.stride),
        )
    }

    /// Multiply-adds of one sample of the forward product with `c` input and `f` output
    /// channels (each of the gradients costs the same).
    pub fn macs_per_sample(&self, c: usize, f: usize) -> u64 {
        (self.out[0] * self.out[1] * self.taps() * c * f) as u64
    }
}

fn known(d: Dim, what: &str) -> IrResult<usize> {
    match d {
        Dim::K(k) => Ok(k),
        Dim::N => ir_bail!("{what} cannot be the batch dimension"),
    }
}

/// `[B, h, w, c]` with the given image size, or why not; returns `(B, c)`.
fn image_of(x: &Shape, hw: [usize; 2], what: &str) -> IrResult<(Dim, usize)> {
    if x.rank() != 4 || x.0[1] != Dim::K(hw[0]) || x.0[2] != Dim::K(hw[1]) {
        ir_bail!("{what} must be [B, {}, {}, C], got {x}", hw[0], hw[1]);
    }
    Ok((x.0[0], known(x.0[3], "channels")?))
}

/// `conv(x, w)`: `[B, h, w, c]`, `[kh·kw·c, f]` → `[B, oh, ow, f]`.
pub fn conv_shape(cv: &Conv, x: &Shape, w: &Shape) -> IrResult<Shape> {
    cv.check()?;
    let (b, c) = image_of(x, cv.image, "a convolution's input")?;
    if w.rank() != 2 || w.0[0] != Dim::K(cv.taps() * c) {
        ir_bail!(
            "a convolution's weights must be [{}, F], got {w}",
            cv.taps() * c
        );
    }
    let f = known(w.0[1], "filters")?;
    Ok(Shape(vec![
        b,
        Dim::K(cv.out[0]),
        Dim::K(cv.out[1]),
        Dim::K(f),
    ]))
}

/// `conv_data(dy, wt)`: `[B, oh, ow, f]`, `[kh·kw·f, c]` → `[B, h, w, c]`.
pub fn data_shape(cv: &Conv, dy: &Shape, wt: &Shape) -> IrResult<Shape> {
    cv.check()?;
    let (b, f) = image_of(dy, cv.out, "an input gradient's output gradient")?;
    if wt.rank() != 2 || wt.0[0] != Dim::K(cv.taps() * f) {
        ir_bail!(
            "transposed weights must be [{}, C], got {wt}",
            cv.taps() * f
        );
    }
    let c = known(wt.0[1], "channels")?;
    Ok(Shape(vec![
        b,
        Dim::K(cv.image[0]),
        Dim::K(cv.image[1]),
        Dim::K(c),
    ]))
}

/// `conv_filter(x, dy)`: `[B, h, w, c]`, `[B, oh, ow, f]` → `[kh·kw·c, f]`.
pub fn filter_shape(cv: &Conv, x: &Shape, dy: &Shape) -> IrResult<Shape> {
    cv.check()?;
    let (bx, c) = image_of(x, cv.image, "a weight gradient's input")?;
    let (bd, f) = image_of(dy, cv.out, "a weight gradient's output gradient")?;
    if bx != bd {
        ir_bail!("a weight gradient's input {x} and output gradient {dy} differ in batch");
    }
    Ok(Shape::fixed(&[cv.taps() * c, f]))
}

/// `out[r, j] = Σ_l A[r, l]·b[l, j]` with `A` the windows view of `img` (`r` over the
/// windows of every sample), accumulated in f64.
fn windows_product(w: &Windows, img: &Tensor, b: &Tensor, rows: usize, n: usize) -> Vec<f64> {
    let cols = w.cols();
    let mut out = vec![0f64; rows * n];
    for r in 0..rows {
        let acc = &mut out[r * n..(r + 1) * n];
        for l in 0..cols {
            let Some(s) = w.source(r as i64, l) else {
                continue;
            };
            let a = f64::from(img.data[s as usize]);
            if a == 0.0 {
                continue;
            }
            let brow = &b.data[l as usize * n..(l as usize + 1) * n];
            for (o, &bv) in acc.iter_mut().zip(brow) {
                *o += a * f64::from(bv);
            }
        }
    }
    out
}

fn tensor(shape: &[usize], data: Vec<f64>) -> Tensor {
    Tensor {
        shape: shape.to_vec(),
        data: data.into_iter().map(|v| v as f32).collect(),
    }
}

pub fn eval_conv(cv: &Conv, x: &Tensor, w: &Tensor, out: &[usize]) -> Tensor {
    let win = cv.windows(x.shape[3]);
    let rows = out[0] * out[1] * out[2];
    tensor(out, windows_product(&win, x, w, rows, out[3]))
}

pub fn eval_data(cv: &Conv, dy: &Tensor, wt: &Tensor, out: &[usize]) -> Tensor {
    let win = cv.data_windows(dy.shape[3]);
    let rows = out[0] * out[1] * out[2];
    tensor(out, windows_product(&win, dy, wt, rows, out[3]))
}

pub fn eval_filter(cv: &Conv, x: &Tensor, dy: &Tensor, out: &[usize]) -> Tensor {
    let win = cv.windows(x.shape[3]);
    let (cols, f) = (out[0], out[1]);
    let rows = dy.shape[0] * dy.shape[1] * dy.shape[2];
    let mut acc = vec![0f64; cols * f];
    for r in 0..rows {
        let drow = &dy.data[r * f..(r + 1) * f];
        for l in 0..cols {
            let Some(s) = win.source(r as i64, l as i64) else {
                continue;
            };
            let a = f64::from(x.data[s as usize]);
            for (o, &d) in acc[l * f..(l + 1) * f].iter_mut().zip(drow) {
                *o += a * f64::from(d);
            }
        }
    }
    tensor(out, acc)
}

/// `[kh·kw·a, b]` → `[kh·kw·b, a]`: each tap's block transposed (forward weights to the
/// input gradient's and back).
pub fn swap_taps(g: &mut Graph, w: NodeId, taps: usize) -> IrResult<NodeId> {
    let s = g.shape(w).clone();
    if s.rank() != 2 {
        ir_bail!("weights {s} are not a matrix");
    }
    let (rows, b) = (
        known(s.0[0], "weight rows")?,
        known(s.0[1], "weight columns")?,
    );
    if taps == 0 || rows % taps != 0 {
        ir_bail!("weights {s} do not split into {taps} taps");
    }
    let a = rows / taps;
    let blocks = g.reshape(w, Shape::fixed(&[taps, a, b]))?;
    let t = g.push(
        Op::Transpose {
            perm: vec![0, 2, 1],
        },
        &[blocks],
    )?;
    g.reshape(t, Shape::fixed(&[taps * b, a]))
}

/// Gradients of `conv(x, w)`: the input's is `conv_data(dy, swap_taps(w))`, the
/// weights' `conv_filter(x, dy)`.
pub fn grad_conv(
    g: &mut Graph,
    cv: &Conv,
    x: NodeId,
    w: NodeId,
    dy: NodeId,
) -> IrResult<Vec<Option<NodeId>>> {
    let wt = swap_taps(g, w, cv.taps())?;
    let dx = g.push(Op::ConvData(cv.clone()), &[dy, wt])?;
    let dw = g.push(Op::ConvFilter(cv.clone()), &[x, dy])?;
    Ok(vec![Some(dx), Some(dw)])
}

/// Gradients of `conv_data(dy, wt)` (bilinear): given `gx` of the input's shape, the
/// output gradient's is `conv(gx, swap_taps(wt))` and the transposed weights' is
/// `swap_taps(conv_filter(gx, dy))`.
pub fn grad_data(
    g: &mut Graph,
    cv: &Conv,
    dy: NodeId,
    wt: NodeId,
    gx: NodeId,
) -> IrResult<Vec<Option<NodeId>>> {
    let w = swap_taps(g, wt, cv.taps())?;
    let d_dy = g.push(Op::Conv(cv.clone()), &[gx, w])?;
    let gw = g.push(Op::ConvFilter(cv.clone()), &[gx, dy])?;
    let d_wt = swap_taps(g, gw, cv.taps())?;
    Ok(vec![Some(d_dy), Some(d_wt)])
}

/// Gradients of `conv_filter(x, dy)` (bilinear): given `gw` of the weights' shape, the
/// input's is `conv_data(dy, swap_taps(gw))` and the output gradient's `conv(x, gw)`.
pub fn grad_filter(
    g: &mut Graph,
    cv: &Conv,
    x: NodeId,
    dy: NodeId,
    gw: NodeId,
) -> IrResult<Vec<Option<NodeId>>> {
    let gwt = swap_taps(g, gw, cv.taps())?;
    let dx = g.push(Op::ConvData(cv.clone()), &[dy, gwt])?;
    let d_dy = g.push(Op::Conv(cv.clone()), &[x, gw])?;
    Ok(vec![Some(dx), Some(d_dy)])
}
