//! Tests of the pipeline: what each `--emit` stage prints, and (in [`agreement`]) that
//! every compiled step computes what the graph interpreter computes.

mod agreement;
#[cfg(feature = "cuda")]
mod ptx;

use super::emit::{emit, Stage};
use crate::ir::tests::models;
use crate::sema::typed::{Loss, Optimizer, Program};

#[test]
fn emit_prints_requested_stages_with_node_counts() {
    let text = "model Line {\n    input x: [1]\n    param w: [1, 1] = zeros\n    param b: [1] = zeros\n    output y = x @ w + b\n}\n";
    let file = crate::syntax::parse_file(text).unwrap();
    let opt = Optimizer::Sgd {
        lr: 0.05,
        momentum: 0.0,
        nesterov: false,
    };
    let program = Program {
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
