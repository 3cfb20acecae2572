//! Gradient checks: autodiff against central finite differences, for every primitive op
//! (on random shapes and values, broadcasting included) and every layer, activation and
//! loss (through the same lowering the training step uses).
//!
//! Tolerance (documented here, used everywhere below): values run in f32 with f64
//! accumulation, the step is `h = 1e-3` (loss noise ≈ 1e-7 / h = 1e-4), and an element
//! passes when `|ad − fd| ≤ 2e-3 + 2e-2 · max(|ad|, |fd|)`. Points within `h` of a kink
//! (relu, max, abs) are detected by disagreeing estimates at `h` and `h/2` and skipped;
//! a check fails if more than a quarter of its elements are skipped.

use std::collections::HashMap;

use crate::autodiff;
use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::init::SplitMix64;
use crate::ir::interp;
use crate::ir::lower::{bind_state, full_shape, lower_model, Bindings, Mode};
use crate::ir::op::Op;
use crate::ir::ops::elementwise::{BinaryOp, UnaryOp};
use crate::ir::ops::reduce::ReduceOp;
use crate::ir::ops::window::Window;
use crate::ir::tensor::Tensor;
use crate::ir::tests::models::{self, ModelBuilder};
use crate::ir::verify::verify;
use crate::sema::registry::{Layer, OpId};
use crate::sema::typed::{self, Activation, BinaryFn, Function, Loss, TOp, TypedModel};
use crate::step::build_loss;

const H: f32 = 1e-3;

fn close(ad: f64, fd: f64) -> bool {
    (ad - fd).abs() <= 2e-3 + 2e-2 * ad.abs().max(fd.abs())
}

pub fn random_tensor(rng: &mut SplitMix64, shape: &[usize], kind: Values) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let u = rng.next_f64() as f32;
            match kind {
                Values::Signed => 2.0 * u - 1.0,
                Values::Positive => 0.5 + u,
                Values::AwayFromZero => {
                    let s = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
                    s * (0.2 + 0.8 * u)
                }
                Values::Mask => (u < 0.5) as u8 as f32,
            }
        })
        .collect();
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

#[derive(Clone, Copy)]
pub enum Values {
    Signed,
    Positive,
    AwayFromZero,
    Mask,
}

/// Checks d(loss)/d(input) for the named inputs of `g` (whose output `loss` is a scalar).
pub fn check(g: &Graph, inputs: &HashMap<String, Tensor>, wrt: &[&str], batch: usize) {
    verify(g).expect("the forward graph verifies");
    let mut gg = g.clone();
    let loss = gg.output_id("loss").expect("a `loss` output");
    let ids: Vec<NodeId> = wrt
        .iter()
        .map(|n| gg.input_id(n).unwrap_or_else(|| panic!("no input `{n}`")))
        .collect();
    let grads = autodiff::grad(&mut gg, loss, &ids).expect("autodiff succeeds");
    for (n, d) in wrt.iter().zip(&grads) {
        gg.set_output(&format!("grad.{n}"), *d)
            .expect("unique output");
    }
    verify(&gg).expect("the graph with gradients verifies");
    let gg = gg.compact();
    verify(&gg).expect("the compacted graph verifies");
    let out = interp::run(&gg, inputs, batch).expect("the gradient graph runs");
    let loss_at = |inputs: &HashMap<String, Tensor>| -> f64 {
        interp::run(g, inputs, batch).expect("the graph runs")["loss"].data[0] as f64
    };
    for n in wrt {
        let ad = &out[&format!("grad.{n}")];
        let len = inputs[*n].data.len();
        let stride = (len / 24).max(1);
        let (mut checked, mut skipped) = (0, 0);
        for i in (0..len).step_by(stride) {
            let fd = |h: f32| {
                let mut plus = inputs.clone();
                plus.get_mut(*n).unwrap().data[i] += h;
                let mut minus = inputs.clone();
                minus.get_mut(*n).unwrap().data[i] -= h;
                (loss_at(&plus) - loss_at(&minus)) / (2.0 * h as f64)
            };
            let (f1, f2) = (fd(H), fd(H / 2.0));
            checked += 1;
            if !close(f1, f2) {
                skipped += 1;
                continue;
            }
            let a = ad.data[i] as f64;
            assert!(
                close(a, f1),
                "d loss / d {n}[{i}]: autodiff {a}, finite difference {f1} (graph {})",
                g.name
            );
        }
        assert!(
            skipped * 4 <= checked,
            "{skipped} of {checked} elements of `{n}` sit on kinks"
        );
    }
}

