//! The `nnc` binary's contract: exit codes (0 ok, 1 user error, 2 usage error), where
//! diagnostics go, colour control, and that `check` never opens data files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .output()
        .expect("the nnc binary runs")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nnc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("temp file");
    path
}

const VALID: &str = "model M {\n    input x: [4]\n    output y = x |> dense(2) |> softmax\n}\n\
train M {\n    data = idx(\"no/such/folder\")\n    loss = cross_entropy\n    optimizer = sgd(lr = 0.1)\n}\n";

#[test]
fn check_accepts_a_valid_file_without_opening_its_data() {
    let path = temp_file("valid.nn", VALID);
    let out = nnc(&["check", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn check_reports_errors_with_location_and_exits_1() {
    let path = temp_file(
        "bad.nn",
        "model M {\n    input x: [4]\n    output y = x |> dens(2)\n}\n",
    );
    let out = nnc(&["check", "--color", "never", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.nn:3:21"), "{err}");
    assert!(err.contains("did you mean `dense`?"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no colour with --color never: {err}"
    );
}

#[test]
fn color_always_colours_diagnostics() {
    let path = temp_file("bad2.nn", "model M {\n    input 1x: [4]\n}\n");
    let out = nnc(&["check", "--color", "always", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
}

#[test]
fn check_reports_every_failing_file() {
    let good = temp_file("good.nn", VALID);
    let bad1 = temp_file("bad3.nn", "model {\n}\n");
    let bad2 = temp_file("bad4.nn", "model M { input x: [4] output y = z }\n");
    let out = nnc(&[
        "check",
        bad1.to_str().unwrap(),
        good.to_str().unwrap(),
        bad2.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad3.nn") && err.contains("bad4.nn"), "{err}");
}

#[test]
fn missing_file_is_a_user_error() {
    let out = nnc(&["check", "/no/such/file.nn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.nn"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(nnc(&[]).status.code(), Some(2));
    assert_eq!(nnc(&["check"]).status.code(), Some(2));
    assert_eq!(nnc(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        nnc(&["check", "--color", "purple", "x.nn"]).status.code(),
        Some(2)
    );
}

#[test]
fn every_example_checks() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let out = nnc(&["check", "--color", "never", f.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_example_is_in_canonical_format() {
    let mut args = vec!["fmt".to_string(), "--check".to_string()];
    for e in std::fs::read_dir(root().join("examples")).expect("examples/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "nn") {
            args.push(p.display().to_string());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = nnc(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
