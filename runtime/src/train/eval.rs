//! Evaluation: fitting the splits to the model, and the loss and metrics of saved
//! parameters on a split, batch by batch or as one run of the executor.

use super::*;

/// Checks that the task and metrics fit the executor's output, and fits both splits to
/// the model's input and labels.
pub(super) fn prepare(
    exec: &dyn Executor,
    data: &mut Splits,
    task: TaskKind,
    metrics: &[Metric],
) -> Result<(), TrainError> {
    let out_shape = exec.output_shape();
    if element_count(&out_shape) != task.outputs_per_sample() {
        return Err(TrainError::Config(format!(
            "the model output has shape {}, but the task {task:?} needs {} values per sample",
            format_shape(&out_shape),
            task.outputs_per_sample()
        )));
    }
    if let Some(m) = metrics.iter().find(|m| !m.applies_to(task)) {
        let what = if m.is_classification() {
            "a classifier"
        } else {
            "outputs shaped like the targets (regression or binary)"
        };
        return Err(TrainError::Config(format!("metric `{m}` needs {what}")));
    }
    let input = exec.input_shape();
    for d in [&mut data.train, &mut data.test] {
        d.fit_input(&input)?;
        d.fit_labels(task, &out_shape)?;
    }
    Ok(())
}

/// [`evaluate_split`], sharded over data-parallel ranks: each evaluates its contiguous
/// share of the rows, and the sums are added up, so every rank gets the whole split's
/// score.
pub(super) fn evaluate_shared(
    exec: &mut dyn Executor,
    data: &Dataset,
    batch: usize,
    task: TaskKind,
    epoch: usize,
    dist: Option<&dyn Collective>,
) -> Result<Accumulator, TrainError> {
    let Some(d) = dist else {
        return evaluate_split(exec, data, batch, task, epoch);
    };
    let (lo, hi) = shard(data.len(), d.rank(), d.size());
    let rows: Vec<usize> = (lo..hi).collect();
    let mut acc = if rows.is_empty() {
        Accumulator::new(task)
    } else {
        evaluate_split(exec, &data.subset(&rows), batch, task, epoch)?
    };
    reduce_accumulator(&mut acc, d)?;
    Ok(acc)
}

/// Adds the accumulators of all ranks together, in place on each.
pub(super) fn reduce_accumulator(
    acc: &mut Accumulator,
    dist: &dyn Collective,
) -> Result<(), TrainError> {
    let mut sums = acc.sums();
    dist.all_reduce_sum_f64(&mut sums)
        .map_err(TrainError::Collective)?;
    acc.set_sums(&sums);
    Ok(())
}

/// Evaluates `data` in order, in batches of `batch`, and scores it. `epoch` is only used
/// in error messages.
pub(super) fn evaluate_split(
    exec: &mut dyn Executor,
    data: &Dataset,
    batch: usize,
    task: TaskKind,
    epoch: usize,
) -> Result<Accumulator, TrainError> {
    let mut acc = Accumulator::new(task);
    let order: Vec<usize> = (0..data.len()).collect();
    if let Some(run) = exec.eval_all(&data.x, &data.y, batch) {
        let run = run.map_err(|error| TrainError::Exec {
            epoch,
            batch: 1,
            evaluating: true,
            error,
        })?;
        account_run(&run, &order, batch, &data.y, &mut acc, epoch, true)?;
        return Ok(acc);
    }
    for (i, idx) in order.chunks(batch).enumerate() {
        let (x, y) = (data.x.gather_rows(idx), data.y.gather_rows(idx));
        let out = exec.eval_batch(&x, &y).map_err(|error| TrainError::Exec {
            epoch,
            batch: i + 1,
            evaluating: true,
            error,
        })?;
        if !out.loss.is_finite() {
            return Err(TrainError::NonFinite {
                epoch,
                batch: i + 1,
                what: NonFinite::TestLoss(out.loss),
            });
        }
        acc.add_loss(out.loss, idx.len());
        acc.add_outputs(&out.output, &y)
            .map_err(|error| TrainError::Metric {
                epoch,
                batch: i + 1,
                error,
            })?;
    }
    Ok(acc)
}

pub(super) fn metric_values(acc: &Accumulator, metrics: &[Metric]) -> Vec<(Metric, f64)> {
    metrics
        .iter()
        .filter_map(|&m| acc.value(m).map(|v| (m, v)))
        .collect()
}

/// Evaluates an executor on a dataset: loss, `metrics` and, for classifiers, the
/// confusion matrix (`nnc eval`). The dataset is fitted to the model first.
pub fn evaluate(
    exec: &mut dyn Executor,
    mut data: Dataset,
    batch: usize,
    task: TaskKind,
    metrics: &[Metric],
) -> Result<EvalReport, TrainError> {
    if batch == 0 {
        return Err(TrainError::Config("the batch size must be positive".into()));
    }
    let mut splits = Splits {
        train: data.clone(),
        test: data,
        preprocess: Default::default(),
    };
    prepare(exec, &mut splits, task, metrics)?;
    data = splits.test;
    let acc = evaluate_split(exec, &data, batch, task, 0)?;
    Ok(EvalReport {
        samples: acc.samples,
        loss: acc.mean_loss(),
        metrics: metric_values(&acc, metrics),
        confusion: acc.confusion().cloned(),
    })
}
