//! The printed step graphs: snapshots of hand-built models' train and eval graphs (any
//! change to lowering, autodiff or an optimizer is a reviewable diff), the text round
//! trip on real step graphs, and a parser that never panics on edited text.

use super::super::build_step_graphs;
use crate::ir::graph::Graph;
use crate::ir::parse::parse_graph;
use crate::ir::print::print_graph;
use crate::ir::tests::models;
use crate::ir::verify::verify;
use crate::sema::typed::{Loss, Optimizer};

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

fn opt_adam() -> Optimizer {
    Optimizer::Adam {
        lr: 0.001,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    }
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
