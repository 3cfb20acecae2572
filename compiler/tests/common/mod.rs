//! Helpers shared by the command-line tests: running the `nnc` binary, asserting its exit
//! status, scratch folders and paths of the repository's examples.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `nnc` binary with `args`.
pub fn nnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .output()
        .expect("the nnc binary runs")
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts success and returns stderr (notes and warnings).
pub fn ok_stderr(o: &Output) -> String {
    ok(o);
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit code 1 (a user error) and returns stderr.
pub fn fails(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The path of `examples/<name>`.
pub fn example(name: &str) -> String {
    s(&root().join("examples").join(name))
}

/// A fresh, empty folder under the temporary directory, unique to this process.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nnc-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A path as an argument.
pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `nnc train FILE --quiet --out OUT` with `extra` arguments.
pub fn train(file: &str, out: &Path, extra: &[&str]) -> Output {
    let out = s(out);
    let mut args = vec!["train", file, "--quiet", "--out", &out];
    args.extend_from_slice(extra);
    nnc(&args)
}

/// `test_accuracy` of the last row of `metrics.jsonl` in the output folder `out`.
pub fn test_accuracy(out: &Path) -> f64 {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    row["test_accuracy"].as_f64().unwrap()
}

/// The largest difference between the same-named tensors of two weights files.
pub fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let (wa, wb) = (
        nnc_runtime::checkpoint::read_weights(a).unwrap(),
        nnc_runtime::checkpoint::read_weights(b).unwrap(),
    );
    let mut worst = 0.0f32;
    for (name, t) in &wa {
        let u = &wb.iter().find(|(n, _)| n == name).unwrap().1;
        for (x, y) in t.data.iter().zip(&u.data) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}
