//! User-facing diagnostics: one [`Diagnostic`] type shared by every stage, stable error
//! codes, "did you mean" suggestions, and rendering through miette.
//!
//! Stages never print; they return `Vec<Diagnostic>` so that several independent errors in
//! one file are all reported. Rendering is the driver's job ([`render`]).

mod codes;
pub mod escape;
mod render;
mod span;
mod suggest;

pub use codes::Code;
pub use render::{render, render_all, ColorChoice};
pub use span::Span;
pub use suggest::{did_you_mean, suggest};

/// A labelled span inside the file the diagnostic is about.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One user error: a stable code, a lowercase message without a trailing period, a
/// primary label, optional secondary labels, and a `help:` line when a fix exists.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    /// The first label is the primary one; its start is the reported `line:col`.
    pub labels: Vec<Label>,
    pub help: Option<String>,
    /// Extra lines printed after the source excerpt (e.g. both shapes of a mismatch).
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
            notes: Vec::new(),
        }
    }

    /// Adds a label; the first one added is the primary label.
    pub fn label(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Sets the help line only when `help` is `Some`.
    pub fn maybe_help(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// The span of the primary label, if any.
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.first().map(|l| l.span)
    }
}

/// 1-based line and column (in characters) of byte offset `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(src: &str, mut offset: usize) -> usize {
    while offset > 0 && !src.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}
