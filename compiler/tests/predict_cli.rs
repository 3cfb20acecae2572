//! `nnc predict` end to end: a digit classifier trained by `nnc train` predicts the
//! bundled MNIST test images from their IDX file, from a folder of PNGs and from a `.npy`
//! array with the same predictions each way and the accuracy `nnc eval` reports; JSON
//! lines; and every error path (weights of another model, images of another size,
//! unreadable inputs, a bad output name) is a message with exit code 1.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use nnc_runtime::data::{read_idx, write_npy, write_png};
use nnc_runtime::tensor::Tensor;

mod common;
use common::*;

fn mnist_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/mnist-10k")
        .join(name)
}

/// The folder this run's tests share.
fn shared() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch("predict", "shared"))
}

/// `examples/mnist_mlp.nn` trained for one epoch on the CPU, once per test run.
fn mnist_weights() -> &'static PathBuf {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let out = shared().join("mnist");
        let out_s = out.display().to_string();
        ok(&nnc(&[
            "train",
            &example("mnist_mlp.nn"),
            "--epochs",
            "1",
            "--quiet",
            "--out",
            &out_s,
        ]));
        out.join("weights.safetensors")
    })
}

fn predict(input: &Path, extra: &[&str]) -> Output {
    let (file, w) = (
        example("mnist_mlp.nn"),
        mnist_weights().display().to_string(),
    );
    let i = input.display().to_string();
    let mut args = vec!["predict", &file, "--weights", &w, "--input", &i];
    args.extend_from_slice(extra);
    nnc(&args)
}

/// The rows of a prediction CSV: (source, prediction, probabilities).
fn rows(csv: &str) -> Vec<(String, usize, Vec<f32>)> {
    let mut lines = csv.lines();
    let header = lines.next().expect("a header");
    assert_eq!(
        header,
        "index,source,prediction,p0,p1,p2,p3,p4,p5,p6,p7,p8,p9"
    );
    lines
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f[0], i.to_string());
            (
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3..].iter().map(|v| v.parse().unwrap()).collect(),
            )
        })
        .collect()
}

#[test]
fn idx_pngs_and_npy_give_the_same_predictions_and_evals_accuracy() {
    let images = mnist_file("t10k-images-idx3-ubyte.gz");
    let labels = read_idx(&mnist_file("t10k-labels-idx1-ubyte.gz"))
        .unwrap()
        .data;
    let from_idx = rows(&ok(&predict(&images, &[])));
    assert_eq!(from_idx.len(), labels.len());
    // Accuracy of the predictions against the labels is what `nnc eval` reports.
    let correct = from_idx
        .iter()
        .zip(&labels)
        .filter(|((_, p, _), y)| *p == **y as usize)
        .count();
    let accuracy = correct as f64 / labels.len() as f64;
    let w = mnist_weights().display().to_string();
    let eval = ok(&nnc(&["eval", &example("mnist_mlp.nn"), "--weights", &w]));
    let line = eval
        .lines()
        .find(|l| l.starts_with("accuracy"))
        .expect(&eval);
    let reported: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (accuracy - reported).abs() < 1e-6,
        "{accuracy} vs eval's {reported}"
    );
    assert!(accuracy > 0.8, "one epoch learns the digits: {accuracy}");
    for (i, (source, _, p)) in from_idx.iter().enumerate() {
        assert_eq!(*source, i.to_string());
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "softmax row {i} sums to {sum}");
    }

    // The same pixels as a .npy array of all samples and as a folder of 60 PNGs.
    let arr = read_idx(&images).unwrap();
    let npy = shared().join("digits.npy");
    write_npy(
        &npy,
        &Tensor::new(arr.dims.clone(), arr.data.clone()).unwrap(),
    )
    .unwrap();
    let from_npy = rows(&ok(&predict(&npy, &[])));
    assert_eq!(from_npy, from_idx);
    let pngs = shared().join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for i in 0..60 {
        let px = &arr.data[i * 784..(i + 1) * 784];
        write_png(&pngs.join(format!("digit_{i:03}.png")), px, 28, 28, 1).unwrap();
    }
    let from_png = rows(&ok(&predict(&pngs, &[])));
    assert_eq!(from_png.len(), 60);
    for (i, ((source, p, probs), (_, q, want))) in from_png.iter().zip(&from_idx).enumerate() {
        assert_eq!(*source, format!("digit_{i:03}.png"));
        assert_eq!((p, probs), (q, want), "image {i}");
    }
    // One image on its own, and JSON lines to a file.
    let single = ok(&predict(&pngs.join("digit_007.png"), &[]));
    assert_eq!(rows(&single)[0].1, from_idx[7].1);
    let jsonl = shared().join("out.jsonl");
    ok(&predict(&pngs, &["--output", &jsonl.display().to_string()]));
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&jsonl)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["source"], "digit_000.png");
    assert_eq!(first["prediction"].as_u64(), Some(from_idx[0].1 as u64));
    assert_eq!(first["p"].as_array().map(Vec::len), Some(10));
}

