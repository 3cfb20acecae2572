//! The graph IR: an SSA dataflow graph of primitive tensor ops over f32 values, with one
//! symbolic batch size `N`.
//!
//! - [`graph`]: the arena ([`Graph`], [`NodeId`]), hash-consing and shape side table;
//! - [`op`] and [`ops`]: the primitive op set, each family keeping its shape rule,
//!   gradient rule, reference evaluation and printed form together;
//! - [`print`] / [`parse`]: the text form (round-trips), [`verify`]: the invariants;
//! - [`interp`]: the reference interpreter (the oracle for every backend);
//! - [`lower`]: typed model → forward graph, every layer lowered in one place;
//! - [`init`]: parameter initializers with a documented PRNG.
//!
//! The training-step graph (loss, gradient, update) is built one layer up, in `crate::step`.
//!
//! Every value is an f32 tensor (comparisons produce 0.0 / 1.0), so the side table holds
//! shapes only; there is no dtype table to keep in sync.

pub mod graph;
pub mod init;
pub mod interp;
pub mod lower;
pub mod op;
pub mod ops;
pub mod parse;
pub mod print;
pub mod tensor;
pub mod verify;

pub use graph::{Dim, Graph, NodeId, Shape};
pub use op::Op;
pub use tensor::Tensor;

/// An error inside the IR: a malformed graph, a bad text input, or a request that the IR
/// cannot express. Messages read like rustc's (lowercase, no trailing period).
#[derive(Clone, Debug, PartialEq)]
pub struct IrError {
    pub message: String,
}

impl IrError {
    pub fn new(message: impl Into<String>) -> IrError {
        IrError {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for IrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IrError {}

/// Shorthand for results in this module.
pub type IrResult<T> = Result<T, IrError>;

/// Returns early with an [`IrError`] built from a format string.
macro_rules! ir_bail {
    ($($arg:tt)*) => {
        return Err($crate::ir::IrError::new(format!($($arg)*)))
    };
}
pub(crate) use ir_bail;

#[cfg(test)]
pub(crate) mod tests;
