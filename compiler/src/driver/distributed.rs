//! `nnc train --distributed mpi|nccl`: joining the group of processes the launcher
//! started, and the executor with the data-parallel halves of the training step (the
//! runtime's loop runs the schedule; see `nnc_runtime::dist`).

use std::sync::Arc;
use std::time::Duration;

use nnc_runtime::dist::Distributed;
use nnc_runtime::executor::Executor;

use super::interp::InterpExecutor;
use super::train::{Target, Transport};
use super::DriverError;
use crate::pipeline;
use crate::sema::typed::{TypedModel, TypedTrain};

/// Joins the group of `transport` for training on `target`.
pub fn join(
    transport: Transport,
    target: Target,
    timeout: Duration,
) -> Result<Distributed, DriverError> {
    match (transport, target) {
        (Transport::Mpi, Target::Cuda) => Err(DriverError::Message(
            "`--distributed mpi` trains on the CPU (`--target cpu` or `interp`)\nhelp: on GPUs use `--distributed nccl --target cuda`, one process per GPU".into(),
        )),
        (Transport::Nccl, Target::Cpu | Target::Interp) => Err(DriverError::Message(
            "`--distributed nccl` trains on GPUs (`--target cuda`)\nhelp: on CPUs use `--distributed mpi`".into(),
        )),
        (Transport::Mpi, _) => mpi(timeout),
        (Transport::Nccl, _) => nccl(timeout),
    }
}

#[cfg(feature = "mpi")]
fn mpi(timeout: Duration) -> Result<Distributed, DriverError> {
    let c = nnc_runtime::dist::mpi::MpiCollective::init(timeout)
        .ok_or_else(|| DriverError::Message("MPI is already initialised in this process".into()))?;
    Ok(Distributed(Arc::new(c)))
}

#[cfg(not(feature = "mpi"))]
fn mpi(_timeout: Duration) -> Result<Distributed, DriverError> {
    Err(DriverError::Message(
        "this nnc was built without MPI\nhelp: build it with `cargo build --release -p nnc --features mpi` (needs Open MPI: `apt-get install libopenmpi-dev openmpi-bin libclang-dev`)".into(),
    ))
}

#[cfg(feature = "nccl")]
fn nccl(timeout: Duration) -> Result<Distributed, DriverError> {
    let c = nnc_runtime::dist::nccl::NcclCollective::init(timeout)
        .map_err(|e| DriverError::Message(format!("cannot join the NCCL group: {e}")))?;
    Ok(Distributed(Arc::new(c)))
}

#[cfg(not(feature = "nccl"))]
fn nccl(_timeout: Duration) -> Result<Distributed, DriverError> {
    Err(DriverError::Message(
        "this nnc was built without NCCL\nhelp: build it with `cargo build --release -p nnc --features nccl` (needs the CUDA driver and NCCL at run time)".into(),
    ))
}

/// An executor of the training step split for data parallelism, compiled for a shard of
/// `shard` rows.
pub fn parallel_executor(
    target: Target,
    model: &TypedModel,
    train: &TypedTrain,
    seed: u64,
    shard: usize,
) -> Result<Box<dyn Executor>, DriverError> {
    let halves = |e: crate::ir::IrError| {
        DriverError::Message(format!(
            "cannot build the data-parallel step of `{}`: {}",
            model.name, e.message
        ))
    };
    match target {
        Target::Interp => {
            let graphs = pipeline::step_graphs(model, train).map_err(DriverError::Message)?;
            let parallel = crate::step::build_parallel_graphs(model, train).map_err(halves)?;
            Ok(Box::new(
                InterpExecutor::new(graphs, model, seed).with_parallel(parallel),
            ))
        }
        Target::Cpu | Target::Cuda => {
            let mut compiled = pipeline::compile_train(model, train, shard.max(1), None)
                .map_err(DriverError::Message)?;
            pipeline::compile_parallel(&mut compiled, model, train, shard.max(1))
                .map_err(DriverError::Message)?;
            if target == Target::Cpu {
                super::cpu::cpu_executor(&compiled, model, seed)
            } else {
                super::cuda::cuda_executor(&compiled, model, seed)
            }
        }
    }
}
