//! Code generation: kernel IR (`nnc_kernels::ir`) → machine code for a target. One
//! submodule per backend; each translates kernels 1:1 and decides nothing about fusion or
//! layout (that is settled in the kernel IR).

pub mod cpu;
