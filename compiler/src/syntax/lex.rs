//! A lexical pre-scan that runs before the grammar.
//!
//! It collects comments for the formatter and catches the errors a PEG parser reports
//! badly or not at all: unterminated strings, unbalanced or mismatched delimiters (pointing
//! at the opener, like rustc), characters that cannot start any token, and nesting deeper
//! than [`MAX_NESTING`], which would otherwise overflow the parser's stack. When the scan
//! finds an error, the grammar is not run: its errors would only repeat these.

use super::ast::{Comment, Span};
use crate::diag::{Code, Diagnostic};

/// The deepest nesting of `(`, `[` and `{` that the parser accepts.
pub const MAX_NESTING: usize = 64;

/// What the scan learned about a source text.
pub struct Scan {
    pub comments: Vec<Comment>,
    pub errors: Vec<Diagnostic>,
}

/// Scans `src` for comments and structural errors.
pub fn scan(src: &str) -> Scan {
    let bytes = src.as_bytes();
    let mut comments = Vec::new();
    let mut errors = Vec::new();
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut too_deep_reported = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                let end = src[i..].find('\n').map_or(src.len(), |n| i + n);
                let text = src[i..end].trim_end_matches('\r').to_string();
                comments.push(Comment {
                    span: Span::new(i, i + text.len()),
                    text,
                });
                i = end;
                continue;
            }
            b'"' => {
                let start = i;
                i += 1;
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if i + 1 < bytes.len() && matches!(bytes[i + 1], b'"' | b'\\') => {
                            i += 2;
                            continue;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b'\n' => break,
                        _ => i += 1,
                    }
                }
                if !closed {
                    errors.push(
                        Diagnostic::new(Code::UnterminatedString, "unterminated string")
                            .label(Span::new(start, start + 1), "string starts here")
                            .help("close the string with `\"` before the end of the line"),
                    );
                }
                continue;
            }
            b'(' | b'[' | b'{' => {
                stack.push((b, i));
                if stack.len() > MAX_NESTING && !too_deep_reported {
                    too_deep_reported = true;
                    errors.push(
                        Diagnostic::new(
                            Code::TooDeep,
                            format!("nesting deeper than {MAX_NESTING} levels"),
                        )
                        .label(Span::new(i, i + 1), "this delimiter is too deeply nested")
                        .help("split the expression with `let` bindings"),
                    );
                }
            }
            b')' | b']' | b'}' => {
                let want = match b {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                match stack.pop() {
                    Some((open, _)) if open == want => {}
                    Some((open, at)) => {
                        errors.push(
                            Diagnostic::new(
                                Code::UnclosedDelimiter,
                                format!(
                                    "mismatched closing delimiter `{}`",
                                    char::from(b)
                                ),
                            )
                            .label(Span::new(i, i + 1), "mismatched closing delimiter")
                            .label(
                                Span::new(at, at + 1),
                                format!("this `{}` is not closed", char::from(open)),
                            )
                            .help(format!("close it with `{}`", closing(open))),
                        );
                        return Scan { comments, errors };
                    }
                    None => {
                        errors.push(
                            Diagnostic::new(
                                Code::UnmatchedClose,
                                format!("unexpected closing delimiter `{}`", char::from(b)),
                            )
                            .label(Span::new(i, i + 1), "nothing to close here")
                            .help("remove it, or add the matching opening delimiter"),
                        );
                        return Scan { comments, errors };
                    }
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => {}
            b'.' | b',' | b':' | b'=' | b'+' | b'-' | b'*' | b'/' | b'@' | b'|' | b'>' => {}
            _ => {
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                let len = ch.len_utf8();
                errors.push(
                    Diagnostic::new(
                        Code::InvalidCharacter,
                        format!("unexpected character `{}`", ch.escape_default()),
                    )
                    .label(Span::new(i, i + len), "not part of any token")
                    .help("remove it; comments start with `#`"),
                );
                i += len;
                continue;
            }
        }
        i += 1;
    }
    if let Some(&(open, at)) = stack.last() {
        let what = match open {
            b'{' => "brace",
            b'[' => "bracket",
            _ => "parenthesis",
        };
        errors.push(
            Diagnostic::new(Code::UnclosedDelimiter, format!("unclosed {what}"))
                .label(Span::new(at, at + 1), format!("this `{}` is never closed", char::from(open)))
                .help(format!("add `{}` where it should end", closing(open))),
        );
    }
    Scan { comments, errors }
}

fn closing(open: u8) -> char {
    match open {
        b'(' => ')',
        b'[' => ']',
        _ => '}',
    }
}
