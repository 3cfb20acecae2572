//! Code generation: kernel IR to machine code, one submodule per backend.

#[cfg(feature = "cuda")]
pub mod ptx;
