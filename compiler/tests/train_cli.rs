//! `nnc train` and `nnc eval` end to end on the interpreter target: the examples train to
//! the accuracy the issue asks for, resume is bit-exact, and errors that belong to the
//! program or its data are located diagnostics with exit code 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .output()
        .expect("the nnc binary runs")
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .display()
        .to_string()
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nnc-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `nnc train` and returns stdout, asserting success.
fn train(file: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["train", file, "--target", "interp", "--quiet", "--out"];
    let out_s = out.display().to_string();
    args.push(&out_s);
    args.extend_from_slice(extra);
    let o = nnc(&args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The last epoch's record in `metrics.jsonl`.
fn last_epoch(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    let line = text.lines().last().expect("one line per epoch");
    serde_json::from_str(line).expect("valid JSON")
}

#[test]
fn mnist_mlp_reaches_93_percent_on_the_interpreter() {
    let out = out_dir("mnist");
    train(&example("mnist_mlp.nn"), &out, &[]);
    let rec = last_epoch(&out);
    let acc = rec["test_accuracy"].as_f64().expect("accuracy logged");
    assert!(acc >= 0.93, "test accuracy {acc}");
    for f in [
        "weights.safetensors",
        "checkpoint.safetensors",
        "curves.svg",
        "confusion.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} written");
    }
}

#[test]
fn line_recovers_slope_and_intercept() {
    let out = out_dir("line");
    train(&example("line.nn"), &out, &[]);
    let weights =
        nnc_runtime::checkpoint::read_weights(&out.join("weights.safetensors")).expect("weights");
    let get = |name: &str| weights.iter().find(|(n, _)| n == name).expect(name).1.data[0];
    assert!((get("w") - 3.0).abs() < 0.1, "w = {}", get("w"));
    assert!((get("b") - 2.0).abs() < 0.1, "b = {}", get("b"));
}

#[test]
fn xor_reaches_full_accuracy() {
    let out = out_dir("xor");
    train(&example("xor.nn"), &out, &[]);
    assert_eq!(last_epoch(&out)["test_accuracy"].as_f64(), Some(1.0));
}

#[test]
fn every_trainable_example_trains_one_epoch() {
    for (file, model) in [
        ("residual.nn", None),
        ("lenet.nn", None),
        ("tour.nn", Some("Digits")),
        ("tour.nn", Some("Fit")),
        ("tour.nn", Some("Gate")),
        ("tour.nn", Some("Robust")),
    ] {
        let out = out_dir(&format!("{file}-{model:?}"));
        let mut extra = vec!["--epochs", "1"];
        if let Some(m) = model {
            extra.extend(["--model", m]);
        }
        train(&example(file), &out, &extra);
        let loss = last_epoch(&out)["train_loss"].as_f64().expect("train loss");
        assert!(loss.is_finite(), "{file} {model:?}: loss {loss}");
    }
}

#[test]
fn two_epochs_equal_one_plus_one_resumed_bit_for_bit() {
    let straight = out_dir("straight");
    train(&example("xor.nn"), &straight, &["--epochs", "2"]);
    let resumed = out_dir("resumed");
    train(&example("xor.nn"), &resumed, &["--epochs", "1"]);
    let resumed_s = resumed.display().to_string();
    train(
        &example("xor.nn"),
        &resumed,
        &["--epochs", "2", "--resume", &resumed_s],
    );
    let a = std::fs::read(straight.join("weights.safetensors")).expect("weights");
    let b = std::fs::read(resumed.join("weights.safetensors")).expect("weights");
    assert_eq!(a, b, "weights differ after resuming");
}

#[test]
fn resume_refuses_a_checkpoint_of_another_model() {
    let out = out_dir("other");
    train(&example("xor.nn"), &out, &["--epochs", "1"]);
    let out_s = out.display().to_string();
    let o = nnc(&[
        "train",
        &example("line.nn"),
        "--quiet",
        "--out",
        &out_s,
        "--resume",
        &out_s,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("error:"));
}

#[test]
fn eval_prints_metrics_and_the_confusion_matrix() {
    let out = out_dir("eval");
    train(&example("xor.nn"), &out, &[]);
    let w = out.join("weights.safetensors").display().to_string();
    let o = nnc(&["eval", &example("xor.nn"), "--weights", &w]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("accuracy 1.000000"), "{text}");
    assert!(text.contains("confusion matrix"), "{text}");
}

fn temp_program(name: &str, text: &str) -> String {
    let dir = out_dir(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("prog.nn");
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn data_of_the_wrong_shape_is_a_located_error() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/mnist-10k");
    let prog = temp_program(
        "shape",
        &format!(
            "model M {{\n    input x: [27, 27]\n    output y = x |> flatten |> dense(10) |> softmax\n}}\n\
             train M {{\n    data = idx(\"{}\")\n    loss = cross_entropy\n    optimizer = sgd(lr = 0.1)\n}}\n",
            data.display()
        ),
    );
    let o = nnc(&["train", &prog, "--color", "never"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("E0404"), "{err}");
    assert!(
        err.contains("[28, 28]") && err.contains("[27, 27]"),
        "{err}"
    );
    assert!(err.contains("prog.nn:6:12"), "{err}");
}

#[test]
fn a_file_without_train_block_cannot_be_trained() {
    let prog = temp_program(
        "notrain",
        "model M {\n    input x: [2]\n    output y = x |> dense(1)\n}\n",
    );
    let o = nnc(&["train", &prog, "--color", "never"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("E0401") && err.contains("prog.nn:1:1"),
        "{err}"
    );
}

#[test]
fn several_train_blocks_need_a_model_flag() {
    let o = nnc(&["train", &example("tour.nn"), "--color", "never"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("E0406") && err.contains("--model"), "{err}");
}

#[test]
fn missing_data_names_the_file() {
    let prog = temp_program(
        "nodata",
        "model M {\n    input x: [2]\n    output y = x |> dense(1)\n}\n\
         train M {\n    data = csv(\"missing.csv\", target = \"y\")\n    loss = mse\n    optimizer = sgd(lr = 0.1)\n}\n",
    );
    let o = nnc(&["train", &prog, "--color", "never"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing.csv") && err.contains("E0407"),
        "{err}"
    );
}
