//! The training loop itself: epochs of mini-batches through an executor.

use super::*;

/// Trains `exec` on `data.train` for `config.epochs` epochs (counting those of the
/// checkpoint at `resume`, if given), evaluating on `data.test` after each, and writes
/// into `config.out_dir`: `weights.safetensors` and `checkpoint.safetensors` (after every
/// epoch), `metrics.jsonl` (and `config.log`), `curves.svg`, and `confusion.svg` for
/// classifiers.
///
/// The executor arrives initialized (parameters from the seed, optimizer state zero);
/// with `resume` its state is replaced by the checkpoint's.
pub fn train_loop(
    exec: &mut dyn Executor,
    mut data: Splits,
    config: &TrainConfig,
    resume: Option<&Path>,
) -> Result<Summary, TrainError> {
    let started = Instant::now();
    if config.epochs == 0 || config.batch == 0 {
        return Err(TrainError::Config(
            "`epochs` and `batch` must be positive".into(),
        ));
    }
    if config.checkpoint_every == Some(0) {
        return Err(TrainError::Config(
            "`checkpoint_every` must be positive".into(),
        ));
    }
    prepare(exec, &mut data, config.task, &config.metrics)?;
    let val = match (&config.validation_set, config.validation) {
        (Some(set), _) => {
            let mut set = set.clone();
            set.fit_input(&exec.input_shape())?;
            set.fit_labels(config.task, &exec.output_shape())?;
            Some(set)
        }
        (None, Some(f)) => {
            let (train, val) = hold_out(&data.train, f, config.seed);
            data.train = train;
            Some(val)
        }
        (None, None) => None,
    };
    let train = &data.train;
    let n = train.len();
    let batches = n.div_ceil(config.batch);
    // Data-parallel training: this process trains its shard of every batch; rank 0
    // alone writes files and reports.
    let dist: Option<&dyn Collective> = config.distributed.as_ref().map(|d| &*d.0);
    let root = dist.is_none_or(|d| d.rank() == 0);
    // Resuming from this folder continues its results; anything else is a fresh run there.
    let same_dir = |ck: &Path| {
        let dir = ck
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match (dir.canonicalize(), config.out_dir.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    };
    let fresh = !resume.is_some_and(same_dir);
    let _lock = if root {
        Some(outdir::claim(&config.out_dir, fresh, config.overwrite)?)
    } else {
        None
    };
    let checkpoint_path = config.out_dir.join(CHECKPOINT_FILE);
    let weights_path = config.out_dir.join(WEIGHTS_FILE);
    let metrics_path = config.out_dir.join(METRICS_FILE);
    let mut weights_meta = config.weights_metadata.clone();
    weights_meta.push(("nnc.preprocess".into(), data.preprocess.to_json()));

    let fingerprint = data_fingerprint(&[&data.train, &data.test]);
    if let Some(d) = dist {
        same_on_every_rank(d, &fingerprint, "data (files, preprocessing or splits)")?;
        same_on_every_rank(d, &exec.model_hash(), "model")?;
    }
    let mut start = match resume {
        Some(path) => resume_from(exec, path, config, n, &fingerprint, root)?,
        None => Start {
            epoch: 0,
            position: 0,
            rng: Rng::from_seed(config.seed),
            step: 0,
            partial: None,
            history: Vec::new(),
            watch: Watch::default(),
            plateau: Plateau::new(config.schedule.as_ref()),
            stopped: false,
        },
    };
    if !root {
        // Rank 0 holds the partial epoch's sums of every rank.
        start.partial = None;
    }
    let mut history = std::mem::take(&mut start.history);
    // A fresh run leaves an existing log alone until its first epoch has a row to write.
    let mut log_started = resume.is_some();
    if log_started && root {
        write_log(&metrics_path, &history)?;
        if let Some(log) = &config.log {
            write_log(log, &history)?;
        }
    }
    let mut rng = start.rng.clone();
    let mut step = start.step;
    let best_path = config.out_dir.join(BEST_FILE);
    // Early stopping's and a plateau schedule's state (a resumed run continues them).
    let mut watch = start.watch.clone();
    let finished = start.stopped;
    // The learning rate: the schedule's, set into the step's `lr` before each step.
    let per_epoch = batches as u64;
    let total_steps = per_epoch * config.epochs as u64;
    let mut plateau = start.plateau.clone();
    let mut lr_set: Option<f64> = None;
    let mut lr_last: Option<f64> = None;
    let per_step_schedule = config.schedule.as_ref().is_some_and(Schedule::per_step);
    let mut reporter = Reporter::new(if root {
        config.progress
    } else {
        ProgressMode::Quiet
    });
    let mut last_test: Option<Accumulator> = None;

    let first_epoch = if finished {
        config.epochs + 1
    } else {
        start.epoch + 1
    };
    for epoch in first_epoch..=config.epochs {
        let epoch_started = Instant::now();
        let epoch_rng = rng.state();
        let (mut x, mut y) = (Tensor::default(), Tensor::default());
        let mut order: Vec<usize> = (0..n).collect();
        if config.shuffle {
            rng.shuffle(&mut order);
        }
        let resuming_here = epoch == start.epoch + 1;
        let first = if resuming_here { start.position } else { 0 };
        let mut acc = match (resuming_here, start.partial.take()) {
            (true, Some(partial)) => partial,
            _ => Accumulator::new(config.task),
        };
        let first_batch = first / config.batch;
        reporter.start_epoch(epoch, config.epochs, batches as u64, first_batch as u64);
        let mut trained_now = 0usize;
        let mut allreduce_seconds = 0.0;
        // A backend that can run the whole epoch itself (data resident on a GPU) does,
        // unless the epoch starts mid-way or checkpoints are due inside it.
        if let Some(sched) = &config.schedule {
            // The epoch's rate (a per-step schedule sets it again before every step).
            let r = sched.rate(step, epoch - 1, per_epoch, total_steps, plateau.lr);
            set_lr(exec, &mut lr_set, r, epoch)?;
            lr_last = Some(r);
        }
        let whole = if first == 0
            && config.checkpoint_every.is_none()
            && !per_step_schedule
            && dist.is_none()
        {
            exec.train_epoch(&train.x, &train.y, &order, config.batch)
        } else {
            None
        };
        let per_step: &[usize] = match whole {
            Some(run) => {
                let run = run.map_err(|error| TrainError::Exec {
                    epoch,
                    batch: 1,
                    evaluating: false,
                    error,
                })?;
                account_epoch_run(exec, run, &order, config.batch, &train.y, &mut acc, epoch)?;
                step += batches as u64;
                trained_now = n;
                reporter.batch_done(
                    acc.mean_loss(),
                    n as f64 / epoch_started.elapsed().as_secs_f64(),
                );
                &[]
            }
            None => &order[first..],
        };
        for (k, idx) in per_step.chunks(config.batch).enumerate() {
            let batch_no = first_batch + k + 1;
            if let (Some(sched), true) = (&config.schedule, per_step_schedule) {
                let r = sched.rate(step, epoch - 1, per_epoch, total_steps, plateau.lr);
                set_lr(exec, &mut lr_set, r, epoch)?;
                lr_last = Some(r);
            }
            let exec_error = |error| TrainError::Exec {
                epoch,
                batch: batch_no,
                evaluating: false,
                error,
            };
            let raised = config.stop.as_ref().is_some_and(StopFlag::raised);
            // This process's rows of the batch: all of them, or its shard.
            let mine = match dist {
                Some(d) => {
                    let (lo, hi) = shard(idx.len(), d.rank(), d.size());
                    &idx[lo..hi]
                }
                None => idx,
            };
            train.x.gather_rows_into(mine, &mut x);
            train.y.gather_rows_into(mine, &mut y);
            let (x, y) = (&x, &y);
            // The batch's mean loss, this process's part of the loss sum, and whether any
            // process was asked to stop.
            let (out, local_loss, stop_everywhere) = match dist {
                None => {
                    let out = exec.train_step(x, y).map_err(exec_error)?;
                    let loss = out.loss;
                    (out, loss, raised)
                }
                Some(d) => {
                    let (out, local, stop, comm) =
                        data_parallel_step(exec, d, x, y, mine.len(), idx.len(), raised).map_err(
                            |e| match e {
                                ReduceError::Exec(error) => exec_error(error),
                                ReduceError::Collective(e) => TrainError::Collective(e),
                            },
                        )?;
                    allreduce_seconds += comm;
                    (out, local, stop)
                }
            };
            if !out.loss.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch,
                    batch: batch_no,
                    what: NonFinite::TrainLoss(out.loss),
                });
            }
            check_params(exec, epoch, batch_no)?;
            if !mine.is_empty() {
                // Under data parallelism this rank's share, summed over the ranks at the
                // epoch's end.
                acc.add_loss(local_loss, mine.len());
                if let Some(output) = &out.output {
                    acc.add_outputs(output, y)
                        .map_err(|error| TrainError::Metric {
                            epoch,
                            batch: batch_no,
                            error,
                        })?;
                }
            }
            step += 1;
            trained_now += idx.len();
            let position = first + trained_now;
            reporter.batch_done(
                acc.mean_loss(),
                trained_now as f64 / epoch_started.elapsed().as_secs_f64(),
            );
            let stopping = stop_everywhere && position < n;
            let due = config
                .checkpoint_every
                .is_some_and(|every| batch_no.is_multiple_of(every) && position < n);
            if due || stopping {
                let state = exec.state().map_err(|error| TrainError::Exec {
                    epoch,
                    batch: batch_no,
                    evaluating: false,
                    error,
                })?;
                // The partial epoch's sums of every rank.
                let mut partial = acc.clone();
                if let Some(d) = dist {
                    reduce_accumulator(&mut partial, d)?;
                }
                let acc = &partial;
                if root {
                    Checkpoint {
                        model_hash: exec.model_hash(),
                        state,
                        step,
                        epoch: epoch - 1,
                        position,
                        rng: epoch_rng,
                        batch: config.batch,
                        seed: config.seed,
                        shuffle: config.shuffle,
                        progress: progress_json(
                            Some(acc),
                            false,
                            &watch,
                            &plateau,
                            config,
                            &fingerprint,
                        ),
                    }
                    .save(&checkpoint_path)?;
                }
                if stopping {
                    reporter.interrupted();
                    return Err(TrainError::Interrupted {
                        epoch,
                        position,
                        checkpoint: checkpoint_path,
                    });
                }
            }
        }
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        if let Some(d) = dist {
            reduce_accumulator(&mut acc, d)?;
            average_buffers(exec, d, epoch)?;
        }
        let test = evaluate_shared(exec, &data.test, config.batch, config.task, epoch, dist)?;
        let val_acc = match &val {
            Some(v) => Some(evaluate_shared(
                exec,
                v,
                config.batch,
                config.task,
                epoch,
                dist,
            )?),
            None => None,
        };
        let mut record = EpochRecord {
            epoch,
            train_loss: acc.mean_loss(),
            test_loss: test.mean_loss(),
            train_metrics: metric_values(&acc, &config.metrics),
            test_metrics: metric_values(&test, &config.metrics),
            val_loss: val_acc.as_ref().map(Accumulator::mean_loss),
            val_metrics: val_acc
                .as_ref()
                .map(|v| metric_values(v, &config.metrics))
                .unwrap_or_default(),
            samples_per_s: trained_now as f64 / train_seconds.max(1e-9),
            seconds: epoch_started.elapsed().as_secs_f64(),
            stopped: None,
            lr: lr_last,
            allreduce_seconds: dist.map(|_| allreduce_seconds),
        };
        plateau.update(config.schedule.as_ref(), &record);
        let mut improved = false;
        if let Some(stop) = &config.early_stopping {
            improved = watch.update(stop, &record);
            if !improved && watch.waited >= stop.patience && epoch < config.epochs {
                record.stopped = Some(format!(
                    "early stopping: `{}` did not improve by more than {} for {} epoch{} (best {} at epoch {})",
                    stop.monitor,
                    stop.min_delta,
                    stop.patience,
                    if stop.patience == 1 { "" } else { "s" },
                    watch.best.unwrap_or(f64::NAN),
                    watch.best_epoch
                ));
            }
        }
        history.push(record.clone());
        if !root {
            // Only rank 0 writes.
        } else if log_started {
            append_line(&metrics_path, &record)?;
            if let Some(log) = &config.log {
                append_line(log, &record)?;
            }
        } else {
            // A fresh run's first results: what an earlier run left here goes now.
            for stale in [BEST_FILE, CURVES_FILE, CONFUSION_FILE] {
                let _ = fs::remove_file(config.out_dir.join(stale));
            }
            write_log(&metrics_path, &history)?;
            if let Some(log) = &config.log {
                write_log(log, &history)?;
            }
            log_started = true;
        }
        let state = exec.state().map_err(|error| TrainError::Exec {
            epoch,
            batch: batches,
            evaluating: false,
            error,
        })?;
        if root {
            write_weights(&weights_path, &state, &weights_meta)?;
            if improved {
                write_weights(&best_path, &state, &weights_meta)?;
            }
        }
        let last = epoch == config.epochs || record.stopped.is_some();
        // A raised stop flag (Ctrl-C during evaluation) ends the run after this epoch
        // (when raised on any rank).
        let raised = config.stop.as_ref().is_some_and(StopFlag::raised);
        let flagged = !last && any_rank(dist, raised)?;
        let due = epoch.is_multiple_of(config.checkpoint_every_epochs.max(1));
        if root && (last || flagged || due) {
            Checkpoint {
                model_hash: exec.model_hash(),
                state,
                step,
                epoch,
                position: 0,
                rng: rng.state(),
                batch: config.batch,
                seed: config.seed,
                shuffle: config.shuffle,
                progress: progress_json(
                    None,
                    record.stopped.is_some(),
                    &watch,
                    &plateau,
                    config,
                    &fingerprint,
                ),
            }
            .save(&checkpoint_path)?;
        }
        reporter.end_epoch(&record, config.epochs);
        last_test = Some(test);
        if record.stopped.is_some() {
            break;
        }
        if flagged {
            return Err(TrainError::Interrupted {
                epoch: epoch + 1,
                position: 0,
                checkpoint: checkpoint_path,
            });
        }
    }
    if root
        && config
            .early_stopping
            .as_ref()
            .is_some_and(|s| s.restore_best)
        && best_path.is_file()
    {
        // The best epoch's weights become the final ones (the file is already complete).
        let bytes = fs::read(&best_path).map_err(io_error(&best_path))?;
        write_atomically(&weights_path, &bytes)?;
    }

    let mut files = vec![weights_path, checkpoint_path, metrics_path];
    if best_path.is_file() && config.early_stopping.is_some() {
        files.push(best_path);
    }
    if let Some(log) = &config.log {
        files.push(log.clone());
    }
    if last_test.is_none() {
        // A checkpoint that already holds every epoch asked for: still write the outputs.
        let state = exec.state().map_err(|error| TrainError::Exec {
            epoch: config.epochs,
            batch: 0,
            evaluating: false,
            error,
        })?;
        if root {
            write_weights(&files[0], &state, &weights_meta)?;
        }
        last_test = Some(evaluate_shared(
            exec,
            &data.test,
            config.batch,
            config.task,
            config.epochs,
            dist,
        )?);
    }
    if !root {
        return Ok(Summary {
            history,
            steps: step,
            seconds: started.elapsed().as_secs_f64(),
            confusion: last_test.as_ref().and_then(|t| t.confusion().cloned()),
            files: Vec::new(),
            rank: dist.map_or(0, |d| d.rank()),
        });
    }
    let curves = config.out_dir.join(CURVES_FILE);
    plot::write_curves(&curves, &history, &config.metrics).map_err(|message| TrainError::Plot {
        path: curves.clone(),
        message,
    })?;
    files.push(curves);
    let confusion = last_test.as_ref().and_then(|t| t.confusion().cloned());
    if let Some(cm) = &confusion {
        let path = config.out_dir.join(CONFUSION_FILE);
        plot::write_confusion(&path, cm).map_err(|message| TrainError::Plot {
            path: path.clone(),
            message,
        })?;
        files.push(path);
    }
    Ok(Summary {
        history,
        steps: step,
        seconds: started.elapsed().as_secs_f64(),
        confusion,
        files,
        rank: 0,
    })
}

