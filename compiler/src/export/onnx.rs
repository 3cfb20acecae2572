//! A checked model as an ONNX model (opset 17, IR version 8) for other runtimes: the
//! evaluation form (dropout the identity, batch norm with its running statistics),
//! the weights as initializers, the recorded preprocessing as the first nodes, and a
//! dynamic batch dimension `N`.
//!
//! Tensors stay channels-last as in nnc; a convolution or pooling is wrapped in two
//! `Transpose`s to ONNX's channels-first and back, its filter stored as
//! `[filters, channels / groups, kh, kw]`, `same` padding as explicit `pads` (the smaller
//! half before, as nnc pads). Values with fewer per-sample dims than the other operand of
//! an elementwise op get unit dims after the batch (`Unsqueeze`), as nnc broadcasts. Batch
//! norm is folded to `x · scale + shift` per channel. GELU (tanh form) is expanded into
//! its arithmetic. Every `TOp` either exports or is an [`ExportError`] naming it, with the
//! span of the expression.

use std::collections::HashMap;

use nnc_runtime::data::Preprocess;
use nnc_runtime::tensor::Tensor;

use super::proto::Message;
use crate::diag::Span;
use crate::ir::ops::conv::{Conv, Padding as ConvPadding};
use crate::sema::typed::{
    Activation, BinaryFn, Function, Padding, PoolFn, ReduceFn, Shape, TOp, TypedModel,
};

/// The ONNX opset the export targets.
pub const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// A part of the model that cannot be exported, and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportError {
    pub message: String,
    pub span: Span,
}

/// The ONNX file (serialized `ModelProto`) of `model` with `weights` (every parameter and
/// buffer by name) and the data's `preprocess`ing applied to its first input.
pub fn export_onnx(
    model: &TypedModel,
    weights: &HashMap<String, Tensor>,
    preprocess: &Preprocess,
    metadata: &[(String, String)],
) -> Result<Vec<u8>, ExportError> {
    let mut b = Builder::default();
    let mut inputs = Vec::new();
    for (i, input) in model.inputs.iter().enumerate() {
        inputs.push(value_info(&input.name, &batched_dims(&input.shape)));
        let mut x = input.name.clone();
        if i == 0 {
            x = b.preprocess(&x, preprocess);
        }
        b.input_values.push(x);
    }
    let mut values: Vec<String> = Vec::with_capacity(model.nodes.len());
    for node in &model.nodes {
        let args: Vec<(String, Shape)> = node
            .operands
            .iter()
            .map(|o| {
                (
                    values[o.0 as usize].clone(),
                    model.nodes[o.0 as usize].shape.clone(),
                )
            })
            .collect();
        let v = b
            .lower(model, weights, node.op.clone(), &args, &node.shape)
            .map_err(|message| ExportError {
                message,
                span: node.span,
            })?;
        values.push(v);
    }
    let out_node = &model.nodes[model.output.0 as usize];
    let out_name = model.output_name.as_deref().unwrap_or("output");
    let out = b.node(
        "Identity",
        &[&values[model.output.0 as usize]],
        vec![],
        Some(out_name),
    );
    let mut graph = Message::new();
    for n in b.nodes {
        graph = graph.message(1, n);
    }
    graph = graph.string(2, &model.name);
    for t in b.initializers {
        graph = graph.message(5, t);
    }
    for i in inputs {
        graph = graph.message(11, i);
    }
    graph = graph.message(12, value_info(&out, &batched_dims(&out_node.shape)));
    let mut m = Message::new()
        .int(1, IR_VERSION)
        .string(2, "nnc")
        .string(3, env!("CARGO_PKG_VERSION"))
        .message(7, graph)
        .message(8, Message::new().string(1, "").int(2, OPSET));
    for (k, v) in metadata {
        m = m.message(14, Message::new().string(1, k).string(2, v));
    }
    Ok(m.bytes())
}

/// `[N, dims…]` (`None` for the dynamic batch) or the fixed dims.
fn batched_dims(s: &Shape) -> Vec<Option<usize>> {
    let mut d: Vec<Option<usize>> = s.dims.iter().map(|&x| Some(x)).collect();
    if s.batched {
        d.insert(0, None);
    }
    d
}

