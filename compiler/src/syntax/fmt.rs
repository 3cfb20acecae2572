//! The `.nn` formatter: prints one canonical layout of a parsed file, keeping its comments.
//!
//! Entry point: [`format_file`]. The layout:
//! - 4-space indentation; `model Name {` … `}` and `train Name {` … `}`, an empty body as
//!   `model Name {}`; exactly one blank line between items;
//! - one statement or setting per line; blank lines inside a block are kept but collapsed
//!   to one, and dropped right after `{` and right before `}`;
//! - `input x: [28, 28]`, `param w: [1, 1] = zeros`, `let h = …`, `output y = …`;
//! - the settings of a `train` block are aligned on `=` (`batch     = 64`);
//! - single spaces around binary operators, `|>` and `=`; `f(a, b = 1)`, `[a, b]`; trailing
//!   commas dropped; parentheses exactly as written; numbers in their source spelling;
//!   strings re-escaped (`\"` and `\\`);
//! - the value of a statement or setting that is a pipeline of more than
//!   [`MAX_FLAT_STAGES`] stages, or that would pass column [`MAX_WIDTH`], or that holds a
//!   comment, breaks before each `|>`, one level deeper than the statement, except that a
//!   stage that is a bare name (`|> relu`) stays on the line of the call stage before it
//!   (`|> dense(128) |> relu`) when no comment sits between them and the line stays within
//!   [`MAX_WIDTH`]; the first stage after the head always starts a line. Other long lines
//!   are not broken;
//! - trailing comments on consecutive lines (no blank line, own-line comment or line
//!   without a trailing comment between them) that are all indented, or all not, are
//!   aligned to one column: two spaces after the longest code of the run, leaving out lines
//!   whose comment would then start past column [`MAX_COMMENT_COLUMN`]; those keep two
//!   spaces (as `gofmt` aligns comments).
//!
//! Comments: every comment is printed, in source order, in the same gap between tokens as
//! in the source. Before each token the printer emits the comments that start before it,
//! so a token's position is needed; punctuation has no span in the AST, so its position is
//! found by scanning the source from the previous token over whitespace and comments. A
//! comment that followed code on its line (trailing) stays at the end of the printed line;
//! one on a line of its own stays on a line of its own, at block indentation between
//! statements and items, one level deeper inside a statement. A comment always ends its
//! line, so a comment inside an expression breaks it there.
//!
//! Invariants (tested, including by a property test over random programs):
//! `parse(format(x))` equals `parse(x)` modulo spans, and `format` is idempotent. Both
//! hold because every layout choice depends only on the AST, on which token gap each
//! comment sits in, on whether it is trailing, and on blank lines between lines, all of
//! which the output preserves; comment alignment is a last pass over the printed lines that
//! changes only the spaces before trailing comments, which no other choice looks at.

use super::ast::*;

/// The indentation of one level.
const INDENT: usize = 4;
/// A statement's pipeline with more stages than this is broken one stage per line.
pub const MAX_FLAT_STAGES: usize = 3;
/// A statement's pipeline that would end past this column is broken one stage per line.
pub const MAX_WIDTH: usize = 92;
/// Aligned trailing comments start at this column (counted from 1) or before; a line whose
/// code is too long for that keeps its comment two spaces after the code.
pub const MAX_COMMENT_COLUMN: usize = 60;

/// Formats a parsed file. `src` must be the text `file` was parsed from: comments are
/// placed and blank lines kept by looking at it.
pub fn format_file(file: &File, src: &str) -> String {
    let mut p = Printer::new(src, &file.comments);
    for (i, item) in file.items.iter().enumerate() {
        p.indent = 0;
        p.begin_element(item.span().start, i > 0);
        match item {
            Item::Model(m) => p.model(m),
            Item::Train(t) => p.train(t),
        }
    }
    p.indent = 0;
    let mut no_force = false;
    p.flush_block(u32::MAX, &mut no_force);
    if !p.at_line_start {
        p.newline();
    }
    align_comments(&p.out, &p.trailing)
}

/// A printed line that ends with a trailing comment.
struct Trailing {
    /// The line's index in the output (from 0).
    line: usize,
    /// The byte length of the code before the comment, without the spaces.
    code_len: usize,
}

