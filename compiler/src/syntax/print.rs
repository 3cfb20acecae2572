//! A stable, indented S-expression printer for the AST, with byte spans, for golden tests.
//! The format is ours and changes only deliberately (a snapshot diff shows it).

use std::fmt::Write;

use super::ast::*;

/// Prints the whole file, one item per top-level form, comments last.
pub fn print_file(file: &File) -> String {
    let mut p = Printer { out: String::new() };
    for item in &file.items {
        match item {
            Item::Model(m) => p.model(m),
            Item::Train(t) => p.train(t),
        }
    }
    for c in &file.comments {
        let _ = writeln!(p.out, "(comment @{} {:?})", c.span, c.text);
    }
    p.out
}

struct Printer {
    out: String,
}

impl Printer {
    fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn model(&mut self, m: &Model) {
        self.line(0, &format!("(model {} @{}", m.name.name, m.span));
        for s in &m.stmts {
            match &s.kind {
                StmtKind::Input { name, shape } => {
                    self.line(1, &format!("(input {} {} @{})", name.name, shape_text(shape), s.span))
                }
                StmtKind::Param { name, shape, init } => {
                    self.line(1, &format!("(param {} {} @{}", name.name, shape_text(shape), s.span));
                    if let Some(e) = init {
                        self.expr(2, e);
                    }
                    self.line(1, ")");
                }
                StmtKind::Let { name, value } => {
                    self.line(1, &format!("(let {} @{}", name.name, s.span));
                    self.expr(2, value);
                    self.line(1, ")");
                }
                StmtKind::Output { name, value } => {
                    let name = name.as_ref().map_or("_", |n| n.name.as_str());
                    self.line(1, &format!("(output {} @{}", name, s.span));
                    self.expr(2, value);
                    self.line(1, ")");
                }
            }
        }
        self.line(0, ")");
    }

    fn train(&mut self, t: &Train) {
        self.line(0, &format!("(train {} @{}", t.model.name, t.span));
        for s in &t.settings {
            self.line(1, &format!("(setting {} @{}", s.name.name, s.span));
            self.expr(2, &s.value);
            self.line(1, ")");
        }
        self.line(0, ")");
    }

    fn expr(&mut self, depth: usize, e: &Expr) {
        match &e.kind {
            ExprKind::Number { value, text } => {
                self.line(depth, &format!("(number {text} = {value:?} @{})", e.span))
            }
            ExprKind::Str(s) => self.line(depth, &format!("(string {s:?} @{})", e.span)),
            ExprKind::Bool(b) => self.line(depth, &format!("(bool {b} @{})", e.span)),
            ExprKind::Name(n) => self.line(depth, &format!("(name {} @{})", n.name, e.span)),
            ExprKind::List(items) => {
                self.line(depth, &format!("(list @{}", e.span));
                for i in items {
                    self.expr(depth + 1, i);
                }
                self.line(depth, ")");
            }
            ExprKind::Call { callee, args } => {
                self.line(depth, &format!("(call {} @{}", callee.name, e.span));
                for a in args {
                    match &a.name {
                        Some(n) => {
                            self.line(depth + 1, &format!("(named {} @{}", n.name, a.span));
                            self.expr(depth + 2, &a.value);
                            self.line(depth + 1, ")");
                        }
                        None => self.expr(depth + 1, &a.value),
                    }
                }
                self.line(depth, ")");
            }
            ExprKind::Neg(inner) => {
                self.line(depth, &format!("(neg @{}", e.span));
                self.expr(depth + 1, inner);
                self.line(depth, ")");
            }
            ExprKind::Binary { op, lhs, rhs } => {
                self.line(depth, &format!("({} @{}", op.symbol(), e.span));
                self.expr(depth + 1, lhs);
                self.expr(depth + 1, rhs);
                self.line(depth, ")");
            }
            ExprKind::Pipe { input, stage } => {
                self.line(depth, &format!("(|> @{}", e.span));
                self.expr(depth + 1, input);
                self.expr(depth + 1, stage);
                self.line(depth, ")");
            }
            ExprKind::Paren(inner) => {
                self.line(depth, &format!("(paren @{}", e.span));
                self.expr(depth + 1, inner);
                self.line(depth, ")");
            }
        }
    }
}

fn shape_text(s: &ShapeLit) -> String {
    let dims: Vec<&str> = s.dims.iter().map(|d| d.text.as_str()).collect();
    format!("[{}]", dims.join(" "))
}
