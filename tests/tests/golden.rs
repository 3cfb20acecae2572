//! Golden-file tests: each `tests/golden/<stage>/*.nn` is run through one stage and the
//! printed result is compared with its committed insta snapshot.
//!
//! - `syntax/`: the printed AST (`nnc::syntax::print`), spans included.
//! - `errors/`: the rendered diagnostics of `nnc check` without colour. Every file must
//!   fail; its first line says which error code it pins (`# expect: E0301`), and the test
//!   also asserts that code is reported, so a snapshot cannot drift to a different error.

use std::path::Path;

use nnc::diag::{render_all, ColorChoice};

fn rel_name(path: &Path) -> String {
    path.file_name()
        .expect("golden files have names")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn syntax_golden() {
    insta::glob!("../golden/syntax", "*.nn", |path| {
        let src = std::fs::read_to_string(path).expect("golden file is readable");
        let out = match nnc::syntax::parse_file(&src) {
            Ok(file) => nnc::syntax::print::print_file(&file),
            Err(diags) => render_all(&diags, &rel_name(path), &src, ColorChoice::Never),
        };
        insta::assert_snapshot!(out);
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

/// The forward, train-step and eval graphs of a file, as `nnc build --emit` prints them.
fn graphs_of(path: &Path) -> String {
    let src = std::fs::read_to_string(path).expect("golden file is readable");
    let file = nnc::syntax::parse_file(&src).expect("golden IR programs parse");
    let base = path.parent().expect("files live in a folder");
    let program = nnc::sema::check_file(&file, base).expect("golden IR programs check");
    use nnc::pipeline::emit::{emit, Stage};
    emit(
        &file,
        &program,
        &[Stage::Graph, Stage::TrainGraph, Stage::EvalGraph],
        &Default::default(),
    )
    .expect("graphs build")
}

#[test]
fn ir_golden() {
    insta::glob!("../golden/ir", "*.nn", |path| {
        insta::assert_snapshot!(graphs_of(path));
    });
}

#[test]
fn examples_graph_golden() {
    insta::glob!("../../examples", "*.nn", |path| {
        insta::assert_snapshot!(graphs_of(path));
    });
}

/// The text of `stages` for every train and eval step of a file.
fn stages_of(path: &Path, stages: &[nnc::pipeline::emit::Stage]) -> String {
    let src = std::fs::read_to_string(path).expect("golden file is readable");
    let file = nnc::syntax::parse_file(&src).expect("golden IR programs parse");
    let base = path.parent().expect("files live in a folder");
    let program = nnc::sema::check_file(&file, base).expect("golden IR programs check");
    nnc::pipeline::emit::emit(&file, &program, stages, &Default::default()).expect("steps compile")
}

/// The fused groups and the kernel IR of every train and eval step of a file.
fn kernels_of(path: &Path) -> String {
    use nnc::pipeline::emit::Stage;
    stages_of(path, &[Stage::Fused, Stage::Kernels])
}

#[test]
fn ir_kernels_golden() {
    insta::glob!("../golden/ir", "*.nn", |path| {
        insta::assert_snapshot!(kernels_of(path));
    });
}

#[test]
fn examples_kernels_golden() {
    insta::glob!("../../examples", "*.nn", |path| {
        insta::assert_snapshot!(kernels_of(path));
    });
}

/// The kernel IR of every example as the CPU runs it (the CPU schedule: simplified
/// indices, split products), so that schedule changes show up as snapshot diffs too.
#[test]
fn examples_cpu_kernels_golden() {
    insta::glob!("../../examples", "*.nn", |path| {
        insta::assert_snapshot!(stages_of(path, &[nnc::pipeline::emit::Stage::CpuKernels]));
    });
}

/// The kernel IR of every example as the GPU runs it (the GPU schedule: tiled products,
/// block reductions, grids, shared arrays, barriers, shuffles).
#[test]
fn examples_gpu_kernels_golden() {
    insta::glob!("../../examples", "*.nn", |path| {
        insta::assert_snapshot!(stages_of(path, &[nnc::pipeline::emit::Stage::GpuKernels]));
    });
}
