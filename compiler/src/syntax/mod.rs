//! The surface syntax: grammar, AST, parser, and the AST printer used by golden tests.
//!
//! Entry point: [`parse_file`]. Only this module sees pest.

pub mod ast;
pub mod fmt;
mod lex;
mod parse;
pub mod print;

pub use lex::MAX_NESTING;
pub use parse::{parse_file, MAX_EXPR_DEPTH};
