//! `nnc train` and `nnc eval` end to end on the interpreter target: the examples train to
//! the accuracy the issue asks for and every trainable one learns (its loss falls, its
//! classifiers beat chance), resume is bit-exact, and errors that belong to the
//! program or its data are located diagnostics with exit code 1.

use std::path::{Path, PathBuf};

mod common;
use common::{example, nnc};

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
    common::ok(&nnc(&args))
}

/// Every epoch's record in `metrics.jsonl`, in order (at least one).
fn epochs(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect();
    assert!(!records.is_empty(), "one line per epoch");
    records
}

/// The last epoch's record in `metrics.jsonl`.
fn last_epoch(out: &Path) -> serde_json::Value {
    epochs(out).pop().expect("one line per epoch")
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

/// A training run of an example and what it must reach to count as learning.
struct Learns {
    file: &'static str,
    model: Option<&'static str>,
    /// `--epochs`; `None` trains the file's number of epochs.
    epochs: Option<&'static str>,
    /// The most the last epoch's test loss may be. Untrained, the digit classifiers are
    /// at chance (cross-entropy ln 10 ≈ 2.30); the others' first-epoch losses are noted.
    test_loss_at_most: f64,
    /// The least test accuracy of the last epoch, for classifiers.
    accuracy_at_least: Option<f64>,
}

/// Every trainable example learns on the interpreter: its test loss falls well below
/// where it starts, the train loss falls from the first epoch to the last, and the
/// classifiers beat chance by far. The digit models train one epoch (they take seconds
/// each); measured there: test loss 0.28–0.37, accuracy 0.90–0.92 on mnist-10k.
#[test]
fn every_trainable_example_learns() {
    let digits = |file, model| Learns {
        file,
        model,
        epochs: Some("1"),
        test_loss_at_most: 0.6,
        accuracy_at_least: Some(0.85),
    };
    for run in [
        digits("residual.nn", None),
        digits("lenet.nn", None),
        digits("tour.nn", Some("Digits")),
        // Regression of line.csv: first epoch's test loss 3.03, after 50 epochs 1.34.
        Learns {
            file: "tour.nn",
            model: Some("Fit"),
            epochs: None,
            test_loss_at_most: 2.0,
            accuracy_at_least: None,
        },
        // XOR with a sigmoid (chance: ln 2 ≈ 0.69); reaches 4e-5 after 300 epochs.
        Learns {
            file: "tour.nn",
            model: Some("Gate"),
            epochs: None,
            test_loss_at_most: 0.05,
            accuracy_at_least: Some(1.0),
        },
        // Mean absolute error on line.csv: 1.55 after the first epoch, 0.057 after 100.
        Learns {
            file: "tour.nn",
            model: Some("Robust"),
            epochs: None,
            test_loss_at_most: 0.3,
            accuracy_at_least: None,
        },
    ] {
        let label = format!("{} {:?}", run.file, run.model);
        let out = out_dir(&label.replace(' ', "-"));
        let mut extra = Vec::new();
        if let Some(e) = run.epochs {
            extra.extend(["--epochs", e]);
        }
        if let Some(m) = run.model {
            extra.extend(["--model", m]);
        }
        train(&example(run.file), &out, &extra);
        let epochs = epochs(&out);
        let (first, last) = (&epochs[0], &epochs[epochs.len() - 1]);
        let get = |rec: &serde_json::Value, key: &str| {
            rec[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{label}: {key} logged"))
        };
        let test_loss = get(last, "test_loss");
        assert!(
            test_loss <= run.test_loss_at_most,
            "{label}: test loss {test_loss} > {}",
            run.test_loss_at_most
        );
        if epochs.len() > 1 {
            let (a, b) = (get(first, "train_loss"), get(last, "train_loss"));
            assert!(b < a, "{label}: train loss rose from {a} to {b}");
        }
        if let Some(min) = run.accuracy_at_least {
            let acc = get(last, "test_accuracy");
            assert!(acc >= min, "{label}: test accuracy {acc} < {min}");
        }
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

/// Runs `nnc train <file> --color never`, asserting exit code 1 (an error of the program
/// or its data), and returns stderr.
fn train_error(file: &str) -> String {
    let o = nnc(&["train", file, "--color", "never"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
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
    let err = train_error(&prog);
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
    let err = train_error(&prog);
    assert!(
        err.contains("E0401") && err.contains("prog.nn:1:1"),
        "{err}"
    );
}

#[test]
fn several_train_blocks_need_a_model_flag() {
    let err = train_error(&example("tour.nn"));
    assert!(err.contains("E0406") && err.contains("--model"), "{err}");
}

#[test]
fn missing_data_names_the_file() {
    let prog = temp_program(
        "nodata",
        "model M {\n    input x: [2]\n    output y = x |> dense(1)\n}\n\
         train M {\n    data = csv(\"missing.csv\", target = \"y\")\n    loss = mse\n    optimizer = sgd(lr = 0.1)\n}\n",
    );
    let err = train_error(&prog);
    assert!(
        err.contains("missing.csv") && err.contains("E0407"),
        "{err}"
    );
}
