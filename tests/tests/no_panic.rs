//! `check` never panics: on random bytes, random token sequences, and pathological inputs
//! it returns `Ok` or diagnostics. Diagnostics must also render without panicking.

use std::path::Path;

use nnc::diag::{render_all, ColorChoice};
use proptest::prelude::*;

fn check_and_render(bytes: &[u8]) -> Result<(), Vec<nnc::diag::Diagnostic>> {
    let result = nnc::check_bytes(bytes, Path::new("."));
    if let Err(diags) = &result {
        assert!(
            !diags.is_empty(),
            "an error result carries at least one diagnostic"
        );
        let text = String::from_utf8_lossy(bytes);
        let rendered = render_all(diags, "fuzz.nn", &text, ColorChoice::Never);
        assert!(
            rendered.contains("nnc::E"),
            "rendered diagnostics name their code"
        );
    }
    result.map(|_| ())
}

const TOKENS: &[&str] = &[
    "model",
    "train",
    "input",
    "param",
    "let",
    "output",
    "true",
    "false",
    "M",
    "x",
    "y",
    "dense",
    "relu",
    "softmax",
    "conv2d",
    "flatten",
    "max_pool",
    "sum",
    "reshape",
    "concat",
    "data",
    "loss",
    "optimizer",
    "sgd",
    "lr",
    "idx",
    "csv",
    "batch",
    "epochs",
    "metrics",
    "cross_entropy",
    "mse",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    "=",
    "+",
    "-",
    "*",
    "/",
    "@",
    "|>",
    "0",
    "1",
    "10",
    "28",
    "1e-3",
    "0.5",
    "\"s\"",
    "# c\n",
    "\n",
    "axis",
    "99999999999999999999999",
    "-1",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = check_and_render(&bytes);
    }

    #[test]
    fn random_token_sequences_never_panic(
        picks in proptest::collection::vec(0..TOKENS.len(), 0..80)
    ) {
        let src: Vec<&str> = picks.iter().map(|&i| TOKENS[i]).collect();
        let _ = check_and_render(src.join(" ").as_bytes());
    }

    #[test]
    fn mutated_valid_programs_never_panic(
        cut in 0usize..400, insert in 0..TOKENS.len(), at in 0usize..400
    ) {
        let mut src = VALID.to_string();
        let at = at.min(src.len());
        src.insert_str(at, TOKENS[insert]);
        let cut = cut.min(src.len());
        let _ = check_and_render(&src.as_bytes()[..cut]);
        let _ = check_and_render(src.as_bytes());
    }
}

const VALID: &str = "model Mnist {
    input image: [28, 28]
    output probs = image |> flatten |> dense(128) |> relu |> dense(10) |> softmax
}
train Mnist {
    data = idx(\"data/mnist-10k\", scale = 1/255)
    loss = cross_entropy
    optimizer = sgd(lr = 0.05, momentum = 0.9)
    metrics = [accuracy]
}
";

#[test]
fn empty_file_is_a_diagnostic() {
    let diags = check_and_render(b"").expect_err("an empty file defines no model");
    assert_eq!(diags[0].code, nnc::diag::Code::NoModel);
}

#[test]
fn valid_program_checks() {
    assert!(check_and_render(VALID.as_bytes()).is_ok());
}

#[test]
fn deep_parentheses_give_a_depth_error() {
    let src = format!(
        "model M {{ input x: [1] output y = {}x{} }}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let diags = check_and_render(src.as_bytes()).expect_err("too deep");
    assert_eq!(diags[0].code, nnc::diag::Code::TooDeep);
}

#[test]
fn deep_unclosed_brackets_give_a_depth_error() {
    let src = "[".repeat(100_000);
    let diags = check_and_render(src.as_bytes()).expect_err("too deep");
    assert_eq!(diags[0].code, nnc::diag::Code::TooDeep);
}

#[test]
fn nesting_just_under_the_limit_parses() {
    let n = nnc::syntax::MAX_NESTING - 2;
    let src = format!(
        "model M {{ input x: [1] output y = {}x{} }}",
        "(".repeat(n),
        ")".repeat(n)
    );
    assert!(nnc::syntax::parse_file(&src).is_ok());
}

#[test]
fn long_operator_chains_give_a_depth_error() {
    let src = format!(
        "model M {{ input x: [1] output y = x{} }}",
        " + x".repeat(100_000)
    );
    let diags = check_and_render(src.as_bytes()).expect_err("too deep");
    assert_eq!(diags[0].code, nnc::diag::Code::TooDeep);
}

#[test]
fn long_unary_minus_chains_give_a_depth_error() {
    let src = format!(
        "model M {{ input x: [1] output y = {}x }}",
        "-".repeat(100_000)
    );
    let diags = check_and_render(src.as_bytes()).expect_err("too deep");
    assert_eq!(diags[0].code, nnc::diag::Code::TooDeep);
}

#[test]
fn long_pipelines_give_a_depth_error() {
    let src = format!(
        "model M {{ input x: [1] output y = x{} }}",
        " |> relu".repeat(50_000)
    );
    let diags = check_and_render(src.as_bytes()).expect_err("too deep");
    assert_eq!(diags[0].code, nnc::diag::Code::TooDeep);
}

#[test]
fn invalid_utf8_is_a_diagnostic() {
    let diags = check_and_render(b"model M {\xff\xfe}").expect_err("invalid utf-8");
    assert_eq!(diags[0].code, nnc::diag::Code::InvalidUtf8);
}

#[test]
fn overflowing_integer_is_a_diagnostic() {
    let diags = check_and_render(b"model M { input x: [184467440737095516160] output y = x }")
        .expect_err("overflow");
    assert_eq!(diags[0].code, nnc::diag::Code::IntegerTooLarge);
}
