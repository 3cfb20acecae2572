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
use crate::syntax::ast::{File, Item, Span};
use typed::Program;

/// Checks a parsed file. `base_dir` is the folder of the file, against which data paths
/// are resolved (the files are not opened).
pub fn check_file(file: &File, base_dir: &Path) -> Result<Program, Vec<Diagnostic>> {
    if file.items.is_empty() {
        return Err(vec![no_model()]);
    }
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
    let mut first_train: Vec<(&str, Span)> = Vec::new();
    for item in &file.items {
        if let Item::Train(t) = item {
            let header = Span {
                start: t.span.start,
                end: t.model.span.end,
            };
            if let Some((_, first)) = first_train.iter().find(|(n, _)| *n == t.model.name) {
                diags.push(
                    Diagnostic::new(
                        Code::DuplicateTrain,
                        format!("model `{}` has two `train` blocks", t.model.name),
                    )
                    .label(header, "second train block here")
                    .label(*first, "first train block here")
                    .help("merge the settings into one `train` block"),
                );
                continue;
            }
            first_train.push((&t.model.name, header));
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

/// The error of a file without models or train blocks (empty, or only comments): such a
/// file is more likely a mistake (the wrong path, an unsaved editor) than a program.
fn no_model() -> Diagnostic {
    Diagnostic::new(Code::NoModel, "this file defines no model")
        .label(Span::new(0, 0), "nothing but whitespace and comments")
        .help("a minimal model: `model M { input x: [4]  output y = x |> dense(2) }`")
}
