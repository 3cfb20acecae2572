//! Fine-tuning end to end: `init = "…"` (and `--init`) starts from trained parameters
//! matched by name, `freeze = [...]` keeps the named parameters (or prefixes) bit for bit
//! and gives them no optimizer state, `--resume DIR --epochs N` extends a finished run to
//! the weights of an uninterrupted one, and every mistake is a located error.

use std::path::Path;

use nnc_runtime::checkpoint::{read_weights, Checkpoint};
use nnc_runtime::tensor::Tensor;

mod common;
use common::*;

/// A digit classifier on the bundled data with `extra` training settings and `units` in
/// its last hidden layer.
fn program(dir: &Path, name: &str, units: usize, extra: &str) -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/mnist-10k");
    let text = format!(
        "model Digits {{\n    input image: [28, 28]\n    output p = image |> flatten |> dense(32) |> relu |> dense({units}) |> relu |> dense(10) |> softmax\n}}\n\ntrain Digits {{\n    data = idx(\"{}\", scale = 1 / 255)\n    loss = cross_entropy\n    optimizer = adam(lr = 1e-3)\n    batch = 64\n    metrics = [accuracy]\n    seed = 2\n{extra}}}\n",
        data.display()
    );
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    s(&file)
}

fn tensor<'a>(w: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &w.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name}"))
        .1
}

#[test]
fn init_and_freeze_fine_tune_a_trained_model() {
    let dir = scratch("finetune", "init");
    let base = program(&dir, "base.nn", 16, "");
    let run = dir.join("base");
    ok(&nnc(&["train", &base, "--quiet", "--out", &s(&run)]));
    let trained = read_weights(&run.join("weights.safetensors")).unwrap();
    let path = s(&run.join("weights.safetensors"));

    // Start from the trained weights, the first layer frozen.
    let tuned = program(
        &dir,
        "tuned.nn",
        16,
        &format!("    init = \"{path}\"\n    freeze = [\"dense_0\"]\n"),
    );
    let out = dir.join("tuned");
    let note = ok_stderr(&nnc(&["train", &tuned, "--out", &s(&out)]));
    assert!(note.contains("6 of 6 parameters start from"), "{note}");
    let after = read_weights(&out.join("weights.safetensors")).unwrap();
    for name in ["dense_0.w", "dense_0.b"] {
        assert_eq!(
            tensor(&after, name),
            tensor(&trained, name),
            "{name} is frozen"
        );
    }
    assert_ne!(tensor(&after, "dense_1.w"), tensor(&trained, "dense_1.w"));
    let ck = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let names: Vec<&str> = ck.state.iter().map(|s| s.name.as_str()).collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("dense_0.") && n.ends_with(".m")),
        "{names:?}"
    );
    assert!(names.contains(&"dense_1.w.m"), "{names:?}");

    // A wider hidden layer: its weights differ in shape, listed.
    let wide = program(&dir, "wide.nn", 24, &format!("    init = \"{path}\"\n"));
    let e = fails(&nnc(&[
        "train",
        &wide,
        "--quiet",
        "--out",
        &s(&dir.join("w")),
    ]));
    assert!(
        e.contains("`dense_1.w` is [32, 16], the model's is [32, 24]"),
        "{e}"
    );
    // `--init` on the command line, into a model that lacks nothing.
    let plain = program(&dir, "plain.nn", 16, "");
    let note = ok_stderr(&nnc(&[
        "train",
        &plain,
        "--init",
        &path,
        "--out",
        &s(&dir.join("p")),
    ]));
    assert!(note.contains("6 of 6 parameters start from"), "{note}");
}

#[test]
fn freeze_mistakes_are_located_errors() {
    let dir = scratch("finetune", "freeze");
    let typo = program(&dir, "typo.nn", 16, "    freeze = [\"dense0\"]\n");
    let e = fails(&nnc(&["check", &typo]));
    assert!(e.contains("E0409"), "{e}");
    assert!(
        e.contains("`freeze` names `dense0`, which is no parameter of `Digits`"),
        "{e}"
    );
    assert!(e.contains("dense_0"), "a suggestion: {e}");
    let all = program(
        &dir,
        "all.nn",
        16,
        "    freeze = [\"dense_0\", \"dense_1\", \"dense_2\"]\n",
    );
    let e = fails(&nnc(&["check", &all]));
    assert!(e.contains("`freeze` covers every parameter"), "{e}");
    let bad = program(&dir, "bad.nn", 16, "    freeze = [dense_0]\n");
    let e = fails(&nnc(&["check", &bad]));
    assert!(
        e.contains("`freeze` lists parameter names as strings"),
        "{e}"
    );
    let init = program(&dir, "init.nn", 16, "    init = 3\n");
    let e = fails(&nnc(&["check", &init]));
    assert!(
        e.contains("`init` must be the path of a weights file"),
        "{e}"
    );
}

#[test]
fn resume_extends_a_finished_run_to_the_uninterrupted_weights() {
    let dir = scratch("finetune", "extend");
    let file = program(&dir, "p.nn", 16, "");
    let straight = dir.join("straight");
    ok(&nnc(&[
        "train",
        &file,
        "--epochs",
        "2",
        "--quiet",
        "--out",
        &s(&straight),
    ]));
    let first = dir.join("first");
    ok(&nnc(&[
        "train",
        &file,
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &s(&first),
    ]));
    ok(&nnc(&[
        "train",
        &file,
        "--resume",
        &s(&first),
        "--epochs",
        "2",
        "--quiet",
        "--out",
        &s(&first),
    ]));
    assert_eq!(
        read_weights(&straight.join("weights.safetensors")).unwrap(),
        read_weights(&first.join("weights.safetensors")).unwrap()
    );
    let lines = std::fs::read_to_string(first.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
}
