//! Semantic analysis: names, arguments (against the op registry), shapes, and training
//! settings. Turns an AST into a [`typed::Program`] or a list of diagnostics.

pub mod typed;

use std::path::Path;

use crate::diag::Diagnostic;
use crate::syntax::ast::File;
use typed::Program;

/// Checks a parsed file. `base_dir` is the folder of the file, against which data paths
/// are resolved (the files are not opened).
pub fn check_file(file: &File, base_dir: &Path) -> Result<Program, Vec<Diagnostic>> {
    let _ = (file, base_dir);
    Ok(Program::default())
}
