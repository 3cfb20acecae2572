//! Hand-built typed models for tests (until `sema::check_file` produces them): a small
//! builder that mirrors what semantic analysis records, and the models of the language reference (docs/language.md).

use crate::sema::typed::*;
use crate::syntax::ast::Span;

pub struct ModelBuilder {
    pub m: TypedModel,
    counts: std::collections::HashMap<&'static str, usize>,
}

fn sp() -> Span {
    Span::new(0, 0)
}

impl ModelBuilder {
    pub fn new(name: &str) -> ModelBuilder {
        ModelBuilder {
            m: TypedModel {
                name: name.into(),
                inputs: Vec::new(),
                params: Vec::new(),
                buffers: Vec::new(),
                nodes: Vec::new(),
                output: TNodeId(0),
                output_name: None,
                span: sp(),
            },
            counts: Default::default(),
        }
    }

    fn kind_index(&mut self, kind: &'static str) -> usize {
        let c = self.counts.entry(kind).or_insert(0);
        *c += 1;
        *c - 1
    }

    pub fn shape(&self, id: TNodeId) -> Shape {
        self.m.nodes[id.0 as usize].shape.clone()
    }

    pub fn node(&mut self, op: TOp, operands: Vec<TNodeId>, shape: Shape) -> TNodeId {
        self.m.nodes.push(TNode {
            op,
            operands,
            shape,
            span: sp(),
        });
        TNodeId(self.m.nodes.len() as u32 - 1)
    }

    pub fn input(&mut self, name: &str, dims: &[usize]) -> TNodeId {
        let i = self.m.inputs.len();
        self.m.inputs.push(TypedInput {
            name: name.into(),
            shape: Shape::batched(dims.to_vec()),
            span: sp(),
        });
        self.node(TOp::Input(i), vec![], Shape::batched(dims.to_vec()))
    }

    pub fn new_param(&mut self, name: &str, dims: &[usize], init: Init) -> ParamId {
        self.m.params.push(TypedParam {
            name: name.into(),
            shape: Shape::fixed(dims.to_vec()),
            init,
            span: sp(),
        });
        ParamId(self.m.params.len() as u32 - 1)
    }

    pub fn param(&mut self, name: &str, dims: &[usize], init: Init) -> TNodeId {
        let p = self.new_param(name, dims, init);
        self.node(TOp::Param(p), vec![], Shape::fixed(dims.to_vec()))
    }

    pub fn same(&mut self, op: TOp, x: TNodeId) -> TNodeId {
        let s = self.shape(x);
        self.node(op, vec![x], s)
    }

    pub fn binary(&mut self, f: BinaryFn, a: TNodeId, b: TNodeId, out: Shape) -> TNodeId {
        self.node(TOp::Binary(f), vec![a, b], out)
    }

    pub fn softmax(&mut self, x: TNodeId) -> TNodeId {
        let axis = self.shape(x).dims.len() - 1;
        self.same(TOp::Softmax { axis }, x)
    }

    pub fn flatten(&mut self, x: TNodeId) -> TNodeId {
        let s = self.shape(x);
        self.node(TOp::Flatten, vec![x], Shape::batched(vec![s.elems()]))
    }

    pub fn dense(&mut self, x: TNodeId, units: usize) -> TNodeId {
        let k = self.kind_index("dense");
        let din = self.shape(x).dims[0];
        let w = self.new_param(&format!("dense_{k}.w"), &[din, units], Init::He);
        let b = self.new_param(&format!("dense_{k}.b"), &[units], Init::Zeros);
        self.node(
            TOp::Dense { w, b, units },
            vec![x],
            Shape::batched(vec![units]),
        )
    }

