//! The primitive op set. `Op` is the one enum of the IR; what each op *is* (shape rule,
//! gradient rule, reference evaluation, printed name and attributes) lives with its family
//! under [`super::ops`], and this file only routes to the family.
//!
//! The set is small and RISC-like; every layer of the language lowers to it in
//! `ir::lower`. Convolution is three products (`conv`, and its gradients `conv_data`
//! and `conv_filter`), each a GEMM over an implicit `im2col` matrix that backends read
//! through the window geometry; pooling is expressed through `im2col` (and its adjoint
//! `col2im`) followed by a reduction.

use super::graph::{Graph, NodeId, Shape};
use super::ops::conv::{self, Conv};
use super::ops::elementwise::{self, BinaryOp, UnaryOp};
use super::ops::pool::{self, PoolKind};
use super::ops::reduce::{self, ReduceOp};
use super::ops::window::{self, Window};
use super::ops::{layout, matmul, source, Attr, Attrs};
use super::tensor::Tensor;
use super::{ir_bail, IrResult};

/// One primitive operation. Operand counts and meanings are listed per variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// No operands. A named graph input (batch, labels, parameters, optimizer state);
    /// its shape is given when it is added.
    Input { name: String },
    /// No operands. A scalar f32 constant, stored as bits so that ops hash exactly.
    Const(u32),
    /// No operands. `[0, 1, .., len-1]` with shape `[len]`.
    Iota { len: usize },
    /// No operands. The runtime batch size `N` as a scalar.
    BatchSize,
    /// Operands `[step]` (a scalar). Uniform values in `[0, 1)` from a counter-based
    /// hash of `(seed, key, step, element index)`: reproducible and order-independent.
    Rand { seed: u64, key: u64, shape: Shape },
    /// Operands `[x]`.
    Unary(UnaryOp),
    /// Operands `[a, b]`; NumPy broadcasting.
    Binary(BinaryOp),
    /// Operands `[cond, a, b]`; `cond != 0 ? a : b`, broadcasting all three.
    Select,
    /// Operands `[x]`; reduces sorted, distinct `axes`, keeping them with size 1.
    Reduce { func: ReduceOp, axes: Vec<usize> },
    /// Operands `[a, b]`; `[.., m, k] @ [.., k, n]`, leading dims broadcast.
    MatMul,
    /// Operands `[x]`; same number of elements for every batch size.
    Reshape { shape: Shape },
    /// Operands `[x]`; output dim `i` is input dim `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// Operands `[x]`; NumPy broadcast of `x` up to `shape`.
    Broadcast { shape: Shape },
    /// Operands `[a, b, ..]`; joins along `axis` (a known-size dim).
    Concat { axis: usize },
    /// Operands `[x]`; `start..end` along `axis`.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    /// Operands `[x: [B, h, w, c]]` → `[B, oh, ow, k·k·c]` (zero padding).
    Im2col(Window),
    /// Operands `[cols: [B, oh, ow, k·k·c]]` → `[B, h, w, c]`: the adjoint of `Im2col`,
    /// summing overlapping windows.
    Col2im(Window),
    /// Operands `[x: [B, h, w, c], w: [kh·kw·c, f]]` → `[B, oh, ow, f]`: convolution, a
    /// product over the implicit `im2col` matrix of `x`.
    Conv(Conv),
    /// Operands `[dy: [B, oh, ow, f], wt: [kh·kw·f, c]]` → `[B, h, w, c]`: the gradient
    /// of a convolution's input (a transposed convolution).
    ConvData(Conv),
    /// Operands `[x: [B, h, w, c], dy: [B, oh, ow, f]]` → `[kh·kw·c, f]`: the gradient of
    /// a convolution's weights.
    ConvFilter(Conv),
    /// Operands `[x: [B, h, w, c]]` → `[B, oh, ow, c]`: the maximum or mean of each
    /// window (dilation 1).
    Pool(PoolKind, Conv),
    /// The gradient of a pooling's input: operands `[x, max_pool(x), dy]` for the
    /// maximum, `[dy]` for the mean → `[B, h, w, c]`.
    PoolGrad(PoolKind, Conv),
    /// Operands `[x, max_pool(x)]` → `[B, oh, ow, c]`: how many taps of each window hold
    /// its maximum.
    PoolTies(Conv),
}

/// What an evaluation needs besides the operands.
pub struct EvalCtx<'a> {
    pub batch: usize,
    /// The node's own shape, resolved for this batch.
    pub out_shape: &'a [usize],
}