/// `examples/xor.nn` (CSV data) trained on the CPU, once per test run.
fn xor_weights() -> &'static PathBuf {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let out = shared().join("xor");
        ok(&nnc(&[
            "train",
            &example("xor.nn"),
            "--quiet",
            "--out",
            &out.display().to_string(),
        ]));
        out.join("weights.safetensors")
    })
}

#[test]
fn csv_rows_are_predicted_from_the_training_columns_by_name() {
    let w = xor_weights().display().to_string();
    // The columns in another order, an extra one, and no target column.
    let csv = shared().join("xor_in.csv");
    std::fs::write(&csv, "id,b,a\nfirst,0,0\nsecond,1,0\nthird,1,1\n").unwrap();
    let out = ok(&nnc(&[
        "predict",
        &example("xor.nn"),
        "--weights",
        &w,
        "--input",
        &csv.display().to_string(),
    ]));
    let preds: Vec<String> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
        .collect();
    // XOR of (a, b): rows are sources 2, 3, 4 (line numbers).
    assert_eq!(preds, vec!["0,2,0", "1,3,1", "2,4,0"], "{out}");
    let bad = shared().join("xor_bad.csv");
    std::fs::write(&bad, "a,c\n0,0\n").unwrap();
    let e = fails(&nnc(&[
        "predict",
        &example("xor.nn"),
        "--weights",
        &w,
        "--input",
        &bad.display().to_string(),
    ]));
    assert!(e.contains("the header has no column `b`"), "{e}");
}

#[test]
fn errors_name_the_file_and_what_is_wrong() {
    // Weights of another model: every difference listed.
    let xw = xor_weights().display().to_string();
    let images = mnist_file("t10k-images-idx3-ubyte.gz")
        .display()
        .to_string();
    let e = fails(&nnc(&[
        "predict",
        &example("mnist_mlp.nn"),
        "--weights",
        &xw,
        "--input",
        &images,
    ]));
    assert!(e.contains("does not fit model `Mnist`"), "{e}");
    assert!(
        e.contains("no tensor `dense_2.w` (the model's is [64, 10])"),
        "{e}"
    );
    assert!(
        e.contains("`dense_0.w` is [2, 8], the model's is [784, 128]"),
        "{e}"
    );
    // Images of another size.
    let big = shared().join("big.png");
    write_png(&big, &[0.0; 32 * 32], 32, 32, 1).unwrap();
    let e = fails(&predict(&big, &[]));
    assert!(
        e.contains("the image is 32×32 pixels, the model input is 28×28"),
        "{e}"
    );
    assert!(e.contains("--resize"), "{e}");
    ok(&predict(&big, &["--resize"]));
    // A .npy of another sample shape, a file that is none of the formats, no file.
    let npy = shared().join("wrong.npy");
    write_npy(&npy, &Tensor::new(vec![2, 5], vec![0.0; 10]).unwrap()).unwrap();
    let e = fails(&predict(&npy, &[]));
    assert!(
        e.contains("samples have shape [5], the model input is [28, 28]"),
        "{e}"
    );
    let text = shared().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let e = fails(&predict(&text, &[]));
    assert!(e.contains("`nnc predict` reads IDX"), "{e}");
    let e = fails(&predict(&shared().join("missing.idx"), &[]));
    assert!(e.contains("does not exist"), "{e}");
    // A CSV to a model trained on images, and an output that is neither CSV nor JSONL.
    let csv = shared().join("x.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let e = fails(&predict(&csv, &[]));
    assert!(e.contains("not trained on CSV data"), "{e}");
    let e = fails(&predict(&big, &["--output", "preds.txt"]));
    assert!(e.contains("must end in `.csv` or `.jsonl`"), "{e}");
}
