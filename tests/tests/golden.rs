//! Golden-file tests: each `tests/golden/<stage>/*.nn` is run through one stage and the
//! printed result is compared with its committed insta snapshot.
//!
//! - `syntax/`: the printed AST (`nnc::syntax::print`), spans included.
//! - `errors/`: the rendered diagnostics of `nnc check` without colour. Every file must
//!   fail; its first line says which error code it pins (`# expect: E0301`), and the test
//!   also asserts that code is reported, so a snapshot cannot drift to a different error.
//! - `ir/`: one small program per op family: its graphs, fused groups and kernel IR.
//! - `models/`: a tiny MLP, a tiny convnet and a residual block through every IR level
//!   (graph, train-graph, eval-graph, fused, kernels, cpu-kernels, gpu-kernels).
//! - `tests/programs/`: the language reference's programs, printed as the syntax stage.
//!
//! The examples are too large to review as snapshots; `examples.rs` checks properties of
//! them instead (they build for both targets, their kernel counts per step).

use std::path::Path;

use nnc::diag::{render_all, ColorChoice};
use nnc::pipeline::emit::Stage;
use nnc_tests::stages_of;

fn rel_name(path: &Path) -> String {
    path.file_name()
        .expect("golden files have names")
        .to_string_lossy()
        .into_owned()
}

/// The printed AST of a file, or its rendered syntax errors.
fn syntax_of(path: &Path) -> String {
    let src = std::fs::read_to_string(path).expect("golden file is readable");
    match nnc::syntax::parse_file(&src) {
        Ok(file) => nnc::syntax::print::print_file(&file),
        Err(diags) => render_all(&diags, &rel_name(path), &src, ColorChoice::Never),
    }
}

#[test]
fn syntax_golden() {
    insta::glob!("../golden/syntax", "*.nn", |path| {
        insta::assert_snapshot!(syntax_of(path));
    });
}

#[test]
fn programs_syntax_golden() {
    insta::glob!("../programs", "*.nn", |path| {
        insta::assert_snapshot!(syntax_of(path));
    });
}

#[test]
fn errors_golden() {
    insta::glob!("../golden/errors", "*.nn", |path| {
        let bytes = std::fs::read(path).expect("golden file is readable");
        let src = String::from_utf8_lossy(&bytes).into_owned();
        let expect = src
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|| panic!("{} lacks a `# expect: EXXXX` first line", path.display()));
        let base = path.parent().expect("golden files live in a folder");
        let diags = match nnc::check_bytes(&bytes, base) {
            Ok(_) => panic!("{} was expected to fail with {expect}", path.display()),
            Err(d) => d,
        };
        assert!(
            diags.iter().any(|d| d.code.as_str() == expect),
            "{}: expected {expect}, got {:?}",
            path.display(),
            diags.iter().map(|d| d.code.as_str()).collect::<Vec<_>>()
        );
        insta::assert_snapshot!(render_all(
            &diags,
            &rel_name(path),
            &src,
            ColorChoice::Never
        ));
    });
}

/// The forward, train-step and eval graphs of every op-family program.
#[test]
fn ir_golden() {
    insta::glob!("../golden/ir", "*.nn", |path| {
        insta::assert_snapshot!(stages_of(
            path,
            &[Stage::Graph, Stage::TrainGraph, Stage::EvalGraph]
        ));
    });
}

/// The fused groups and the kernel IR of every train and eval step of every op-family
/// program.
#[test]
fn ir_kernels_golden() {
    insta::glob!("../golden/ir", "*.nn", |path| {
        insta::assert_snapshot!(stages_of(path, &[Stage::Fused, Stage::Kernels]));
    });
}

/// Every IR level of the small model programs, the CPU schedule (simplified indices,
/// split products) and the GPU schedule (tiled products, block reductions, grids, shared
/// arrays, barriers, shuffles) included, so that any pipeline change shows up as a diff.
#[test]
fn models_golden() {
    insta::glob!("../golden/models", "*.nn", |path| {
        insta::assert_snapshot!(stages_of(
            path,
            &[
                Stage::Graph,
                Stage::TrainGraph,
                Stage::EvalGraph,
                Stage::Fused,
                Stage::Kernels,
                Stage::CpuKernels,
                Stage::GpuKernels,
            ]
        ));
    });
}

/// The data-parallel halves of the training step (`nnc train --distributed`): the
/// gradient graph and the update graph of every block of the model programs and of the
/// training-controls program (clipping, decay and a schedule in the update half).
#[test]
fn parallel_golden() {
    let print = |path: &Path| {
        let src = std::fs::read(path).expect("program file is readable");
        let base = path.parent().expect("program files live in a folder");
        let (_, program) = nnc::pipeline::front_end(&src, base)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let mut out = String::new();
        for train in &program.trains {
            let model = &program.models[train.model];
            let g = nnc::step::build_parallel_graphs(model, train)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
            out.push_str(&format!("# gradients handed over: {:?}\n", g.grads));
            out.push_str(&nnc::ir::print::print_graph(&g.grad));
            out.push_str(&nnc::ir::print::print_graph(&g.apply));
        }
        out
    };
    insta::glob!("../golden/models", "*.nn", |path| {
        insta::assert_snapshot!(print(path));
    });
    insta::glob!("../golden/ir", "training_controls.nn", |path| {
        insta::assert_snapshot!(print(path));
    });
}