/// A graph computing `loss = Σ f(inputs) · r` for a random weighting `r`, so that every
/// output element matters with a different weight.
struct OpCase {
    g: Graph,
    inputs: HashMap<String, Tensor>,
    rng: SplitMix64,
    batch: usize,
}

impl OpCase {
    fn new(seed: u64) -> OpCase {
        let mut rng = SplitMix64::new(seed);
        let batch = 1 + (rng.next_u64() % 3) as usize;
        OpCase {
            g: Graph::new(&format!("case{seed}")),
            inputs: HashMap::new(),
            rng,
            batch,
        }
    }

    fn dim(&mut self) -> usize {
        1 + (self.rng.next_u64() % 4) as usize
    }

    fn input(&mut self, name: &str, shape: Shape, kind: Values) -> NodeId {
        let id = self.g.input(name, shape.clone()).unwrap();
        let t = random_tensor(&mut self.rng, &shape.resolve(self.batch), kind);
        self.inputs.insert(name.into(), t);
        id
    }

    fn finish(mut self, out: NodeId, wrt: &[&str]) {
        let s = self.g.shape(out).clone();
        let r = self.input("r", s.clone(), Values::Signed);
        let p = self.g.mul(out, r).unwrap();
        let axes: Vec<usize> = (0..s.rank()).collect();
        let sum = self.g.reduce(ReduceOp::Sum, p, &axes).unwrap();
        let loss = self.g.reshape(sum, Shape::scalar()).unwrap();
        self.g.set_output("loss", loss).unwrap();
        check(&self.g, &self.inputs, wrt, self.batch);
    }
}

const CASES: u64 = 6;

#[test]
fn unary_op_gradients_match_finite_differences() {
    let ops = [
        (UnaryOp::Neg, Values::Signed),
        (UnaryOp::Exp, Values::Signed),
        (UnaryOp::Log, Values::Positive),
        (UnaryOp::Sqrt, Values::Positive),
        (UnaryOp::Abs, Values::AwayFromZero),
        (UnaryOp::Sign, Values::AwayFromZero),
        (UnaryOp::Tanh, Values::Signed),
        (UnaryOp::Sigmoid, Values::Signed),
    ];
    for seed in 0..CASES {
        for (op, kind) in ops {
            let mut c = OpCase::new(seed);
            let s = Shape(vec![Dim::N, Dim::K(c.dim()), Dim::K(c.dim())]);
            let x = c.input("x", s, kind);
            let y = c.g.unary(op, x).unwrap();
            c.finish(y, &["x"]);
        }
    }
}

#[test]
fn binary_op_gradients_match_finite_differences_with_broadcasting() {
    let ops = [
        (BinaryOp::Add, Values::Signed),
        (BinaryOp::Sub, Values::Signed),
        (BinaryOp::Mul, Values::Signed),
        (BinaryOp::Div, Values::AwayFromZero),
        (BinaryOp::Max, Values::Signed),
        (BinaryOp::Gt, Values::Signed),
    ];
    for seed in 0..CASES {
        for (op, kind) in ops {
            let mut c = OpCase::new(seed);
            let (d1, d2) = (c.dim(), c.dim());
            // Shapes broadcasting in both directions: [N, d1, 1] with [d2].
            let a = c.input(
                "a",
                Shape(vec![Dim::N, Dim::K(d1), Dim::K(1)]),
                Values::Signed,
            );
            let b = c.input("b", Shape::fixed(&[d2]), kind);
            let y = c.g.binary(op, a, b).unwrap();
            c.finish(y, &["a", "b"]);
        }
    }
}

#[test]
fn select_gradient_routes_to_the_chosen_operand() {
    for seed in 0..CASES {
        let mut c = OpCase::new(seed);
        let d = c.dim();
        let m = c.input("m", Shape(vec![Dim::N, Dim::K(d)]), Values::Mask);
        let a = c.input("a", Shape(vec![Dim::N, Dim::K(d)]), Values::Signed);
        let b = c.input("b", Shape::fixed(&[d]), Values::Signed);
        let y = c.g.select(m, a, b).unwrap();
        c.finish(y, &["a", "b"]);
    }
}