/// Rewrites the spaces before the trailing comments of `out` (listed in `trailing`, in
/// line order) so that each run of them is aligned; see the module documentation.
fn align_comments(out: &str, trailing: &[Trailing]) -> String {
    if trailing.is_empty() {
        return out.to_string();
    }
    let lines: Vec<&str> = out.split('\n').collect();
    let indented = |t: &Trailing| lines[t.line].starts_with(' ');
    let width = |t: &Trailing| lines[t.line][..t.code_len].chars().count();
    // The number of characters before each trailing comment's `#`.
    let mut columns = vec![0; lines.len()];
    let mut start = 0;
    while start < trailing.len() {
        let mut end = start + 1;
        while end < trailing.len()
            && trailing[end].line == trailing[end - 1].line + 1
            && indented(&trailing[end]) == indented(&trailing[start])
        {
            end += 1;
        }
        let run = &trailing[start..end];
        let limit = MAX_COMMENT_COLUMN - 1;
        let column = run
            .iter()
            .map(|t| width(t) + 2)
            .filter(|&c| c <= limit)
            .max()
            .unwrap_or(0);
        for t in run {
            columns[t.line] = column.max(width(t) + 2);
        }
        start = end;
    }
    let mut aligned = String::with_capacity(out.len() + 16 * trailing.len());
    let mut next = trailing.iter().peekable();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            aligned.push('\n');
        }
        match next.next_if(|t| t.line == i) {
            Some(t) => {
                let code = &line[..t.code_len];
                aligned.push_str(code);
                let pad = columns[i] - code.chars().count();
                aligned.extend(std::iter::repeat_n(' ', pad));
                aligned.push_str(line[t.code_len..].trim_start_matches(' '));
            }
            None => aligned.push_str(line),
        }
    }
    aligned
}

struct Printer<'a> {
    src: &'a str,
    comments: &'a [Comment],
    /// The first comment not yet printed.
    next: usize,
    out: String,
    /// Spaces written before the first token of the next line.
    indent: usize,
    at_line_start: bool,
    /// Nothing printed since a `{` (or the file start): blank lines are dropped here.
    at_block_start: bool,
    /// A space is due before the next token on this line.
    pending_space: bool,
    /// The lines that end with a trailing comment, in order.
    trailing: Vec<Trailing>,
    /// The number of newlines in `out[..counted]` (`out` only grows past `counted`).
    lines: usize,
    counted: usize,
}

