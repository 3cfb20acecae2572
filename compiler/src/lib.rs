//! nnc: a compiler for neural-network models written in the `.nn` language.
//!
//! One module per stage, in layers that only point down (`scripts/check-layers`):
//! [`diag`] (diagnostics, spans) → [`syntax`] (AST) → [`sema`] (typed models and training
//! settings) → [`ir`] (graph IR, forward lowering, interpreter) → [`autodiff`] and
//! [`optim`] → [`step`] (training-step graphs) → [`passes`] → [`lower`] (kernel IR,
//! schedules) → [`codegen`] (CPU code, PTX) → [`pipeline`] (the only code that runs the
//! stages in order) → [`driver`] and the `nnc` binary.

pub mod autodiff;
pub mod codegen;
pub mod diag;
pub mod driver;
pub mod export;
pub mod ir;
pub mod lower;
pub mod optim;
pub mod passes;
pub mod pipeline;
pub mod sema;
pub mod step;
pub mod syntax;

use std::path::Path;

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

pub use pipeline::{check_bytes, check_source};
