//! The shape rules of calls in a model: a checked call to a registry op becomes a typed
//! op and its result shape, dispatched on the op's identity ([`OpId`]) by exhaustive
//! `match`, creating the parameters and buffers of layers on the way.

use super::{ModelChecker, Value};
use crate::diag::{Code, Diagnostic};
use crate::sema::args::Args;
use crate::sema::registry::{Activation, Function, Layer, OpId, OpSpec};
use crate::sema::shapes;
use crate::sema::typed::*;
use crate::syntax::ast::Span;

impl ModelChecker {
    /// Creates a layer's parameter `<kind>_<index>.<name>`.
    fn layer_param(
        &mut self,
        op: &OpSpec,
        index: usize,
        name: &str,
        dims: Vec<usize>,
        init: Init,
        span: Span,
    ) -> Result<ParamId, Diagnostic> {
        let shape = Shape::fixed(dims);
        shapes::check_size(&shape, span)?;
        Ok(self.add_param(format!("{}_{index}.{name}", op.name), shape, init, span))
    }

    /// Applies the shape rule of `op` to checked operands and arguments.
    pub(super) fn apply(
        &mut self,
        op: &'static OpSpec,
        index: usize,
        args: &Args,
        xs: &[TNodeId],
        span: Span,
    ) -> Result<Value, Diagnostic> {
        let x = xs.first().copied().ok_or_else(|| {
            Diagnostic::new(Code::MissingArgument, "missing input").label(span, "")
        })?;
        let sx = self.shape_of(x).clone();
        let (top, shape) = match op.id {
            OpId::Activation(a) => {
                let top = match a {
                    Activation::LeakyRelu => TOp::LeakyRelu {
                        alpha: args.float("alpha"),
                    },
                    Activation::Softmax => TOp::Softmax {
                        axis: axis(op, args, &sx, span)?,
                    },
                    // Activations without arguments are typed as themselves; what they
                    // compute is their expansion in `ir::lower::activation`, an
                    // exhaustive match, so a new one cannot be forgotten there.
                    _ => TOp::Activation(a),
                };
                (top, sx)
            }
            OpId::Function(f) => self.function(f, op, args, xs, &sx, span)?,
            OpId::Layer(l) => return self.apply_layer(l, op, index, args, x, sx, span),
            OpId::Loss(_)
            | OpId::Optimizer(_)
            | OpId::Metric(_)
            | OpId::Initializer(_)
            | OpId::Data(_)
            | OpId::Control(_) => {
                return Err(Diagnostic::new(
                    Code::UnknownFunction,
                    format!("`{}` has no shape rule", op.name),
                )
                .label(span, "not supported here"))
            }
        };
        Ok(self.push(top, xs.to_vec(), shape, span))
    }

    /// The typed op and shape of a tensor function.
    fn function(
        &self,
        f: Function,
        op: &OpSpec,
        args: &Args,
        xs: &[TNodeId],
        sx: &Shape,
        span: Span,
    ) -> Result<(TOp, Shape), Diagnostic> {
        let reduce = |func: ReduceFn| -> Result<(TOp, Shape), Diagnostic> {
            let axis = axis(op, args, sx, span)?;
            let mut dims = sx.dims.clone();
            dims.remove(axis);
            Ok((
                TOp::Reduce { func, axis },
                Shape {
                    batched: sx.batched,
                    dims,
                },
            ))
        };
        match f {
            Function::Exp | Function::Log | Function::Sqrt | Function::Abs | Function::Square => {
                Ok((TOp::Elementwise(f), sx.clone()))
            }
            Function::Sum => reduce(ReduceFn::Sum),
            Function::Mean => reduce(ReduceFn::Mean),
            Function::Max => reduce(ReduceFn::Max),
            Function::Reshape => {
                let dims = args.ints("shape").to_vec();
                let target = Shape {
                    batched: sx.batched,
                    dims: dims.clone(),
                };
                shapes::check_size(&target, args.span("shape").unwrap_or(span))?;
                if target.elems() != sx.elems() {
                    return Err(Diagnostic::new(
                        Code::ReshapeMismatch,
                        format!(
                            "cannot reshape {sx} ({} elements) to {target} ({} elements)",
                            sx.elems(),
                            target.elems()
                        ),
                    )
                    .label(
                        args.span("shape").unwrap_or(span),
                        format!("{} elements per sample", target.elems()),
                    )
                    .label(
                        span,
                        format!("input has {} elements per sample", sx.elems()),
                    )
                    .help("the number of elements per sample must stay the same"));
                }
                Ok((TOp::Reshape { dims }, target))
            }
            Function::Transpose => {
                let mut dims = sx.dims.clone();
                let r = dims.len();
                if r >= 2 {
                    dims.swap(r - 1, r - 2);
                }
                Ok((
                    TOp::Transpose,
                    Shape {
                        batched: sx.batched,
                        dims,
                    },
                ))
            }
            Function::Concat => self.concat(op, args, xs, span),
        }
    }