#[test]
fn reduction_gradients_match_finite_differences() {
    for seed in 0..CASES {
        for func in [ReduceOp::Sum, ReduceOp::Max] {
            let mut c = OpCase::new(seed);
            let s = Shape(vec![Dim::N, Dim::K(c.dim()), Dim::K(c.dim())]);
            let x = c.input("x", s, Values::Signed);
            let axes: &[usize] = match seed % 3 {
                0 => &[0],
                1 => &[2],
                _ => &[0, 1, 2],
            };
            let y = c.g.reduce(func, x, axes).unwrap();
            c.finish(y, &["x"]);
        }
    }
}

#[test]
fn matmul_gradients_match_finite_differences_with_batched_operands() {
    for seed in 0..CASES {
        let mut c = OpCase::new(seed);
        let (m, k, n) = (c.dim(), c.dim(), c.dim());
        let (sa, sb) = match seed % 3 {
            0 => (Shape(vec![Dim::N, Dim::K(k)]), Shape::fixed(&[k, n])),
            1 => (
                Shape(vec![Dim::N, Dim::K(m), Dim::K(k)]),
                Shape::fixed(&[k, n]),
            ),
            _ => (
                Shape::fixed(&[m, k]),
                Shape(vec![Dim::N, Dim::K(k), Dim::K(n)]),
            ),
        };
        let a = c.input("a", sa, Values::Signed);
        let b = c.input("b", sb, Values::Signed);
        let y = c.g.matmul(a, b).unwrap();
        c.finish(y, &["a", "b"]);
    }
}

#[test]
fn layout_op_gradients_match_finite_differences() {
    for seed in 0..CASES {
        let mut c = OpCase::new(seed);
        let (d1, d2) = (c.dim() + 1, c.dim());
        let s = Shape(vec![Dim::N, Dim::K(d1), Dim::K(d2)]);
        let x = c.input("x", s, Values::Signed);
        let z = c.input(
            "z",
            Shape(vec![Dim::N, Dim::K(2), Dim::K(d2)]),
            Values::Signed,
        );
        let t = c.g.transpose(x, vec![2, 0, 1]).unwrap();
        let t = c.g.transpose(t, vec![1, 2, 0]).unwrap(); // back to [N, d1, d2]
        let r =
            c.g.reshape(t, Shape(vec![Dim::N, Dim::K(d1 * d2)]))
                .unwrap();
        let r =
            c.g.reshape(r, Shape(vec![Dim::N, Dim::K(d1), Dim::K(d2)]))
                .unwrap();
        let cat = c.g.push(Op::Concat { axis: 1 }, &[r, z]).unwrap();
        let sl =
            c.g.push(
                Op::Slice {
                    axis: 1,
                    start: 1,
                    end: d1 + 1,
                },
                &[cat],
            )
            .unwrap();
        let b =
            c.g.broadcast_to(sl, Shape(vec![Dim::K(2), Dim::N, Dim::K(d1), Dim::K(d2)]))
                .unwrap();
        c.finish(b, &["x", "z"]);
    }
}

#[test]
fn window_op_gradients_match_finite_differences() {
    for seed in 0..CASES {
        let mut c = OpCase::new(seed);
        let (h, w, ch) = (c.dim() + 2, c.dim() + 2, c.dim());
        let k = 1 + (seed as usize % 3);
        let stride = 1 + (seed as usize % 2);
        let win = if seed % 2 == 0 {
            Window::same(h, w, k, stride).unwrap()
        } else {
            Window::valid(h, w, k, stride).unwrap()
        };
        let x = c.input(
            "x",
            Shape(vec![Dim::N, Dim::K(h), Dim::K(w), Dim::K(ch)]),
            Values::Signed,
        );
        let cols = c.g.push(Op::Im2col(win.clone()), &[x]).unwrap();
        let sq = c.g.mul(cols, cols).unwrap(); // nonlinear so col2im's gradient is exercised
        let back = c.g.push(Op::Col2im(win), &[sq]).unwrap();
        c.finish(back, &["x"]);
    }
}

