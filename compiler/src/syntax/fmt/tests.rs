//! Tests of the formatter: exact layouts, comment placement, and the two invariants
//! (idempotence, AST preservation) on the language reference's programs, on nasty cases and
//! on random programs.

use proptest::prelude::*;

use super::format_file;
use crate::syntax::ast::File;
use crate::syntax::{parse_file, print::print_file};

/// The AST of `file` as text with every span removed, followed by its comments (trimmed at
/// the end, as the formatter prints them): equal strings mean equal ASTs modulo spans.
fn ast_without_spans(file: &File) -> String {
    let items = File {
        items: file.items.clone(),
        comments: Vec::new(),
    };
    let printed = print_file(&items);
    let mut out = String::with_capacity(printed.len());
    let mut rest = printed.as_str();
    while let Some(at) = rest.find(" @") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let span_len = after
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(after.len());
        rest = &after[span_len..];
    }
    out.push_str(rest);
    for c in &file.comments {
        out.push_str(c.text.trim_end());
        out.push('\n');
    }
    out
}

fn parse_ok(src: &str) -> File {
    match parse_file(src) {
        Ok(f) => f,
        Err(diags) => panic!(
            "does not parse: {:?}\n--- source ---\n{src}",
            diags.iter().map(|d| d.message.clone()).collect::<Vec<_>>()
        ),
    }
}

/// Formats `src`, checks that the result parses to the same AST and formats to itself, and
/// returns it.
fn check(src: &str) -> String {
    let file = parse_ok(src);
    let once = format_file(&file, src);
    let reparsed = parse_ok(&once);
    assert_eq!(
        ast_without_spans(&file),
        ast_without_spans(&reparsed),
        "formatting changed the AST\n--- source ---\n{src}\n--- formatted ---\n{once}"
    );
    let twice = format_file(&reparsed, &once);
    assert_eq!(
        once, twice,
        "formatting is not idempotent\n--- source ---\n{src}\n--- formatted once ---\n{once}"
    );
    once
}

// The language reference's programs, one copy each in `tests/programs/` (the syntax
// golden test prints them too).
const MNIST: &str = include_str!("../../../../tests/programs/language_mnist.nn");
const LINE: &str = include_str!("../../../../tests/programs/language_line.nn");
const RESIDUAL: &str = include_str!("../../../../tests/programs/language_residual.nn");
const LENET: &str = include_str!("../../../../tests/programs/language_lenet.nn");

#[test]
fn language_reference_programs_round_trip() {
    for src in [MNIST, LINE, RESIDUAL, LENET] {
        check(src);
    }
}

#[test]
fn mnist_example_gets_the_canonical_layout() {
    let expected = r#"# Handwritten digits (MNIST): 784 inputs → 128 → 64 → 10 classes.
model Mnist {
    input image: [28, 28]  # grayscale pixels, batch dimension implicit
    output probs = image
        |> flatten  # 28 × 28 → 784
        |> dense(128) |> relu
        |> dense(64) |> relu
        |> dense(10) |> softmax
}

train Mnist {
    data      = idx("data/mnist-10k", scale = 1 / 255)  # relative to this file
    loss      = cross_entropy
    optimizer = sgd(lr = 0.05, momentum = 0.9)
    batch     = 64
    epochs    = 5
    metrics   = [accuracy, precision, recall]
    seed      = 7
}
"#;
    assert_eq!(check(MNIST), expected);
}

#[test]
fn mnist_example_differs_from_the_reference_only_in_spacing() {
    // Equal once runs of spaces are collapsed and `1/255` gets its spaces: the formatter
    // keeps the textbook line structure of the language reference.
    let squash = |s: &str| {
        s.split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let formatted = check(MNIST);
    assert_eq!(formatted.lines().count(), MNIST.lines().count());
    for (got, want) in formatted.lines().zip(MNIST.lines()) {
        assert_eq!(squash(got), squash(&want.replace("1/255", "1 / 255")));
    }
}

#[test]
fn line_example_gets_blank_line_between_items_and_aligned_settings() {
    let expected = r#"# f(x) = w·x + b, fitted by gradient descent (linear regression).
model Line {
    input x: [1]
    param w: [1, 1] = zeros
    param b: [1] = zeros
    output y = x @ w + b
}

train Line {
    data      = csv("data/line.csv", target = "y")
    loss      = mse
    optimizer = sgd(lr = 0.05)
    epochs    = 200
    metrics   = [mae, mse]
}
"#;
    assert_eq!(check(LINE), expected);
}

#[test]
fn short_pipelines_stay_on_one_line() {
    let out = check(RESIDUAL);
    assert!(
        out.contains("    let h = x |> dense(64) |> relu |> dense(64)\n"),
        "{out}"
    );
    assert!(
        out.contains("    output y = relu(x + h) |> dense(10) |> softmax\n"),
        "{out}"
    );
}

#[test]
fn long_pipeline_breaks_before_every_stage() {
    let src = "model M { input x: [1] output y = x |> some_really_long_layer_name(123456789, alpha = 0.5) |> another_really_long_layer(42) }";
    let out = check(src);
    let expected = "model M {
    input x: [1]
    output y = x
        |> some_really_long_layer_name(123456789, alpha = 0.5)
        |> another_really_long_layer(42)
}
";
    assert_eq!(out, expected);
}

