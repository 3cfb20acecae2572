//! The pest parser and the conversion of its parse tree into the [`ast`](super::ast).
//!
//! This is the only module that sees pest types. Syntax errors become [`Diagnostic`]s that
//! say what was expected and what was found, like rustc does.

use pest::iterators::Pair;
use pest::Parser as _;
use pest_derive::Parser;

use super::ast::*;
use super::lex;
use crate::diag::{Code, Diagnostic};

#[derive(Parser)]
#[grammar = "syntax/grammar.pest"]
struct Grammar;

/// The deepest expression tree accepted, counting operators, pipes and calls; deeper
/// trees would exhaust the stack of the recursive passes that follow.
pub const MAX_EXPR_DEPTH: usize = 200;

/// Parses a whole file. On success the AST holds every item and comment.
pub fn parse_file(src: &str) -> Result<File, Vec<Diagnostic>> {
    let scan = lex::scan(src);
    if !scan.errors.is_empty() {
        return Err(scan.errors);
    }
    let mut pairs = Grammar::parse(Rule::file, src).map_err(|e| vec![syntax_error(src, &e)])?;
    let mut builder = Builder { errors: Vec::new() };
    let file_pair = pairs.next().expect("the file rule always yields one pair");
    let mut items = Vec::new();
    for pair in file_pair.into_inner() {
        match pair.as_rule() {
            Rule::model => items.push(Item::Model(builder.model(pair))),
            Rule::train => items.push(Item::Train(builder.train(pair))),
            _ => {}
        }
    }
    if builder.errors.is_empty() {
        Ok(File {
            items,
            comments: scan.comments,
        })
    } else {
        Err(builder.errors)
    }
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

struct Builder {
    errors: Vec<Diagnostic>,
}

impl Builder {
    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: span_of(&pair),
        }
    }

    fn model(&mut self, pair: Pair<'_, Rule>) -> Model {
        let span = span_of(&pair);
        let mut inner = pair.into_inner();
        inner.next(); // `model`
        let name = self.ident(inner.next().expect("model name"));
        let stmts = inner.map(|p| self.stmt(p)).collect();
        Model { name, stmts, span }
    }

    fn stmt(&mut self, pair: Pair<'_, Rule>) -> Stmt {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        inner.next(); // keyword
        let kind = match rule {
            Rule::input_stmt => {
                let name = self.ident(inner.next().expect("input name"));
                let shape = self.shape(inner.next().expect("input shape"));
                StmtKind::Input { name, shape }
            }
            Rule::param_stmt => {
                let name = self.ident(inner.next().expect("param name"));
                let shape = self.shape(inner.next().expect("param shape"));
                let init = inner.next().map(|p| self.expr(p));
                StmtKind::Param { name, shape, init }
            }
            Rule::let_stmt => {
                let name = self.ident(inner.next().expect("let name"));
                let value = self.expr(inner.next().expect("let value"));
                StmtKind::Let { name, value }
            }
            _ => {
                let first = inner.next().expect("output value");
                let (name, value) = if first.as_rule() == Rule::output_name {
                    let name = self.ident(first.into_inner().next().expect("output name"));
                    (Some(name), self.expr(inner.next().expect("output value")))
                } else {
                    (None, self.expr(first))
                };
                StmtKind::Output { name, value }
            }
        };
        Stmt { kind, span }
    }

    fn shape(&mut self, pair: Pair<'_, Rule>) -> ShapeLit {
        let span = span_of(&pair);
        let dims = pair
            .into_inner()
            .map(|p| {
                let text = p.as_str().to_string();
                let span = span_of(&p);
                let value = match text.parse::<u64>() {
                    Ok(v) => v,
                    Err(_) => {
                        self.errors.push(integer_too_large(span));
                        u64::MAX
                    }
                };
                Dim { value, text, span }
            })
            .collect();
        ShapeLit { dims, span }
    }

    fn train(&mut self, pair: Pair<'_, Rule>) -> Train {
        let span = span_of(&pair);
        let mut inner = pair.into_inner();
        inner.next(); // `train`
        let model = self.ident(inner.next().expect("train model name"));
        let settings = inner
            .map(|p| {
                let span = span_of(&p);
                let mut parts = p.into_inner();
                let name = self.ident(parts.next().expect("setting name"));
                let value = self.expr(parts.next().expect("setting value"));
                Setting { name, value, span }
            })
            .collect();
        Train {
            model,
            settings,
            span,
        }
    }

    /// Builds an expression; reports (once) and truncates trees deeper than the limit.
    fn expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let (e, depth) = self.expr_depth(pair);
        if depth > MAX_EXPR_DEPTH {
            self.errors.push(
                Diagnostic::new(
                    Code::TooDeep,
                    format!("expression nested deeper than {MAX_EXPR_DEPTH} levels"),
                )
                .label(e.span, "this expression is too deep")
                .help("split it into several `let` bindings"),
            );
            return Expr {
                kind: ExprKind::Bool(false),
                span: e.span,
            };
        }
        e
    }

    /// Returns the expression and its depth. Trees deeper than the limit are cut at the
    /// limit, so that no deep tree is ever built or dropped recursively.
    fn expr_depth(&mut self, pair: Pair<'_, Rule>) -> (Expr, usize) {
        let span = span_of(&pair);
        match pair.as_rule() {
            Rule::expr => {
                let mut inner = pair.into_inner();
                let (mut acc, mut depth) = self.expr_depth(inner.next().expect("pipe input"));
                while let Some(_op) = inner.next() {
                    let stage_pair = inner.next().expect("pipe stage");
                    let (stage, d) = self.expr_depth(stage_pair);
                    depth = depth.max(d) + 1;
                    let span = acc.span.to(stage.span);
                    if depth > MAX_EXPR_DEPTH {
                        return (acc, depth);
                    }
                    acc = Expr {
                        kind: ExprKind::Pipe {
                            input: Box::new(acc),
                            stage: Box::new(stage),
                        },
                        span,
                    };
                }
                (acc, depth)
            }
            Rule::sum | Rule::product => {
                let mut inner = pair.into_inner();
                let (mut acc, mut depth) = self.expr_depth(inner.next().expect("operand"));
                while let Some(op) = inner.next() {
                    let op = match op.as_str() {
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        _ => BinOp::MatMul,
                    };
                    let (rhs, d) = self.expr_depth(inner.next().expect("operand"));
                    depth = depth.max(d) + 1;
                    if depth > MAX_EXPR_DEPTH {
                        return (acc, depth);
                    }
                    let span = acc.span.to(rhs.span);
                    acc = Expr {
                        kind: ExprKind::Binary {
                            op,
                            lhs: Box::new(acc),
                            rhs: Box::new(rhs),
                        },
                        span,
                    };
                }
                (acc, depth)
            }
            Rule::unary => {
                let mut negs = Vec::new();
                let mut atom = None;
                for p in pair.into_inner() {
                    if p.as_rule() == Rule::neg {
                        negs.push(span_of(&p).start);
                    } else {
                        atom = Some(p);
                    }
                }
                let (mut acc, mut depth) = self.expr_depth(atom.expect("unary operand"));
                for start in negs.into_iter().rev() {
                    depth += 1;
                    if depth > MAX_EXPR_DEPTH {
                        return (acc, depth);
                    }
                    let span = Span {
                        start,
                        end: acc.span.end,
                    };
                    acc = Expr {
                        kind: ExprKind::Neg(Box::new(acc)),
                        span,
                    };
                }
                (acc, depth)
            }
            Rule::paren => {
                let (inner, d) = self.expr_depth(pair.into_inner().next().expect("paren body"));
                (
                    Expr {
                        kind: ExprKind::Paren(Box::new(inner)),
                        span,
                    },
                    d + 1,
                )
            }
            Rule::list => {
                let mut depth = 0;
                let items = pair
                    .into_inner()
                    .map(|p| {
                        let (e, d) = self.expr_depth(p);
                        depth = depth.max(d);
                        e
                    })
                    .collect();
                (
                    Expr {
                        kind: ExprKind::List(items),
                        span,
                    },
                    depth + 1,
                )
            }
            Rule::call => {
                let mut inner = pair.into_inner();
                let callee = self.ident(inner.next().expect("callee"));
                let mut depth = 0;
                let args = inner
                    .map(|arg| {
                        let span = span_of(&arg);
                        let mut parts = arg.into_inner();
                        let first = parts.next().expect("argument");
                        let (name, value_pair) = if first.as_rule() == Rule::arg_name {
                            let name = self.ident(first.into_inner().next().expect("name"));
                            (Some(name), parts.next().expect("argument value"))
                        } else {
                            (None, first)
                        };
                        let (value, d) = self.expr_depth(value_pair);
                        depth = depth.max(d);
                        Arg { name, value, span }
                    })
                    .collect();
                (
                    Expr {
                        kind: ExprKind::Call { callee, args },
                        span,
                    },
                    depth + 1,
                )
            }
            Rule::ident => (
                Expr {
                    kind: ExprKind::Name(self.ident(pair)),
                    span,
                },
                1,
            ),
            Rule::number => {
                let text = pair.as_str().to_string();
                let value = text.parse::<f64>().unwrap_or(f64::INFINITY);
                if !value.is_finite() {
                    self.errors.push(
                        Diagnostic::new(Code::IntegerTooLarge, "number literal too large")
                            .label(span, "this does not fit in a 64-bit float"),
                    );
                }
                (
                    Expr {
                        kind: ExprKind::Number { value, text },
                        span,
                    },
                    1,
                )
            }
            Rule::string => {
                let raw = pair.as_str();
                let body = &raw[1..raw.len() - 1];
                let value = body.replace("\\\"", "\"").replace("\\\\", "\\");
                (
                    Expr {
                        kind: ExprKind::Str(value),
                        span,
                    },
                    1,
                )
            }
            Rule::boolean => (
                Expr {
                    kind: ExprKind::Bool(pair.as_str() == "true"),
                    span,
                },
                1,
            ),
            other => unreachable!("rule {other:?} is not an expression"),
        }
    }
}

