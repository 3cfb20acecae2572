//! `nnc export --onnx` end to end: every trainable example (each `train` block of the
//! tour), trained briefly, exports an ONNX model that onnxruntime runs to the outputs
//! `nnc predict` gives on the same raw samples (max abs difference ≤ 1e-4, checked by
//! `scripts/onnx-check.py`; skipped with a printed reason where onnxruntime is not
//! installed). Weights of another model are refused.

use std::path::Path;
use std::process::Command;

use nnc_runtime::data::write_npy;
use nnc_runtime::tensor::Tensor;

mod common;
use common::*;

/// Raw samples of `shape` as the data has them: pixel values for images, spread values
/// for CSV features (a small deterministic generator).
fn samples(n: usize, shape: &[usize], pixels: bool) -> Tensor {
    let per: usize = shape.iter().product();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data = (0..n * per)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            if pixels {
                (u * 255.0).round()
            } else {
                u * 4.0 - 2.0
            }
        })
        .collect();
    let mut dims = vec![n];
    dims.extend_from_slice(shape);
    Tensor::new(dims, data).unwrap()
}

/// Whether Python can import onnxruntime (and numpy); prints why not.
fn onnxruntime_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy, onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("skipped: python3 with numpy and onnxruntime is not available (pip install onnxruntime)");
    }
    ok
}

/// An IDX file of unsigned bytes with `dims`.
fn idx_bytes(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Trains `file` (`--model`), exports it, predicts `samples` and compares with
/// onnxruntime. `data` overrides the data folder (fashion_mlp's is not bundled).
fn check(file: &str, model: Option<&str>, input: &[usize], pixels: bool, data: Option<&str>) {
    let path = root().join("examples").join(file).display().to_string();
    check_path(&path, model, input, pixels, data);
}

fn check_path(path: &str, model: Option<&str>, input: &[usize], pixels: bool, data: Option<&str>) {
    let name = model
        .unwrap_or(path.rsplit('/').next().unwrap_or(path))
        .replace(['.', '/'], "_");
    let dir = scratch("export", &name);
    let out = dir.join("run").display().to_string();
    let mut args = vec!["train", path, "--epochs", "1", "--quiet", "--out", &out];
    let data_path = data.map(|d| {
        if Path::new(d).is_absolute() {
            d.to_string()
        } else {
            root().join(d).display().to_string()
        }
    });
    if let Some(d) = &data_path {
        args.extend(["--data", d]);
    }
    if let Some(m) = model {
        args.extend(["--model", m]);
    }
    ok(&nnc(&args));
    let weights = dir.join("run/weights.safetensors").display().to_string();
    let onnx = dir.join("model.onnx").display().to_string();
    let mut args = vec!["export", path, "--weights", &weights, "--onnx", &onnx];
    if let Some(m) = model {
        args.extend(["--model", m]);
    }
    ok(&nnc(&args));
    let npy = dir.join("x.npy");
    write_npy(&npy, &samples(37, input, pixels)).unwrap();
    let csv = dir.join("p.csv").display().to_string();
    let npy_s = npy.display().to_string();
    let mut args = vec![
        "predict",
        &path,
        "--weights",
        &weights,
        "--input",
        &npy_s,
        "--output",
        &csv,
    ];
    if let Some(m) = model {
        args.extend(["--model", m]);
    }
    ok(&nnc(&args));
    let script = root().join("scripts/onnx-check.py").display().to_string();
    let o = Command::new("python3")
        .args([&script, &onnx, &npy_s, &csv, "1e-4"])
        .output()
        .expect("python3 runs");
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    println!("{name}: {text}");
    assert_eq!(o.status.code(), Some(0), "{name}: {text}");
}

#[test]
fn every_example_exports_to_onnx_with_the_outputs_of_nnc_predict() {
    if !onnxruntime_available() {
        return;
    }
    check("mnist_mlp.nn", None, &[28, 28], true, None);
    check("lenet.nn", None, &[28, 28, 1], true, None);
    check("residual.nn", None, &[28, 28], true, None);
    check(
        "fashion_mlp.nn",
        None,
        &[28, 28],
        true,
        Some("examples/data/mnist-10k"),
    );
    check("xor.nn", None, &[2], false, None);
    check("line.nn", None, &[1], false, None);
    check("tour.nn", Some("Digits"), &[28, 28, 1], true, None);
    check("tour.nn", Some("Fit"), &[1], false, None);
    check("tour.nn", Some("Gate"), &[2], false, None);
    check("tour.nn", Some("Robust"), &[1], false, None);
}

/// Convolution options (rectangular kernels, steps, dilation, groups), batch norm,
/// pooling, every tensor function, matrix products with vector operands, concat and
/// broadcasting, on generated 6×6 images.
const OPS: &str = r#"model Ops {
    input image: [6, 6, 1]
    param p: [4, 3] = glorot
    param q: [6, 5] = glorot
    let c = image |> conv2d(4, kernel = [3, 2], stride = [1, 2], padding = "same")
    let g = c |> conv2d(4, kernel = 3, dilation = 2, groups = 2, padding = "same") |> batch_norm |> leaky_relu(alpha = 0.2)
    let r = g |> avg_pool([2, 1]) |> tanh
    let s = max(r, axis = 0)
    let t = transpose(s)
    let u = concat(t, t * p, axis = -1)
    let v = sum(u, axis = 0)
    let m = mean(u, axis = -1)
    let a = v @ transpose(u)
    let b = u @ v
    let e = sqrt(square(m) + 1) - log(1 + exp(-abs(b)))
    let gp = c |> global_avg_pool |> sigmoid
    let k = (u @ q) |> reshape([20]) |> dropout(0.1)
    output probs = concat(reshape(u, [24]), a, e, gp, k, -v / 2, axis = -1) |> dense(16) |> gelu |> dense(10) |> softmax
}