impl Op {
    /// The shape rule: the output shape from the operand shapes, or why they do not fit.
    pub fn shape(&self, args: &[&Shape]) -> IrResult<Shape> {
        let want = self.arity();
        if let Some(want) = want {
            if args.len() != want {
                ir_bail!(
                    "`{}` takes {want} operand(s), got {}",
                    self.mnemonic(),
                    args.len()
                );
            }
        } else if args.is_empty() {
            ir_bail!("`{}` needs at least one operand", self.mnemonic());
        }
        match self {
            Op::Input { .. } => ir_bail!("an input's shape is declared, not inferred"),
            Op::Const(_) | Op::Iota { .. } | Op::BatchSize | Op::Rand { .. } => {
                source::shape(self, args)
            }
            Op::Unary(_) => Ok(args[0].clone()),
            Op::Binary(_) | Op::Select => elementwise::shape(args),
            Op::Reduce { axes, .. } => reduce::shape(axes, args[0]),
            Op::MatMul => matmul::shape(args[0], args[1]),
            Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Broadcast { .. }
            | Op::Concat { .. }
            | Op::Slice { .. } => layout::shape(self, args),
            Op::Im2col(w) => window::im2col_shape(w, args[0]),
            Op::Col2im(w) => window::col2im_shape(w, args[0]),
            Op::Conv(c) => conv::conv_shape(c, args[0], args[1]),
            Op::ConvData(c) => conv::data_shape(c, args[0], args[1]),
            Op::ConvFilter(c) => conv::filter_shape(c, args[0], args[1]),
            Op::Pool(_, c) => pool::pool_shape(c, args[0]),
            Op::PoolGrad(k, c) => pool::grad_shape(*k, c, args),
            Op::PoolTies(c) => pool::grad_shape(PoolKind::Max, c, args),
        }
    }

