//! Resuming: where a run starts, fresh or from a checkpoint (state, epoch, position
//! in the epoch, the RNG, the partial epoch's metrics, the controls' state), and what a
//! resumed run may change: the epochs, the base rate and the schedule (each a warning),
//! not the model, the data, the batch, the seed or the shuffling (each an error).

use super::*;

/// Where a run starts: fresh, or from a checkpoint.
pub(super) struct Start {
    pub(super) epoch: usize,
    pub(super) position: usize,
    pub(super) rng: Rng,
    pub(super) step: u64,
    pub(super) partial: Option<Accumulator>,
    pub(super) history: Vec<EpochRecord>,
    pub(super) watch: Watch,
    pub(super) plateau: Plateau,
    /// Early stopping ended the run.
    pub(super) stopped: bool,
}

pub(super) fn resume_from(
    exec: &mut dyn Executor,
    path: &Path,
    config: &TrainConfig,
    train_len: usize,
    fingerprint: &str,
    announce: bool,
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
    let progress = &ck.progress;
    if let Some(then) = progress.get("data").and_then(|d| d.as_str()) {
        if then != fingerprint {
            return Err(TrainError::Config(format!(
                "`{}`: the checkpoint was trained on other data (fingerprint {then}, this data {fingerprint})\nhelp: resume with the data the run started with (the same files, preprocessing and splits); to train these weights on new data, start a new run with `--init {}`",
                path.display(),
                path.with_file_name(WEIGHTS_FILE).display()
            )));
        }
    }
    let mut warnings = Vec::new();
    if let Some(then) = progress.get("epochs").and_then(|e| e.as_u64()) {
        if then as usize != config.epochs {
            let horizon = if config.schedule.is_some() {
                " (the schedule's horizon moves with it)"
            } else {
                ""
            };
            warnings.push(format!(
                "the run was started for {then} epochs, it now runs to {}{horizon}",
                config.epochs
            ));
        }
    }
    if let (Some(then), Some(now)) = (progress.get("lr").and_then(|v| v.as_f64()), config.lr) {
        if then != now {
            warnings.push(format!(
                "the learning rate was {then}, it is {now} from here on"
            ));
        }
    }
    if let Some(then) = progress.get("schedule") {
        let then = then.as_str().unwrap_or("constant");
        let now = config
            .schedule
            .as_ref()
            .map_or("constant".to_string(), |s| s.kind.to_string());
        if then != now {
            warnings.push(format!(
                "the schedule was `{then}`, it is `{now}` from here on"
            ));
        }
    }
    let ranks = config.distributed.as_ref().map_or(1, |d| d.0.size());
    if let Some(then) = progress.get("ranks").and_then(|v| v.as_u64()) {
        if then as usize != ranks {
            warnings.push(format!(
                "the checkpoint was written by {then} process{}, this run has {ranks}: the global batch is the same, but sums are taken in another order, so the weights will not match a run that kept {then} to the last bit",
                if then == 1 { "" } else { "es" }
            ));
        }
    }
    for w in warnings.iter().filter(|_| announce) {
        eprintln!("warning: resuming `{}`: {w}", path.display());
    }
    // The history: a checkpoint of the old format holds it; otherwise `metrics.jsonl`
    // beside the checkpoint does.
    let history: Vec<EpochRecord> = match progress.get("history").and_then(|h| h.as_array()) {
        Some(items) => items
            .iter()
            .map(|v| EpochRecord::from_json(v, &config.metrics))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("history"))?,
        None => {
            let log = path.with_file_name(METRICS_FILE);
            let history = read_log(&log, ck.epoch, &config.metrics);
            if history.len() < ck.epoch && announce {
                eprintln!(
                    "warning: `{}` holds {} of the {} epochs of the checkpoint; the log and the curves go on from there",
                    log.display(),
                    history.len(),
                    ck.epoch
                );
            }
            history
        }
    };
    // Early stopping's and a plateau schedule's state: recorded, or (old checkpoints)
    // replayed from the history.
    let watch = match progress.get("watch") {
        Some(v) => Watch::from_json(v).ok_or_else(|| bad("early-stopping state"))?,
        None => {
            let mut w = Watch::default();
            if let Some(stop) = &config.early_stopping {
                for record in &history {
                    w.update(stop, record);
                }
            }
            w
        }
    };
    let was_plateau = progress
        .get("schedule")
        .and_then(|v| v.as_str())
        .is_some_and(|s| s.starts_with("plateau"));
    let mut plateau = match progress.get("plateau") {
        Some(_) if !was_plateau => Plateau::new(config.schedule.as_ref()),
        Some(v) => Plateau::from_json(v).ok_or_else(|| bad("plateau state"))?,
        None => {
            let mut p = Plateau::new(config.schedule.as_ref());
            for record in &history {
                p.update(config.schedule.as_ref(), record);
            }
            p
        }
    };
    if let (Some(then), Some(sched)) = (
        progress.get("lr").and_then(|v| v.as_f64()),
        &config.schedule,
    ) {
        // A changed base rate rescales where a plateau schedule had brought it.
        if was_plateau && then > 0.0 && then != sched.base_lr {
            plateau.lr *= sched.base_lr / then;
        }
    }
    let stopped = match progress.get("stopped") {
        Some(v) => v.as_bool().ok_or_else(|| bad("progress"))?,
        None => history.last().is_some_and(|r| r.stopped.is_some()),
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
        watch,
        plateau,
        stopped,
    })
}
