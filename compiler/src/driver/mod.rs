//! The driver behind `nnc train`, `nnc eval`, `nnc predict` and `nnc export`: picks the `train` block, builds the step
//! graphs, creates the executor for the chosen target, loads the data and hands over to
//! the runtime's training loop. Errors that belong to a place in the source (no train
//! block, data that does not fit the model) become diagnostics with spans; the rest are
//! messages naming the file or setting at fault.

mod artifact;
mod bench;
pub mod cpu;
pub mod cuda;
mod distributed;
mod export;
pub mod interp;
mod predict;
pub mod resources;
mod train;
mod weights;

pub use artifact::{run_build_artifact, ArtifactOptions, ArtifactSummary};
pub use bench::{run_bench, BenchOptions, BenchReport};
pub use export::{run_export, ExportOptions};
pub use predict::{run_predict, PredictOptions, PredictSummary};
pub use train::{run_eval, run_train, EvalOptions, Target, TrainOptions, Transport};

use crate::diag::Diagnostic;

/// Why a `train` or `eval` command failed. Every variant is a user error (exit code 1).
#[derive(Debug)]
pub enum DriverError {
    /// Errors located in the source file.
    Diagnostics(Vec<Diagnostic>),
    /// A message for the user (data files, checkpoints, targets), already formatted.
    Message(String),
    /// Training stopped on a signal with its checkpoint written (exit code 130).
    Interrupted(String),
}

impl From<Diagnostic> for DriverError {
    fn from(d: Diagnostic) -> Self {
        DriverError::Diagnostics(vec![d])
    }
}

impl From<Vec<Diagnostic>> for DriverError {
    fn from(d: Vec<Diagnostic>) -> Self {
        DriverError::Diagnostics(d)
    }
}
