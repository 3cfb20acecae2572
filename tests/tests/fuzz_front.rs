//! A deterministic, grammar-aware fuzzer of the front end and the compiler behind it.
//!
//! Each case starts from one of the repository's programs (`examples/`, `tests/golden/`,
//! `tests/programs/`), cuts it into tokens and applies a few mutations: deleting,
//! duplicating, swapping and inserting tokens (keywords, layer and setting names,
//! punctuation), replacing numbers by extreme ones (huge, negative, zero, tiny, 1e308,
//! 99999999999999999999), wrapping a token in deep nesting, repeating a line many
//! times. The mutated text then goes through everything `nnc check`, `nnc fmt` and
//! `nnc build --emit kernels` run: parse, check, diagnostics rendering, formatting, the
//! step graphs and their passes, fusion and kernel lowering. No stage may panic, and the
//! cases run on a thread with the 8 MiB stack the `nnc` binary's main thread has, so a
//! stack overflow aborts the test.
//!
//! `NNC_FUZZ_CASES` sets the number of cases (default [`DEFAULT_CASES`], sized to take well
//! under a minute in a debug build); `NNC_FUZZ_SEED` the first seed. A failure prints the
//! case's seed and source, so it can be rerun alone with `NNC_FUZZ_CASES=1`;
//! `NNC_FUZZ_PRINT=1` prints every case's source.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use nnc::diag::{render_all, ColorChoice};

const DEFAULT_CASES: u64 = 3000;

/// The seeded generator: xorshift64*, enough for choosing mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Tokens worth inserting: the grammar's keywords and punctuation and the names the
/// registry knows, so mutations reach the checks behind the parser.
const VOCABULARY: &[&str] = &[
    "model",
    "train",
    "input",
    "param",
    "let",
    "output",
    "true",
    "false",
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
    "\n",
    "x",
    "y",
    "M",
    "dense",
    "conv2d",
    "max_pool",
    "avg_pool",
    "flatten",
    "relu",
    "sigmoid",
    "tanh",
    "gelu",
    "softmax",
    "softplus",
    "leaky_relu",
    "dropout",
    "batch_norm",
    "reshape",
    "transpose",
    "concat",
    "sum",
    "mean",
    "max",
    "exp",
    "log",
    "sqrt",
    "abs",
    "square",
    "axis",
    "units",
    "rate",
    "data",
    "loss",
    "optimizer",
    "batch",
    "epochs",
    "metrics",
    "seed",
    "shuffle",
    "freeze",
    "init",
    "validation",
    "early_stopping",
    "schedule",
    "clip_norm",
    "clip_value",
    "weight_decay",
    "label_smoothing",
    "checkpoint_every",
    "cross_entropy",
    "binary_cross_entropy",
    "mse",
    "mae",
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "lr",
    "momentum",
    "accuracy",
    "f1",
    "csv",
    "idx",
    "target",
    "zeros",
    "ones",
    "glorot",
    "he",
    "uniform",
    "\"s\"",
    "\"\"",
    "# c\n",
];

/// Numbers that stress literal parsing, shape arithmetic and setting checks.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-0",
    "0.0",
    "0.5",
    "1e-45",
    "1e-320",
    "1e308",
    "1e309",
    "4294967296",
    "4294967297",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "65536",
    "1000000",
    "3.4e38",
    "1.0e-7",
    "1e",
    "1.",
    ".5",
    "nan",
    "inf",
    "-inf",
    "NaN",
];

/// Splits a program into tokens; whitespace runs are tokens too, so joining gives the text.
fn tokenize(src: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        let mut token = String::from(c);
        let same_kind = |a: char, b: char| {
            (a.is_alphanumeric() || a == '_' || a == '.')
                && (b.is_alphanumeric() || b == '_' || b == '.')
                || a.is_whitespace() && b.is_whitespace()
        };
        if c == '"' {
            for d in chars.by_ref() {
                token.push(d);
                if d == '"' {
                    break;
                }
            }
        } else if c == '#' {
            while let Some(&d) = chars.peek() {
                if d == '\n' {
                    break;
                }
                token.push(d);
                chars.next();
            }
        } else if c == '|' && chars.peek() == Some(&'>') {
            token.push('>');
            chars.next();
        } else {
            while let Some(&d) = chars.peek() {
                if !same_kind(c, d) {
                    break;
                }
                token.push(d);
                chars.next();
            }
        }
        tokens.push(token);
    }
    tokens
}

