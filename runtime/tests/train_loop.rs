//! The training loop driven by small hand-written executors: exact resume, NaN
//! detection, partial batches, the metrics log, checkpoints and pictures.

mod common;

use std::fs;
use std::path::Path;

use common::{temp_dir, EpochWise, Linear, Softmax};
use nnc_runtime::checkpoint::{read_weights, Checkpoint};
use nnc_runtime::data::{Dataset, Splits};
use nnc_runtime::metrics::Metric;
use nnc_runtime::rng::Rng;
use nnc_runtime::train::{evaluate, train_loop, ProgressMode, TrainConfig, TrainError};
use nnc_runtime::{Executor, TaskKind, Tensor};

/// Three classes of 2-D points around three centres, from a fixed seed.
fn blobs(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::from_seed(seed);
    let centres = [(1.0f32, 0.0f32), (-0.5, 0.9), (-0.5, -0.9)];
    let mut x = Vec::new();
    let mut y = Vec::new();
    for _ in 0..n {
        let c = rng.below(3) as usize;
        let jitter = |r: &mut Rng| (r.below(1000) as f32 / 1000.0 - 0.5) * 1.2;
        x.push(centres[c].0 + jitter(&mut rng));
        x.push(centres[c].1 + jitter(&mut rng));
        y.push(c as f32);
    }
    Dataset::from_tensors(
        "blobs",
        Tensor::new(vec![n, 2], x).unwrap(),
        Tensor::new(vec![n], y).unwrap(),
    )
    .unwrap()
}

fn splits() -> Splits {
    Splits {
        train: blobs(50, 1),
        test: blobs(20, 2),
        preprocess: Default::default(),
    }
}

const TASK: TaskKind = TaskKind::Classification { classes: 3 };

fn config(out: &Path, epochs: usize) -> TrainConfig {
    let mut c = TrainConfig::new(TASK, out);
    c.epochs = epochs;
    c.batch = 8;
    c.seed = 7;
    c.progress = ProgressMode::Quiet;
    c.metrics = vec![
        Metric::Accuracy,
        Metric::Precision,
        Metric::Recall,
        Metric::F1,
    ];
    c
}

fn bits(exec: &dyn Executor) -> Vec<(String, Vec<u32>)> {
    exec.state()
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.tensor.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn two_epochs_equal_one_plus_one_resumed_bit_for_bit() {
    let straight = temp_dir("straight");
    let mut a = Softmax::new(2, 3, 0.1);
    let summary_a = train_loop(&mut a, splits(), &config(&straight, 2), None).unwrap();

    let first = temp_dir("first");
    let mut b = Softmax::new(2, 3, 0.1);
    train_loop(&mut b, splits(), &config(&first, 1), None).unwrap();
    let mut c = Softmax::new(2, 3, 0.1); // a fresh executor: everything comes from the checkpoint
    let summary_c = train_loop(
        &mut c,
        splits(),
        &config(&first, 2),
        Some(&first.join("checkpoint.safetensors")),
    )
    .unwrap();

    assert_eq!(bits(&a), bits(&c));
    assert_eq!(summary_a.steps, summary_c.steps);
    assert_eq!(summary_c.history.len(), 2);
    for (x, y) in summary_a.history.iter().zip(&summary_c.history) {
        assert_eq!(x.train_loss.to_bits(), y.train_loss.to_bits());
        assert_eq!(x.test_metrics, y.test_metrics);
    }
    assert_eq!(
        read_weights(&straight.join("weights.safetensors")).unwrap(),
        read_weights(&first.join("weights.safetensors")).unwrap()
    );
}

#[test]
fn resuming_from_a_mid_epoch_checkpoint_is_exact_too() {
    let straight = temp_dir("mid-straight");
    let mut a = Softmax::new(2, 3, 0.1);
    let summary_a = train_loop(&mut a, splits(), &config(&straight, 2), None).unwrap();

    // Train with a checkpoint every 3 batches and make the run die one batch after the
    // checkpoint of epoch 2, batch 3 (epoch 1 has 7 batches, so that is step 10).
    let partial = temp_dir("mid-partial");
    let mut cfg = config(&partial, 2);
    cfg.checkpoint_every = Some(3);
    let mut b = Softmax::new(2, 3, 0.1);
    b.poison_after = Some(11);
    let err = train_loop(&mut b, splits(), &cfg, None).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFinite {
                epoch: 2,
                batch: 4,
                ..
            }
        ),
        "{err}"
    );
    let ck = Checkpoint::load(&partial.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ck.epoch, ck.position, ck.step), (1, 24, 10));

    let mut c = Softmax::new(2, 3, 0.1);
    let summary_c = train_loop(
        &mut c,
        splits(),
        &cfg,
        Some(&partial.join("checkpoint.safetensors")),
    )
    .unwrap();
    assert_eq!(bits(&a), bits(&c));
    let last_a = summary_a.history.last().unwrap();
    let last_c = summary_c.history.last().unwrap();
    assert_eq!(last_a.train_loss.to_bits(), last_c.train_loss.to_bits());
    assert_eq!(last_a.train_metrics, last_c.train_metrics);
}