    fn concat(
        &self,
        op: &OpSpec,
        args: &Args,
        xs: &[TNodeId],
        span: Span,
    ) -> Result<(TOp, Shape), Diagnostic> {
        let first = self.shape_of(xs[0]).clone();
        let axis = axis(op, args, &first, span)?;
        let mut dims = first.dims.clone();
        for &other in &xs[1..] {
            let s = self.shape_of(other);
            let fits = s.batched == first.batched
                && s.dims.len() == first.dims.len()
                && s.dims
                    .iter()
                    .zip(&first.dims)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !fits {
                return Err(Diagnostic::new(
                    Code::Broadcast,
                    format!("cannot concatenate {first} and {s} along axis {axis}"),
                )
                .label(span, format!("shapes {first} and {s}"))
                .help("all tensors need the same rank and equal dims except along `axis`"));
            }
            dims[axis] = dims[axis].saturating_add(s.dims[axis]);
        }
        Ok((
            TOp::Concat { axis },
            Shape {
                batched: first.batched,
                dims,
            },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_layer(
        &mut self,
        layer: Layer,
        op: &'static OpSpec,
        index: usize,
        args: &Args,
        x: TNodeId,
        sx: Shape,
        span: Span,
    ) -> Result<Value, Diagnostic> {
        if !sx.batched {
            return Err(Diagnostic::new(
                Code::RankMismatch,
                format!(
                    "`{}` is applied to a value without a batch dimension",
                    op.name
                ),
            )
            .label(span, format!("input has shape {sx}"))
            .help("layers apply to values computed from a model `input`"));
        }
        let rank3 = |what: &str| -> Result<(usize, usize, usize), Diagnostic> {
            match sx.dims[..] {
                [h, w, c] => Ok((h, w, c)),
                _ => Err(Diagnostic::new(
                    Code::RankMismatch,
                    format!(
                        "`{}` expects [height, width, channels] per sample, found {sx}",
                        op.name
                    ),
                )
                .label(span, format!("input has shape {sx}"))
                .help(if sx.dims.len() == 2 {
                    format!(
                        "add a channel dimension first: `|> reshape([{}, {}, 1])`",
                        sx.dims[0], sx.dims[1]
                    )
                } else {
                    format!("{what} works on images stored channels-last")
                })),
            }
        };
        let (top, shape) = match layer {
            Layer::Dense => {
                let [fan_in] = sx.dims[..] else {
                    return Err(Diagnostic::new(
                        Code::DenseRank,
                        format!("`dense` expects a vector per sample, found {sx}"),
                    )
                    .label(span, format!("input has shape {sx}"))
                    .help("add `flatten` first: `|> flatten |> dense(..)`"));
                };
                let units = args.count("units");
                let w =
                    self.layer_param(op, index, "w", vec![fan_in, units], args.init("init"), span)?;
                let b = self.layer_param(op, index, "b", vec![units], Init::Zeros, span)?;
                (TOp::Dense { w, b, units }, Shape::batched(vec![units]))
            }
            Layer::Conv2d => {
                let (h, w_, c) = rank3("a convolution")?;
                let (filters, kernel, stride, dilation) = (
                    args.count("filters"),
                    args.pair("kernel"),
                    args.pair("stride"),
                    args.pair("dilation"),
                );
                let groups = args.count("groups");
                if c % groups != 0 || filters % groups != 0 {
                    return Err(Diagnostic::new(
                        Code::Groups,
                        format!(
                            "{groups} groups do not divide the {c} input channels and the {filters} filters"
                        ),
                    )
                    .label(args.span("groups").unwrap_or(span), format!("input has shape {sx}"))
                    .help("choose `groups` dividing both the input's channels and `filters`"));
                }
                // The span of a window along each axis, taps and dilation gaps (saturating:
                // an absurd span is reported as too large below, whatever the padding).
                let extent =
                    [0, 1].map(|a| dilation[a].saturating_mul(kernel[a] - 1).saturating_add(1));
                if extent.iter().any(|&e| e > MAX_WINDOW) {
                    return Err(too_large("convolution", extent, &sx, span)
                        .help("use a smaller `kernel` or `dilation`"));
                }
                let padding = if args.str("padding") == "valid" {
                    Padding::Valid
                } else {
                    Padding::Same
                };
                let (Some(oh), Some(ow)) = (
                    shapes::window_out(h, extent[0], stride[0], padding),
                    shapes::window_out(w_, extent[1], stride[1], padding),
                ) else {
                    return Err(too_large("convolution", extent, &sx, span)
                        .help("use a smaller `kernel` or `padding = \"same\"`"));
                };
                let w = self.layer_param(
                    op,
                    index,
                    "w",
                    vec![kernel[0], kernel[1], c / groups, filters],
                    args.init("init"),
                    span,
                )?;
                let b = self.layer_param(op, index, "b", vec![filters], Init::Zeros, span)?;
                (
                    TOp::Conv2d {
                        w,
                        b,
                        filters,
                        kernel,
                        stride,
                        dilation,
                        groups,
                        padding,
                    },
                    Shape::batched(vec![oh, ow, filters]),
                )
            }
            Layer::MaxPool | Layer::AvgPool => {
                let (h, w, c) = rank3("pooling")?;
                let (size, stride) = (args.pair("size"), args.pair("stride"));
                let (Some(oh), Some(ow)) = (
                    shapes::window_out(h, size[0], stride[0], Padding::Valid),
                    shapes::window_out(w, size[1], stride[1], Padding::Valid),
                ) else {
                    return Err(too_large("pooling", size, &sx, span)
                        .help("use a smaller `size`, or pool earlier"));
                };
                let func = if layer == Layer::MaxPool {
                    PoolFn::Max
                } else {
                    PoolFn::Avg
                };
                (
                    TOp::Pool { func, size, stride },
                    Shape::batched(vec![oh, ow, c]),
                )
            }
            Layer::GlobalAvgPool => {
                let (h, w, c) = rank3("global pooling")?;
                (
                    TOp::Pool {
                        func: PoolFn::Avg,
                        size: [h, w],
                        stride: [h, w],
                    },
                    Shape::batched(vec![c]),
                )
            }
            Layer::Flatten => (TOp::Flatten, Shape::batched(vec![sx.elems()])),
            Layer::Dropout => (
                TOp::Dropout {
                    rate: args.float("rate"),
                },
                sx.clone(),
            ),
            Layer::BatchNorm => {
                let c = match sx.dims[..] {
                    [c] | [_, _, c] => c,
                    _ => {
                        return Err(Diagnostic::new(Code::RankMismatch, format!("`batch_norm` expects [channels] or [height, width, channels] per sample, found {sx}"))
                            .label(span, format!("input has shape {sx}")))
                    }
                };
                let gamma = self.layer_param(op, index, "gamma", vec![c], Init::Ones, span)?;
                let beta = self.layer_param(op, index, "beta", vec![c], Init::Zeros, span)?;
                let running_mean = self.buffers.len();
                self.buffers.push(TypedBuffer {
                    name: format!("batch_norm_{index}.running_mean"),
                    shape: Shape::fixed(vec![c]),
                    fill: 0.0,
                });
                self.buffers.push(TypedBuffer {
                    name: format!("batch_norm_{index}.running_var"),
                    shape: Shape::fixed(vec![c]),
                    fill: 1.0,
                });
                let top = TOp::BatchNorm {
                    gamma,
                    beta,
                    running_mean,
                    running_var: running_mean + 1,
                    momentum: args.float("momentum"),
                    eps: args.float("eps"),
                };
                (top, sx.clone())
            }
        };
        Ok(self.push(top, vec![x], shape, span))
    }
}

/// The largest window span (taps and dilation gaps) along an axis.
const MAX_WINDOW: usize = 1 << 16;

fn too_large(what: &str, [wh, ww]: [usize; 2], sx: &Shape, span: Span) -> Diagnostic {
    Diagnostic::new(
        Code::PoolTooLarge,
        format!("{what} window {wh}×{ww} is larger than its input {sx}"),
    )
    .label(span, format!("input has shape {sx}"))
}

/// The normalised `axis` argument of `op` for an input of shape `sx`.
fn axis(op: &OpSpec, args: &Args, sx: &Shape, span: Span) -> Result<usize, Diagnostic> {
    let a = args.int("axis");
    shapes::normalize_axis(a, sx.dims.len()).ok_or_else(|| {
        let rank = sx.dims.len();
        Diagnostic::new(
            Code::InvalidAxis,
            format!("axis {a} is out of range for {sx}"),
        )
        .label(
            args.span("axis").unwrap_or(span),
            format!(
                "`{}` gets a value with {rank} per-sample dimension{}",
                op.name,
                if rank == 1 { "" } else { "s" }
            ),
        )
        .help(if rank == 0 {
            "the value has no axis to use (the batch dimension is never an axis)".to_string()
        } else {
            format!(
                "use an axis from {} to {} (the batch dimension is never an axis)",
                -(rank as i64),
                rank - 1
            )
        })
    })
}