/// The training split without a held-out fraction `f` of its rows (chosen with `seed`,
/// the same every run), and those rows: the validation split.
fn hold_out(train: &Dataset, f: f64, seed: u64) -> (Dataset, Dataset) {
    let n = train.len();
    let mut order: Vec<usize> = (0..n).collect();
    Rng::from_seed(seed ^ 0x5A11_DA7E).shuffle(&mut order);
    let held = ((n as f64 * f).round() as usize).clamp(usize::from(n > 1), n.saturating_sub(1));
    let mut val_rows: Vec<usize> = order[..held].to_vec();
    val_rows.sort_unstable();
    let mut keep = vec![true; n];
    for &i in &val_rows {
        keep[i] = false;
    }
    let train_rows: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
    (train.subset(&train_rows), train.subset(&val_rows))
}

/// Early stopping's state: the best monitored value so far, its epoch, and the epochs
/// since it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Watch {
    best: Option<f64>,
    best_epoch: usize,
    waited: usize,
}

impl Watch {
    pub(super) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited})
    }

    pub(super) fn from_json(v: &serde_json::Value) -> Option<Watch> {
        Some(Watch {
            best: optional_f64(v.get("best")?)?,
            best_epoch: v.get("best_epoch")?.as_u64()? as usize,
            waited: v.get("waited")?.as_u64()? as usize,
        })
    }

    /// Takes in an epoch's record; whether the monitored value improved.
    pub(super) fn update(&mut self, stop: &EarlyStop, record: &EpochRecord) -> bool {
        let v = record.monitored(&stop.monitor).unwrap_or(f64::NAN);
        let improved = v.is_finite()
            && match self.best {
                None => true,
                Some(b) if stop.maximize => v > b + stop.min_delta,
                Some(b) => v < b - stop.min_delta,
            };
        if improved {
            self.best = Some(v);
            self.best_epoch = record.epoch;
            self.waited = 0;
        } else {
            self.waited += 1;
        }
        improved
    }
}