fn value_info(name: &str, dims: &[Option<usize>]) -> Message {
    let mut shape = Message::new();
    for d in dims {
        let dim = match d {
            Some(v) => Message::new().int(1, *v as i64),
            None => Message::new().string(2, "N"),
        };
        shape = shape.message(1, dim);
    }
    let tensor = Message::new().int(1, FLOAT).message(2, shape);
    Message::new()
        .string(1, name)
        .message(2, Message::new().message(1, tensor))
}

fn attr_int(name: &str, v: i64) -> Message {
    Message::new().string(1, name).int(3, v).int(20, 2)
}

fn attr_float(name: &str, v: f32) -> Message {
    Message::new().string(1, name).float(2, v).int(20, 1)
}

fn attr_ints(name: &str, vs: &[i64]) -> Message {
    Message::new().string(1, name).ints(8, vs).int(20, 7)
}

/// The graph under construction: nodes in order, initializers, fresh names.
#[derive(Default)]
struct Builder {
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    names: usize,
    /// The value each model input stands for (after the preprocessing nodes).
    input_values: Vec<String>,
    /// Initializers already added, by name.
    added: HashMap<String, ()>,
}

impl Builder {
    fn fresh(&mut self, hint: &str) -> String {
        self.names += 1;
        format!("{hint}_{}", self.names)
    }

