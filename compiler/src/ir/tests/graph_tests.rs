//! The arena, hash-consing, verifier, printer/parser round trip and the interpreter's
//! meaning of the less obvious ops.

use std::collections::HashMap;

use super::models;
use crate::ir::graph::{Dim, Graph, Shape};
use crate::ir::init::SplitMix64;
use crate::ir::interp;
use crate::ir::op::Op;
use crate::ir::ops::elementwise::BinaryOp;
use crate::ir::ops::reduce::ReduceOp;
use crate::ir::ops::source::counter_uniform;
use crate::ir::ops::window::Window;
use crate::ir::parse::parse_graph;
use crate::ir::print::print_graph;
use crate::ir::tensor::Tensor;
use crate::ir::verify::verify;

#[test]
fn identical_pure_nodes_are_shared() {
    let mut g = Graph::new("cse");
    let x = g.input("x", Shape::batched(&[3])).unwrap();
    let a = g.add(x, x).unwrap();
    let before = g.len();
    let b = g.add(x, x).unwrap();
    assert_eq!(a, b);
    assert_eq!(g.len(), before);
    let c1 = g.constant(2.0);
    let c2 = g.constant(2.0);
    assert_eq!(c1, c2);
    assert!(
        g.input("x", Shape::scalar()).is_err(),
        "input names are unique"
    );
}

#[test]
fn shape_errors_are_reported_not_panics() {
    let mut g = Graph::new("bad");
    let a = g.input("a", Shape::batched(&[3])).unwrap();
    let b = g.input("b", Shape::fixed(&[4, 2])).unwrap();
    let e = g.matmul(a, b).unwrap_err();
    assert!(e.message.contains("inner dimensions"), "{e}");
    let e = g.add(a, b).unwrap_err();
    assert!(e.message.contains("do not broadcast"), "{e}");
    let e = g.reshape(a, Shape::fixed(&[3])).unwrap_err();
    assert!(e.message.contains("reshape"), "{e}");
    let e = g.push(Op::Concat { axis: 0 }, &[a, a]).unwrap_err();
    assert!(e.message.contains("batch"), "{e}");
}

#[test]
fn elementwise_primitive_names_are_distinct_and_parse_back() {
    use crate::ir::ops::elementwise::UnaryOp;
    for u in UnaryOp::ALL {
        assert_eq!(UnaryOp::from_name(u.name()), Some(u));
    }
    for b in BinaryOp::ALL {
        assert_eq!(BinaryOp::from_name(b.name()), Some(b));
    }
}

#[test]
fn parser_rejects_malformed_text_with_a_line_number() {
    let cases = [
        ("graph g\n  %0: [N, 2] = input name=\"x\"\n  %1: [N, 2] = frobnicate %0\n", "unknown op"),
        ("graph g\n  %0: [N, 2] = input name=\"x\"\n  %1: [N, 2] = neg %5\n", "not defined"),
        ("graph g\n  %0: [N, 2] = input name=\"x\"\n  %1: [N, 3] = neg %0\n", "written as"),
        ("graph g\n  %0: [N, 2] = input name=\"x\"\n  %2: [N, 2] = neg %0\n", "expected node %1"),
        ("graph g\n  %0: [N, 2] = input name=\"x\"\n  %1: [N, 1] = reduce_sum %0\n", "missing attribute"),
        ("graph g\n  %0: [N, 2] = input name=\"x\"\n  %1: [N, 2] = neg bogus=1 %0\n", "unknown attribute"),
        ("graph g\n  %0: [N, 2] = input name=\"x\"\n  %1: [N, 2] = neg %0\n  %2: [N, 2] = neg %0\n", "repeats"),
        ("  %0: [N, 2] = input name=\"x\"\n", "graph NAME"),
        ("graph g\n  %0: [N, 2] = input name=\"x\n", "unterminated"),
        ("graph g\n  %0: [N, 2] = input name=\"x\"\noutput \"y\" = %3\n", "missing node"),
    ];
    for (text, want) in cases {
        let e = parse_graph(text).expect_err(text);
        assert!(
            e.message.contains(want),
            "`{}` should mention `{want}`",
            e.message
        );
        assert!(e.message.starts_with("line "), "{e}");
    }
}

