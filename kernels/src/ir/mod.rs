//! The kernel IR: loop nests over flat f32 buffers.
//!
//! A [`Program`] is the whole training (or evaluation) step: global buffers and kernels
//! run in order. A kernel is straight-line statements and loops; loop variables and
//! index arithmetic are `i64`, values are `f32`, and the only mutable scalars are
//! [`Stmt::Assign`]ed locals (accumulators). Matrix products are one [`Stmt::Gemm`]
//! statement: the CPU backend calls a tuned library for it; the compiler's GPU schedule
//! rewrites it into a tiled kernel. Everything a backend needs is explicit here; backends
//! decide nothing.
//!
//! GPU kernels ([`Kernel::gpu`] set by the GPU schedule) are written for one thread of a
//! grid: they read [`Idx::Thread`] and [`Idx::Block`], and may use block-shared arrays
//! ([`Expr::SharedLoad`], [`Stmt::SharedStore`]), [`Stmt::If`], [`Stmt::Barrier`] and
//! [`Expr::ShuffleXor`]; they hold no `Gemm` and no parallel loop. CPU kernels use none
//! of these. [`crate::gpu`] simulates GPU kernels.
//!
//! Invariants (checked by [`Program::validate`], relied on by backends):
//! - every `BufId` is an index into `Program::buffers` and is listed in the kernel's
//!   `params`; every `VarId` is bound by an enclosing `Loop`; every `LocalId` is below
//!   `Kernel::num_locals` and assigned before it is read (backends zero-initialise).
//! - a `parallel` loop is the only top-level statement of its kernel, and its iterations
//!   write disjoint elements: the runtime may split its range between threads and run the
//!   kernel once per part.
//!
//! This module holds the ids every part refers to; the parts live in `idx` (index
//! arithmetic), `ops` (scalar operators), `expr`, `stmt`, `program` (buffers, kernels,
//! programs), `windows` (the implicit-GEMM operand) and `validate`, and are re-exported
//! here.

mod expr;
mod idx;
mod ops;
mod program;
mod stmt;
mod validate;
mod windows;

pub use expr::Expr;
pub use idx::Idx;
pub use ops::{mix64, rand_uniform, rand_value, BinOp, CmpOp, UnOp};
pub use program::{BufferDecl, BufferKind, GpuLaunch, Kernel, Program, SharedDecl, Size};
pub use stmt::{Cond, Gemm, MatRef, Stmt};
pub use validate::InvalidProgram;
pub use windows::{axis_source, Windows};

/// Index of a buffer in [`Program::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

/// A loop variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u32);

/// A mutable scalar local of one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub u32);

/// Index of a block-shared array in [`GpuLaunch::shared`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedId(pub u32);
