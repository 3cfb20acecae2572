//! Code generation: kernel IR (`nnc_kernels::ir`) → machine code for a target. One
//! submodule per backend; each translates kernels 1:1 and decides nothing about fusion or
//! layout (that is settled in the kernel IR).
//!
//! - [`cpu`]: native code through cranelift, always built;
//! - `ptx` (cargo feature `cuda`): PTX for NVIDIA GPUs through LLVM 19 (inkwell).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod ptx;
