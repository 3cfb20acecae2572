//! nnc: a compiler for neural-network models written in the `.nn` language.
//!
//! The pipeline, one module per stage:
//! source → [`syntax`] (AST) → [`sema`] (typed models and training settings) → graph IR
//! → training-step graph → passes → kernels → code. This file is the straight-line driver.

pub mod autodiff;
pub mod codegen;
pub mod diag;
pub mod driver;
pub mod ir;
pub mod lower;
pub mod optim;
pub mod passes;
pub mod sema;
pub mod syntax;

use std::path::Path;

use diag::{Code, Diagnostic};

/// A source file read from disk (or given by a test).
#[derive(Clone, Debug)]
pub struct Source {
    /// The path as the user wrote it, used in diagnostics.
    pub path: String,
    pub text: String,
}

impl Source {
    /// Reads a file; invalid UTF-8 becomes a diagnostic pointing at the first bad byte.
    pub fn read(path: &Path) -> Result<Source, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Ok(Source::from_bytes(&path.display().to_string(), &bytes))
    }

    /// Decodes bytes lossily; [`check_bytes`] reports the invalid UTF-8 itself.
    pub fn from_bytes(path: &str, bytes: &[u8]) -> Source {
        Source {
            path: path.to_string(),
            text: String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

/// Parses and checks a source text. `base_dir` resolves relative data paths.
pub fn check_source(text: &str, base_dir: &Path) -> Result<sema::typed::Program, Vec<Diagnostic>> {
    let file = syntax::parse_file(text)?;
    sema::check_file(&file, base_dir)
}

/// Checks raw bytes: invalid UTF-8 is reported as a diagnostic at the first invalid byte
/// (in the lossily decoded text), never a panic.
pub fn check_bytes(bytes: &[u8], base_dir: &Path) -> Result<sema::typed::Program, Vec<Diagnostic>> {
    match std::str::from_utf8(bytes) {
        Ok(text) => check_source(text, base_dir),
        Err(e) => {
            let valid = e.valid_up_to();
            Err(vec![Diagnostic::new(
                Code::InvalidUtf8,
                "file is not valid UTF-8",
            )
            .label(
                syntax::ast::Span::new(valid, valid + 1),
                format!("invalid byte at offset {valid}"),
            )
            .help("save the file as UTF-8")])
        }
    }
}
