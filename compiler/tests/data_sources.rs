//! The data sources for people's own data, end to end: `images(..)` (class subfolders,
//! resized, a seeded test fraction or `train/`/`test/` folders; the class names reach
//! `nnc predict`), `npy(..)` (with and without a separate test pair), CSV test splits
//! (`test = fraction` and `test = "other.csv"`), and their errors, which name the file.

use std::path::Path;

use nnc_runtime::data::{write_npy, write_png};
use nnc_runtime::tensor::Tensor;

mod common;
use common::*;

/// A small deterministic generator of values in [0, 1).
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A `side`×`side` grey image bright in its top half (`top`) or its bottom half.
fn picture(side: usize, top: bool, noise: &mut Noise) -> Vec<f32> {
    (0..side * side)
        .map(|i| {
            let upper = i / side < side / 2;
            let base = if upper == top { 200.0 } else { 40.0 };
            base + 50.0 * noise.next()
        })
        .collect()
}

/// `count` images per class (`bottom`, `top`) under `root/<class>/`; every fifth is
/// 12×12 (resized to 8×8 when loaded).
fn class_folders(root: &Path, count: usize, seed: u64) {
    let mut noise = Noise(seed);
    for (class, top) in [("bottom", false), ("top", true)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..count {
            let side = if i % 5 == 4 { 12 } else { 8 };
            let px = picture(side, top, &mut noise);
            write_png(&dir.join(format!("{class}_{i:02}.png")), &px, side, side, 1).unwrap();
        }
    }
}

const SHAPES: &str = r#"
model Halves {
    input image: [8, 8, 1]
    output p = image |> flatten |> dense(2) |> softmax
}

train Halves {
    data      = images("pics", size = [8, 8], channels = 1, scale = 1 / 255)
    loss      = cross_entropy
    optimizer = adam(lr = 0.05)
    batch     = 8
    epochs    = 15
    metrics   = [accuracy]
    seed      = 3
}
"#;

#[test]
fn an_image_folder_trains_and_predict_prints_class_names() {
    let dir = scratch("data", "images");
    class_folders(&dir.join("pics"), 25, 7);
    let file = dir.join("halves.nn");
    std::fs::write(&file, SHAPES).unwrap();
    let run = dir.join("run");
    ok(&nnc(&["train", &s(&file), "--quiet", "--out", &s(&run)]));
    let acc = test_accuracy(&run);
    assert!(acc >= 0.9, "the halves are easy: test accuracy {acc}");
    let weights = s(&run.join("weights.safetensors"));
    let out = ok(&nnc(&[
        "predict",
        &s(&file),
        "--weights",
        &weights,
        "--input",
        &s(&dir.join("pics/top")),
        "--resize",
    ]));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("index,source,prediction,class,p0,p1"));
    let tops = lines.filter(|l| l.split(',').nth(3) == Some("top")).count();
    assert!(tops >= 23, "{out}");
    // `train/` and `test/` subfolders are the splits.
    let split = dir.join("split");
    class_folders(&split.join("pics/train"), 15, 11);
    class_folders(&split.join("pics/test"), 5, 13);
    let file2 = split.join("halves.nn");
    std::fs::write(&file2, SHAPES).unwrap();
    let out = ok(&nnc(&["eval", &s(&file2), "--weights", &weights]));
    assert!(out.starts_with("samples 10\n"), "{out}");
}

