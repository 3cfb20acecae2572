//! Sliding windows over channels-last images: `im2col` gathers every `k×k` window of a
//! `[B, h, w, c]` image into a row of `k·k·c` values (window-row, window-column, channel
//! order; zero outside the image), and `col2im` is its exact adjoint (scatter-add).
//! Convolution is `im2col` then a matrix product; pooling is `im2col`, a reshape to
//! `[.., k·k, c]` and a reduction. Each is the other's gradient.

use super::{Attr, Attrs};
use crate::ir::graph::{Dim, Shape};
use crate::ir::tensor::Tensor;
use crate::ir::{ir_bail, IrResult};

/// The geometry of a sliding window; `h`, `w` are the image size, `oh`, `ow` the number
/// of window positions, `pad_top`/`pad_left` the zero rows/columns before the image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// `valid` windows: no padding, positions that fit entirely.
    pub fn valid(h: usize, w: usize, kernel: usize, stride: usize) -> IrResult<Window> {
        if kernel == 0 || stride == 0 || kernel > h || kernel > w {
            ir_bail!("window {kernel} with stride {stride} does not fit a {h}×{w} image");
        }
        Ok(Window {
            kernel,
            stride,
            pad_top: 0,
            pad_left: 0,
            h,
            w,
            oh: (h - kernel) / stride + 1,
            ow: (w - kernel) / stride + 1,
        })
    }

    /// `same` windows: `ceil(h / stride)` positions, padding split with the extra row or
    /// column at the bottom/right (as TensorFlow does).
    pub fn same(h: usize, w: usize, kernel: usize, stride: usize) -> IrResult<Window> {
        if kernel == 0 || stride == 0 || h == 0 || w == 0 {
            ir_bail!("window {kernel} with stride {stride} over a {h}×{w} image is empty");
        }
        let oh = h.div_ceil(stride);
        let ow = w.div_ceil(stride);
        let pad_h = ((oh - 1) * stride + kernel).saturating_sub(h);
        let pad_w = ((ow - 1) * stride + kernel).saturating_sub(w);
        Ok(Window {
            kernel,
            stride,
            pad_top: pad_h / 2,
            pad_left: pad_w / 2,
            h,
            w,
            oh,
            ow,
        })
    }

    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let i = |v: usize| Attr::Int(v as u64);
        vec![
            ("kernel", i(self.kernel)),
            ("stride", i(self.stride)),
            ("pad", Attr::Ints(vec![self.pad_top, self.pad_left])),
            ("image", Attr::Ints(vec![self.h, self.w])),
            ("out", Attr::Ints(vec![self.oh, self.ow])),
        ]
    }

    pub fn from_attrs(a: &Attrs) -> IrResult<Window> {
        let pair = |key: &str| -> IrResult<(usize, usize)> {
            match a.usizes(key)?.as_slice() {
                [x, y] => Ok((*x, *y)),
                _ => ir_bail!("attribute `{key}` must have two values"),
            }
        };
        let (pad_top, pad_left) = pair("pad")?;
        let (h, w) = pair("image")?;
        let (oh, ow) = pair("out")?;
        Ok(Window {
            kernel: a.usize("kernel")?,
            stride: a.usize("stride")?,
            pad_top,
            pad_left,
            h,
            w,
            oh,
            ow,
        })
    }

    /// Every window position must start inside the padded image and end within the
    /// image plus at most `kernel - 1` padding, and no size may be zero.
    fn check(&self) -> IrResult<()> {
        const LIMIT: usize = 1 << 20;
        let fields = [
            self.kernel,
            self.stride,
            self.pad_top,
            self.pad_left,
            self.h,
            self.w,
            self.oh,
            self.ow,
        ];
        if fields.iter().any(|&f| f > LIMIT) {
            ir_bail!("window geometry {self:?} is too large");
        }
        let ok = self.kernel > 0
            && self.stride > 0
            && self.oh > 0
            && self.ow > 0
            && self.h > 0
            && self.w > 0
            && self.pad_top < self.kernel
            && self.pad_left < self.kernel
            && (self.oh - 1) * self.stride + self.kernel <= self.h + 2 * self.kernel
            && (self.ow - 1) * self.stride + self.kernel <= self.w + 2 * self.kernel;
        if !ok {
            ir_bail!("inconsistent window geometry {self:?}");
        }
        Ok(())
    }
}

