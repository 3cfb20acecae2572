//! Programs at and past the front end's limits, run through the `nnc` binary on its
//! default main-thread stack: generated deep and long programs, empty files, and sources
//! with control characters or huge names. Each must end with exit status 0 or 1 and, on
//! 1, a diagnostic with a code, a location and a hint; never a crash.

mod common;

use std::path::PathBuf;

use common::{fails, nnc, ok, s, scratch};

/// Writes `text` to a fresh file `name` and returns its path.
fn source(name: &str, text: &str) -> PathBuf {
    let path = scratch("limits", name).join(format!("{name}.nn"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A training block for the model `M` whose data is never opened by `check` or `build`.
const TRAIN_M: &str = "train M {\n    data = csv(\"d.csv\", target = \"label\")\n    \
loss = cross_entropy\n    optimizer = sgd(lr = 0.1)\n    batch = 4\n    epochs = 1\n}\n";

/// A model `M` over an input `x: [4]` whose output is `output` after `lets`.
fn model(lets: &str, output: &str) -> String {
    format!("model M {{\n    input x: [4]\n{lets}    output y = {output}\n}}\n{TRAIN_M}")
}

/// `nnc check`, `nnc build --emit kernels` and `nnc fmt` (in place, last) on one file.
fn check_build_fmt(path: &std::path::Path) -> [std::process::Output; 3] {
    let p = s(path);
    [
        nnc(&["check", "--color", "never", &p]),
        nnc(&["build", "--color", "never", "--emit", "kernels", &p]),
        nnc(&["fmt", "--color", "never", &p]),
    ]
}

#[test]
fn a_chain_of_five_thousand_lets_checks_builds_and_formats() {
    let mut lets = String::from("    let a1 = x\n");
    for i in 2..=5000 {
        lets += &format!("    let a{i} = a{} + 1\n", i - 1);
    }
    let path = source("let_chain", &model(&lets, "a5000 |> dense(2) |> softmax"));
    for out in check_build_fmt(&path) {
        ok(&out);
    }
}

#[test]
fn a_chain_of_lets_of_different_ops_builds() {
    let mut lets = String::from("    let a1 = x\n");
    for i in 2..=3000 {
        let p = i - 1;
        lets += &format!("    let a{i} = tanh(a{p}) * 0.5 + a{p}\n");
    }
    let path = source("mixed_chain", &model(&lets, "a3000 |> dense(2) |> softmax"));
    for out in check_build_fmt(&path) {
        ok(&out);
    }
}

/// Asserts the too-deep diagnostic: code, location in the output line, hint.
fn assert_too_deep(out: &std::process::Output, file: &str) {
    let err = fails(out);
    assert!(err.contains("nnc::E0105"), "{err}");
    assert!(err.contains(&format!("{file}.nn:3:")), "located: {err}");
    assert!(err.contains("help:"), "{err}");
}

#[test]
fn a_hundred_thousand_parentheses_are_a_located_error() {
    let n = 100_000;
    let value = format!("{}x{}", "(".repeat(n), ")".repeat(n));
    let path = source("parens", &model("", &value));
    for out in check_build_fmt(&path) {
        assert_too_deep(&out, "parens");
    }
}

#[test]
fn a_hundred_thousand_nested_calls_are_a_located_error() {
    let n = 100_000;
    let value = format!("{}x{}", "relu(".repeat(n), ")".repeat(n));
    let path = source("calls", &model("", &value));
    for out in check_build_fmt(&path) {
        assert_too_deep(&out, "calls");
    }
}

#[test]
fn a_hundred_thousand_term_sum_is_a_located_error() {
    let value = vec!["x"; 100_000].join(" + ");
    let path = source("sum", &model("", &value));
    for out in check_build_fmt(&path) {
        assert_too_deep(&out, "sum");
    }
}

#[test]
fn sums_and_pipelines_just_under_the_depth_limit_build() {
    let depth = nnc::syntax::MAX_EXPR_DEPTH - 10;
    let sum = vec!["x"; depth].join(" + ");
    let layers = format!("x{} |> dense(2) |> softmax", " |> dense(4)".repeat(depth));
    for (name, value) in [
        ("long_sum", format!("{sum} |> dense(2)")),
        ("layers", layers),
    ] {
        let path = source(name, &model("", &value));
        for out in check_build_fmt(&path) {
            ok(&out);
        }
    }
}

#[test]
fn a_concat_of_thousands_of_tensors_builds() {
    let value = format!(
        "concat({}) |> dense(2) |> softmax",
        vec!["x"; 3000].join(", ")
    );
    let path = source("concat", &model("", &value));
    for out in check_build_fmt(&path) {
        ok(&out);
    }
}

#[test]
fn an_empty_or_comment_only_file_is_an_error_for_check_and_build() {
    for (name, text) in [("empty", ""), ("comments", "# a model, some day\n\n")] {
        let path = source(name, text);
        for cmd in ["check", "build"] {
            let out = nnc(&[cmd, "--color", "never", &s(&path)]);
            let err = fails(&out);
            assert!(err.contains("nnc::E0214"), "{cmd} {name}: {err}");
            assert!(err.contains("defines no model"), "{err}");
            assert!(err.contains(&format!("{name}.nn:1:1")), "located: {err}");
            assert!(err.contains("help: a minimal model"), "{err}");
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn fmt_leaves_an_empty_or_comment_only_file_as_it_is() {
    // Formatting is about layout, not meaning: such a file is syntactically fine.
    for (name, text) in [("fmt_empty", ""), ("fmt_comments", "# notes\n")] {
        let path = source(name, text);
        ok(&nnc(&["fmt", "--check", &s(&path)]));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}

/// Asserts that `text` holds no control character but newlines.
fn assert_no_control_characters(text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(bad.is_empty(), "control characters {bad:?} in:\n{text}");
}

#[test]
fn control_characters_in_the_source_are_shown_escaped() {
    let path = source(
        "control",
        "model M {\n    input x: [4]\n    output y = x |> re\u{1b}[2Jlu\0\n}\n",
    );
    let err = fails(&nnc(&["check", "--color", "never", &s(&path)]));
    assert_no_control_characters(&err);
    assert!(err.contains("nnc::E0109"), "{err}");
    assert!(err.contains("unexpected character `\\u{1b}`"), "{err}");
    assert!(err.contains("control.nn:3:23"), "{err}");
    // The source line shows a visible stand-in and keeps the caret under it.
    let line = err.lines().find(|l| l.contains("re␛[2Jlu␀")).expect(&err);
    let caret = err.lines().find(|l| l.contains('┬')).expect(&err);
    assert_eq!(
        line.chars().position(|c| c == '␛'),
        caret.chars().position(|c| c == '┬'),
        "{err}"
    );
}

#[test]
fn a_control_character_in_the_file_name_is_shown_escaped() {
    let dir = scratch("limits", "control_name");
    let path = dir.join("bad\u{1b}]0;title\u{7}.nn");
    std::fs::write(&path, "model M {\n    input x: [4]\n    output y = z\n}\n").unwrap();
    let err = fails(&nnc(&["check", "--color", "never", &s(&path)]));
    assert_no_control_characters(&err);
    assert!(err.contains("bad\\u{1b}]0;title\\u{7}.nn:3:16"), "{err}");
}

#[test]
fn a_huge_name_or_string_is_cut_in_diagnostics() {
    let name = "n".repeat(20_000);
    let text = format!("model M {{\n    input x: [4]\n    output y = {name}\n}}\n");
    let err = fails(&nnc(&[
        "check",
        "--color",
        "never",
        &s(&source("huge_name", &text)),
    ]));
    assert!(err.contains("nnc::E0202"), "{err}");
    assert!(err.contains("…` (20000 characters)"), "{err}");
    assert!(err.len() < 1000, "{} bytes of diagnostics", err.len());

    let loss = format!("{}\u{1b}", "q".repeat(5000));
    let text = format!(
        "model M {{\n    input x: [4]\n    output y = x |> dense(2) |> softmax\n}}\n\
         train M {{\n    data = csv(\"d.csv\", target = \"y\")\n    loss = \"{loss}\"\n    \
         optimizer = sgd(lr = 0.1)\n}}\n"
    );
    let err = fails(&nnc(&[
        "check",
        "--color",
        "never",
        &s(&source("huge_string", &text)),
    ]));
    assert!(err.contains("nnc::E0207"), "{err}");
    assert!(err.contains("… (5008 characters)"), "{err}");
    assert_no_control_characters(&err);
    assert!(err.len() < 2000, "{} bytes of diagnostics", err.len());
}

/// Found by the front-end fuzzer: an elementwise function of the input, reshaped into a
/// `dense`, was recomputed inline while the matrix product read it through a view, so
/// it had no buffer ("matrix operand has no buffer").
#[test]
fn an_elementwise_input_reshaped_into_a_dense_layer_builds() {
    for body in ["x * 2 |> reshape([6])", "x |> relu |> flatten"] {
        let text = format!(
            "model M {{\n    input x: [2, 3]\n    output y = {body} |> dense(4)\n}}\n\
             train M {{\n    data = csv(\"d.csv\", target = \"t\")\n    loss = mse\n    \
             optimizer = sgd(lr = 0.1)\n}}\n"
        );
        ok(&nnc(&["build", &s(&source("reshaped_input", &text))]));
    }
}
