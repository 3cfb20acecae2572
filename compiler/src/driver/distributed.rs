//! `nnc train --distributed mpi|nccl`: joining the group of processes the launcher
//! started, and the executor with the data-parallel halves of the training step (the
//! runtime's loop runs the schedule; see `nnc_runtime::dist`).

#[cfg(any(feature = "mpi", feature = "nccl", test))]
use std::rc::Rc;
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
    Ok(Distributed(Rc::new(c)))
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
    Ok(Distributed(Rc::new(c)))
}

#[cfg(not(feature = "nccl"))]
fn nccl(_timeout: Duration) -> Result<Distributed, DriverError> {
    Err(DriverError::Message(
        "this nnc was built without NCCL\nhelp: build it with `cargo build --release -p nnc --features nccl` (needs the CUDA driver and NCCL at run time)".into(),
    ))
}

/// The GPU this rank uses on its node.
#[cfg(feature = "cuda")]
fn gpu_of(dist: &Distributed) -> usize {
    dist.0.device().map_or(0, |d| d.ordinal())
}

#[cfg(not(feature = "cuda"))]
fn gpu_of(_dist: &Distributed) -> usize {
    0
}

/// An executor of the training step split for data parallelism, compiled for a shard of
/// `shard` rows.
pub fn parallel_executor(
    target: Target,
    model: &TypedModel,
    train: &TypedTrain,
    seed: u64,
    shard: usize,
    dist: &Distributed,
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
                super::cuda::cuda_executor_on(&compiled, model, seed, gpu_of(dist))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use nnc_runtime::checkpoint::read_weights;
    use nnc_runtime::dist::ThreadGroup;

    use super::super::train::{run_train_in, TrainOptions};
    use super::*;

    fn options(target: Target, out: PathBuf, batch: Option<usize>) -> TrainOptions {
        TrainOptions {
            model: None,
            target,
            data: None,
            epochs: Some(1),
            batch,
            seed: None,
            out: Some(out),
            resume: None,
            log: None,
            quiet: true,
            init: None,
            checkpoint_every: None,
            overwrite: true,
            max_memory: None,
            distributed: None,
            collective_timeout: Duration::from_secs(60),
        }
    }

    fn program(file: &Path) -> crate::sema::typed::Program {
        let bytes = std::fs::read(file).unwrap();
        pipeline::front_end(&bytes, file.parent().unwrap())
            .unwrap()
            .1
    }

    /// The largest difference between two weights files.
    fn max_diff(a: &Path, b: &Path) -> f32 {
        let (wa, wb) = (read_weights(a).unwrap(), read_weights(b).unwrap());
        let mut worst = 0.0f32;
        for (name, t) in &wa {
            let u = &wb.iter().find(|(n, _)| n == name).unwrap().1;
            for (x, y) in t.data.iter().zip(&u.data) {
                worst = worst.max((x - y).abs());
            }
        }
        worst
    }

    /// Ranks as threads run the very schedule MPI runs (sharded batches, one all-reduce
    /// of the gradient buffer per step, sharded evaluation): with the same global batch
    /// they reach the single process's weights and test accuracy.
    fn ranks_match_one_process(target: Target, ranks: usize, file: &str, batch: Option<usize>) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let file = root.join("examples").join(file);
        let scratch = std::env::temp_dir().join(format!(
            "nnc-dist-{}-{}-{ranks}",
            std::process::id(),
            target.name()
        ));
        let _ = std::fs::remove_dir_all(&scratch);
        let alone = {
            let program = program(&file);
            let opts = options(target, scratch.join("one"), batch);
            run_train_in(&program, &file, &opts, None).unwrap()
        };
        let group = ThreadGroup::new(ranks, Duration::from_secs(120));
        let threads: Vec<_> = group
            .into_iter()
            .map(|g| {
                let (file, out) = (file.clone(), scratch.join("group"));
                std::thread::spawn(move || {
                    let program = program(&file);
                    let d = Distributed(Rc::new(g));
                    run_train_in(&program, &file, &options(target, out, batch), Some(d)).unwrap()
                })
            })
            .collect();
        let summaries: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let diff = max_diff(
            &scratch.join("one/weights.safetensors"),
            &scratch.join("group/weights.safetensors"),
        );
        assert!(diff <= 1e-5, "weights differ by {diff}");
        let accuracy = |s: &nnc_runtime::train::Summary| {
            s.history[0].test_metric(nnc_runtime::metrics::Metric::Accuracy)
        };
        for s in &summaries {
            assert_eq!(accuracy(s), accuracy(&alone), "every rank reports the same");
            assert_eq!(s.steps, alone.steps);
        }
        assert!((summaries[0].history[0].train_loss - alone.history[0].train_loss).abs() < 1e-5);
        assert_eq!(summaries.iter().filter(|s| !s.files.is_empty()).count(), 1);
        let _ = std::fs::remove_dir_all(&scratch);
    }

    #[test]
    fn two_cpu_ranks_reach_the_weights_of_one_process() {
        ranks_match_one_process(Target::Cpu, 2, "mnist_mlp.nn", None);
    }

    #[test]
    fn three_interpreter_ranks_reach_the_weights_of_one_process() {
        // 3 does not divide the batch of 16: shards of 6, 5 and 5 rows.
        ranks_match_one_process(Target::Interp, 3, "xor.nn", None);
    }

    #[test]
    fn a_rank_with_no_rows_of_the_last_batch_still_takes_part() {
        // xor's 52 training rows in batches of 7 end in a batch of 3: the fourth rank's
        // shard of it is empty.
        ranks_match_one_process(Target::Interp, 4, "xor.nn", Some(7));
    }
}
