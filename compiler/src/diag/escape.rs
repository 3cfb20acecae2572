//! Making user text safe to print: diagnostics echo source lines, names, strings and
//! paths, any of which may hold control characters (an ESC would reach the terminal as
//! an escape sequence) or be thousands of characters long.
//!
//! - Source excerpts show each control character as one visible stand-in (`␛` for ESC,
//!   `␀` for NUL, `�` for other controls and bidirectional overrides), so that every
//!   character still takes one column; [`PrintableSource::offset`] maps byte offsets of
//!   the original text into the printable one.
//! - Messages, labels, help lines, notes and paths show control characters as Rust
//!   escapes (`\u{1b}`), and cut every value longer than [`MAX_SHOWN_VALUE`] characters
//!   (a backtick-quoted run, or any word without spaces) with `…` and its length.

/// The most characters of one value (a name, a string, a path) a diagnostic shows.
pub const MAX_SHOWN_VALUE: usize = 100;

/// A source text with its control characters replaced by visible stand-ins.
pub struct PrintableSource {
    pub text: String,
    /// `(offset in the original, bytes added up to and including that character)`, one
    /// entry per replaced character, in order.
    shifts: Vec<(usize, isize)>,
}

impl PrintableSource {
    pub fn new(src: &str) -> PrintableSource {
        let mut text = String::with_capacity(src.len());
        let mut shifts = Vec::new();
        let mut added: isize = 0;
        let mut chars = src.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            let crlf = c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n');
            match stand_in(c) {
                Some(s) if !crlf => {
                    text.push(s);
                    added += s.len_utf8() as isize - c.len_utf8() as isize;
                    shifts.push((at, added));
                }
                _ => text.push(c),
            }
        }
        PrintableSource { text, shifts }
    }

    /// Where the original byte offset `at` lies in [`text`](Self::text).
    pub fn offset(&self, at: usize) -> usize {
        let before = self.shifts.partition_point(|&(o, _)| o < at);
        let added = before.checked_sub(1).map_or(0, |i| self.shifts[i].1);
        (at as isize + added).max(0) as usize
    }
}

/// Whether a character must not reach the terminal as it is.
fn is_unprintable(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The visible stand-in of an unprintable character in a source excerpt.
fn stand_in(c: char) -> Option<char> {
    if !is_unprintable(c) {
        return None;
    }
    Some(match c as u32 {
        // The Unicode "control pictures" block: ␀ ␁ … ␟, and ␡ for DEL.
        n @ 0..=0x1f => char::from_u32(0x2400 + n).unwrap_or('\u{fffd}'),
        0x7f => '\u{2421}',
        _ => '\u{fffd}',
    })
}

/// `text` with control characters escaped and over-long values cut.
pub fn printable_text(text: &str) -> String {
    let escaped: String = text
        .chars()
        .map(|c| {
            if is_unprintable(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    clip_values(&escaped)
}

/// Cuts each backtick-quoted run and each word longer than [`MAX_SHOWN_VALUE`].
fn clip_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * MAX_SHOWN_VALUE));
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(body) = rest.strip_prefix('`') {
            if let Some(end) = body.find('`') {
                // The length goes after the closing backtick: `name…` (5000 characters).
                let value = &body[..end];
                let len = value.chars().count();
                if len > MAX_SHOWN_VALUE {
                    let head: String = value.chars().take(MAX_SHOWN_VALUE).collect();
                    out.push_str(&format!("`{head}…` ({len} characters)"));
                } else {
                    out.push_str(&format!("`{value}`"));
                }
                rest = &body[end + 1..];
                continue;
            }
        }
        let word_end = rest
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c.is_whitespace() || c == '`')
            .map_or(rest.len(), |(i, _)| i);
        let (word, tail) = rest.split_at(word_end);
        if word.starts_with(char::is_whitespace) {
            let space = word.chars().next().map_or(0, char::len_utf8);
            out.push_str(&word[..space]);
            rest = &rest[space..];
            continue;
        }
        out.push_str(&clip(word));
        rest = tail;
    }
    out
}

/// `value`, or its first [`MAX_SHOWN_VALUE`] characters, `…` and its length.
fn clip(value: &str) -> String {
    let len = value.chars().count();
    if len <= MAX_SHOWN_VALUE {
        return value.to_string();
    }
    let head: String = value.chars().take(MAX_SHOWN_VALUE).collect();
    format!("{head}… ({len} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_one_column_stand_ins() {
        let src = "a\u{1b}[31mb\0c\r\nd\re\u{202e}f";
        let p = PrintableSource::new(src);
        assert_eq!(p.text, "a␛[31mb␀c\r\nd␍e�f");
        assert!(!p.text.contains('\u{1b}') && !p.text.contains('\0'));
        // Each original character keeps its place.
        for (at, c) in src.char_indices() {
            let shown = p.text[p.offset(at)..].chars().next().unwrap();
            let crlf = c == '\r' && src[at + 1..].starts_with('\n');
            let want = if crlf { c } else { stand_in(c).unwrap_or(c) };
            assert_eq!(want, shown, "at {at}");
        }
        assert_eq!(p.offset(src.len()), p.text.len());
    }

    #[test]
    fn messages_escape_control_characters() {
        assert_eq!(
            printable_text("undefined name `a\u{1b}[2Jb`"),
            "undefined name `a\\u{1b}[2Jb`"
        );
        assert_eq!(printable_text("line one\nline two"), "line one\nline two");
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let name = "x".repeat(5000);
        let shown = printable_text(&format!("undefined name `{name}` here"));
        assert_eq!(
            shown,
            format!(
                "undefined name `{}…` (5000 characters) here",
                "x".repeat(100)
            )
        );
        let path = format!("/data/{}", "p".repeat(300));
        let shown = printable_text(&format!("cannot read {path}: no such file"));
        assert!(shown.starts_with("cannot read /data/ppp"), "{shown}");
        assert!(
            shown.ends_with("… (307 characters) no such file"),
            "{shown}"
        );
        let short = "did you mean `dense`? (a `b` c)";
        assert_eq!(printable_text(short), short);
    }
}