fn integer_too_large(span: Span) -> Diagnostic {
    Diagnostic::new(Code::IntegerTooLarge, "integer literal too large")
        .label(span, "does not fit in 64 bits")
        .help("dimensions must be at most 18446744073709551615")
}

/// Converts a pest error into a diagnostic that says what was expected and what was found.
fn syntax_error(src: &str, err: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let (found, found_len) = describe_token(src, pos);
    let mut expected: Vec<&'static str> = Vec::new();
    if let ErrorVariant::ParsingError { positives, .. } = &err.variant {
        for r in positives {
            let name = rule_name(*r);
            if !expected.contains(&name) {
                expected.push(name);
            }
        }
    }
    let span = Span::new(pos, pos + found_len);
    let wants_name = expected.contains(&"a name");
    let found_number = src[pos..].starts_with(|c: char| c.is_ascii_digit());
    if wants_name && found_number {
        return Diagnostic::new(Code::NumberForName, format!("expected a name, found {found}"))
            .label(span, "a name is expected here")
            .help("names start with a letter or `_`, like `layer1`");
    }
    let expected_text = match expected.len() {
        0 => "something else".to_string(),
        1 => expected[0].to_string(),
        _ => {
            let (last, rest) = expected.split_last().expect("non-empty");
            format!("{} or {}", rest.join(", "), last)
        }
    };
    let mut d = Diagnostic::new(
        Code::UnexpectedToken,
        format!("expected {expected_text}, found {found}"),
    )
    .label(span, "unexpected token");
    let keyword = ["model", "train", "input", "param", "let", "output", "true", "false"]
        .into_iter()
        .find(|k| {
            src[pos..].starts_with(k)
                && !src[pos + k.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        });
    if let Some(k) = keyword {
        if wants_name {
            d = d.help(format!("`{k}` is a keyword; choose another name"));
        }
    } else if src[pos..].starts_with('=') && expected.contains(&"`:`") {
        d = d.help("declare a shape with `:`, like `input x: [784]`");
    }
    d
}

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::ident | Rule::output_name | Rule::arg_name => "a name",
        Rule::number | Rule::int => "a number",
        Rule::string => "a string",
        Rule::boolean => "`true` or `false`",
        Rule::model | Rule::kw_model => "`model`",
        Rule::train | Rule::kw_train => "`train`",
        Rule::kw_input | Rule::input_stmt => "`input`",
        Rule::kw_param | Rule::param_stmt => "`param`",
        Rule::kw_let | Rule::let_stmt => "`let`",
        Rule::kw_output | Rule::output_stmt => "`output`",
        Rule::shape => "a shape like `[28, 28]`",
        Rule::setting => "a setting like `epochs = 5`",
        Rule::pipe_op => "`|>`",
        Rule::add_op | Rule::mul_op => "an operator",
        Rule::EOI => "end of file",
        Rule::expr | Rule::sum | Rule::product | Rule::unary | Rule::paren | Rule::list => {
            "an expression"
        }
        Rule::call => "a call",
        Rule::arg => "an argument",
        _ => "something else",
    }
}

/// Describes the token at `pos` for "found ..." and returns its length in bytes.
fn describe_token(src: &str, pos: usize) -> (String, usize) {
    let rest = &src[pos.min(src.len())..];
    let Some(c) = rest.chars().next() else {
        return ("end of file".to_string(), 0);
    };
    let word_len = |pred: fn(char) -> bool| rest.find(|c: char| !pred(c)).unwrap_or(rest.len());
    if c.is_ascii_digit() {
        let n = word_len(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        (format!("number `{}`", &rest[..n]), n)
    } else if c.is_ascii_alphabetic() || c == '_' {
        let n = word_len(|c| c.is_ascii_alphanumeric() || c == '_');
        let word = &rest[..n];
        let is_kw = ["model", "train", "input", "param", "let", "output", "true", "false"]
            .contains(&word);
        if is_kw {
            (format!("keyword `{word}`"), n)
        } else {
            (format!("`{word}`"), n)
        }
    } else if c == '"' {
        let n = rest[1..].find('"').map_or(rest.len(), |i| i + 2);
        ("a string".to_string(), n)
    } else if rest.starts_with("|>") {
        ("`|>`".to_string(), 2)
    } else {
        (format!("`{}`", c.escape_default()), c.len_utf8())
    }
}