/// Applies one to four mutations to a token list (mostly one, so that many cases still
/// check and reach the compiler).
fn mutate(tokens: &mut Vec<String>, rng: &mut Rng) {
    let count = [1, 1, 1, 1, 2, 2, 3, 4][rng.below(8)];
    for _ in 0..count {
        if tokens.is_empty() {
            tokens.push(rng.pick(VOCABULARY).to_string());
        }
        let at = rng.below(tokens.len());
        match rng.below(10) {
            0 => {
                tokens.remove(at);
            }
            1 => {
                let t = tokens[at].clone();
                tokens.insert(at, t);
            }
            2 => {
                let other = rng.below(tokens.len());
                tokens.swap(at, other);
            }
            3 | 4 => tokens.insert(at, format!(" {} ", rng.pick(VOCABULARY))),
            5 | 6 => {
                // Replace a number (or, failing that, any token) by an extreme one.
                let numbers: Vec<usize> = (0..tokens.len())
                    .filter(|&i| tokens[i].starts_with(|c: char| c.is_ascii_digit()))
                    .collect();
                let i = if numbers.is_empty() {
                    at
                } else {
                    numbers[rng.below(numbers.len())]
                };
                tokens[i] = rng.pick(NUMBERS).to_string();
            }
            7 => {
                // Deep nesting around one token: sometimes past the limits, sometimes not.
                let depth = [3, 40, 63, 64, 65, 199, 201, 1000, 20_000][rng.below(9)];
                let (open, close) =
                    [("(", ")"), ("[", "]"), ("relu(", ")"), ("-", "")][rng.below(4)];
                let t = tokens[at].clone();
                tokens[at] = format!("{}{t}{}", open.repeat(depth), close.repeat(depth));
            }
            8 => {
                // Repeat the line holding the token (long let chains, duplicate settings).
                let start = (0..at)
                    .rev()
                    .find(|&i| tokens[i].contains('\n'))
                    .map_or(0, |i| i + 1);
                let end = (at..tokens.len())
                    .find(|&i| tokens[i].contains('\n'))
                    .unwrap_or(tokens.len());
                let line: Vec<String> = tokens[start..end].to_vec();
                let times = [2, 10, 300][rng.below(3)];
                for _ in 0..times {
                    tokens.splice(end..end, line.iter().cloned().chain(["\n".to_string()]));
                }
            }
            _ => {
                // Truncate: programs cut off anywhere.
                tokens.truncate(at);
            }
        }
    }
}

/// The fuzzer's starting programs: every `.nn` under `examples/` and `tests/`.
fn corpus(root: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![
        root.join("examples"),
        root.join("tests/golden"),
        root.join("tests/programs"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "nn") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    files.push((path, text));
                }
            }
        }
    }
    files.sort();
    files
}

/// What one case reached.
#[derive(Default)]
struct Tally {
    cases: u64,
    checked: u64,
    compiled: u64,
    /// Errors of the compiler on checked programs (internal errors, not panics).
    compile_errors: Vec<String>,
}

/// Runs one source through every front-end stage and, when it checks, the compiler up to
/// kernel IR. Panics propagate to the caller.
fn run_case(src: &str, base_dir: &Path, tally: &mut Tally) {
    let result = nnc::check_bytes(src.as_bytes(), base_dir);
    if let Ok(file) = nnc::syntax::parse_file(src) {
        let formatted = nnc::syntax::fmt::format_file(&file, src);
        let _ = nnc::syntax::parse_file(&formatted);
        let _ = nnc::syntax::print::print_file(&file);
    }
    match result {
        Err(diags) => {
            assert!(!diags.is_empty(), "an error carries a diagnostic");
            let text = render_all(&diags, "fuzz.nn", src, ColorChoice::Never);
            assert!(
                text.contains("nnc::E"),
                "diagnostics name their code:\n{text}"
            );
        }
        Ok(program) => {
            tally.checked += 1;
            // Shape checks bound element counts, not memory: skip the compile of programs
            // whose batch would make lowering's size arithmetic huge but valid.
            if program.trains.iter().all(|t| t.batch <= 4096) {
                match nnc::pipeline::compile_program(&program, None) {
                    Ok(_) => tally.compiled += 1,
                    Err(e) => tally.compile_errors.push(e),
                }
            }
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mutated_programs_never_crash_the_compiler() {
    let cases = env_u64("NNC_FUZZ_CASES", DEFAULT_CASES);
    let first_seed = env_u64("NNC_FUZZ_SEED", 1);
    let root = nnc_tests::workspace_root();
    let corpus = corpus(&root);
    assert!(corpus.len() > 20, "found the programs to start from");
    let print_sources = std::env::var_os("NNC_FUZZ_PRINT").is_some();
    let started = std::time::Instant::now();
    // The `nnc` binary runs on the main thread's 8 MiB stack; so do the cases.
    let tally = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let mut tally = Tally::default();
            for seed in first_seed..first_seed + cases {
                let mut rng = Rng::new(seed);
                let (path, text) = &corpus[rng.below(corpus.len())];
                let mut tokens = tokenize(text);
                mutate(&mut tokens, &mut rng);
                let src = tokens.concat();
                if print_sources {
                    println!("--- case {seed} ---\n{src}");
                }
                let base = path.parent().unwrap_or(Path::new("."));
                let outcome = catch_unwind(AssertUnwindSafe(|| run_case(&src, base, &mut tally)));
                if let Err(panic) = outcome {
                    let why = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let shown: String = src.chars().take(4000).collect();
                    panic!(
                        "case {seed} (from {}) panicked: {why}\n--- source (rerun: \
                         NNC_FUZZ_SEED={seed} NNC_FUZZ_CASES=1) ---\n{shown}",
                        path.display()
                    );
                }
                tally.cases += 1;
            }
            tally
        })
        .expect("the fuzzing thread starts")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    println!(
        "fuzzed {} cases from seed {first_seed} in {:.1} s: {} checked, {} compiled to kernels",
        tally.cases,
        started.elapsed().as_secs_f64(),
        tally.checked,
        tally.compiled
    );
    for e in &tally.compile_errors {
        println!("compile error of a checked program: {e}");
    }
    assert_eq!(tally.cases, cases);
}

#[test]
fn the_tokenizer_keeps_the_text() {
    for (_, text) in corpus(&nnc_tests::workspace_root()) {
        assert_eq!(tokenize(&text).concat(), text);
    }
}