#[test]
fn the_last_partial_batch_is_trained() {
    let out = temp_dir("partial");
    let mut exec = Softmax::new(2, 3, 0.1);
    train_loop(&mut exec, splits(), &config(&out, 2), None).unwrap();
    // 50 samples in batches of 8: six full batches and one of 2, every epoch.
    assert_eq!(
        exec.seen,
        [vec![8, 8, 8, 8, 8, 8, 2], vec![8, 8, 8, 8, 8, 8, 2]].concat()
    );
}

#[test]
fn a_nan_parameter_stops_training_naming_epoch_batch_and_parameter() {
    let out = temp_dir("nan");
    let mut exec = Softmax::new(2, 3, 0.1);
    exec.poison_after = Some(9); // epoch 2, batch 2
    let err = train_loop(&mut exec, splits(), &config(&out, 3), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter `dense_0.w` became NaN (element 3) after the update of epoch 2, batch 2\n\
         help: lower the learning rate, or check the data for extreme values (`scale`, `standardize`)"
    );
}

#[test]
fn an_infinite_loss_stops_training() {
    let out = temp_dir("inf");
    let mut exec = Softmax::new(2, 3, 0.1);
    exec.poison_after = Some(1); // w is NaN from step 2 on; the param check fires first
    let err = train_loop(&mut exec, splits(), &config(&out, 1), None).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "parameter `dense_0.w` became NaN (element 3) after the update of epoch 1, batch 1"
        ),
        "{err}"
    );

    // A diverging regression: the loss itself overflows.
    let x = Tensor::new(vec![4, 1], vec![1e20, -1e20, 1e20, 2e20]).unwrap();
    let y = Tensor::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let data = Dataset::from_tensors("big", x, y).unwrap();
    let mut lin = Linear {
        w: vec![1.0],
        b: 0.0,
        lr: 0.1,
    };
    let lin_out = temp_dir("inf-lin");
    let mut cfg = TrainConfig::new(TaskKind::Regression { outputs: 1 }, lin_out.to_path_buf());
    cfg.progress = ProgressMode::Quiet;
    let err = train_loop(
        &mut lin,
        Splits {
            train: data.clone(),
            test: data,
            preprocess: Default::default(),
        },
        &cfg,
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the training loss became infinite at epoch 1, batch 1"),
        "{err}"
    );
}

