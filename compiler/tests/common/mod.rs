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