#[test]
fn convolution_gradients_match_finite_differences() {
    use crate::ir::ops::conv::{Conv, Padding};
    let mut checked = 0;
    for seed in 0..CASES {
        let mut c = OpCase::new(seed);
        let s = seed as usize;
        let image = [c.dim() + 3, c.dim() + 3];
        let kernel = [1 + s % 3, 1 + (s / 2) % 3];
        let stride = [1 + s % 2, 1 + (s / 3) % 2];
        let dilation = [1 + (s / 4) % 2, 1];
        let padding = if s.is_multiple_of(2) {
            Padding::Same
        } else {
            Padding::Valid
        };
        let Ok(cv) = Conv::new(image, kernel, stride, dilation, padding) else {
            continue;
        };
        let (ch, f) = (c.dim(), c.dim());
        let x = c.input(
            "x",
            Shape(vec![Dim::N, Dim::K(image[0]), Dim::K(image[1]), Dim::K(ch)]),
            Values::Signed,
        );
        let w = c.input("w", Shape::fixed(&[cv.taps() * ch, f]), Values::Signed);
        let y = c.g.push(Op::Conv(cv), &[x, w]).unwrap();
        let sq = c.g.mul(y, y).unwrap(); // nonlinear, so the gradients' products are exercised
        c.finish(sq, &["x", "w"]);
        checked += 1;
    }
    // Geometries that fit no window are skipped; most must fit.
    assert!(checked >= CASES / 2, "only {checked} convolutions checked");
}

#[test]
fn pooling_gradients_match_finite_differences() {
    use crate::ir::ops::conv::{Conv, Padding};
    use crate::ir::ops::pool::PoolKind;
    let mut checked = 0;
    for seed in 0..CASES {
        let mut c = OpCase::new(seed);
        let s = seed as usize;
        let image = [c.dim() + 2, c.dim() + 3];
        let size = [1 + s % 3, 2];
        let stride = [1 + (s / 2) % 2, 1 + s % 2];
        let Ok(cv) = Conv::new(image, size, stride, [1, 1], Padding::Valid) else {
            continue;
        };
        let kind = if s.is_multiple_of(2) {
            PoolKind::Max
        } else {
            PoolKind::Avg
        };
        let ch = c.dim();
        let x = c.input(
            "x",
            Shape(vec![Dim::N, Dim::K(image[0]), Dim::K(image[1]), Dim::K(ch)]),
            Values::Signed,
        );
        let y = c.g.push(Op::Pool(kind, cv), &[x]).unwrap();
        let sq = c.g.mul(y, y).unwrap();
        c.finish(sq, &["x"]);
        checked += 1;
    }
    assert!(checked >= CASES / 2, "only {checked} poolings checked");
}

/// Builds `loss(model(x), y)` in training form and checks the gradient with respect to
/// every parameter and the input.
pub fn check_model(model: &TypedModel, loss: Loss, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let batch = 3;
    let mut g = Graph::new(&format!("{}_loss", model.name));
    let x = g.input("x", full_shape(&model.inputs[0].shape)).unwrap();
    let out_shape = full_shape(&model.nodes[model.output.0 as usize].shape);
    let y_shape = match loss {
        Loss::CrossEntropy => Shape(vec![Dim::N]),
        _ => out_shape.clone(),
    };
    let y = g.input("y", y_shape.clone()).unwrap();
    let (params, buffers) = bind_state(&mut g, model).unwrap();
    let step = g.input("step", Shape::scalar()).unwrap();
    let fwd = lower_model(
        &mut g,
        model,
        Mode::Train { seed, step },
        &Bindings {
            inputs: &[x],
            params: &params,
            buffers: &buffers,
        },
    )
    .unwrap();
    let l = build_loss(&mut g, &fwd, loss, y).unwrap();
    g.set_output("loss", l).unwrap();

    let mut inputs = HashMap::new();
    inputs.insert(
        "x".to_string(),
        random_tensor(
            &mut rng,
            &full_shape(&model.inputs[0].shape).resolve(batch),
            Values::Signed,
        ),
    );
    let ys = y_shape.resolve(batch);
    let yv = match loss {
        Loss::CrossEntropy => {
            let classes = *out_shape.resolve(batch).last().unwrap();
            let data = (0..batch)
                .map(|_| (rng.next_u64() % classes as u64) as f32)
                .collect();
            Tensor::new(ys, data).unwrap()
        }
        Loss::BinaryCrossEntropy => {
            let mut t = random_tensor(&mut rng, &ys, Values::Signed);
            t.data.iter_mut().for_each(|v| *v = 0.5 + 0.45 * *v);
            t
        }
        _ => random_tensor(&mut rng, &ys, Values::Signed),
    };
    inputs.insert("y".to_string(), yv);
    for p in &model.params {
        // Random values (not the initializer's) so that no gradient is trivially zero.
        let t = random_tensor(&mut rng, &p.shape.dims, Values::Signed);
        inputs.insert(p.name.clone(), t);
    }
    for b in &model.buffers {
        inputs.insert(b.name.clone(), Tensor::full(b.shape.dims.clone(), b.fill));
    }
    inputs.insert("step".into(), Tensor::scalar(3.0));
    let mut wrt: Vec<&str> = model.params.iter().map(|p| p.name.as_str()).collect();
    wrt.push("x");
    check(&g, &inputs, &wrt, batch);
}

