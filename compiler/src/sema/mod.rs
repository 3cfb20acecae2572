//! Semantic analysis: names, arguments (against the op registry), shapes, and training
//! settings. Turns an AST into a [`typed::Program`] or a list of diagnostics.
//!
//! Every model and train block is checked even after an error elsewhere, so one run
//! reports every independent error; diagnostics come back sorted by source position.
//! A [`typed::Program`] is returned only when there are none.

pub mod args;
pub mod model;
pub mod registry;
pub mod shapes;
pub mod train;
pub mod typed;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{File, Item};
use typed::Program;

/// Checks a parsed file. `base_dir` is the folder of the file, against which data paths
/// are resolved (the files are not opened).
pub fn check_file(file: &File, base_dir: &Path) -> Result<Program, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut program = Program::default();
    let mut refs_typed: Vec<(String, Option<usize>)> = Vec::new();
    let mut first_def: Vec<(&str, crate::syntax::ast::Span)> = Vec::new();
    for item in &file.items {
        let Item::Model(m) = item else { continue };
        if let Some((_, first)) = first_def.iter().find(|(n, _)| *n == m.name.name) {
            diags.push(
                Diagnostic::new(
                    Code::DuplicateItem,
                    format!("model `{}` is defined twice", m.name.name),
                )
                .label(m.name.span, "defined again here")
                .label(*first, "first defined here")
                .help("give each model its own name"),
            );
            continue;
        }
        first_def.push((&m.name.name, m.name.span));
        let typed = model::check_model(m, &mut diags);
        let index = typed.map(|t| {
            program.models.push(t);
            program.models.len() - 1
        });
        refs_typed.push((m.name.name.clone(), index));
    }
    let refs: Vec<train::ModelRef<'_>> = refs_typed
        .iter()
        .map(|(name, index)| train::ModelRef {
            name,
            typed: index.map(|i| (i, &program.models[i])),
        })
        .collect();
    let mut trains = Vec::new();
    for item in &file.items {
        if let Item::Train(t) = item {
            if let Some(t) = train::check_train(t, &refs, base_dir, &mut diags) {
                trains.push(t);
            }
        }
    }
    program.trains = trains;
    if diags.is_empty() {
        Ok(program)
    } else {
        diags.sort_by_key(|d| d.primary_span().map(|s| (s.start, s.end)));
        Err(diags)
    }
}
