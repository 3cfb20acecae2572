//! Resuming: where a run starts, fresh or from a checkpoint (state, epoch, position
//! in the epoch, the RNG and the partial epoch's metrics).

use super::*;

/// Where a run starts: fresh, or from a checkpoint.
pub(super) struct Start {
    pub(super) epoch: usize,
    pub(super) position: usize,
    pub(super) rng: Rng,
    pub(super) step: u64,
    pub(super) partial: Option<Accumulator>,
    pub(super) history: Vec<EpochRecord>,
}

pub(super) fn resume_from(
    exec: &mut dyn Executor,
    path: &Path,
    config: &TrainConfig,
    train_len: usize,
) -> Result<Start, TrainError> {
    let ck = Checkpoint::load(path)?;
    let current = exec.state().map_err(|error| TrainError::Exec {
        epoch: 0,
        batch: 0,
        evaluating: false,
        error,
    })?;
    let state = ck.state_for(path, &exec.model_hash(), &current)?;
    let differs = |what: &str, then: String, now: String| {
        TrainError::Config(format!(
            "`{}`: the checkpoint was written with {what} {then}, this run has {what} {now}\nhelp: resume with the same {what}, so that the data order continues exactly",
            path.display()
        ))
    };
    if ck.batch != config.batch {
        return Err(differs(
            "batch",
            ck.batch.to_string(),
            config.batch.to_string(),
        ));
    }
    if ck.seed != config.seed {
        return Err(differs(
            "seed",
            ck.seed.to_string(),
            config.seed.to_string(),
        ));
    }
    if ck.shuffle != config.shuffle {
        return Err(differs(
            "shuffle",
            ck.shuffle.to_string(),
            config.shuffle.to_string(),
        ));
    }
    if ck.epoch > config.epochs || (ck.epoch == config.epochs && ck.position > 0) {
        return Err(TrainError::Config(format!(
            "`{}`: the checkpoint is already past epoch {} of the {} asked for\nhelp: ask for more epochs to continue training",
            path.display(),
            ck.epoch,
            config.epochs
        )));
    }
    let bad = |what: &str| {
        TrainError::Config(format!(
            "`{}`: the checkpoint's {what} does not fit this data",
            path.display()
        ))
    };
    if ck.position >= train_len && ck.position > 0 || ck.position % config.batch != 0 {
        return Err(bad("position in the data order"));
    }
    let rng = Rng::from_state(ck.rng).ok_or_else(|| bad("RNG state"))?;
    let history: Vec<EpochRecord> = match ck.progress.get("history").and_then(|h| h.as_array()) {
        Some(items) => items
            .iter()
            .map(|v| EpochRecord::from_json(v, &config.metrics))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("history"))?,
        None => return Err(bad("history")),
    };
    let partial = match ck.progress.get("partial") {
        Some(serde_json::Value::Null) | None => None,
        Some(v) => Some(Accumulator::from_json(config.task, v).ok_or_else(|| bad("running sums"))?),
    };
    exec.set_state(&state).map_err(|error| TrainError::Exec {
        epoch: ck.epoch,
        batch: 0,
        evaluating: false,
        error,
    })?;
    Ok(Start {
        epoch: ck.epoch,
        position: ck.position,
        rng,
        step: ck.step,
        partial,
        history,
    })
}