#[test]
fn mlp_with_cross_entropy_gradients_match_finite_differences() {
    for seed in 0..3 {
        check_model(&models::mlp(5, 4, 3), Loss::CrossEntropy, seed);
    }
}

#[test]
fn residual_block_gradients_accumulate_over_the_skip_connection() {
    for seed in 0..3 {
        check_model(&models::residual(4), Loss::CrossEntropy, seed);
    }
}

#[test]
fn conv_pool_batch_norm_dropout_gradients_match_finite_differences() {
    for seed in 0..2 {
        check_model(&models::conv_net(), Loss::CrossEntropy, seed);
    }
}

#[test]
fn line_model_gradients_match_for_regression_losses() {
    for loss in [Loss::Mse, Loss::Mae] {
        for seed in 0..3 {
            check_model(&models::line(), loss, seed);
        }
    }
}

/// `x: [4] → dense(3) → f`, for one activation `f` given as a typed op.
fn activation_model(op: TOp) -> TypedModel {
    let mut b = ModelBuilder::new(&format!("{op:?}"));
    let x = b.input("x", &[4]);
    let d = b.dense(x, 3);
    let a = b.same(op, d);
    b.finish(a)
}

#[test]
fn every_activation_and_elementwise_function_has_correct_gradients() {
    // Log and sqrt need positive inputs: see the next test.
    let functions = [Function::Exp, Function::Abs, Function::Square];
    let mut ops: Vec<TOp> = vec![TOp::Neg];
    ops.extend(functions.map(TOp::Elementwise));
    ops.extend(Activation::ALL.map(|a| match a {
        Activation::LeakyRelu => TOp::LeakyRelu { alpha: 0.1 },
        Activation::Softmax => TOp::Softmax { axis: 0 },
        Activation::Sigmoid
        | Activation::Tanh
        | Activation::Relu
        | Activation::Softplus
        | Activation::Gelu => TOp::Activation(a),
    }));
    for op in ops {
        for seed in 0..3 {
            check_model(&activation_model(op.clone()), Loss::Mse, seed);
        }
    }
}

#[test]
fn log_sqrt_and_tensor_ops_have_correct_gradients() {
    // x: [2, 3] → exp (positive) → log, sqrt, mean/max/sum, transpose, reshape, concat, @.
    let mut b = ModelBuilder::new("TensorOps");
    let bs = |d: &[usize]| typed::Shape::batched(d.to_vec());
    let x = b.input("x", &[2, 3]);
    let e = b.same(TOp::Elementwise(Function::Exp), x);
    let l = b.same(TOp::Elementwise(Function::Log), e);
    let s = b.same(TOp::Elementwise(Function::Sqrt), e);
    let p = b.binary(BinaryFn::Div, l, s, bs(&[2, 3]));
    let t = b.node(TOp::Transpose, vec![p], bs(&[3, 2]));
    let w = b.param("w", &[2, 4], typed::Init::Glorot);
    let mm = b.node(TOp::MatMul, vec![t, w], bs(&[3, 4]));
    let mean = b.node(
        TOp::Reduce {
            func: typed::ReduceFn::Mean,
            axis: 0,
        },
        vec![mm],
        bs(&[4]),
    );
    let max = b.node(
        TOp::Reduce {
            func: typed::ReduceFn::Max,
            axis: 1,
        },
        vec![mm],
        bs(&[3]),
    );
    let sum = b.node(
        TOp::Reduce {
            func: typed::ReduceFn::Sum,
            axis: 1,
        },
        vec![p],
        bs(&[2]),
    );
    let cat = b.node(TOp::Concat { axis: 0 }, vec![mean, max, sum], bs(&[9]));
    let r = b.node(TOp::Reshape { dims: vec![3, 3] }, vec![cat], bs(&[3, 3]));
    let f = b.flatten(r);
    let out = b.binary(BinaryFn::Sub, f, f, bs(&[9]));
    let k = b.node(TOp::Const(2.0), vec![], typed::Shape::scalar());
    let out = b.binary(BinaryFn::Mul, out, k, bs(&[9]));
    let out = b.binary(BinaryFn::Add, out, f, bs(&[9]));
    let model = b.finish(out);
    for seed in 0..3 {
        check_model(&model, Loss::Mse, seed);
    }
}