#[test]
fn messy_spacing_is_normalised() {
    let src = "model   M{input x:[2,3,]\n\n\n\n  let   y=-x*2+(x-1)/ 3@x\noutput f( y ,a=[1,2,],b=\"s\",)}train M{batch=1 loss=mse}";
    let expected = "model M {
    input x: [2, 3]

    let y = -x * 2 + (x - 1) / 3 @ x
    output f(y, a = [1, 2], b = \"s\")
}

train M {
    batch = 1
    loss  = mse
}
";
    assert_eq!(check(src), expected);
}

#[test]
fn empty_bodies_and_empty_file() {
    assert_eq!(
        check("model M {   }\ntrain M {\n\n}"),
        "model M {}\n\ntrain M {}\n"
    );
    assert_eq!(check(""), "");
    assert_eq!(check("\n\n  \n"), "");
}

#[test]
fn comments_only_file_keeps_comments_and_blank_lines() {
    let src = "\n\n# one   \n\n\n# two\n# three\n";
    assert_eq!(check(src), "# one\n\n# two\n# three\n");
}

#[test]
fn comments_in_empty_blocks_stay_inside() {
    let src = "model M { # trailing\n}\ntrain M {\n  # own line\n}\n";
    let expected = "model M {  # trailing\n}\n\ntrain M {\n    # own line\n}\n";
    assert_eq!(check(src), expected);
}

#[test]
fn comments_between_and_after_items() {
    let src = "# head\nmodel A { input x: [1] output x } # after A\n# before B\n\n# also before B\nmodel B { input x: [1] output x }\n\n# tail\n";
    let expected = "# head
model A {
    input x: [1]
    output x
}  # after A

# before B

# also before B
model B {
    input x: [1]
    output x
}

# tail
";
    assert_eq!(check(src), expected);
}

#[test]
fn comments_at_statement_boundaries() {
    let src = "model M {\n\n  # first\n  input x: [1] # on x\n\n\n  # before y\n  let y = x\n  output y # last\n  # end of block\n\n}\n";
    let expected = "model M {
    # first
    input x: [1]  # on x

    # before y
    let y = x
    output y  # last
    # end of block
}
";
    assert_eq!(check(src), expected);
}

#[test]
fn comments_inside_expressions_end_their_line() {
    let src = "model M {\n input x: [1]\n output y = f(x, # about x\n   a = 1 # about a\n ) + # plus\n -\n # own line\n 2\n}\n";
    let expected = "model M {
    input x: [1]
    output y = f(x,  # about x
        a = 1        # about a
        ) +          # plus
        -
        # own line
        2
}
";
    assert_eq!(check(src), expected);
}

#[test]
fn comments_before_punctuation_stay_before_it() {
    // Each comment sits just before a token without a span in the AST.
    let src = "model M # a\n{ input x # b\n : [1 # c\n , 2] let y # d\n = x # e\n |> f # f\n output [y # g\n , y] # h\n }";
    let out = check(src);
    for (before, after) in [
        ("# a", "{"),
        ("# b", ":"),
        ("# c", ","),
        ("# d", "="),
        ("# e", "|>"),
        ("# g", ","),
    ] {
        let c = out.find(before).expect("comment kept");
        let t = out[c..].find(after).map(|i| i + c).expect("token kept");
        assert!(
            out[c..t].trim_start_matches(before).trim().is_empty(),
            "{before} before {after} in\n{out}"
        );
    }
}

