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
use crate::ir::train::build_step_graphs;
use crate::ir::verify::verify;
use crate::sema::typed::{Loss, Optimizer};

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

fn step_graph_texts() -> Vec<(String, Graph)> {
    let opt = Optimizer::Adam {
        lr: 0.001,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut out = Vec::new();
    for (model, loss) in [
        (models::mnist(16, 8), Loss::CrossEntropy),
        (models::conv_net(), Loss::CrossEntropy),
        (models::residual(4), Loss::Mse),
        (models::line(), Loss::Mae),
    ] {
        let sg = build_step_graphs(&model, &models::train_block(loss, opt.clone())).unwrap();
        out.push((print_graph(&sg.train), sg.train));
        out.push((print_graph(&sg.eval), sg.eval));
    }
    out
}

#[test]
fn printed_graphs_parse_back_to_the_same_text() {
    for (text, g) in step_graph_texts() {
        verify(&g).unwrap();
        let parsed = parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        verify(&parsed).unwrap();
        assert_eq!(print_graph(&parsed), text);
        assert_eq!(parsed.len(), g.len());
    }
}

#[test]
fn printing_is_deterministic_across_builds() {
    let a: Vec<String> = step_graph_texts().into_iter().map(|(t, _)| t).collect();
    let b: Vec<String> = step_graph_texts().into_iter().map(|(t, _)| t).collect();
    assert_eq!(a, b);
    assert!(a[0].starts_with("graph Mnist_train_step  # "));
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
    // Pinned values, computed independently (splitmix64 over the four words, the top 24
    // bits as the fraction): a change of generator would break resumed runs.
    assert_eq!(counter_uniform(1, 2, 3, 4), 5_036_462.0 / 16_777_216.0);
    assert_eq!(counter_uniform(0, 0, 0, 0), 11_206_620.0 / 16_777_216.0);
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

fn opt_adam() -> Optimizer {
    Optimizer::Adam {
        lr: 0.001,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    }
}

#[test]
fn emit_prints_requested_stages_with_node_counts() {
    use crate::ir::emit::{emit, Stage};
    let text = "model Line {\n    input x: [1]\n    param w: [1, 1] = zeros\n    param b: [1] = zeros\n    output y = x @ w + b\n}\n";
    let file = crate::syntax::parse_file(text).unwrap();
    let opt = Optimizer::Sgd {
        lr: 0.05,
        momentum: 0.0,
        nesterov: false,
    };
    let program = crate::sema::typed::Program {
        models: vec![models::line()],
        trains: vec![models::train_block(Loss::Mse, opt)],
    };
    let out = emit(
        &file,
        &program,
        &[
            Stage::Ast,
            Stage::Graph,
            Stage::TrainGraph,
            Stage::EvalGraph,
        ],
        &Default::default(),
    )
    .unwrap();
    let headers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("# ==") || l.starts_with("graph "))
        .collect();
    assert_eq!(
        headers,
        [
            "# == ast ==",
            "# == graph ==",
            "graph Line  # 5 nodes",
            "# == train-graph ==",
            "graph Line_train_step  # 29 nodes",
            "# == eval-graph ==",
            "graph Line_eval  # 12 nodes",
        ]
    );
    assert_eq!(Stage::from_name("train-graph"), Some(Stage::TrainGraph));
    assert_eq!(Stage::from_name("kernels"), Some(Stage::Kernels));
    assert_eq!(Stage::from_name("clif"), Some(Stage::Clif));
    assert_eq!(Stage::from_name("ptx"), Some(Stage::Ptx));
    assert_eq!(Stage::from_name("llvm-ir"), None);
}

/// Snapshots of the printed step graphs of the hand-built models: any change to
/// lowering, autodiff or an optimizer shows up as a reviewable diff.
#[test]
fn step_graph_snapshots() {
    let sgd = Optimizer::Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: false,
    };
    let cases = [
        ("line_sgd_mse", models::line(), Loss::Mse, sgd.clone()),
        (
            "mlp_adam_cross_entropy",
            models::mlp(4, 3, 2),
            Loss::CrossEntropy,
            opt_adam(),
        ),
        (
            "conv_net_sgd_cross_entropy",
            models::conv_net(),
            Loss::CrossEntropy,
            sgd,
        ),
    ];
    for (name, model, loss, opt) in cases {
        let sg = build_step_graphs(&model, &models::train_block(loss, opt)).unwrap();
        insta::assert_snapshot!(format!("{name}_train"), print_graph(&sg.train));
        insta::assert_snapshot!(format!("{name}_eval"), print_graph(&sg.eval));
    }
}

mod parser_robustness {
    use super::*;
    use proptest::prelude::*;

    fn sample_text() -> String {
        let sg = build_step_graphs(
            &models::conv_net(),
            &models::train_block(Loss::CrossEntropy, opt_adam()),
        )
        .unwrap();
        print_graph(&sg.eval)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any edit of a valid text either fails with an error or yields a graph that
        /// verifies and round-trips; it never panics.
        #[test]
        fn edited_graph_text_never_panics(pos in 0usize..10_000, len in 0usize..8, insert in "[ -~]{0,6}") {
            let text = sample_text();
            let chars: Vec<char> = text.chars().collect();
            let at = pos % chars.len();
            let end = (at + len).min(chars.len());
            let edited: String = chars[..at].iter().chain(insert.chars().collect::<Vec<_>>().iter()).chain(&chars[end..]).collect();
            if let Ok(g) = parse_graph(&edited) {
                prop_assert!(verify(&g).is_ok());
                let again = print_graph(&g);
                prop_assert_eq!(print_graph(&parse_graph(&again).unwrap()), again);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "(graph g\n)?([ -~]{0,40}\n){0,5}") {
            let _ = parse_graph(&text);
        }
    }

    #[test]
    fn huge_dimensions_are_errors_not_overflows() {
        let text = "graph g\n  %0: [N, 18446744073709551615] = input name=\"x\"\n  %1: [18446744073709551615, 18446744073709551615] = reshape shape=[18446744073709551615, 18446744073709551615] %0\n";
        assert!(parse_graph(text).is_err());
        let text = "graph g\n  %0: [N, 4, 4, 18446744073709551615] = input name=\"x\"\n  %1: [N, 2, 2, 1] = im2col kernel=3 stride=1 pad=[0, 0] image=[4, 4] out=[2, 2] %0\n";
        assert!(parse_graph(text).is_err());
    }
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
