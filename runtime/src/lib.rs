//! nnc-runtime: executes training for a compiled model: data loading, the training loop,
//! metrics and checkpoints. It never depends on the compiler crate.
