//! nnc-kernels: the kernel IR (loop nests over buffers), the operator library that says
//! how each op becomes loops, and an interpreter of kernel IR.
//!
//! Status: the crate exists so that the workspace has its final shape; the kernel IR is
//! built by the fusion/codegen work (see the README's status section).
