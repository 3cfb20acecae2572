//! Rendering diagnostics as text with miette's graphical handler: `path:line:col`, the
//! source lines, labelled carets, the code and the help line. The no-colour theme gives
//! stable text for snapshot tests. Everything echoed from the user (source lines, names,
//! paths) goes through [`escape`](super::escape) first: no control character reaches the
//! terminal, and no value is shown longer than a line.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};

use super::escape::{printable_text, PrintableSource};
use super::{Diagnostic, Label};

/// Whether to colour the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    Always,
    Never,
}

/// Source lines longer than this are not shown (miette cannot draw carets that far right).
const MAX_SHOWN_LINE: usize = 1000;

/// Renders one diagnostic about the file `path` with contents `src`.
pub fn render(diag: &Diagnostic, path: &str, src: &str, color: ColorChoice) -> String {
    let path = printable_text(path);
    if diag
        .labels
        .iter()
        .any(|l| line_len_at(src, l.span.start as usize) > MAX_SHOWN_LINE)
    {
        return render_without_source(&printable(diag, None), &path, src);
    }
    let shown = PrintableSource::new(src);
    let diag = &printable(diag, Some(&shown));
    let src = shown.text.as_str();
    let theme = match color {
        ColorChoice::Always => GraphicalTheme::unicode(),
        ColorChoice::Never => GraphicalTheme::unicode_nocolor(),
    };
    let mut handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_context_lines(1);
    if !diag.notes.is_empty() {
        let notes: Vec<String> = diag.notes.iter().map(|n| format!("note: {n}")).collect();
        handler = handler.with_footer(notes.join("\n"));
    }
    let report = Report {
        diag,
        source: NamedSource::new(&path, src.to_string()),
        src_len: src.len(),
    };
    let mut out = String::new();
    if handler.render_report(&mut out, &report).is_err() {
        out = format!("error[{}]: {}\n", diag.code, diag.message);
    }
    out
}

/// `diag` with its texts made printable and, given the printable source, its spans
/// moved into it.
fn printable(diag: &Diagnostic, shown: Option<&PrintableSource>) -> Diagnostic {
    let offset = |at: u32| shown.map_or(at as usize, |s| s.offset(at as usize));
    Diagnostic {
        code: diag.code,
        message: printable_text(&diag.message),
        labels: diag
            .labels
            .iter()
            .map(|l| Label {
                span: super::Span::new(offset(l.span.start), offset(l.span.end)),
                text: printable_text(&l.text),
            })
            .collect(),
        help: diag.help.as_deref().map(printable_text),
        notes: diag.notes.iter().map(|n| printable_text(n)).collect(),
    }
}

fn line_len_at(src: &str, offset: usize) -> usize {
    let offset = offset.min(src.len());
    let start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    end - start
}

/// The same information as the graphical form, without the source excerpt.
fn render_without_source(diag: &Diagnostic, path: &str, src: &str) -> String {
    let mut out = format!("nnc::{}\n\n  × {}\n", diag.code, diag.message);
    for l in &diag.labels {
        let (line, col) = super::line_col(src, l.span.start as usize);
        out.push_str(&format!("   ╭─[{path}:{line}:{col}] {}\n", l.text));
    }
    out.push_str("   (the source line is too long to show)\n");
    for n in &diag.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    if let Some(h) = &diag.help {
        out.push_str(&format!("  help: {h}\n"));
    }
    out
}

/// Renders several diagnostics of one file, separated by blank lines, followed by a
/// summary line when there is more than one.
pub fn render_all(diags: &[Diagnostic], path: &str, src: &str, color: ColorChoice) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render(d, path, src, color));
        out.push('\n');
    }
    if diags.len() > 1 {
        out.push_str(&format!(
            "{}: {} errors\n",
            printable_text(path),
            diags.len()
        ));
    }
    out
}

struct Report<'a> {
    diag: &'a Diagnostic,
    source: NamedSource<String>,
    src_len: usize,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report").field("diag", self.diag).finish()
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(format!("nnc::{}", self.diag.code)))
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display + 'b>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        if self.diag.labels.is_empty() {
            None
        } else {
            Some(&self.source)
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.diag.labels.is_empty() {
            return None;
        }
        let len = self.src_len;
        Some(Box::new(self.diag.labels.iter().enumerate().map(
            move |(i, l)| {
                let start = (l.span.start as usize).min(len);
                let end = (l.span.end as usize).clamp(start, len);
                let span = SourceSpan::new(start.into(), end - start);
                let text = if l.text.is_empty() {
                    None
                } else {
                    Some(l.text.clone())
                };
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, span)
                } else {
                    LabeledSpan::new_with_span(text, span)
                }
            },
        )))
    }
}
