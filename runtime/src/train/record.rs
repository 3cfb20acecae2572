//! Recording a run: accounting for steps the executor ran itself, the parameter check
//! after each step, and the metrics log.

use super::*;

/// Accounts the steps of an epoch (or an evaluation) the executor ran itself
/// ([`Executor::train_epoch`], [`Executor::eval_all`]) as the per-batch loop would have:
/// each batch's loss must be finite (the first that is not is named by its batch), and
/// losses and outputs go into `acc` batch by batch. An evaluation must have outputs.
pub(super) fn account_run(
    run: &EpochRun,
    order: &[usize],
    batch: usize,
    labels: &Tensor,
    acc: &mut Accumulator,
    epoch: usize,
    evaluating: bool,
) -> Result<(), TrainError> {
    let steps = order.len().div_ceil(batch);
    let exec_error = |batch: usize, msg: String| TrainError::Exec {
        epoch,
        batch,
        evaluating,
        error: ExecError::new(msg),
    };
    if run.losses.len() != steps {
        let msg = format!("{} losses came back for {steps} batches", run.losses.len());
        return Err(exec_error(steps, msg));
    }
    if evaluating && run.outputs.is_none() {
        return Err(exec_error(steps, "the evaluation gave no outputs".into()));
    }
    let mut y = Tensor::default();
    for (k, idx) in order.chunks(batch).enumerate() {
        let loss = run.losses[k];
        if !loss.is_finite() {
            let what = if evaluating {
                NonFinite::TestLoss(loss)
            } else {
                NonFinite::TrainLoss(loss)
            };
            return Err(TrainError::NonFinite {
                epoch,
                batch: k + 1,
                what,
            });
        }
        acc.add_loss(loss, idx.len());
        if let Some(outputs) = &run.outputs {
            let rows = outputs.rows_range(k * batch, k * batch + idx.len());
            labels.gather_rows_into(idx, &mut y);
            acc.add_outputs(&rows, &y)
                .map_err(|error| TrainError::Metric {
                    epoch,
                    batch: k + 1,
                    error,
                })?;
        }
    }
    Ok(())
}

/// Accounts an epoch the executor ran itself ([`account_run`]), then checks the
/// parameters once: a bad one is named with the epoch's last batch (the steps in between
/// are not checked one by one).
pub(super) fn account_epoch_run(
    exec: &dyn Executor,
    run: EpochRun,
    order: &[usize],
    batch: usize,
    labels: &Tensor,
    acc: &mut Accumulator,
    epoch: usize,
) -> Result<(), TrainError> {
    account_run(&run, order, batch, labels, acc, epoch, false)?;
    check_params(exec, epoch, order.len().div_ceil(batch))
}

/// The parameters must be finite after the update of `epoch`, `batch`.
pub(super) fn check_params(
    exec: &dyn Executor,
    epoch: usize,
    batch: usize,
) -> Result<(), TrainError> {
    let bad = exec
        .first_non_finite_param()
        .map_err(|error| TrainError::Exec {
            epoch,
            batch,
            evaluating: false,
            error,
        })?;
    match bad {
        Some(p) => Err(TrainError::NonFinite {
            epoch,
            batch,
            what: NonFinite::Param {
                name: p.name,
                index: p.index,
                value: p.value,
            },
        }),
        None => Ok(()),
    }
}

pub(super) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |error| TrainError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `records` as the whole content of a JSON-lines log, atomically.
pub(super) fn write_log(path: &Path, records: &[EpochRecord]) -> Result<(), TrainError> {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.to_json_line());
        text.push('\n');
    }
    Ok(write_atomically(path, text.as_bytes())?)
}

/// The records of epochs `1..=epochs` in the JSON-lines log at `path`, in order: the
/// longest run of them from epoch 1 the file holds (rows after `epochs`, from epochs a
/// resumed run trains again, are dropped).
pub(super) fn read_log(path: &Path, epochs: usize, metrics: &[Metric]) -> Vec<EpochRecord> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out: Vec<EpochRecord> = Vec::new();
    for line in text.lines() {
        let record = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| EpochRecord::from_json(&v, metrics));
        match record {
            Some(r) if r.epoch == out.len() + 1 && r.epoch <= epochs => out.push(r),
            _ => break,
        }
    }
    out
}

pub(super) fn append_line(path: &Path, record: &EpochRecord) -> Result<(), TrainError> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error(path))?;
    writeln!(f, "{}", record.to_json_line()).map_err(io_error(path))
}