#[test]
fn npy_arrays_train_with_and_without_a_test_pair() {
    let dir = scratch("data", "npy");
    let mut noise = Noise(5);
    let n = 200;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for _ in 0..n {
        let (a, b) = (noise.next() * 2.0 - 1.0, noise.next() * 2.0 - 1.0);
        xs.extend([a, b, noise.next()]);
        ys.push(if a + b > 0.0 { 1.0 } else { 0.0 });
    }
    let x = Tensor::new(vec![n, 3], xs).unwrap();
    let y = Tensor::new(vec![n], ys).unwrap();
    write_npy(&dir.join("x.npy"), &x).unwrap();
    write_npy(&dir.join("y.npy"), &y).unwrap();
    write_npy(
        &dir.join("tx.npy"),
        &x.gather_rows(&(0..40).collect::<Vec<_>>()),
    )
    .unwrap();
    write_npy(
        &dir.join("ty.npy"),
        &y.gather_rows(&(0..40).collect::<Vec<_>>()),
    )
    .unwrap();
    for (name, data) in [
        ("split.nn", r#"npy(x = "x.npy", y = "y.npy", test = 0.25)"#),
        (
            "pair.nn",
            r#"npy(x = "x.npy", y = "y.npy", test_x = "tx.npy", test_y = "ty.npy")"#,
        ),
    ] {
        let file = dir.join(name);
        std::fs::write(
            &file,
            format!(
                "model Sign {{\n    input v: [3]\n    output p = v |> dense(2) |> softmax\n}}\n\ntrain Sign {{\n    data = {data}\n    loss = cross_entropy\n    optimizer = adam(lr = 0.05)\n    batch = 16\n    epochs = 30\n    metrics = [accuracy]\n}}\n"
            ),
        )
        .unwrap();
        let run = dir.join(format!("run-{name}"));
        ok(&nnc(&["train", &s(&file), "--quiet", "--out", &s(&run)]));
        let acc = test_accuracy(&run);
        assert!(acc >= 0.9, "{name}: test accuracy {acc}");
        let w = s(&run.join("weights.safetensors"));
        let out = ok(&nnc(&["eval", &s(&file), "--weights", &w]));
        let samples = if name == "pair.nn" { 40 } else { 50 };
        assert!(
            out.starts_with(&format!("samples {samples}\n")),
            "{name}: {out}"
        );
    }
}

#[test]
fn csv_test_splits_are_explicit() {
    let dir = scratch("data", "csv");
    let mut rows = String::from("a,b,y\n");
    let mut other = String::from("y,b,a\n");
    for i in 0..30 {
        let (a, b) = (i as f32 * 0.1, (i % 7) as f32);
        rows.push_str(&format!("{a},{b},{}\n", 2.0 * a - b));
        if i < 6 {
            other.push_str(&format!("{},{b},{a}\n", 2.0 * a - b));
        }
    }
    std::fs::write(dir.join("d.csv"), rows).unwrap();
    std::fs::write(dir.join("other.csv"), other).unwrap();
    for (test, samples) in [("0.5", 15), ("\"other.csv\"", 6), ("0.2", 6)] {
        let file = dir.join("fit.nn");
        std::fs::write(
            &file,
            format!(
                "model Fit {{\n    input v: [2]\n    output v |> dense(1)\n}}\n\ntrain Fit {{\n    data = csv(\"d.csv\", target = \"y\", test = {test})\n    loss = mse\n    optimizer = sgd(lr = 0.01)\n}}\n"
            ),
        )
        .unwrap();
        let run = dir.join("run");
        ok(&nnc(&[
            "train",
            &s(&file),
            "--quiet",
            "--out",
            &s(&run),
            "--overwrite",
        ]));
        let w = s(&run.join("weights.safetensors"));
        let out = ok(&nnc(&["eval", &s(&file), "--weights", &w]));
        assert!(
            out.starts_with(&format!("samples {samples}\n")),
            "test = {test}: {out}"
        );
    }
}

#[test]
fn bad_data_is_an_error_naming_the_file() {
    let dir = scratch("data", "bad");
    let write = |name: &str, data: &str| {
        let file = dir.join(name);
        std::fs::write(
            &file,
            format!(
                "model M {{\n    input image: [8, 8, 1]\n    output image |> flatten |> dense(2) |> softmax\n}}\n\ntrain M {{\n    data = {data}\n    loss = cross_entropy\n    optimizer = sgd(lr = 0.1)\n}}\n"
            ),
        )
        .unwrap();
        s(&file)
    };
    // Channels other than 1 or 3, a test_x without test_y: located errors from `check`.
    let e = fails(&nnc(&[
        "check",
        &write("c.nn", r#"images("pics", size = 8, channels = 2)"#),
    ]));
    assert!(
        e.contains("`channels` of `images` must be 1 (grey) or 3 (RGB)"),
        "{e}"
    );
    let e = fails(&nnc(&[
        "check",
        &write("n.nn", r#"npy(x = "x.npy", y = "y.npy", test_x = "t.npy")"#),
    ]));
    assert!(e.contains("`test_x` of `npy` needs `test_y` too"), "{e}");
    let e = fails(&nnc(&[
        "check",
        &write("f.nn", r#"csv("d.csv", target = "y", test = 1.5)"#),
    ]));
    assert!(e.contains("a fraction in (0, 1) or a file name"), "{e}");
    // An image that does not decode.
    class_folders(&dir.join("pics"), 3, 1);
    std::fs::write(dir.join("pics/top/broken.png"), "not a png").unwrap();
    let e = fails(&nnc(&[
        "train",
        &write("i.nn", r#"images("pics", size = 8)"#),
        "--quiet",
        "--out",
        &s(&dir.join("r")),
    ]));
    assert!(
        e.contains("broken.png") && e.contains("cannot decode the image"),
        "{e}"
    );
    // Samples and labels of different lengths.
    write_npy(
        &dir.join("x.npy"),
        &Tensor::new(vec![4, 8, 8], vec![0.0; 256]).unwrap(),
    )
    .unwrap();
    write_npy(
        &dir.join("y.npy"),
        &Tensor::new(vec![3], vec![0.0; 3]).unwrap(),
    )
    .unwrap();
    let e = fails(&nnc(&[
        "train",
        &write("x.nn", r#"npy(x = "x.npy", y = "y.npy")"#),
        "--quiet",
        "--out",
        &s(&dir.join("r")),
    ]));
    assert!(e.contains("y.npy") && e.contains("3 labels, but"), "{e}");
}