    pub fn conv2d(
        &mut self,
        x: TNodeId,
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> TNodeId {
        let k = self.kind_index("conv2d");
        let s = self.shape(x).dims;
        let (h, wd, c) = (s[0], s[1], s[2]);
        let w = self.new_param(
            &format!("conv2d_{k}.w"),
            &[kernel, kernel, c, filters],
            Init::He,
        );
        let b = self.new_param(&format!("conv2d_{k}.b"), &[filters], Init::Zeros);
        let (oh, ow) = match padding {
            Padding::Same => (h.div_ceil(stride), wd.div_ceil(stride)),
            Padding::Valid => ((h - kernel) / stride + 1, (wd - kernel) / stride + 1),
        };
        self.node(
            TOp::Conv2d {
                w,
                b,
                filters,
                kernel: [kernel; 2],
                stride: [stride; 2],
                dilation: [1, 1],
                groups: 1,
                padding,
            },
            vec![x],
            Shape::batched(vec![oh, ow, filters]),
        )
    }

    pub fn pool(&mut self, x: TNodeId, func: PoolFn, size: usize, stride: usize) -> TNodeId {
        let s = self.shape(x).dims;
        let out = vec![(s[0] - size) / stride + 1, (s[1] - size) / stride + 1, s[2]];
        self.node(
            TOp::Pool {
                func,
                size: [size; 2],
                stride: [stride; 2],
            },
            vec![x],
            Shape::batched(out),
        )
    }

    pub fn batch_norm(&mut self, x: TNodeId) -> TNodeId {
        let k = self.kind_index("batch_norm");
        let c = *self
            .shape(x)
            .dims
            .last()
            .expect("batch_norm on a vector or image");
        let gamma = self.new_param(&format!("batch_norm_{k}.gamma"), &[c], Init::Ones);
        let beta = self.new_param(&format!("batch_norm_{k}.beta"), &[c], Init::Zeros);
        let rm = self.m.buffers.len();
        for (n, fill) in [("running_mean", 0.0), ("running_var", 1.0)] {
            self.m.buffers.push(TypedBuffer {
                name: format!("batch_norm_{k}.{n}"),
                shape: Shape::fixed(vec![c]),
                fill,
            });
        }
        self.same(
            TOp::BatchNorm {
                gamma,
                beta,
                running_mean: rm,
                running_var: rm + 1,
                momentum: 0.9,
                eps: 1e-3,
            },
            x,
        )
    }

    pub fn finish(mut self, out: TNodeId) -> TypedModel {
        self.m.output = out;
        self.m
    }
}

/// `[28, 28] → flatten → dense(h1) → relu → dense(h2) → relu → dense(10) → softmax`
/// (the language reference (docs/language.md)'s Mnist with configurable widths).
pub fn mnist(h1: usize, h2: usize) -> TypedModel {
    let mut b = ModelBuilder::new("Mnist");
    let x = b.input("image", &[28, 28]);
    let f = b.flatten(x);
    let d0 = b.dense(f, h1);
    let r0 = b.same(TOp::Activation(Activation::Relu), d0);
    let d1 = b.dense(r0, h2);
    let r1 = b.same(TOp::Activation(Activation::Relu), d1);
    let d2 = b.dense(r1, 10);
    let out = b.softmax(d2);
    b.finish(out)
}

/// `[inputs] → dense(hidden) → relu → dense(classes) → softmax`.
pub fn mlp(inputs: usize, hidden: usize, classes: usize) -> TypedModel {
    let mut b = ModelBuilder::new("Mlp");
    let x = b.input("x", &[inputs]);
    let d0 = b.dense(x, hidden);
    let r = b.same(TOp::Activation(Activation::Relu), d0);
    let d1 = b.dense(r, classes);
    let out = b.softmax(d1);
    b.finish(out)
}

/// the language reference (docs/language.md)'s `Line`: `x @ w + b` with `w: [1, 1]`, `b: [1]`, both zeros.
pub fn line() -> TypedModel {
    let mut b = ModelBuilder::new("Line");
    let x = b.input("x", &[1]);
    let w = b.param("w", &[1, 1], Init::Zeros);
    let bias = b.param("b", &[1], Init::Zeros);
    let xw = b.node(TOp::MatMul, vec![x, w], Shape::batched(vec![1]));
    let y = b.binary(BinaryFn::Add, xw, bias, Shape::batched(vec![1]));
    b.finish(y)
}

/// the language reference (docs/language.md)'s residual block, with width `d`.
pub fn residual(d: usize) -> TypedModel {
    let mut b = ModelBuilder::new("Residual");
    let x = b.input("x", &[d]);
    let h0 = b.dense(x, d);
    let h1 = b.same(TOp::Activation(Activation::Relu), h0);
    let h = b.dense(h1, d);
    let s = b.binary(BinaryFn::Add, x, h, Shape::batched(vec![d]));
    let r = b.same(TOp::Activation(Activation::Relu), s);
    let o = b.dense(r, 3);
    let out = b.softmax(o);
    b.finish(out)
}

/// A small LeNet-like net: conv(same) → relu → max_pool → conv(valid, stride 2) →
/// avg_pool → flatten → batch_norm → dropout → dense → softmax.
pub fn conv_net() -> TypedModel {
    let mut b = ModelBuilder::new("ConvNet");
    let x = b.input("image", &[7, 7, 2]);
    let c0 = b.conv2d(x, 3, 3, 1, Padding::Same);
    let r0 = b.same(TOp::Activation(Activation::Relu), c0);
    let p0 = b.pool(r0, PoolFn::Max, 2, 1);
    let c1 = b.conv2d(p0, 4, 2, 2, Padding::Valid);
    let p1 = b.pool(c1, PoolFn::Avg, 2, 1);
    let f = b.flatten(p1);
    let bn = b.batch_norm(f);
    let dr = b.same(TOp::Dropout { rate: 0.25 }, bn);
    let d = b.dense(dr, 3);
    let out = b.softmax(d);
    b.finish(out)
}

pub fn train_block(loss: Loss, optimizer: Optimizer) -> TypedTrain {
    TypedTrain {
        model: 0,
        data: DataSpec::Csv {
            path: "unused.csv".into(),
            target: "y".into(),
            standardize: false,
            test: crate::sema::typed::TestSplit::Fraction(0.2),
        },
        loss,
        optimizer,
        batch: 4,
        epochs: 1,
        metrics: vec![],
        seed: 7,
        shuffle: false,
        name_span: sp(),
        span: sp(),
        data_span: sp(),
        init: None,
        freeze: Vec::new(),
        validation: None,
        validation_source: None,
        early_stopping: None,
        checkpoint_every: None,
        label_smoothing: 0.0,
        clip_norm: None,
        clip_value: None,
        weight_decay: 0.0,
        schedule: crate::sema::typed::Schedule::Constant,
    }
}