#[test]
fn binary_cross_entropy_gradients_match_with_and_without_final_sigmoid() {
    for seed in 0..3 {
        check_model(
            &activation_model(TOp::Activation(Activation::Sigmoid)),
            Loss::BinaryCrossEntropy,
            seed,
        );
        // Without a final sigmoid: probabilities from a softmax, clipped.
        check_model(
            &activation_model(TOp::Softmax { axis: 0 }),
            Loss::BinaryCrossEntropy,
            seed,
        );
    }
}

#[test]
fn cross_entropy_on_logits_matches_finite_differences() {
    let mut b = ModelBuilder::new("Logits");
    let x = b.input("x", &[4]);
    let d = b.dense(x, 3);
    let model = b.finish(d);
    for seed in 0..3 {
        check_model(&model, Loss::CrossEntropy, seed);
    }
}

#[test]
fn per_sample_scalars_broadcast_against_vectors() {
    // x − mean(x) and max(x) · (x − mean(x)), with per-sample results of rank 0 against rank 1, and a
    // per-sample vector plus a fixed matrix.
    let mut b = ModelBuilder::new("Centre");
    let bs = |d: &[usize]| typed::Shape::batched(d.to_vec());
    let x = b.input("x", &[4]);
    let m = b.node(
        TOp::Reduce {
            func: typed::ReduceFn::Mean,
            axis: 0,
        },
        vec![x],
        bs(&[]),
    );
    let c = b.binary(BinaryFn::Sub, x, m, bs(&[4]));
    let mx = b.node(
        TOp::Reduce {
            func: typed::ReduceFn::Max,
            axis: 0,
        },
        vec![x],
        bs(&[]),
    );
    let q = b.binary(BinaryFn::Mul, mx, c, bs(&[4]));
    let w = b.param("w", &[2, 4], typed::Init::Ones);
    let out = b.binary(BinaryFn::Mul, q, w, bs(&[2, 4]));
    let model = b.finish(out);
    for seed in 0..3 {
        check_model(&model, Loss::Mse, seed);
    }
}

