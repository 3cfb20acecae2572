//! The abstract syntax tree of a `.nn` file.
//!
//! Every node carries the byte span it was parsed from, so that later stages can point
//! diagnostics at the exact source text. Pipelines (`x |> f(a)`) and parentheses are kept
//! as written: semantic analysis desugars pipes, and the formatter reprints both.
//! Comments are not part of the tree; they are kept beside it in [`File::comments`].

pub use crate::diag::Span;

/// A name as written, with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole source file: its items in source order and its comments.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
    pub comments: Vec<Comment>,
}

/// A `# ...` comment; `text` includes the `#` and excludes the newline.
#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Model(Model),
    Train(Train),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Model(m) => m.span,
            Item::Train(t) => t.span,
        }
    }
}

/// `model NAME { stmt* }`
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `input NAME: [d, ..]`
    Input { name: Ident, shape: ShapeLit },
    /// `param NAME: [d, ..] (= init)?`
    Param {
        name: Ident,
        shape: ShapeLit,
        init: Option<Expr>,
    },
    /// `let NAME = expr`
    Let { name: Ident, value: Expr },
    /// `output (NAME =)? expr`
    Output { name: Option<Ident>, value: Expr },
}

/// A literal shape `[28, 28, 1]` (batch dimension not written).
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeLit {
    pub dims: Vec<Dim>,
    pub span: Span,
}

/// One dimension of a [`ShapeLit`]; `value` saturates at `u64::MAX` when the literal overflows
/// (the parser reports that, and keeps going).
#[derive(Clone, Debug, PartialEq)]
pub struct Dim {
    pub value: u64,
    pub text: String,
    pub span: Span,
}

/// `train MODEL { NAME = expr ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Train {
    pub model: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
        }
    }

    /// Binding strength: `+ -` bind looser than `* / @`.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div | BinOp::MatMul => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// A numeric literal; `text` is the source spelling, `value` its value.
    Number {
        value: f64,
        text: String,
    },
    /// A string literal, escapes resolved.
    Str(String),
    Bool(bool),
    List(Vec<Expr>),
    Name(Ident),
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `input |> stage`, where `stage` is a [`ExprKind::Call`] or a [`ExprKind::Name`].
    Pipe {
        input: Box<Expr>,
        stage: Box<Expr>,
    },
    Paren(Box<Expr>),
}

/// A call argument: positional (`name == None`) or named.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}
