//! Kernels and programs of the kernel IR: buffer declarations and sizes, GPU launch
//! shapes, kernels and whole steps.

use std::fmt;

use super::{BufId, Idx, Stmt};

/// An element count `per_batch · N + fixed`, `N` being the runtime batch size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Size {
    pub per_batch: usize,
    pub fixed: usize,
}

impl Size {
    pub fn fixed(n: usize) -> Size {
        Size {
            per_batch: 0,
            fixed: n,
        }
    }

    pub fn per_batch(n: usize) -> Size {
        Size {
            per_batch: n,
            fixed: 0,
        }
    }

    /// Elements for batch size `n` (saturating; sizes are validated when compiled).
    pub fn resolve(self, n: usize) -> usize {
        self.per_batch.saturating_mul(n).saturating_add(self.fixed)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.per_batch, self.fixed) {
            (0, c) => write!(f, "{c}"),
            (1, 0) => write!(f, "N"),
            (p, 0) => write!(f, "{p}*N"),
            (1, c) => write!(f, "N+{c}"),
            (p, c) => write!(f, "{p}*N+{c}"),
        }
    }
}

/// What a buffer is to the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Given by the runtime, read only (the batch, labels).
    Input,
    /// Given by the runtime, read and updated in place (parameters, optimizer state).
    InOut,
    /// Written by the step and read by the runtime (loss, model output).
    Output,
    /// Scratch space inside the step; lives in the arena at `offset`.
    Temp { offset: Size },
}

/// A global f32 buffer of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferDecl {
    pub name: String,
    pub len: Size,
    pub kind: BufferKind,
}

/// A block-shared f32 array of a GPU kernel (uninitialised when the block starts).
#[derive(Clone, Debug, PartialEq)]
pub struct SharedDecl {
    pub name: String,
    pub len: u32,
}

/// How a GPU kernel is launched: `threads` threads per block (a multiple of 32, at most
/// 1024) on a grid of `grid[0] × grid[1] × grid[2]` blocks (indices in `N`), each block
/// with its own `shared` arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuLaunch {
    pub threads: u32,
    pub grid: [Idx; 3],
    pub shared: Vec<SharedDecl>,
}

/// One kernel: the buffers it touches and its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    /// Buffers this kernel reads or writes, in a fixed order (the backend's argument
    /// order).
    pub params: Vec<BufId>,
    pub body: Vec<Stmt>,
    pub num_vars: u32,
    pub num_locals: u32,
    /// What the kernel does, for `nnc explain` and the printer's header comment.
    pub note: String,
    /// Set by the GPU schedule: the kernel is written for one thread of a grid (it may
    /// use [`Idx::Thread`], [`Idx::Block`], shared arrays, barriers and shuffles); `None`
    /// for the CPU-shaped kernels every other stage sees.
    pub gpu: Option<GpuLaunch>,
}

/// A whole step: buffers and kernels, run in order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub name: String,
    pub buffers: Vec<BufferDecl>,
    pub kernels: Vec<Kernel>,
    /// Size of the scratch arena holding every `Temp` buffer.
    pub arena: Size,
}
