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
    let train = &data.train;
    let n = train.len();
    let batches = n.div_ceil(config.batch);
    fs::create_dir_all(&config.out_dir).map_err(io_error(&config.out_dir))?;
    let checkpoint_path = config.out_dir.join(CHECKPOINT_FILE);
    let weights_path = config.out_dir.join(WEIGHTS_FILE);
    let metrics_path = config.out_dir.join(METRICS_FILE);
    let mut weights_meta = config.weights_metadata.clone();
    weights_meta.push(("nnc.preprocess".into(), data.preprocess.to_json()));

    let mut start = match resume {
        Some(path) => resume_from(exec, path, config, n)?,
        None => Start {
            epoch: 0,
            position: 0,
            rng: Rng::from_seed(config.seed),
            step: 0,
            partial: None,
            history: Vec::new(),
        },
    };
    let mut history = std::mem::take(&mut start.history);
    write_log(&metrics_path, &history)?;
    if let Some(log) = &config.log {
        write_log(log, &history)?;
    }
    let mut rng = start.rng.clone();
    let mut step = start.step;
    let mut reporter = Reporter::new(config.progress);
    let mut last_test: Option<Accumulator> = None;

    for epoch in start.epoch + 1..=config.epochs {
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
        // A backend that can run the whole epoch itself (data resident on a GPU) does,
        // unless the epoch starts mid-way or checkpoints are due inside it.
        let whole = if first == 0 && config.checkpoint_every.is_none() {
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
            train.x.gather_rows_into(idx, &mut x);
            train.y.gather_rows_into(idx, &mut y);
            let (x, y) = (&x, &y);
            let out = exec.train_step(x, y).map_err(|error| TrainError::Exec {
                epoch,
                batch: batch_no,
                evaluating: false,
                error,
            })?;
            if !out.loss.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch,
                    batch: batch_no,
                    what: NonFinite::TrainLoss(out.loss),
                });
            }
            check_params(exec, epoch, batch_no)?;
            acc.add_loss(out.loss, idx.len());
            if let Some(output) = &out.output {
                acc.add_outputs(output, y)
                    .map_err(|error| TrainError::Metric {
                        epoch,
                        batch: batch_no,
                        error,
                    })?;
            }
            step += 1;
            trained_now += idx.len();
            let position = first + trained_now;
            reporter.batch_done(
                acc.mean_loss(),
                trained_now as f64 / epoch_started.elapsed().as_secs_f64(),
            );
            if let Some(every) = config.checkpoint_every {
                if batch_no.is_multiple_of(every) && position < n {
                    let state = exec.state().map_err(|error| TrainError::Exec {
                        epoch,
                        batch: batch_no,
                        evaluating: false,
                        error,
                    })?;
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
                        progress: progress_json(&history, Some(&acc)),
                    }
                    .save(&checkpoint_path)?;
                }
            }
        }
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        let test = evaluate_split(exec, &data.test, config.batch, config.task, epoch)?;
        let record = EpochRecord {
            epoch,
            train_loss: acc.mean_loss(),
            test_loss: test.mean_loss(),
            train_metrics: metric_values(&acc, &config.metrics),
            test_metrics: metric_values(&test, &config.metrics),
            samples_per_s: trained_now as f64 / train_seconds.max(1e-9),
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        history.push(record.clone());
        append_line(&metrics_path, &record)?;
        if let Some(log) = &config.log {
            append_line(log, &record)?;
        }
        let state = exec.state().map_err(|error| TrainError::Exec {
            epoch,
            batch: batches,
            evaluating: false,
            error,
        })?;
        write_weights(&weights_path, &state, &weights_meta)?;
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
            progress: progress_json(&history, None),
        }
        .save(&checkpoint_path)?;
        reporter.end_epoch(&record, config.epochs);
        last_test = Some(test);
    }

    let mut files = vec![weights_path, checkpoint_path, metrics_path];
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
        write_weights(&files[0], &state, &weights_meta)?;
        last_test = Some(evaluate_split(
            exec,
            &data.test,
            config.batch,
            config.task,
            config.epochs,
        )?);
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
    })
}