/// A small model that exercises registry op `id`, as `.nn` source (a model `M` with
/// input `x`), and the loss to check it under; `None` for the kinds without a gradient.
/// Exhaustive, so a new layer, function, activation or loss needs its probe to compile.
fn registry_probe(id: OpId) -> Option<(&'static str, Loss)> {
    let mse = Loss::Mse;
    Some(match id {
        OpId::Layer(Layer::Dense) => ("input x: [3]\n output y = x |> dense(2)", mse),
        OpId::Layer(Layer::Conv2d) => (
            "input x: [6, 7, 3]\n output y = x |> conv2d(2, kernel = [3, 2], stride = [2, 1], dilation = [1, 2]) |> flatten",
            mse,
        ),
        OpId::Layer(Layer::GlobalAvgPool) => (
            "input x: [3, 4, 2]\n output y = x |> global_avg_pool |> dense(2)",
            mse,
        ),
        OpId::Layer(Layer::MaxPool) => (
            "input x: [4, 4, 2]\n output y = x |> max_pool(2) |> flatten",
            mse,
        ),
        OpId::Layer(Layer::AvgPool) => (
            "input x: [4, 4, 2]\n output y = x |> avg_pool(2, stride = 1) |> flatten",
            mse,
        ),
        OpId::Layer(Layer::Flatten) => {
            ("input x: [2, 3]\n output y = x |> flatten |> dense(2)", mse)
        }
        OpId::Layer(Layer::Dropout) => (
            "input x: [6]\n output y = x |> dropout(0.3) |> dense(2)",
            mse,
        ),
        OpId::Layer(Layer::BatchNorm) => {
            ("input x: [3]\n output y = x |> dense(3) |> batch_norm", mse)
        }
        OpId::Activation(
            Activation::Sigmoid
            | Activation::Tanh
            | Activation::Relu
            | Activation::Softplus
            | Activation::Gelu,
        )
        | OpId::Function(Function::Exp | Function::Abs | Function::Square) => {
            // Probed below with the name substituted.
            return Some(("input x: [4]\n output y = x |> dense(3) |> NAME", mse));
        }
        OpId::Activation(Activation::LeakyRelu) => (
            "input x: [4]\n output y = x |> leaky_relu(alpha = 0.2) |> dense(2)",
            mse,
        ),
        OpId::Activation(Activation::Softmax) => (
            "input x: [4]\n output y = x |> dense(3) |> softmax(axis = -1)",
            mse,
        ),
        OpId::Function(Function::Log) => {
            ("input x: [3]\n output y = log(exp(x) + 1) |> dense(2)", mse)
        }
        OpId::Function(Function::Sqrt) => (
            "input x: [3]\n output y = sqrt(square(x) + 1) |> dense(2)",
            mse,
        ),
        OpId::Function(Function::Sum) => ("input x: [2, 3]\n output y = sum(x, axis = 0)", mse),
        OpId::Function(Function::Mean) => ("input x: [2, 3]\n output y = mean(x, axis = -1)", mse),
        OpId::Function(Function::Max) => ("input x: [2, 3]\n output y = max(x, axis = -1)", mse),
        OpId::Function(Function::Reshape) => (
            "input x: [2, 3]\n output y = reshape(x, [3, 2]) |> flatten",
            mse,
        ),
        OpId::Function(Function::Transpose) => {
            ("input x: [2, 3]\n output y = transpose(x) |> flatten", mse)
        }
        OpId::Function(Function::Concat) => {
            ("input x: [3]\n output y = concat(x, x * x, axis = -1)", mse)
        }
        OpId::Loss(Loss::CrossEntropy) => (
            "input x: [4]\n output y = x |> dense(3) |> softmax",
            Loss::CrossEntropy,
        ),
        OpId::Loss(Loss::BinaryCrossEntropy) => (
            "input x: [4]\n output y = x |> dense(1) |> sigmoid",
            Loss::BinaryCrossEntropy,
        ),
        OpId::Loss(Loss::Mse) => ("input x: [4]\n output y = x |> dense(2)", Loss::Mse),
        OpId::Loss(Loss::Mae) => ("input x: [4]\n output y = x |> dense(2)", Loss::Mae),
        OpId::Optimizer(_) | OpId::Metric(_) | OpId::Initializer(_) | OpId::Data(_) | OpId::Control(_) => {
            return None
        }
    })
}

#[test]
fn every_registry_op_has_a_gradient_check() {
    for op in crate::sema::registry::ops() {
        let Some((body, loss)) = registry_probe(op.id) else {
            continue;
        };
        let body = body.replace("NAME", op.name);
        let src = format!("model M {{\n {body}\n}}\n");
        let program = crate::check_source(&src, std::path::Path::new("."))
            .unwrap_or_else(|d| panic!("probe for `{}` does not check: {d:?}", op.name));
        for seed in 0..2 {
            check_model(&program.models[0], loss, seed);
        }
    }
}

#[test]
fn grouped_and_depthwise_convolutions_have_correct_gradients() {
    for body in [
        "input x: [5, 6, 4]\n output y = x |> conv2d(6, kernel = [3, 2], groups = 2) |> flatten",
        "input x: [5, 5, 3]\n output y = x |> conv2d(3, kernel = 3, stride = 2, groups = 3) |> flatten",
    ] {
        let src = format!("model M {{\n {body}\n}}\n");
        let program = crate::check_source(&src, std::path::Path::new("."))
            .unwrap_or_else(|d| panic!("{body} does not check: {d:?}"));
        for seed in 0..2 {
            check_model(&program.models[0], Loss::Mse, seed);
        }
    }
}