    /// A node with one output (named `out`, or fresh) and its attributes.
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<Message>,
        out: Option<&str>,
    ) -> String {
        let out = out.map_or_else(|| self.fresh(&op.to_ascii_lowercase()), String::from);
        let mut n = Message::new();
        for i in inputs {
            n = n.string(1, i);
        }
        n = n.string(2, &out).string(3, &out).string(4, op);
        for a in attrs {
            n = n.message(5, a);
        }
        self.nodes.push(n);
        out
    }

    fn op(&mut self, op: &str, inputs: &[&str]) -> String {
        self.node(op, inputs, vec![], None)
    }

    /// A float initializer of `dims` (once per name).
    fn init(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        if self.added.insert(name.to_string(), ()).is_none() {
            let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
            self.initializers.push(
                Message::new()
                    .ints(1, &dims)
                    .int(2, FLOAT)
                    .string(8, name)
                    .raw(9, &raw),
            );
        }
        name.to_string()
    }

    fn init_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(
            Message::new()
                .int(1, data.len() as i64)
                .int(2, INT64)
                .string(8, &name)
                .raw(9, &raw),
        );
        name
    }

    fn scalar(&mut self, v: f32) -> String {
        let name = self.fresh("const");
        self.init(&name, &[], &[v])
    }

    fn preprocess(&mut self, x: &str, p: &Preprocess) -> String {
        let mut x = x.to_string();
        if p.scale != 1.0 {
            let s = self.scalar(p.scale);
            x = self.op("Mul", &[&x, &s]);
        }
        if let Some(st) = &p.standardize {
            let n = st.mean.len();
            let mean: Vec<f32> = st.mean.iter().map(|&v| v as f32).collect();
            let std: Vec<f32> = st.std.iter().map(|&v| v as f32).collect();
            let m = self.init("preprocess.mean", &[n], &mean);
            let d = self.init("preprocess.std", &[n], &std);
            x = self.op("Sub", &[&x, &m]);
            x = self.op("Div", &[&x, &d]);
        }
        x
    }

    fn weight(
        &mut self,
        weights: &HashMap<String, Tensor>,
        name: &str,
    ) -> Result<(String, Tensor), String> {
        let t = weights
            .get(name)
            .ok_or_else(|| format!("the weights have no tensor `{name}`"))?;
        Ok((self.init(name, &t.shape, &t.data), t.clone()))
    }

    /// `x` with unit dims after the batch so that it has `rank` per-sample dims.
    fn lift(&mut self, x: &str, s: &Shape, rank: usize) -> String {
        if !s.batched || s.dims.len() >= rank {
            return x.to_string();
        }
        let axes: Vec<i64> = (1..=(rank - s.dims.len()) as i64).collect();
        let a = self.init_i64("axes", &axes);
        self.op("Unsqueeze", &[x, &a])
    }

    /// `x` (channels last) through a channels-first op `f`.
    fn channels_first(&mut self, x: &str, f: impl FnOnce(&mut Self, &str) -> String) -> String {
        let t = self.node(
            "Transpose",
            &[x],
            vec![attr_ints("perm", &[0, 3, 1, 2])],
            None,
        );
        let y = f(self, &t);
        self.node(
            "Transpose",
            &[&y],
            vec![attr_ints("perm", &[0, 2, 3, 1])],
            None,
        )
    }

    #[allow(clippy::too_many_lines)]
    fn lower(
        &mut self,
        model: &TypedModel,
        weights: &HashMap<String, Tensor>,
        op: TOp,
        args: &[(String, Shape)],
        out: &Shape,
    ) -> Result<String, String> {
        let x = || args[0].0.as_str();
        let offset = |s: &Shape| i64::from(s.batched);
        Ok(match op {
            TOp::Input(i) => self.input_values[i].clone(),
            TOp::Param(p) => self.weight(weights, &model.params[p.0 as usize].name)?.0,
            TOp::Const(c) => self.scalar(c as f32),
            TOp::Neg => self.op("Neg", &[x()]),
            TOp::Elementwise(f) => match f {
                Function::Exp => self.op("Exp", &[x()]),
                Function::Log => self.op("Log", &[x()]),
                Function::Sqrt => self.op("Sqrt", &[x()]),
                Function::Abs => self.op("Abs", &[x()]),
                Function::Square => self.op("Mul", &[x(), x()]),
                other => return Err(format!("`{other:?}` is not elementwise")),
            },
            TOp::Activation(a) => match a {
                Activation::Sigmoid => self.op("Sigmoid", &[x()]),
                Activation::Tanh => self.op("Tanh", &[x()]),
                Activation::Relu => self.op("Relu", &[x()]),
                Activation::Softplus => self.op("Softplus", &[x()]),
                Activation::Gelu => {
                    // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as nnc computes it.
                    let x3 = self.op("Mul", &[x(), x()]);
                    let x3 = self.op("Mul", &[&x3, x()]);
                    let c = self.scalar(0.044715);
                    let c3 = self.op("Mul", &[&x3, &c]);
                    let inner = self.op("Add", &[x(), &c3]);
                    let k = self.scalar((2.0 / std::f64::consts::PI).sqrt() as f32);
                    let arg = self.op("Mul", &[&inner, &k]);
                    let t = self.op("Tanh", &[&arg]);
                    let one = self.scalar(1.0);
                    let opt = self.op("Add", &[&one, &t]);
                    let half = self.scalar(0.5);
                    let hx = self.op("Mul", &[x(), &half]);
                    self.op("Mul", &[&hx, &opt])
                }
                Activation::LeakyRelu | Activation::Softmax => {
                    return Err(format!("`{a:?}` has its own typed op"))
                }
            },
            TOp::LeakyRelu { alpha } => self.node(
                "LeakyRelu",
                &[x()],
                vec![attr_float("alpha", alpha as f32)],
                None,
            ),
            TOp::Softmax { axis } => self.node(
                "Softmax",
                &[x()],
                vec![attr_int("axis", axis as i64 + offset(&args[0].1))],
                None,
            ),
            TOp::Binary(f) => {
                let rank = args[0].1.dims.len().max(args[1].1.dims.len());
                let a = self.lift(&args[0].0, &args[0].1, rank);
                let c = self.lift(&args[1].0, &args[1].1, rank);
                let name = match f {
                    BinaryFn::Add => "Add",
                    BinaryFn::Sub => "Sub",
                    BinaryFn::Mul => "Mul",
                    BinaryFn::Div => "Div",
                };
                self.op(name, &[&a, &c])
            }
            TOp::MatMul => self.matmul(&args[0], &args[1])?,
            TOp::Reduce { func, axis } => {
                let ax = axis as i64 + offset(&args[0].1);
                let keep = attr_int("keepdims", 0);
                match func {
                    ReduceFn::Sum => {
                        let axes = self.init_i64("axes", &[ax]);
                        self.node("ReduceSum", &[x(), &axes], vec![keep], None)
                    }
                    ReduceFn::Mean => self.node(
                        "ReduceMean",
                        &[x()],
                        vec![attr_ints("axes", &[ax]), keep],
                        None,
                    ),
                    ReduceFn::Max => self.node(
                        "ReduceMax",
                        &[x()],
                        vec![attr_ints("axes", &[ax]), keep],
                        None,
                    ),
                }
            }
            TOp::Reshape { .. } | TOp::Flatten => {
                let mut dims: Vec<i64> = out.dims.iter().map(|&d| d as i64).collect();
                if out.batched {
                    dims.insert(0, 0);
                }
                let shape = self.init_i64("shape", &dims);
                self.op("Reshape", &[x(), &shape])
            }
            TOp::Transpose => {
                let s = &args[0].1;
                if s.dims.len() < 2 {
                    x().to_string()
                } else {
                    let rank = s.dims.len() + usize::from(s.batched);
                    let mut perm: Vec<i64> = (0..rank as i64).collect();
                    perm.swap(rank - 1, rank - 2);
                    self.node("Transpose", &[x()], vec![attr_ints("perm", &perm)], None)
                }
            }
            TOp::Concat { axis } => {
                if args
                    .iter()
                    .any(|(_, s)| s.batched != out.batched || s.dims.len() != out.dims.len())
                {
                    return Err(
                        "`concat` of per-sample values with parameters (joined by broadcasting) is not exported to ONNX yet"
                            .into(),
                    );
                }
                let names: Vec<&str> = args.iter().map(|(n, _)| n.as_str()).collect();
                let axis = axis as i64 + i64::from(out.batched);
                self.node("Concat", &names, vec![attr_int("axis", axis)], None)
            }
            TOp::Dense { w, b, .. } => {
                let (w, _) = self.weight(weights, &model.params[w.0 as usize].name)?;
                let (b, _) = self.weight(weights, &model.params[b.0 as usize].name)?;
                let y = self.op("MatMul", &[x(), &w]);
                self.op("Add", &[&y, &b])
            }
            TOp::Conv2d {
                w,
                b,
                kernel,
                stride,
                dilation,
                groups,
                padding,
                ..
            } => {
                let wname = &model.params[w.0 as usize].name;
                let wt = weights
                    .get(wname.as_str())
                    .ok_or_else(|| format!("the weights have no tensor `{wname}`"))?;
                let [kh, kw, cg, f] = wt.shape[..] else {
                    return Err(format!("`{wname}` is not [kh, kw, channels, filters]"));
                };
                // [kh, kw, cg, f] → [f, cg, kh, kw].
                let mut data = vec![0.0; wt.data.len()];
                for i in 0..kh {
                    for j in 0..kw {
                        for c in 0..cg {
                            for o in 0..f {
                                data[((o * cg + c) * kh + i) * kw + j] =
                                    wt.data[((i * kw + j) * cg + c) * f + o];
                            }
                        }
                    }
                }
                let wn = self.init(&format!("{wname}.oihw"), &[f, cg, kh, kw], &data);
                let (bn, _) = self.weight(weights, &model.params[b.0 as usize].name)?;
                // nnc's geometry (the padding before each axis) and what it leaves after.
                let image = [args[0].1.dims[0], args[0].1.dims[1]];
                let pad_kind = match padding {
                    Padding::Same => ConvPadding::Same,
                    Padding::Valid => ConvPadding::Valid,
                };
                let cv =
                    Conv::new(image, kernel, stride, dilation, pad_kind).map_err(|e| e.message)?;
                let mut pads = [0i64; 4];
                for a in 0..2 {
                    let extent = (kernel[a] - 1) * dilation[a] + 1;
                    let reach = (cv.out[a] - 1) * stride[a] + extent;
                    pads[a] = cv.pad[a] as i64;
                    pads[a + 2] = reach.saturating_sub(image[a] + cv.pad[a]) as i64;
                }
                let attrs = vec![
                    attr_ints("kernel_shape", &[kernel[0] as i64, kernel[1] as i64]),
                    attr_ints("strides", &[stride[0] as i64, stride[1] as i64]),
                    attr_ints("dilations", &[dilation[0] as i64, dilation[1] as i64]),
                    attr_ints("pads", &pads),
                    attr_int("group", groups as i64),
                ];
                self.channels_first(x(), |s, t| s.node("Conv", &[t, &wn, &bn], attrs, None))
            }
            TOp::Pool { func, size, stride } => {
                let name = match func {
                    PoolFn::Max => "MaxPool",
                    PoolFn::Avg => "AveragePool",
                };
                let attrs = vec![
                    attr_ints("kernel_shape", &[size[0] as i64, size[1] as i64]),
                    attr_ints("strides", &[stride[0] as i64, stride[1] as i64]),
                ];
                let y = self.channels_first(x(), |s, t| s.node(name, &[t], attrs, None));
                if out.dims.len() == 3 {
                    y
                } else {
                    // Global pooling: [N, 1, 1, c] → [N, c].
                    let mut dims: Vec<i64> = out.dims.iter().map(|&d| d as i64).collect();
                    dims.insert(0, 0);
                    let shape = self.init_i64("shape", &dims);
                    self.op("Reshape", &[&y, &shape])
                }
            }
            TOp::Dropout { .. } => x().to_string(),
            TOp::BatchNorm {
                gamma,
                beta,
                running_mean,
                running_var,
                eps,
                ..
            } => {
                let get = |name: &str| {
                    weights
                        .get(name)
                        .ok_or_else(|| format!("the weights have no tensor `{name}`"))
                };
                let gname = &model.params[gamma.0 as usize].name;
                let bname = &model.params[beta.0 as usize].name;
                let (g, bt) = (get(gname)?, get(bname)?);
                let (rm, rv) = (
                    get(&model.buffers[running_mean].name)?,
                    get(&model.buffers[running_var].name)?,
                );
                let n = g.data.len();
                let scale: Vec<f32> = (0..n)
                    .map(|c| g.data[c] / (rv.data[c] + eps as f32).sqrt())
                    .collect();
                let shift: Vec<f32> = (0..n).map(|c| bt.data[c] - rm.data[c] * scale[c]).collect();
                let base = gname.trim_end_matches(".gamma");
                let s = self.init(&format!("{base}.scale"), &[n], &scale);
                let t = self.init(&format!("{base}.shift"), &[n], &shift);
                let y = self.op("Mul", &[x(), &s]);
                self.op("Add", &[&y, &t])
            }
        })
    }

    /// NumPy `matmul` on per-sample dims (see `TOp::MatMul`).
    fn matmul(&mut self, a: &(String, Shape), b: &(String, Shape)) -> Result<String, String> {
        let (ra, rb) = (a.1.dims.len(), b.1.dims.len());
        // A batched rank-1 left operand is a row vector per sample.
        let (an, squeeze_row) = if a.1.batched && ra == 1 && (b.1.batched || rb > 2) {
            let axes = self.init_i64("axes", &[1]);
            (self.op("Unsqueeze", &[&a.0, &axes]), true)
        } else {
            (a.0.clone(), false)
        };
        // A batched rank-1 right operand is a column vector per sample.
        let (bn, squeeze_col) = if b.1.batched && rb == 1 {
            let axes = self.init_i64("axes", &[-1]);
            (self.op("Unsqueeze", &[&b.0, &axes]), true)
        } else {
            (b.0.clone(), false)
        };
        let mut y = self.op("MatMul", &[&an, &bn]);
        for (on, axis) in [(squeeze_col, -1i64), (squeeze_row, -2)] {
            if on {
                let axes = self.init_i64("axes", &[axis]);
                y = self.op("Squeeze", &[&y, &axes]);
            }
        }
        Ok(y)
    }
}