#[test]
fn a_pass_can_start_from_text() {
    let text = "graph g  # 4 nodes\n  %0: [N, 3] = input name=\"x\"\n  %1: [] = const value=2.0\n  %2: [N, 3] = mul %0, %1\n  %3: [N, 1] = reduce_sum axes=[1] %2\noutput \"s\" = %3\n";
    let g = parse_graph(text).unwrap();
    assert_eq!(print_graph(&g), text);
    let mut inputs = HashMap::new();
    inputs.insert(
        "x".into(),
        Tensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap(),
    );
    let out = interp::run(&g, &inputs, 2).unwrap();
    assert_eq!(out["s"].data, vec![12.0, 30.0]);
}

#[test]
fn compact_drops_dead_nodes_and_renumbers() {
    let mut g = Graph::new("dce");
    let x = g.input("x", Shape::batched(&[2])).unwrap();
    let dead = g.scale(x, 3.0).unwrap();
    let live = g
        .unary(crate::ir::ops::elementwise::UnaryOp::Exp, x)
        .unwrap();
    g.set_output("y", live).unwrap();
    let c = g.compact();
    verify(&c).unwrap();
    assert!(dead.index() < g.len());
    assert_eq!(c.len(), 2);
    assert_eq!(print_graph(&c), "graph dce  # 2 nodes\n  %0: [N, 2] = input name=\"x\"\n  %1: [N, 2] = exp %0\noutput \"y\" = %1\n");
}

#[test]
fn matmul_broadcasts_leading_dims_and_accumulates_exactly() {
    let mut g = Graph::new("mm");
    let a = g
        .input("a", Shape(vec![Dim::N, Dim::K(2), Dim::K(3)]))
        .unwrap();
    let b = g.input("b", Shape::fixed(&[3, 1])).unwrap();
    let y = g.matmul(a, b).unwrap();
    g.set_output("y", y).unwrap();
    let mut inputs = HashMap::new();
    inputs.insert(
        "a".into(),
        Tensor::new(vec![2, 2, 3], (1..=12).map(|v| v as f32).collect()).unwrap(),
    );
    inputs.insert(
        "b".into(),
        Tensor::new(vec![3, 1], vec![1.0, 0.0, -1.0]).unwrap(),
    );
    let out = interp::run(&g, &inputs, 2).unwrap();
    assert_eq!(out["y"].shape, vec![2, 2, 1]);
    assert_eq!(out["y"].data, vec![-2.0, -2.0, -2.0, -2.0]);
    // f64 accumulation: 1e8 + 1 − 1e8 is 1, not 0.
    let mut g = Graph::new("acc");
    let a = g.input("a", Shape::fixed(&[1, 3])).unwrap();
    let b = g.input("b", Shape::fixed(&[3, 1])).unwrap();
    let y = g.matmul(a, b).unwrap();
    g.set_output("y", y).unwrap();
    let mut inputs = HashMap::new();
    inputs.insert(
        "a".into(),
        Tensor::new(vec![1, 3], vec![1e8, 1.0, -1e8]).unwrap(),
    );
    inputs.insert(
        "b".into(),
        Tensor::new(vec![3, 1], vec![1.0, 1.0, 1.0]).unwrap(),
    );
    assert_eq!(interp::run(&g, &inputs, 1).unwrap()["y"].data, vec![1.0]);
}