#[test]
fn metrics_log_has_one_object_per_epoch_with_every_metric() {
    let out = temp_dir("log");
    let log = out.join("extra").with_extension("jsonl");
    let mut cfg = config(&out, 3);
    cfg.log = Some(log.clone());
    let mut exec = Softmax::new(2, 3, 0.1);
    let summary = train_loop(&mut exec, splits(), &cfg, None).unwrap();
    let text = fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(text, fs::read_to_string(&log).unwrap());
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let keys: Vec<&str> = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .map(|kv| kv.split(':').next().unwrap().trim_matches(['{', '"']))
        .collect();
    assert_eq!(
        keys,
        [
            "epoch",
            "train_loss",
            "test_loss",
            "train_accuracy",
            "train_precision",
            "train_recall",
            "train_f1",
            "test_accuracy",
            "test_precision",
            "test_recall",
            "test_f1",
            "samples_per_s",
            "seconds"
        ]
    );
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        assert_eq!(
            l["train_loss"].as_f64().unwrap(),
            summary.history[i].train_loss
        );
    }
    // The last epoch's test numbers are those of the final weights.
    let report = evaluate(&mut exec, blobs(20, 2), 8, TASK, &cfg.metrics).unwrap();
    assert_eq!(lines[2]["test_loss"].as_f64().unwrap(), report.loss);
    assert_eq!(
        lines[2]["test_accuracy"].as_f64().unwrap(),
        report.metrics[0].1
    );
    assert_eq!(summary.confusion, report.confusion);
    assert!(
        report.metrics[0].1 > 0.8,
        "the blobs are separable: {report}"
    );
}

#[test]
fn train_loss_is_the_sample_weighted_mean_of_batch_losses() {
    // Without shuffling, with lr = 0 the weights never move, so each epoch's train loss
    // is the plain mean per-sample loss over the training set.
    let out = temp_dir("mean");
    let mut cfg = config(&out, 1);
    cfg.shuffle = false;
    let mut exec = Softmax::new(2, 3, 0.0);
    let summary = train_loop(&mut exec, splits(), &cfg, None).unwrap();
    let whole = evaluate(&mut exec, blobs(50, 1), 50, TASK, &[]).unwrap();
    let diff = (summary.history[0].train_loss - whole.loss).abs();
    assert!(
        diff < 1e-6,
        "{} vs {}",
        summary.history[0].train_loss,
        whole.loss
    );
}

#[test]
fn a_checkpoint_of_another_model_is_refused_and_nothing_is_loaded() {
    let out = temp_dir("other");
    let mut exec = Softmax::new(2, 3, 0.1);
    train_loop(&mut exec, splits(), &config(&out, 1), None).unwrap();
    let mut other = Softmax::new(2, 3, 0.1);
    other.hash = "another".into();
    let before = bits(&other);
    let err = train_loop(
        &mut other,
        splits(),
        &config(&temp_dir("other2"), 2),
        Some(&out.join("checkpoint.safetensors")),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("belongs to another model"),
        "{err}"
    );
    assert_eq!(bits(&other), before);
}

#[test]
fn a_corrupted_or_truncated_checkpoint_is_refused_and_nothing_is_loaded() {
    let out = temp_dir("corrupt");
    let mut exec = Softmax::new(2, 3, 0.1);
    train_loop(&mut exec, splits(), &config(&out, 1), None).unwrap();
    let path = out.join("checkpoint.safetensors");
    let good = fs::read(&path).unwrap();
    let mut flipped = good.clone();
    let at = good.len() - 5;
    flipped[at] ^= 1;
    for (bytes, expect) in [
        (flipped, "checksum does not match"),
        (
            good[..good.len() - 4].to_vec(),
            "not a valid safetensors file",
        ),
    ] {
        fs::write(&path, &bytes).unwrap();
        let mut fresh = Softmax::new(2, 3, 0.1);
        let before = bits(&fresh);
        let err = train_loop(
            &mut fresh,
            splits(),
            &config(&temp_dir("corrupt2"), 2),
            Some(&path),
        )
        .unwrap_err();
        assert!(err.to_string().contains(expect), "{err}");
        assert_eq!(bits(&fresh), before);
    }
}

#[test]
fn resuming_with_another_batch_size_is_refused() {
    let out = temp_dir("batch");
    let mut exec = Softmax::new(2, 3, 0.1);
    train_loop(&mut exec, splits(), &config(&out, 1), None).unwrap();
    let out2 = temp_dir("batch2");
    let mut cfg = config(&out2, 2);
    cfg.batch = 16;
    let err = train_loop(
        &mut Softmax::new(2, 3, 0.1),
        splits(),
        &cfg,
        Some(&out.join("checkpoint.safetensors")),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("written with batch 8, this run has batch 16"),
        "{err}"
    );
}

