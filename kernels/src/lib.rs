//! nnc-kernels: the kernel IR (loop nests over flat f32 buffers, with library GEMM calls),
//! its printer, constructors and reference interpreter. The compiler lowers fused graph
//! groups into this IR (`compiler/src/lower`); the CPU and GPU backends translate it 1:1;
//! the runtime uses its buffer declarations to allocate and bind memory.

pub mod abi;
pub mod build;
pub mod gpu;
pub mod interp;
pub mod ir;
pub mod manifest;
pub mod print;
#[cfg(any(test, feature = "samples"))]
pub mod samples;
pub mod simplify;

#[cfg(test)]
mod tests;