/// Direct convolution written out in loops, as the oracle for `im2col` + `matmul`.
fn naive_conv(x: &Tensor, w: &Tensor, win: &Window) -> Vec<f32> {
    let (n, c) = (x.shape[0], x.shape[3]);
    let (k, f) = (w.shape[0], w.shape[3]);
    let mut out = vec![0f32; n * win.oh * win.ow * f];
    for s in 0..n {
        for oy in 0..win.oh {
            for ox in 0..win.ow {
                for fi in 0..f {
                    let mut acc = 0f64;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * win.stride + ky) as isize - win.pad_top as isize;
                            let ix = (ox * win.stride + kx) as isize - win.pad_left as isize;
                            if iy < 0 || ix < 0 || iy as usize >= win.h || ix as usize >= win.w {
                                continue;
                            }
                            for ci in 0..c {
                                let xv = x.data
                                    [((s * win.h + iy as usize) * win.w + ix as usize) * c + ci];
                                let wv = w.data[((ky * k + kx) * c + ci) * f + fi];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((s * win.oh + oy) * win.ow + ox) * f + fi] = acc as f32;
                }
            }
        }
    }
    out
}

#[test]
fn im2col_matmul_equals_direct_convolution() {
    let mut rng = SplitMix64::new(9);
    for (h, w, k, stride, same) in [
        (5, 5, 3, 1, true),
        (6, 5, 3, 2, true),
        (6, 6, 2, 2, false),
        (4, 7, 3, 1, false),
    ] {
        let (c, f, n) = (2, 3, 2);
        let win = if same {
            Window::same(h, w, k, stride)
        } else {
            Window::valid(h, w, k, stride)
        }
        .unwrap();
        let mut g = Graph::new("conv");
        let x = g.input("x", Shape::batched(&[h, w, c])).unwrap();
        let wt = g.input("w", Shape::fixed(&[k, k, c, f])).unwrap();
        let cols = g.push(Op::Im2col(win.clone()), &[x]).unwrap();
        let w2 = g.reshape(wt, Shape::fixed(&[k * k * c, f])).unwrap();
        let y = g.matmul(cols, w2).unwrap();
        g.set_output("y", y).unwrap();
        // Values in [-0.5, 0.5) of a shape.
        let mut random = |shape: Vec<usize>| {
            let len = shape.iter().product::<usize>();
            let data = (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect();
            Tensor::new(shape, data).unwrap()
        };
        let xt = random(vec![n, h, w, c]);
        let wv = random(vec![k, k, c, f]);
        let want = naive_conv(&xt, &wv, &win);
        let mut inputs = HashMap::new();
        inputs.insert("x".into(), xt);
        inputs.insert("w".into(), wv);
        let got = interp::run(&g, &inputs, n).unwrap();
        assert_eq!(got["y"].shape, vec![n, win.oh, win.ow, f]);
        for (a, b) in got["y"].data.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn same_padding_keeps_the_size_and_puts_extra_padding_last() {
    let w = Window::same(5, 6, 3, 2).unwrap();
    assert_eq!((w.oh, w.ow, w.pad_top, w.pad_left), (3, 3, 1, 0));
    let w = Window::same(28, 28, 5, 1).unwrap();
    assert_eq!((w.oh, w.ow, w.pad_top, w.pad_left), (28, 28, 2, 2));
    assert!(Window::valid(2, 2, 3, 1).is_err());
}

#[test]
fn max_pool_lowering_takes_window_maxima() {
    let mut b = models::ModelBuilder::new("Pool");
    let x = b.input("x", &[2, 4, 1]);
    let p = b.pool(x, crate::sema::typed::PoolFn::Max, 2, 2);
    let a = b.pool(x, crate::sema::typed::PoolFn::Avg, 2, 2);
    let s = b.binary(crate::sema::typed::BinaryFn::Sub, p, a, b.shape(p));
    let model = b.finish(s);
    let g = crate::ir::lower::lower_forward(&model, false, 0).unwrap();
    verify(&g).unwrap();
    let mut inputs = HashMap::new();
    inputs.insert(
        "x".into(),
        Tensor::new(vec![1, 2, 4, 1], vec![1., 5., 2., 0., 3., 4., 8., 6.]).unwrap(),
    );
    let out = interp::run(&g, &inputs, 1).unwrap();
    // max: [5, 8]; mean: [13/4, 16/4].
    assert_eq!(out["output"].data, vec![5.0 - 3.25, 8.0 - 4.0]);
}

#[test]
fn counter_random_numbers_are_reproducible_and_uniform() {
    // Pinned values, from an independent implementation of the documented scheme
    // (splitmix64 over seed, key, step and index): checkpoints and dropout masks depend
    // on this stream staying the same.
    for (args, want) in [
        ((0, 0, 0, 0), 0.667_966_6),
        ((1, 2, 3, 4), 0.300_196_53),
        ((7, 3, 1, 42), 0.661_026_24),
        ((u64::MAX, 9, 1000, 123_456), 0.909_538_1),
    ] {
        let (seed, key, step, i) = args;
        assert_eq!(counter_uniform(seed, key, step, i), want as f32, "{args:?}");
    }
    assert_ne!(counter_uniform(1, 2, 3, 4), counter_uniform(1, 2, 4, 4));
    assert_ne!(counter_uniform(1, 2, 3, 4), counter_uniform(1, 3, 3, 4));
    assert_ne!(counter_uniform(1, 2, 3, 4), counter_uniform(2, 2, 3, 4));
    let n = 20_000;
    let mean: f64 = (0..n)
        .map(|i| counter_uniform(0, 0, 0, i) as f64)
        .sum::<f64>()
        / n as f64;
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    assert!((0..n).all(|i| (0.0..1.0).contains(&counter_uniform(5, 1, 9, i))));
}

#[test]
fn reductions_keep_axes_and_max_ignores_order() {
    let mut g = Graph::new("r");
    let x = g.input("x", Shape::batched(&[3])).unwrap();
    let s = g.reduce(ReduceOp::Sum, x, &[0, 1]).unwrap();
    let m = g.reduce(ReduceOp::Max, x, &[1]).unwrap();
    assert_eq!(g.shape(s), &Shape::fixed(&[1, 1]));
    assert_eq!(g.shape(m), &Shape(vec![Dim::N, Dim::K(1)]));
    let gt = g.binary(BinaryOp::Gt, x, m).unwrap();
    g.set_output("s", s).unwrap();
    g.set_output("m", m).unwrap();
    g.set_output("gt", gt).unwrap();
    let mut inputs = HashMap::new();
    inputs.insert(
        "x".into(),
        Tensor::new(vec![2, 3], vec![1., -2., 3., -4., 0., -1.]).unwrap(),
    );
    let out = interp::run(&g, &inputs, 2).unwrap();
    assert_eq!(out["s"].data, vec![-3.0]);
    assert_eq!(out["m"].data, vec![3.0, 0.0]);
    assert_eq!(out["gt"].data, vec![0.0; 6]);
}

#[test]
fn verifier_rejects_wrong_shapes_forward_references_and_bad_arity() {
    let build = || {
        let mut g = Graph::new("v");
        let x = g.input("x", Shape::batched(&[3])).unwrap();
        let y = g
            .unary(crate::ir::ops::elementwise::UnaryOp::Exp, x)
            .unwrap();
        let z = g.add(y, x).unwrap();
        g.set_output("z", z).unwrap();
        (g, x, y, z)
    };
    let (g, ..) = build();
    verify(&g).unwrap();
    let (mut g, _, y, _) = build();
    g.corrupt_for_test(y, Some(Shape::batched(&[4])), None);
    assert!(verify(&g).unwrap_err().message.contains("recorded as"));
    let (mut g, _, y, z) = build();
    g.corrupt_for_test(y, None, Some(vec![z]));
    assert!(verify(&g)
        .unwrap_err()
        .message
        .contains("does not come before"));
    let (mut g, x, _, z) = build();
    g.corrupt_for_test(z, None, Some(vec![x]));
    // z is now `add x` with one operand: the shape rule reports the arity.
    assert!(verify(&g).unwrap_err().message.contains("operand"));
}