#[test]
fn the_same_seed_gives_the_same_weights_and_another_seed_does_not() {
    let run = |seed: u64| {
        let out = temp_dir("seed");
        let mut cfg = config(&out, 1);
        cfg.seed = seed;
        let mut exec = Softmax::new(2, 3, 0.1);
        train_loop(&mut exec, splits(), &cfg, None).unwrap();
        bits(&exec)
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn a_metric_that_does_not_fit_the_task_is_refused() {
    let out = temp_dir("metric");
    let mut cfg = config(&out, 1);
    cfg.metrics = vec![Metric::Mae];
    let err = train_loop(&mut Softmax::new(2, 3, 0.1), splits(), &cfg, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "metric `mae` needs outputs shaped like the targets (regression or binary)"
    );
}

#[test]
fn regression_reports_test_mae_and_mse_only() {
    let xs: Vec<f32> = (0..20).map(|i| i as f32 / 10.0).collect();
    let ys: Vec<f32> = xs.iter().map(|x| 2.0 * x + 1.0).collect();
    let data = Dataset::from_tensors(
        "line",
        Tensor::new(vec![20, 1], xs).unwrap(),
        Tensor::new(vec![20, 1], ys).unwrap(),
    )
    .unwrap();
    let out = temp_dir("regression");
    let mut cfg = TrainConfig::new(TaskKind::Regression { outputs: 1 }, out.to_path_buf());
    cfg.epochs = 200;
    cfg.batch = 5;
    cfg.progress = ProgressMode::Quiet;
    cfg.metrics = vec![Metric::Mae, Metric::Mse];
    let mut lin = Linear {
        w: vec![0.0],
        b: 0.0,
        lr: 0.1,
    };
    let summary = train_loop(
        &mut lin,
        Splits {
            train: data.clone(),
            test: data,
            preprocess: Default::default(),
        },
        &cfg,
        None,
    )
    .unwrap();
    let last = summary.history.last().unwrap();
    assert!(last.train_metrics.is_empty());
    assert!(last.test_metric(Metric::Mae).unwrap() < 0.01, "{last}");
    assert!((lin.w[0] - 2.0).abs() < 0.01 && (lin.b - 1.0).abs() < 0.01);
    assert!(summary.confusion.is_none());
    assert!(!out.join("confusion.svg").exists());
}

#[test]
fn pictures_are_written_for_a_classifier() {
    let out = temp_dir("plots");
    let mut exec = Softmax::new(2, 3, 0.1);
    let summary = train_loop(&mut exec, splits(), &config(&out, 4), None).unwrap();
    let curves = fs::read_to_string(out.join("curves.svg")).unwrap();
    assert!(curves.starts_with("<svg") && curves.contains("accuracy") && curves.contains("loss"));
    let confusion = fs::read_to_string(out.join("confusion.svg")).unwrap();
    let cm = summary.confusion.unwrap();
    assert!(
        confusion.contains(&format!(">\n{}\n<", cm.get(0, 0))),
        "{confusion}"
    );
    assert_eq!(summary.files.len(), 5);
}

#[test]
fn softmax_regression_learns_real_mnist() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/mnist-10k");
    let data = nnc_runtime::data::load_idx(&dir, 1.0 / 255.0).unwrap();
    let out = temp_dir("mnist");
    let mut cfg = TrainConfig::new(TaskKind::Classification { classes: 10 }, out.to_path_buf());
    cfg.batch = 64;
    cfg.progress = ProgressMode::Quiet;
    cfg.metrics = vec![Metric::Accuracy, Metric::F1];
    // The executor takes flat vectors; the data are [28, 28]: that must be refused.
    let mut flat = Softmax::new(784, 10, 0.05);
    let err = train_loop(&mut flat, data.clone(), &cfg, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("samples have shape [28, 28], the model input is [784]"),
        "{err}"
    );
    // Flattened by the caller, it trains.
    let flatten = |mut d: Dataset| {
        d.x.shape = vec![d.len(), 784];
        d.sample_shape = vec![784];
        d
    };
    let data = Splits {
        train: flatten(data.train),
        test: flatten(data.test),
        preprocess: Default::default(),
    };
    let summary = train_loop(&mut flat, data, &cfg, None).unwrap();
    let acc = summary.history[0].test_metric(Metric::Accuracy).unwrap();
    assert!(acc > 0.8, "test accuracy after one epoch: {acc}");
    assert_eq!(summary.confusion.unwrap().total(), 2000);
}

/// A backend that runs whole epochs and evaluations itself (as the cuda executor does
/// with the data on the GPU) trains exactly like one stepped batch by batch: same
/// weights bit for bit, same losses and metrics in every epoch record.
#[test]
fn a_backend_running_whole_epochs_trains_exactly_like_step_by_step() {
    let (one, two) = (temp_dir("steps"), temp_dir("epochs"));
    let mut stepped = Softmax::new(2, 3, 0.1);
    let a = train_loop(&mut stepped, splits(), &config(&one, 3), None).unwrap();
    let mut whole = EpochWise {
        inner: Softmax::new(2, 3, 0.1),
        epochs: 0,
        evals: 0,
    };
    let b = train_loop(&mut whole, splits(), &config(&two, 3), None).unwrap();
    assert_eq!((whole.epochs, whole.evals), (3, 3));
    assert_eq!(bits(&stepped), bits(&whole));
    assert_eq!((a.steps, a.history.len()), (b.steps, b.history.len()));
    for (x, y) in a.history.iter().zip(&b.history) {
        assert_eq!(x.train_loss.to_bits(), y.train_loss.to_bits());
        assert_eq!(x.test_loss.to_bits(), y.test_loss.to_bits());
        assert_eq!(x.train_metrics, y.train_metrics);
        assert_eq!(x.test_metrics, y.test_metrics);
    }
    assert!(!b.history[0].train_metrics.is_empty());
}

/// Checkpoints inside an epoch need the loop to stop mid-epoch: whole epochs are not
/// used then.
#[test]
fn whole_epochs_are_not_used_when_checkpoints_fall_inside_them() {
    let out = temp_dir("epochs-ckpt");
    let mut cfg = config(&out, 2);
    cfg.checkpoint_every = Some(3);
    let mut whole = EpochWise {
        inner: Softmax::new(2, 3, 0.1),
        epochs: 0,
        evals: 0,
    };
    train_loop(&mut whole, splits(), &cfg, None).unwrap();
    assert_eq!(whole.epochs, 0);
}

/// In a whole epoch the first non-finite loss is still named by its batch; parameters
/// are checked at the epoch's end, so a bad parameter is named with its last batch.
#[test]
fn non_finite_values_in_a_whole_epoch_are_reported() {
    let mut inner = Softmax::new(2, 3, 0.1);
    inner.poison_after = Some(9); // w is NaN after epoch 2, batch 2
    let mut whole = EpochWise {
        inner,
        epochs: 0,
        evals: 0,
    };
    let err = train_loop(&mut whole, splits(), &config(&temp_dir("e-nan"), 3), None).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "parameter `dense_0.w` became NaN (element 0) after the update of epoch 2, batch 7"
        ),
        "{err}"
    );

    // Rows in order, four per batch, targets twice the inputs: the third batch's squared
    // errors overflow.
    let v: Vec<f32> = vec![
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1e20, 2e20, 1e20, 3e20,
    ];
    let x = Tensor::new(vec![12, 1], v.clone()).unwrap();
    let y = Tensor::new(vec![12], v.iter().map(|t| 2.0 * t).collect()).unwrap();
    let data = Dataset::from_tensors("big", x, y).unwrap();
    let inner = Linear {
        w: vec![1.0],
        b: 0.0,
        lr: 0.001,
    };
    let mut whole = EpochWise {
        inner,
        epochs: 0,
        evals: 0,
    };
    let out = temp_dir("e-inf");
    let mut cfg = TrainConfig::new(TaskKind::Regression { outputs: 1 }, out.to_path_buf());
    cfg.progress = ProgressMode::Quiet;
    cfg.batch = 4;
    cfg.shuffle = false;
    let splits = Splits {
        train: data.clone(),
        test: data,
        preprocess: Default::default(),
    };
    let err = train_loop(&mut whole, splits, &cfg, None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the training loss became infinite at epoch 1, batch 3"),
        "{err}"
    );
}