fn known(d: Dim, what: &str) -> IrResult<usize> {
    match d {
        Dim::K(k) => Ok(k),
        Dim::N => ir_bail!("{what} cannot be the batch dimension"),
    }
}

pub fn im2col_shape(win: &Window, x: &Shape) -> IrResult<Shape> {
    win.check()?;
    if x.rank() != 4 || x.0[1] != Dim::K(win.h) || x.0[2] != Dim::K(win.w) {
        ir_bail!(
            "`im2col` over a {}×{} image needs [B, {}, {}, C], got {x}",
            win.h,
            win.w,
            win.h,
            win.w
        );
    }
    let c = known(x.0[3], "channels")?;
    let Some(cols) = (win.kernel * win.kernel).checked_mul(c) else {
        ir_bail!("`im2col` column count overflows");
    };
    Ok(Shape(vec![
        x.0[0],
        Dim::K(win.oh),
        Dim::K(win.ow),
        Dim::K(cols),
    ]))
}

pub fn col2im_shape(win: &Window, x: &Shape) -> IrResult<Shape> {
    win.check()?;
    let kk = win.kernel * win.kernel;
    if x.rank() != 4 || x.0[1] != Dim::K(win.oh) || x.0[2] != Dim::K(win.ow) {
        ir_bail!("`col2im` needs [B, {}, {}, k·k·C], got {x}", win.oh, win.ow);
    }
    let cols = known(x.0[3], "columns")?;
    if cols % kk != 0 || cols == 0 {
        ir_bail!("`col2im`: {cols} columns is not a multiple of {kk}");
    }
    Ok(Shape(vec![
        x.0[0],
        Dim::K(win.h),
        Dim::K(win.w),
        Dim::K(cols / kk),
    ]))
}

/// Calls `f(image_offset, column_offset)` for every in-image pair of one sample.
fn for_each_pair(win: &Window, c: usize, mut f: impl FnMut(usize, usize)) {
    let k = win.kernel;
    let cols = k * k * c;
    for oy in 0..win.oh {
        for ox in 0..win.ow {
            let row = (oy * win.ow + ox) * cols;
            for ky in 0..k {
                let iy = (oy * win.stride + ky) as isize - win.pad_top as isize;
                if iy < 0 || iy as usize >= win.h {
                    continue;
                }
                for kx in 0..k {
                    let ix = (ox * win.stride + kx) as isize - win.pad_left as isize;
                    if ix < 0 || ix as usize >= win.w {
                        continue;
                    }
                    let src = (iy as usize * win.w + ix as usize) * c;
                    let dst = row + (ky * k + kx) * c;
                    for ch in 0..c {
                        f(src + ch, dst + ch);
                    }
                }
            }
        }
    }
}

pub fn eval_im2col(win: &Window, x: &Tensor, out: &[usize]) -> Tensor {
    let (b, c) = (x.shape[0], x.shape[3]);
    let per_in = win.h * win.w * c;
    let per_out = win.oh * win.ow * win.kernel * win.kernel * c;
    let mut data = vec![0f32; b * per_out];
    for s in 0..b {
        let (xi, xo) = (&x.data[s * per_in..], s * per_out);
        for_each_pair(win, c, |i, o| data[xo + o] = xi[i]);
    }
    Tensor {
        shape: out.to_vec(),
        data,
    }
}

pub fn eval_col2im(win: &Window, cols: &Tensor, out: &[usize]) -> Tensor {
    let (b, c) = (out[0], out[3]);
    let per_img = win.h * win.w * c;
    let per_col = win.oh * win.ow * win.kernel * win.kernel * c;
    let mut acc = vec![0f64; b * per_img];
    for s in 0..b {
        let src = &cols.data[s * per_col..];
        let dst = &mut acc[s * per_img..];
        for_each_pair(win, c, |i, o| dst[i] += src[o] as f64);
    }
    Tensor {
        shape: out.to_vec(),
        data: acc.into_iter().map(|v| v as f32).collect(),
    }
}