#[test]
fn a_pipeline_with_a_comment_is_broken() {
    let src = "model M { input x: [1] output y = x |> relu # why relu\n |> softmax }";
    let expected = "model M {
    input x: [1]
    output y = x
        |> relu  # why relu
        |> softmax
}
";
    assert_eq!(check(src), expected);
}

#[test]
fn bare_name_stages_join_the_call_stage_before_them() {
    let src = "model M { input x: [1] output y = x |> relu |> dense(4) |> relu |> tanh |> dense(2) |> dense(3) |> softmax }";
    let expected = "model M {
    input x: [1]
    output y = x
        |> relu
        |> dense(4) |> relu
        |> tanh
        |> dense(2)
        |> dense(3) |> softmax
}
";
    assert_eq!(check(src), expected);
}

#[test]
fn a_comment_keeps_a_bare_name_stage_on_its_own_line() {
    let src = "model M { input x: [1] output y = x |> dense(4) # hidden\n |> relu |> dense(2) |> # why\n softmax |> dense(1)\n # own line\n |> relu }";
    let expected = "model M {
    input x: [1]
    output y = x
        |> dense(4)  # hidden
        |> relu
        |> dense(2)
        |>  # why
        softmax
        |> dense(1)
        # own line
        |> relu
}
";
    assert_eq!(check(src), expected);
}

#[test]
fn a_bare_name_stage_that_would_pass_the_width_starts_a_line() {
    let call = format!("dense({})", "1".repeat(80));
    let src = format!("model M {{ input x: [1] output y = x |> {call} |> relu }}");
    let expected = format!(
        "model M {{\n    input x: [1]\n    output y = x\n        |> {call}\n        |> relu\n}}\n"
    );
    assert_eq!(check(&src), expected);
}

#[test]
fn trailing_comments_on_consecutive_lines_are_aligned() {
    let src = "train M {\n  data = csv(\"a.csv\") # where\n  loss = mse # what\n  optimizer = sgd(lr = 0.1) # how\n\n  epochs = 3 # after a blank line\n  seed = 1 # so a new run\n  # own line\n  batch = 8 # alone\n}\n";
    let expected = "train M {
    data      = csv(\"a.csv\")   # where
    loss      = mse            # what
    optimizer = sgd(lr = 0.1)  # how

    epochs    = 3  # after a blank line
    seed      = 1  # so a new run
    # own line
    batch     = 8  # alone
}
";
    assert_eq!(check(src), expected);
}

#[test]
fn aligned_comments_start_by_column_sixty_unless_the_code_is_longer() {
    let long = format!("csv(\"{}\")", "a".repeat(60));
    let src = format!("train M {{\n  a = 1 # one\n  bb = {long} # long\n  c = 22 # two\n}}\n");
    let out = check(&src);
    let columns: Vec<usize> = out
        .lines()
        .filter_map(|line| line.find('#'))
        .map(|at| at + 1)
        .collect();
    let c = out.lines().nth(3).unwrap_or("");
    assert_eq!(c, "    c  = 22  # two", "{out}");
    assert_eq!(columns[0], columns[2], "{out}");
    assert!(out.contains(&format!("{long}  # long")), "{out}");
}

#[test]
fn comments_on_block_braces_are_not_aligned_with_the_body() {
    let src = "model M { # head\n input x: [1] # in\n output x # out\n} # tail\n";
    let expected = "model M {  # head
    input x: [1]  # in
    output x      # out
}  # tail
";
    assert_eq!(check(src), expected);
}

#[test]
fn nested_pipelines_and_calls_stay_flat() {
    let src = "model M { input x: [4] output y = concat((x |> dense(4) |> relu |> dense(4) |> relu), reshape(transpose(x), [2, 2]), axis = -1) }";
    let out = check(src);
    assert!(
        out.contains("output y = concat((x |> dense(4) |> relu |> dense(4) |> relu), reshape(transpose(x), [2, 2]), axis = -1)"),
        "{out}"
    );
}

#[test]
fn numbers_keep_their_spelling_and_negation_stays() {
    let src = "train M { lr = - 1e-3 a = --2.5E+4 b = 007 c = 0.50 d = 1 - -1 }";
    let expected = "train M {
    lr = -1e-3
    a  = --2.5E+4
    b  = 007
    c  = 0.50
    d  = 1 - -1
}
";
    assert_eq!(check(src), expected);
}