/// Sets the step's learning rate to `r` (single precision, as the step reads it) when it
/// differs from the one set last.
fn set_lr(
    exec: &mut dyn Executor,
    set: &mut Option<f64>,
    r: f64,
    epoch: usize,
) -> Result<(), TrainError> {
    if *set == Some(r) {
        return Ok(());
    }
    let tensor = StateTensor {
        name: LR_STATE.to_string(),
        kind: StateKind::Optimizer,
        tensor: Tensor {
            shape: Vec::new(),
            data: vec![r as f32],
        },
    };
    exec.set_state(&[tensor])
        .map_err(|error| TrainError::Exec {
            epoch,
            batch: 0,
            evaluating: false,
            error,
        })?;
    *set = Some(r);
    Ok(())
}

/// A plateau schedule's state: its current rate and the epochs since the monitored value
/// last improved.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Plateau {
    pub(super) lr: f64,
    best: Option<f64>,
    waited: usize,
}

impl Plateau {
    pub(super) fn new(schedule: Option<&Schedule>) -> Plateau {
        Plateau {
            lr: schedule.map_or(0.0, |s| s.base_lr),
            best: None,
            waited: 0,
        }
    }

    pub(super) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"lr": self.lr, "best": self.best, "waited": self.waited})
    }

    pub(super) fn from_json(v: &serde_json::Value) -> Option<Plateau> {
        Some(Plateau {
            lr: v.get("lr")?.as_f64()?,
            best: optional_f64(v.get("best")?)?,
            waited: v.get("waited")?.as_u64()? as usize,
        })
    }

    /// Takes in an epoch's record (a no-op for other schedules).
    pub(super) fn update(&mut self, schedule: Option<&Schedule>, record: &EpochRecord) {
        let Some(ScheduleKind::Plateau {
            monitor,
            patience,
            factor,
            min_lr,
            maximize,
        }) = schedule.map(|s| &s.kind)
        else {
            return;
        };
        let v = record.monitored(monitor).unwrap_or(f64::NAN);
        let improved = v.is_finite()
            && match self.best {
                None => true,
                Some(b) if *maximize => v > b,
                Some(b) => v < b,
            };
        if improved {
            self.best = Some(v);
            self.waited = 0;
        } else {
            self.waited += 1;
            if self.waited >= *patience {
                self.lr = (self.lr * factor).max(*min_lr);
                self.waited = 0;
            }
        }
    }
}

