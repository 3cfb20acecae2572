//! nnc-runtime: executes training for a compiled model: data loading, the training loop,
//! metrics and checkpoints. It never depends on the compiler crate.
//!
//! The pieces, in the order a training run uses them:
//! - [`data`] loads IDX and CSV files into [`data::Dataset`]s and cuts them into batches;
//! - [`executor::Executor`] is what any backend (reference interpreter, CPU, CUDA)
//!   implements: hold the state, run one training step, evaluate one batch;
//! - [`train::train_loop`] drives an executor through epochs, logs, checkpoints and plots;
//! - [`metrics`] computes accuracy, macro precision/recall/F1, MAE and MSE exactly;
//! - [`checkpoint`] writes `weights.safetensors` and full, checksummed checkpoints;
//! - [`plot`] draws `curves.svg` and `confusion.svg`;
//! - [`artifact`] is the contract between a compiled artifact and its executors;
//! - [`cpu`] runs a compiled artifact (native kernels + manifests) as an executor;
//! - `cuda` (feature `cuda`) finds the GPU for the CUDA executor.

pub mod artifact;
pub mod checkpoint;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod dist;
pub mod executor;
pub mod metrics;
pub mod plot;
pub mod rng;
pub mod tensor;
pub mod train;

pub use executor::{ExecError, Executor, StateKind, StateTensor, TaskKind};
pub use tensor::Tensor;