impl<'a> Printer<'a> {
    fn new(src: &'a str, comments: &'a [Comment]) -> Printer<'a> {
        Printer {
            src,
            comments,
            next: 0,
            out: String::new(),
            indent: 0,
            at_line_start: true,
            at_block_start: true,
            pending_space: false,
            trailing: Vec::new(),
            lines: 0,
            counted: 0,
        }
    }

    // ---- low-level output ----

    fn write(&mut self, text: &str) {
        if self.at_line_start {
            self.out.extend(std::iter::repeat_n(' ', self.indent));
            self.at_line_start = false;
        } else if self.pending_space {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.at_block_start = false;
        self.out.push_str(text);
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    fn newline(&mut self) {
        let trimmed = self.out.trim_end_matches(' ').len();
        self.out.truncate(trimmed);
        self.out.push('\n');
        self.at_line_start = true;
        self.pending_space = false;
    }

    fn column(&self) -> usize {
        if self.at_line_start {
            return self.indent;
        }
        let line = self.out.rsplit('\n').next().unwrap_or("");
        line.chars().count() + usize::from(self.pending_space)
    }

    // ---- source inspection ----

    /// The position of `tok` if it is the next token at or after `from`, skipping
    /// whitespace and comments.
    fn find(&self, from: u32, tok: &str) -> Option<u32> {
        let bytes = self.src.as_bytes();
        let mut i = from as usize;
        while i < bytes.len() {
            match bytes[i] {
                b' ' | b'\t' | b'\r' | b'\n' => i += 1,
                b'#' => {
                    i = self.src[i..].find('\n').map_or(bytes.len(), |n| i + n);
                }
                _ => return bytes[i..].starts_with(tok.as_bytes()).then_some(i as u32),
            }
        }
        None
    }

    /// Whether only whitespace precedes `pos` on its source line.
    fn starts_line(&self, pos: u32) -> bool {
        let before = &self.src.as_bytes()[..(pos as usize).min(self.src.len())];
        before
            .iter()
            .rev()
            .take_while(|&&b| b != b'\n')
            .all(|&b| b == b' ' || b == b'\t' || b == b'\r')
    }

    /// Whether a blank line precedes `pos` in the source.
    fn blank_before(&self, pos: u32) -> bool {
        let before = &self.src.as_bytes()[..(pos as usize).min(self.src.len())];
        before
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .filter(|&&b| b == b'\n')
            .count()
            >= 2
    }

    fn comment_before(&self, pos: u32) -> bool {
        self.comments
            .get(self.next)
            .is_some_and(|c| c.span.start < pos)
    }

    // ---- comments ----

    fn trailing_comment(&mut self, text: &str) {
        let trimmed = self.out.trim_end_matches(' ').len();
        self.out.truncate(trimmed);
        self.lines += self.out[self.counted..].matches('\n').count();
        self.counted = self.out.len();
        let line_start = self.out.rfind('\n').map_or(0, |i| i + 1);
        self.trailing.push(Trailing {
            line: self.lines,
            code_len: self.out.len() - line_start,
        });
        self.out.push_str("  ");
        self.out.push_str(text);
        self.newline();
    }

    /// Prints the comments that start before `pos` inside a statement: trailing ones end
    /// the current line, the others get lines of their own at the current indentation.
    fn flush_inline(&mut self, pos: Option<u32>) {
        let Some(pos) = pos else { return };
        while self.comment_before(pos) {
            let c = &self.comments[self.next];
            self.next += 1;
            let text = c.text.trim_end();
            if self.at_line_start || self.starts_line(c.span.start) {
                if !self.at_line_start {
                    self.newline();
                }
                self.write(text);
                self.newline();
            } else {
                self.trailing_comment(text);
            }
        }
    }

    /// Prints the comments that start before `pos` between statements, settings or items.
    /// `force_blank` asks for a blank line before the first own-line comment, and is
    /// cleared when one is printed.
    fn flush_block(&mut self, pos: u32, force_blank: &mut bool) {
        while self.comment_before(pos) {
            let c = &self.comments[self.next];
            self.next += 1;
            let text = c.text.trim_end();
            if !self.at_line_start && !self.starts_line(c.span.start) {
                self.trailing_comment(text);
                continue;
            }
            if !self.at_line_start {
                self.newline();
            }
            if *force_blank || (self.blank_before(c.span.start) && !self.at_block_start) {
                self.out.push('\n');
            }
            *force_blank = false;
            self.write(text);
            self.newline();
        }
    }

    /// Starts the line of a statement, setting or item at `pos`, after the comments before
    /// it; `force_blank` puts a blank line before them (between items).
    fn begin_element(&mut self, pos: u32, force_blank: bool) {
        let mut force = force_blank;
        self.flush_block(pos, &mut force);
        if !self.at_line_start {
            self.newline();
        }
        if force || (self.blank_before(pos) && !self.at_block_start) {
            self.out.push('\n');
        }
    }

    /// Prints a token at source position `pos` (when known), after the comments before it.
    fn tok(&mut self, pos: Option<u32>, text: &str) {
        self.flush_inline(pos);
        self.write(text);
    }

    // ---- items ----

    /// Prints `{`, the block's elements via `element`, and `}` at `close`.
    fn block<T>(
        &mut self,
        open_from: u32,
        close: u32,
        elements: &[T],
        start: impl Fn(&T) -> u32,
        mut element: impl FnMut(&mut Self, &T),
    ) {
        let outer = self.indent;
        self.space();
        self.tok(self.find(open_from, "{"), "{");
        if elements.is_empty() && !self.comment_before(close) {
            self.write("}");
            return;
        }
        self.at_block_start = true;
        for e in elements {
            self.indent = outer + INDENT;
            self.begin_element(start(e), false);
            element(self, e);
        }
        self.indent = outer + INDENT;
        let mut no_force = false;
        self.flush_block(close, &mut no_force);
        if !self.at_line_start {
            self.newline();
        }
        self.indent = outer;
        self.tok(Some(close), "}");
    }

    fn model(&mut self, m: &Model) {
        self.tok(Some(m.span.start), "model");
        self.indent += INDENT;
        self.space();
        self.ident(&m.name);
        self.indent -= INDENT;
        let close = m.span.end.saturating_sub(1);
        self.block(
            m.name.span.end,
            close,
            &m.stmts,
            |s| s.span.start,
            |p, s| p.stmt(s),
        );
    }

    fn train(&mut self, t: &Train) {
        self.tok(Some(t.span.start), "train");
        self.indent += INDENT;
        self.space();
        self.ident(&t.model);
        self.indent -= INDENT;
        let close = t.span.end.saturating_sub(1);
        let width = t
            .settings
            .iter()
            .map(|s| s.name.name.chars().count())
            .max()
            .unwrap_or(0);
        self.block(
            t.model.span.end,
            close,
            &t.settings,
            |s| s.span.start,
            |p, s| p.setting(s, width),
        );
    }

    fn setting(&mut self, s: &Setting, width: usize) {
        let block_indent = self.indent;
        self.ident(&s.name);
        self.indent = block_indent + INDENT;
        let pad = width.saturating_sub(s.name.name.chars().count());
        if pad > 0 {
            self.out.extend(std::iter::repeat_n(' ', pad));
        }
        self.space();
        self.tok(self.find(s.name.span.end, "="), "=");
        self.space();
        self.value(&s.value);
        self.indent = block_indent;
    }

    fn stmt(&mut self, s: &Stmt) {
        let block_indent = self.indent;
        let keyword = match &s.kind {
            StmtKind::Input { .. } => "input",
            StmtKind::Param { .. } => "param",
            StmtKind::Let { .. } => "let",
            StmtKind::Output { .. } => "output",
        };
        self.tok(Some(s.span.start), keyword);
        self.indent = block_indent + INDENT;
        match &s.kind {
            StmtKind::Input { name, shape } => {
                self.declaration(name, shape);
            }
            StmtKind::Param { name, shape, init } => {
                self.declaration(name, shape);
                if let Some(init) = init {
                    self.space();
                    self.tok(self.find(shape.span.end, "="), "=");
                    self.space();
                    self.value(init);
                }
            }
            StmtKind::Let { name, value } => {
                self.space();
                self.ident(name);
                self.space();
                self.tok(self.find(name.span.end, "="), "=");
                self.space();
                self.value(value);
            }
            StmtKind::Output { name, value } => {
                if let Some(name) = name {
                    self.space();
                    self.ident(name);
                    self.space();
                    self.tok(self.find(name.span.end, "="), "=");
                }
                self.space();
                self.value(value);
            }
        }
        self.indent = block_indent;
    }

    /// ` NAME: [d, ..]`
    fn declaration(&mut self, name: &Ident, shape: &ShapeLit) {
        self.space();
        self.ident(name);
        self.tok(self.find(name.span.end, ":"), ":");
        self.space();
        self.tok(Some(shape.span.start), "[");
        for (i, dim) in shape.dims.iter().enumerate() {
            if i > 0 {
                self.tok(self.find(shape.dims[i - 1].span.end, ","), ",");
                self.space();
            }
            self.tok(Some(dim.span.start), &dim.text);
        }
        self.tok(Some(shape.span.end.saturating_sub(1)), "]");
    }

    fn ident(&mut self, id: &Ident) {
        self.tok(Some(id.span.start), &id.name);
    }

    // ---- expressions ----

    /// The value of a statement or setting: a pipeline here may be broken into lines.
    fn value(&mut self, e: &Expr) {
        let mut stages = Vec::new();
        let mut head = e;
        while let ExprKind::Pipe { input, stage } = &head.kind {
            stages.push(stage.as_ref());
            head = input;
        }
        if stages.is_empty() || !self.breaks(e, stages.len()) {
            self.expr(e);
            return;
        }
        stages.reverse();
        self.expr(head);
        let mut prev_end = head.span.end;
        let mut prev_is_call = false;
        for stage in stages {
            let bar = self.find(prev_end, "|>");
            if !(prev_is_call && self.joins_line(stage)) {
                self.flush_inline(bar);
                if !self.at_line_start {
                    self.newline();
                }
            }
            self.space();
            self.tok(bar, "|>");
            self.space();
            self.expr(stage);
            prev_end = stage.span.end;
            prev_is_call = matches!(stage.kind, ExprKind::Call { .. });
        }
    }

    /// Whether `stage`, which follows a call stage of a broken pipeline, stays on the
    /// current line: it is a bare name, no comment precedes it, and the line stays within
    /// [`MAX_WIDTH`].
    fn joins_line(&self, stage: &Expr) -> bool {
        let ExprKind::Name(id) = &stage.kind else {
            return false;
        };
        !self.at_line_start
            && !self.comment_before(stage.span.start)
            && self.column() + " |> ".len() + id.name.chars().count() <= MAX_WIDTH
    }

    /// Whether the pipeline `e` of `stages` stages is printed one stage per line.
    fn breaks(&self, e: &Expr, stages: usize) -> bool {
        if stages > MAX_FLAT_STAGES {
            return true;
        }
        let has_comment = self.comments[self.next..]
            .iter()
            .take_while(|c| c.span.start < e.span.end)
            .any(|c| c.span.start >= e.span.start);
        if has_comment {
            return true;
        }
        let mut flat = Printer::new(self.src, &[]);
        flat.expr(e);
        self.column() + flat.out.chars().count() > MAX_WIDTH
    }

    fn expr(&mut self, e: &Expr) {
        let start = Some(e.span.start);
        let close = Some(e.span.end.saturating_sub(1));
        match &e.kind {
            ExprKind::Number { text, .. } => self.tok(start, text),
            ExprKind::Str(s) => self.tok(start, &quote(s)),
            ExprKind::Bool(b) => self.tok(start, if *b { "true" } else { "false" }),
            ExprKind::Name(id) => self.ident(id),
            ExprKind::List(items) => {
                self.tok(start, "[");
                self.comma_list(items, |p, item| p.expr(item), |item| item.span.end);
                self.tok(close, "]");
            }
            ExprKind::Call { callee, args } => {
                self.ident(callee);
                self.tok(self.find(callee.span.end, "("), "(");
                self.comma_list(args, |p, arg| p.arg(arg), |arg| arg.value.span.end);
                self.tok(close, ")");
            }
            ExprKind::Neg(inner) => {
                self.tok(start, "-");
                self.expr(inner);
            }
            ExprKind::Binary { op, lhs, rhs } => {
                self.expr(lhs);
                self.space();
                self.tok(self.find(lhs.span.end, op.symbol()), op.symbol());
                self.space();
                self.expr(rhs);
            }
            ExprKind::Pipe { input, stage } => {
                self.expr(input);
                self.space();
                self.tok(self.find(input.span.end, "|>"), "|>");
                self.space();
                self.expr(stage);
            }
            ExprKind::Paren(inner) => {
                self.tok(start, "(");
                self.expr(inner);
                self.tok(close, ")");
            }
        }
    }

    fn comma_list<T>(
        &mut self,
        items: &[T],
        mut each: impl FnMut(&mut Self, &T),
        end: impl Fn(&T) -> u32,
    ) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.tok(self.find(end(&items[i - 1]), ","), ",");
                self.space();
            }
            each(self, item);
        }
    }

    fn arg(&mut self, arg: &Arg) {
        if let Some(name) = &arg.name {
            self.ident(name);
            self.space();
            self.tok(self.find(name.span.end, "="), "=");
            self.space();
        }
        self.expr(&arg.value);
    }
}

/// A short diff for `nnc fmt --check`: the first region where `old` and `new` differ, as
/// `line N:` followed by at most `max_lines` `-` lines and `+` lines; `None` when equal.
pub fn short_diff(old: &str, new: &str, max_lines: usize) -> Option<String> {
    if old == new {
        return None;
    }
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let prefix = old_lines
        .iter()
        .zip(&new_lines)
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = old_lines[prefix..]
        .iter()
        .rev()
        .zip(new_lines[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let removed = &old_lines[prefix..old_lines.len() - suffix];
    let added = &new_lines[prefix..new_lines.len() - suffix];
    if removed.is_empty() && added.is_empty() {
        return Some("only line endings or the final newline differ\n".to_string());
    }
    let mut out = format!("line {}:\n", prefix + 1);
    for (sign, lines) in [('-', removed), ('+', added)] {
        for line in lines.iter().take(max_lines) {
            out.push(sign);
            out.push_str(line);
            out.push('\n');
        }
        if lines.len() > max_lines {
            out.push_str(&format!(
                "{sign}… ({} more lines)\n",
                lines.len() - max_lines
            ));
        }
    }
    Some(out)
}

/// A string literal for `value`, escaping `"` and `\`.
fn quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests;