/// `null` as `Some(None)`, a number as `Some(Some(v))`, anything else as `None`.
fn optional_f64(v: &serde_json::Value) -> Option<Option<f64>> {
    match v {
        serde_json::Value::Null => Some(None),
        v => v.as_f64().map(Some),
    }
}

/// A fingerprint of the data a run trains and tests on (shapes and every value's bits):
/// a resumed run must see the same. Word-at-a-time, so 60,000 images take milliseconds.
pub(super) fn data_fingerprint(splits: &[&Dataset]) -> String {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mix = |w: u64| {
        h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    };
    for d in splits {
        for t in [&d.x, &d.y] {
            mix(t.shape.len() as u64);
            for &s in &t.shape {
                mix(s as u64);
            }
            let mut pairs = t.data.chunks_exact(2);
            for p in &mut pairs {
                mix(u64::from(p[0].to_bits()) | (u64::from(p[1].to_bits()) << 32));
            }
            for v in pairs.remainder() {
                mix(u64::from(v.to_bits()));
            }
        }
    }
    format!("{h:016x}")
}

/// One data-parallel step on this rank's `shard` rows (`x`, `y`) of a global batch of
/// `global` rows: the gradient of the shard's mean loss, weighted by the shard's share of
/// the batch, is summed over the ranks in one reduction of the executor's gradient buffer
/// (which also carries the loss sum and the stop flags), then every rank applies the same
/// update. Returns the step's output with the global batch's mean loss, this rank's mean
/// loss, whether any rank was asked to stop, and the seconds the reduction took.
fn data_parallel_step(
    exec: &mut dyn Executor,
    dist: &dyn Collective,
    x: &Tensor,
    y: &Tensor,
    shard: usize,
    global: usize,
    stop: bool,
) -> Result<(StepOutput, f32, bool, f64), ReduceError> {
    let share = shard as f32 / global as f32;
    // Overlapped: the gradients are reduced bucket by bucket while the backward pass
    // runs, then the loss sum and stop flags in a small reduction of their own.
    // (Every rank takes the same path: a rank without rows reduces zeros the same way.)
    let overlapped = exec.grad_step_overlapped(x, y, dist, share).transpose()?;
    if let Some((mut out, waited)) = overlapped {
        let local = out.loss;
        let mut extra = [local * shard as f32, f32::from(u8::from(stop))];
        let reducing = Instant::now();
        dist.all_reduce_sum(&mut extra)
            .map_err(ReduceError::Collective)?;
        // The reductions' cost to the step: the wait after the last gradient kernel and
        // the small reduction (the overlapped part is hidden behind computing).
        let comm = waited + reducing.elapsed().as_secs_f64();
        exec.apply_gradients().map_err(ReduceError::Exec)?;
        out.loss = extra[0] / global as f32;
        return Ok((out, local, extra[1] > 0.0, comm));
    }
    let mut out = if shard > 0 {
        exec.grad_step(x, y).map_err(ReduceError::Exec)?
    } else {
        StepOutput {
            loss: 0.0,
            output: None,
        }
    };
    let local = out.loss;
    let extra = [local * shard as f32, f32::from(u8::from(stop))];
    let reducing = Instant::now();
    let [loss_sum, stops] = exec.reduce_gradients(dist, share, extra)?;
    let comm = reducing.elapsed().as_secs_f64();
    exec.apply_gradients().map_err(ReduceError::Exec)?;
    out.loss = loss_sum / global as f32;
    Ok((out, local, stops > 0.0, comm))
}