train Ops {
    data      = idx("data", scale = 1 / 255)
    loss      = cross_entropy
    optimizer = adam(lr = 1e-3)
    batch     = 16
    epochs    = 1
}
"#;

#[test]
fn conv_options_and_tensor_algebra_export_to_onnx() {
    if !onnxruntime_available() {
        return;
    }
    let dir = scratch("export", "ops-data");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let pixels = samples(160, &[6, 6], true);
    let bytes: Vec<u8> = pixels.data.iter().map(|v| *v as u8).collect();
    let labels: Vec<u8> = (0..160).map(|i| (i * 7 % 10) as u8).collect();
    for (split, n) in [("train", 120), ("t10k", 40)] {
        let (lo, hi) = if split == "train" {
            (0, 120)
        } else {
            (120, 160)
        };
        std::fs::write(
            data.join(format!("{split}-images-idx3-ubyte")),
            idx_bytes(&[n, 6, 6], &bytes[lo * 36..hi * 36]),
        )
        .unwrap();
        std::fs::write(
            data.join(format!("{split}-labels-idx1-ubyte")),
            idx_bytes(&[n], &labels[lo..hi]),
        )
        .unwrap();
    }
    let file = dir.join("ops.nn");
    std::fs::write(&file, OPS).unwrap();
    check_path(
        &file.display().to_string(),
        None,
        &[6, 6, 1],
        true,
        Some(&data.display().to_string()),
    );
}

#[test]
fn weights_of_another_model_are_refused() {
    let dir = scratch("export", "refused");
    let out = dir.join("run").display().to_string();
    let xor = root().join("examples/xor.nn").display().to_string();
    ok(&nnc(&["train", &xor, "--quiet", "--out", &out]));
    let weights = dir.join("run/weights.safetensors").display().to_string();
    let onnx = dir.join("m.onnx");
    let mnist = root().join("examples/mnist_mlp.nn").display().to_string();
    let o = nnc(&[
        "export",
        &mnist,
        "--weights",
        &weights,
        "--onnx",
        &onnx.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("does not fit model `Mnist`"), "{e}");
    assert!(!onnx.exists(), "nothing written");
}