#[test]
fn strings_are_re_escaped() {
    let src = r#"train M { data = csv("a \"quoted\" \\path\\ # not a comment", target = "") }"#;
    let out = check(src);
    assert!(
        out.contains(r#"csv("a \"quoted\" \\path\\ # not a comment", target = "")"#),
        "{out}"
    );
}

#[test]
fn parentheses_are_kept_as_written() {
    let out = check("model M { input x: [1] output ((x + 1)) * (2) - (-(x)) }");
    assert!(out.contains("output ((x + 1)) * (2) - (-(x))\n"), "{out}");
}

#[test]
fn deep_sums_and_long_pipelines_format_without_trouble() {
    let sum = vec!["x"; 150].join(" + ");
    let pipe = vec!["relu"; 150].join(" |> ");
    let src = format!("model M {{ input x: [1] let s = {sum} output x |> {pipe} }}");
    let out = check(&src);
    assert_eq!(out.matches("\n        |> relu").count(), 150, "{out}");
}

#[test]
fn crlf_sources_are_formatted_with_lf() {
    let src = "model M {\r\n  input x: [1] # c\r\n\r\n  output x\r\n}\r\n";
    assert_eq!(
        check(src),
        "model M {\n    input x: [1]  # c\n\n    output x\n}\n"
    );
}

#[test]
fn tabs_and_comment_trailing_spaces_are_cleaned() {
    let src = "model M {\n\tinput x: [1]\t# c \t\n\toutput x\n}\n";
    assert_eq!(
        check(src),
        "model M {\n    input x: [1]  # c\n    output x\n}\n"
    );
}

// ---- random programs ----

/// A tiny deterministic generator (xorshift), seeded by proptest.
struct Writer {
    state: u64,
    out: String,
    /// Half of the programs have comments between tokens, half only whitespace (so that
    /// layout decisions made without comments, like pipeline width, are exercised too).
    comments: bool,
}

const NAMES: &[&str] = &[
    "x", "y", "h", "dense", "relu", "f", "_a1", "softmax", "inputs", "modelx",
];
const NUMBERS: &[&str] = &["0", "1", "42", "0.5", "1e-3", "2.5E+4", "007", "3.25e2"];
const STRINGS: &[&str] = &[
    r#""""#,
    r#""same""#,
    r#""a\"b""#,
    r#""c\\d""#,
    r#""x # y""#,
    r#""é ü""#,
];
const COMMENTS: &[&str] = &[
    "#",
    "# note",
    "## twice",
    "# trailing spaces   ",
    "# ünïcödé → ok",
    "#|> not code",
];

impl Writer {
    fn new(seed: u64) -> Writer {
        Writer {
            state: seed | 1,
            out: String::new(),
            comments: seed.is_multiple_of(2),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % n as u64) as usize
    }

    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[self.below(from.len())]
    }

    /// Whitespace, newlines, blank lines or comments between two tokens; never empty.
    fn gap(&mut self) {
        let choice = self.below(14);
        let choice = if self.comments || !(2..=4).contains(&choice) {
            choice
        } else {
            7
        };
        let gap = match choice {
            0 => "\n".to_string(),
            1 => "\n\n\n".to_string(),
            2 => format!(" {}\n", self.pick(COMMENTS)),
            3 => format!("\n  {}\n", self.pick(COMMENTS)),
            4 => format!("\n\n{}\n\n", self.pick(COMMENTS)),
            5 => "\t".to_string(),
            6 => "\r\n".to_string(),
            _ => " ".to_string(),
        };
        self.out.push_str(&gap);
    }

    fn tok(&mut self, t: &str) {
        self.out.push_str(t);
        self.gap();
    }

    /// A random name as the next token.
    fn name(&mut self) {
        let name = self.pick(NAMES);
        self.tok(name);
    }

    fn file(&mut self) {
        self.gap();
        for _ in 0..self.below(4) {
            if self.below(3) == 0 {
                self.train();
            } else {
                self.model();
            }
        }
    }

    fn model(&mut self) {
        self.tok("model");
        self.name();
        self.tok("{");
        for _ in 0..self.below(6) {
            match self.below(4) {
                0 => {
                    self.tok("input");
                    self.name();
                    self.tok(":");
                    self.shape();
                }
                1 => {
                    self.tok("param");
                    self.name();
                    self.tok(":");
                    self.shape();
                    if self.below(2) == 0 {
                        self.tok("=");
                        self.expr(2);
                    }
                }
                2 => {
                    self.tok("let");
                    self.name();
                    self.tok("=");
                    self.expr(3);
                }
                _ => {
                    self.tok("output");
                    if self.below(2) == 0 {
                        self.name();
                        self.tok("=");
                    }
                    self.expr(3);
                }
            }
        }
        self.tok("}");
    }

    fn train(&mut self) {
        self.tok("train");
        self.name();
        self.tok("{");
        for _ in 0..self.below(5) {
            self.name();
            self.tok("=");
            self.expr(3);
        }
        self.tok("}");
    }

    fn shape(&mut self) {
        self.tok("[");
        let dims = 1 + self.below(3);
        for i in 0..dims {
            if i > 0 {
                self.tok(",");
            }
            let d = self.pick(&["1", "28", "007", "64"]);
            self.tok(d);
        }
        if self.below(4) == 0 {
            self.tok(",");
        }
        self.tok("]");
    }

    /// `sum (|> stage)*`, with long pipelines now and then.
    fn expr(&mut self, depth: usize) {
        self.sum(depth);
        let stages = match self.below(6) {
            0 => 4 + self.below(5),
            1 | 2 => 1 + self.below(3),
            _ => 0,
        };
        for _ in 0..stages {
            self.tok("|>");
            if depth == 0 || self.below(2) == 0 {
                self.name();
            } else {
                self.call(depth - 1);
            }
        }
    }

    fn sum(&mut self, depth: usize) {
        self.product(depth);
        for _ in 0..self.below(3) {
            let op = self.pick(&["+", "-"]);
            self.tok(op);
            self.product(depth);
        }
    }

    fn product(&mut self, depth: usize) {
        self.unary(depth);
        for _ in 0..self.below(3) {
            let op = self.pick(&["*", "/", "@"]);
            self.tok(op);
            self.unary(depth);
        }
    }

    fn unary(&mut self, depth: usize) {
        for _ in 0..self.below(4).saturating_sub(2) {
            self.tok("-");
        }
        self.atom(depth);
    }

    fn atom(&mut self, depth: usize) {
        let choice = if depth == 0 {
            self.below(4)
        } else {
            self.below(7)
        };
        match choice {
            0 => {
                let n = self.pick(NUMBERS);
                self.tok(n);
            }
            1 => {
                let s = self.pick(STRINGS);
                self.tok(s);
            }
            2 => {
                let b = self.pick(&["true", "false"]);
                self.tok(b);
            }
            3 => {
                self.name();
            }
            4 => {
                self.tok("[");
                self.comma_separated(depth - 1, |w, d| w.expr(d));
                self.tok("]");
            }
            5 => self.call(depth - 1),
            _ => {
                self.tok("(");
                self.expr(depth - 1);
                self.tok(")");
            }
        }
    }

    fn call(&mut self, depth: usize) {
        self.name();
        self.tok("(");
        self.comma_separated(depth, |w, d| {
            if w.below(3) == 0 {
                let name = w.pick(NAMES);
                w.tok(name);
                w.tok("=");
            }
            w.expr(d);
        });
        self.tok(")");
    }

    fn comma_separated(&mut self, depth: usize, mut each: impl FnMut(&mut Writer, usize)) {
        let n = self.below(4);
        for i in 0..n {
            if i > 0 {
                self.tok(",");
            }
            each(self, depth);
        }
        if n > 0 && self.below(4) == 0 {
            self.tok(",");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_programs_format_idempotently_and_keep_their_ast(seed in any::<u64>()) {
        let mut w = Writer::new(seed);
        w.file();
        check(&w.out);
    }
}

#[test]
fn short_diff_shows_the_first_differing_region() {
    let old = "a\nb\nc\nd\n";
    let new = "a\nB\nC\nd\n";
    assert_eq!(
        super::short_diff(old, new, 5).as_deref(),
        Some("line 2:\n-b\n-c\n+B\n+C\n")
    );
    assert_eq!(
        super::short_diff("a\nb\nc\n", "a\n", 1).as_deref(),
        Some("line 2:\n-b\n-… (1 more lines)\n")
    );
    assert_eq!(
        super::short_diff("a\r\n", "a\n", 5).as_deref(),
        Some("only line endings or the final newline differ\n")
    );
    assert_eq!(super::short_diff("same", "same", 5), None);
}