/// Whether `flag` is raised on any rank (on this one alone without data parallelism).
fn any_rank(dist: Option<&dyn Collective>, flag: bool) -> Result<bool, TrainError> {
    let Some(d) = dist else {
        return Ok(flag);
    };
    let mut v = [f64::from(u8::from(flag))];
    d.all_reduce_sum_f64(&mut v)
        .map_err(TrainError::Collective)?;
    Ok(v[0] > 0.0)
}

/// An error unless `value` (a hex fingerprint) is the same on every rank.
fn same_on_every_rank(dist: &dyn Collective, value: &str, what: &str) -> Result<(), TrainError> {
    let h = u64::from_str_radix(value.trim_start_matches("fnv1a64:"), 16).unwrap_or(0);
    // 16-bit pieces: sums of up to 2^37 ranks stay exact in an f64.
    let mine: Vec<f64> = (0..4).map(|k| ((h >> (16 * k)) & 0xffff) as f64).collect();
    let mut sums = mine.clone();
    sums.extend(mine.iter().map(|v| v * v));
    dist.all_reduce_sum_f64(&mut sums)
        .map_err(TrainError::Collective)?;
    let n = dist.size() as f64;
    // Equal values on every rank exactly when n·Σv² = (Σv)² for each piece.
    let same = (0..4).all(|k| n * sums[4 + k] == sums[k] * sums[k]);
    if same {
        Ok(())
    } else {
        Err(TrainError::Config(format!(
            "rank {}: the ranks do not have the same {what}\nhelp: launch every rank with the same program, data and options",
            dist.rank()
        )))
    }
}

/// Under data parallelism each rank's batch-norm statistics follow its own shards: at an
/// epoch's end they are replaced by their mean over the ranks, so that every rank
/// evaluates and saves the same model.
fn average_buffers(
    exec: &mut dyn Executor,
    dist: &dyn Collective,
    epoch: usize,
) -> Result<(), TrainError> {
    let names = exec.buffer_names();
    if names.is_empty() {
        return Ok(());
    }
    let failed = |error| TrainError::Exec {
        epoch,
        batch: 0,
        evaluating: false,
        error,
    };
    let mut buffers: Vec<StateTensor> = exec
        .state()
        .map_err(failed)?
        .into_iter()
        .filter(|s| names.contains(&s.name))
        .collect();
    let mut all: Vec<f64> = buffers
        .iter()
        .flat_map(|b| b.tensor.data.iter().map(|&v| f64::from(v)))
        .collect();
    dist.all_reduce_sum_f64(&mut all)
        .map_err(TrainError::Collective)?;
    let n = dist.size() as f64;
    let mut values = all.into_iter();
    for b in &mut buffers {
        for v in &mut b.tensor.data {
            *v = (values.next().unwrap_or(0.0) / n) as f32;
        }
    }
    exec.set_state(&buffers).map_err(failed)
}
