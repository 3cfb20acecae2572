//! `nnc fmt` end to end: rewriting in place, `--check`, and files with syntax errors.

use std::path::PathBuf;
use std::process::Command;

/// A fresh folder for one test, under the system temporary folder.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nnc-fmt-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

fn nnc(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["--color", "never"])
        .args(args)
        .output()
        .expect("run nnc");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

const MESSY: &str = "model M {\n  input  x: [1]   # c\n  output y = x|>relu\n}\n";
const CANONICAL: &str = "model M {\n    input x: [1]  # c\n    output y = x |> relu\n}\n";

#[test]
fn fmt_rewrites_files_in_place_and_then_check_passes() {
    let dir = scratch("rewrite");
    let file = dir.join("m.nn");
    std::fs::write(&file, MESSY).unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(nnc(&["fmt", path]).0, 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), CANONICAL);
    assert_eq!(nnc(&["fmt", "--check", path]).0, 0);
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(leftovers, 1, "the temporary file is gone");
}

#[test]
fn fmt_check_reports_unformatted_files_without_touching_them() {
    let dir = scratch("check");
    let messy = dir.join("messy.nn");
    let clean = dir.join("clean.nn");
    std::fs::write(&messy, MESSY).unwrap();
    std::fs::write(&clean, CANONICAL).unwrap();
    let (code, out) = nnc(&[
        "fmt",
        "--check",
        clean.to_str().unwrap(),
        messy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("messy.nn"), "{out}");
    assert!(!out.contains("clean.nn"), "{out}");
    assert!(out.contains("+    output y = x |> relu"), "{out}");
    assert_eq!(std::fs::read_to_string(&messy).unwrap(), MESSY);
}

#[test]
fn fmt_leaves_files_with_syntax_errors_alone_and_fails() {
    let dir = scratch("syntax");
    let bad = dir.join("bad.nn");
    let messy = dir.join("messy.nn");
    let broken = "model M {\n  input x [1]\n}\n";
    std::fs::write(&bad, broken).unwrap();
    std::fs::write(&messy, MESSY).unwrap();
    let (code, out) = nnc(&["fmt", bad.to_str().unwrap(), messy.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("bad.nn:2:"), "{out}");
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), broken);
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap(),
        CANONICAL,
        "other files are still formatted"
    );
}

#[cfg(unix)]
#[test]
fn fmt_through_a_symbolic_link_rewrites_the_target_and_keeps_the_link() {
    let dir = scratch("symlink");
    let real = dir.join("real.nn");
    let link = dir.join("link.nn");
    std::fs::write(&real, MESSY).unwrap();
    std::os::unix::fs::symlink("real.nn", &link).unwrap();
    assert_eq!(nnc(&["fmt", link.to_str().unwrap()]).0, 0);
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is still a link"
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), CANONICAL);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "no leftovers");
}

#[cfg(unix)]
#[test]
fn fmt_keeps_hard_links_to_the_same_file() {
    let dir = scratch("hardlink");
    let a = dir.join("a.nn");
    let b = dir.join("b.nn");
    std::fs::write(&a, MESSY).unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    assert_eq!(nnc(&["fmt", a.to_str().unwrap()]).0, 0);
    assert_eq!(std::fs::read_to_string(&a).unwrap(), CANONICAL);
    assert_eq!(
        std::fs::read_to_string(&b).unwrap(),
        CANONICAL,
        "the other name sees the formatted file"
    );
}