    /// Operand count, or `None` for variadic ops.
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input { .. } | Op::Const(_) | Op::Iota { .. } | Op::BatchSize => 0,
            Op::Rand { .. }
            | Op::Unary(_)
            | Op::Reduce { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Broadcast { .. }
            | Op::Slice { .. }
            | Op::Im2col(_)
            | Op::Col2im(_)
            | Op::Pool(..)
            | Op::PoolGrad(PoolKind::Avg, _) => 1,
            Op::PoolGrad(PoolKind::Max, _) => 3,
            Op::Binary(_)
            | Op::MatMul
            | Op::Conv(_)
            | Op::ConvData(_)
            | Op::ConvFilter(_)
            | Op::PoolTies(_) => 2,
            Op::Select => 3,
            Op::Concat { .. } => return None,
        })
    }

    /// Reference evaluation on concrete operands (inputs are bound by the interpreter).
    pub fn eval(&self, args: &[&Tensor], ctx: &EvalCtx) -> IrResult<Tensor> {
        match self {
            Op::Input { name } => ir_bail!("input `{name}` has no value"),
            Op::Const(_) | Op::Iota { .. } | Op::BatchSize | Op::Rand { .. } => {
                source::eval(self, args, ctx)
            }
            Op::Unary(u) => Ok(elementwise::eval_unary(*u, args[0])),
            Op::Binary(b) => Ok(elementwise::eval_binary(
                *b,
                args[0],
                args[1],
                ctx.out_shape,
            )),
            Op::Select => Ok(elementwise::eval_select(
                args[0],
                args[1],
                args[2],
                ctx.out_shape,
            )),
            Op::Reduce { func, axes } => Ok(reduce::eval(*func, axes, args[0], ctx.out_shape)),
            Op::MatMul => Ok(matmul::eval(args[0], args[1], ctx.out_shape)),
            Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Broadcast { .. }
            | Op::Concat { .. }
            | Op::Slice { .. } => Ok(layout::eval(self, args, ctx.out_shape)),
            Op::Im2col(w) => Ok(window::eval_im2col(w, args[0], ctx.out_shape)),
            Op::Col2im(w) => Ok(window::eval_col2im(w, args[0], ctx.out_shape)),
            Op::Conv(c) => Ok(conv::eval_conv(c, args[0], args[1], ctx.out_shape)),
            Op::ConvData(c) => Ok(conv::eval_data(c, args[0], args[1], ctx.out_shape)),
            Op::ConvFilter(c) => Ok(conv::eval_filter(c, args[0], args[1], ctx.out_shape)),
            Op::Pool(k, c) => Ok(pool::eval_pool(*k, c, args[0], ctx.out_shape)),
            Op::PoolGrad(k, c) => Ok(pool::eval_grad(*k, c, args, ctx.out_shape)),
            Op::PoolTies(c) => Ok(pool::eval_ties(c, args[0], args[1], ctx.out_shape)),
        }
    }

    /// The gradient rule: given `dy` (the gradient of the output, same shape as the node),
    /// the gradient of each operand (same shape as that operand), or `None` where the op
    /// is not differentiable in that operand (constants, masks, indices).
    pub fn grad(
        &self,
        g: &mut Graph,
        node: NodeId,
        args: &[NodeId],
        dy: NodeId,
    ) -> IrResult<Vec<Option<NodeId>>> {
        match self {
            Op::Input { .. } | Op::Const(_) | Op::Iota { .. } | Op::BatchSize | Op::Rand { .. } => {
                Ok(vec![None; args.len()])
            }
            Op::Unary(u) => elementwise::grad_unary(*u, g, node, args[0], dy),
            Op::Binary(b) => elementwise::grad_binary(*b, g, args[0], args[1], dy),
            Op::Select => elementwise::grad_select(g, args, dy),
            Op::Reduce { func, axes } => reduce::grad(*func, axes, g, node, args[0], dy),
            Op::MatMul => matmul::grad(g, args[0], args[1], dy),
            Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Broadcast { .. }
            | Op::Concat { .. }
            | Op::Slice { .. } => layout::grad(self, g, args, dy),
            Op::Im2col(w) => Ok(vec![Some(g.push(Op::Col2im(w.clone()), &[dy])?)]),
            Op::Col2im(w) => Ok(vec![Some(g.push(Op::Im2col(w.clone()), &[dy])?)]),
            Op::Conv(c) => conv::grad_conv(g, c, args[0], args[1], dy),
            Op::ConvData(c) => conv::grad_data(g, c, args[0], args[1], dy),
            Op::ConvFilter(c) => conv::grad_filter(g, c, args[0], args[1], dy),
            Op::Pool(k, c) => pool::grad_pool(g, *k, c, node, args[0], dy),
            Op::PoolTies(_) => Ok(vec![None, None]),
            Op::PoolGrad(k, c) => {
                let mut grads = vec![None; args.len()];
                let last = args.len() - 1;
                grads[last] = pool::grad_grad(g, *k, c, dy)?[0];
                Ok(grads)
            }
        }
    }

    /// The printed name.
    pub fn mnemonic(&self) -> String {
        match self {
            Op::Input { .. } => "input".into(),
            Op::Const(_) => "const".into(),
            Op::Iota { .. } => "iota".into(),
            Op::BatchSize => "batch_size".into(),
            Op::Rand { .. } => "rand".into(),
            Op::Unary(u) => u.name().into(),
            Op::Binary(b) => b.name().into(),
            Op::Select => "select".into(),
            Op::Reduce { func, .. } => format!("reduce_{}", func.name()),
            Op::MatMul => "matmul".into(),
            Op::Reshape { .. } => "reshape".into(),
            Op::Transpose { .. } => "transpose".into(),
            Op::Broadcast { .. } => "broadcast".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Slice { .. } => "slice".into(),
            Op::Im2col(_) => "im2col".into(),
            Op::Col2im(_) => "col2im".into(),
            Op::Conv(_) => "conv".into(),
            Op::ConvData(_) => "conv_data".into(),
            Op::ConvFilter(_) => "conv_filter".into(),
            Op::Pool(k, _) => format!("{}_pool", k.name()),
            Op::PoolGrad(k, _) => format!("{}_pool_grad", k.name()),
            Op::PoolTies(_) => "max_pool_ties".into(),
        }
    }

    /// The printed attributes, in a fixed order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        match self {
            Op::Input { name } => vec![("name", Attr::Str(name.clone()))],
            Op::Const(bits) => vec![("value", Attr::Float(f32::from_bits(*bits)))],
            Op::Iota { len } => vec![("len", Attr::Int(*len as u64))],
            Op::Rand { seed, key, shape } => vec![
                ("seed", Attr::Int(*seed)),
                ("key", Attr::Int(*key)),
                ("shape", Attr::Shape(shape.clone())),
            ],
            Op::Reduce { axes, .. } => vec![("axes", Attr::Ints(axes.clone()))],
            Op::Reshape { shape } | Op::Broadcast { shape } => {
                vec![("shape", Attr::Shape(shape.clone()))]
            }
            Op::Transpose { perm } => vec![("perm", Attr::Ints(perm.clone()))],
            Op::Concat { axis } => vec![("axis", Attr::Int(*axis as u64))],
            Op::Slice { axis, start, end } => vec![
                ("axis", Attr::Int(*axis as u64)),
                ("start", Attr::Int(*start as u64)),
                ("end", Attr::Int(*end as u64)),
            ],
            Op::Im2col(w) | Op::Col2im(w) => w.attrs(),
            Op::Conv(c) | Op::ConvData(c) | Op::ConvFilter(c) => c.attrs(),
            Op::Pool(_, c) | Op::PoolGrad(_, c) | Op::PoolTies(c) => c.attrs(),
            Op::BatchSize | Op::Unary(_) | Op::Binary(_) | Op::Select | Op::MatMul => Vec::new(),
        }
    }

    /// Rebuilds an op from its printed name and attributes (the parser's half of
    /// [`Op::mnemonic`] / [`Op::attrs`]).
    pub fn from_text(name: &str, attrs: &Attrs) -> IrResult<Op> {
        let op = match name {
            "input" => Op::Input {
                name: attrs.string("name")?,
            },
            "const" => Op::Const(attrs.f32("value")?.to_bits()),
            "iota" => Op::Iota {
                len: attrs.usize("len")?,
            },
            "batch_size" => Op::BatchSize,
            "rand" => Op::Rand {
                seed: attrs.u64("seed")?,
                key: attrs.u64("key")?,
                shape: attrs.shape("shape")?,
            },
            "select" => Op::Select,
            "matmul" => Op::MatMul,
            "reshape" => Op::Reshape {
                shape: attrs.shape("shape")?,
            },
            "broadcast" => Op::Broadcast {
                shape: attrs.shape("shape")?,
            },
            "transpose" => Op::Transpose {
                perm: attrs.usizes("perm")?,
            },
            "concat" => Op::Concat {
                axis: attrs.usize("axis")?,
            },
            "slice" => Op::Slice {
                axis: attrs.usize("axis")?,
                start: attrs.usize("start")?,
                end: attrs.usize("end")?,
            },
            "im2col" => Op::Im2col(Window::from_attrs(attrs)?),
            "col2im" => Op::Col2im(Window::from_attrs(attrs)?),
            "conv" => Op::Conv(Conv::from_attrs(attrs)?),
            "conv_data" => Op::ConvData(Conv::from_attrs(attrs)?),
            "conv_filter" => Op::ConvFilter(Conv::from_attrs(attrs)?),
            "max_pool_ties" => Op::PoolTies(Conv::from_attrs(attrs)?),
            other => {
                if let Some(u) = UnaryOp::from_name(other) {
                    Op::Unary(u)
                } else if let Some(b) = BinaryOp::from_name(other) {
                    Op::Binary(b)
                } else if let Some(k) = other
                    .strip_suffix("_pool_grad")
                    .and_then(PoolKind::from_name)
                {
                    Op::PoolGrad(k, Conv::from_attrs(attrs)?)
                } else if let Some(k) = other.strip_suffix("_pool").and_then(PoolKind::from_name) {
                    Op::Pool(k, Conv::from_attrs(attrs)?)
                } else if let Some(f) = other.strip_prefix("reduce_").and_then(ReduceOp::from_name)
                {
                    Op::Reduce {
                        func: f,
                        axes: attrs.usizes("axes")?,
                    }
                } else {
                    ir_bail!("unknown op `{other}`")
                }
            }
        };
        attrs.check_all_used(&op.attrs().iter().map(|(k, _)| *k).collect::<Vec<_>>())?;
        Ok(op)
    }

    /// Whether the op computes each output element from the operands' elements at the
    /// same (broadcast) position: unary, binary and `select`.
    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(_) | Op::Binary(_) | Op::Select)
    }

    /// Whether the op is a matrix product: a `Gemm` of the kernel IR computes it, and
    /// elementwise consumers run as its epilogue (`matmul` and the convolutions).
    pub fn is_product(&self) -> bool {
        matches!(
            self,
            Op::MatMul | Op::Conv(_) | Op::ConvData(_) | Op::ConvFilter(_)
        )
    }

    /// Whether each output element gathers a window of its operands' elements (pooling
    /// and its gradient): inlined into the consumer's kernel like a layout op.
    pub fn is_window_gather(&self) -> bool {
        matches!(self, Op::Pool(..) | Op::PoolGrad(..) | Op::PoolTies(_))
    }

    /// Whether the op is one of the convolution products, whose operands are read as
    /// row-major images (never through a transposed view).
    pub fn is_conv(&self) -> bool {
        matches!(self, Op::Conv(_) | Op::ConvData(_) | Op::ConvFilter(_))
    }

    /// Whether the op only moves data: each output element is a fixed function of
    /// operand elements chosen by index (`col2im` sums a few of them).
    pub fn is_layout(&self) -> bool {
        matches!(
            self,
            Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Broadcast { .. }
                | Op::Concat { .. }
                | Op::Slice { .. }
                | Op::Im2col(_)
                | Op::Col2im(_)
        )
    }

    /// Whether this op is differentiable at all (used to skip dead gradient work).
    pub fn is_source(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Const(_) | Op::Iota { .. } | Op::BatchSize | Op::Rand { .. }
        )
    }
}
