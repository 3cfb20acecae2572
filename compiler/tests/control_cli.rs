//! Training control end to end: a validation split reported every epoch, early stopping
//! (deterministic, said in `metrics.jsonl`, best weights kept and restorable), the
//! checkpoint cadence, Ctrl-C mid-epoch with a bit-identical resume, and a located error
//! with a hint for every bad setting.

use std::path::Path;
use std::process::Command;

use nnc_runtime::checkpoint::read_weights;

mod common;
use common::*;

/// A digit classifier on the bundled data with extra training settings.
fn program(dir: &Path, name: &str, extra: &str) -> String {
    let data = root().join("examples/data/mnist-10k");
    let text = format!(
        "model Digits {{\n    input image: [28, 28]\n    output p = image |> flatten |> dense(32) |> relu |> dense(10) |> softmax\n}}\n\ntrain Digits {{\n    data = idx(\"{}\", scale = 1 / 255)\n    loss = cross_entropy\n    optimizer = adam(lr = 1e-3)\n    batch = 64\n    epochs = 6\n    metrics = [accuracy]\n    seed = 4\n{extra}}}\n",
        data.display()
    );
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    s(&file)
}

fn rows(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn early_stopping_with_an_impossible_delta_stops_after_epoch_two() {
    let dir = scratch("control", "early");
    let file = program(
        &dir,
        "p.nn",
        "    validation = 0.1\n    early_stopping = early_stopping(monitor = \"val_loss\", patience = 1, min_delta = 1e9, restore_best = true)\n",
    );
    for run in ["a", "b"] {
        let out = dir.join(run);
        ok(&nnc(&["train", &file, "--quiet", "--out", &s(&out)]));
        let r = rows(&out);
        assert_eq!(r.len(), 2, "stopped after epoch 2: {r:?}");
        assert!(r[0].get("stopped").is_none());
        let why = r[1]["stopped"].as_str().expect("the row says why");
        assert!(
            why.contains("early stopping") && why.contains("val_loss"),
            "{why}"
        );
        for row in &r {
            assert!(row["val_loss"].as_f64().is_some() && row["val_accuracy"].as_f64().is_some());
        }
        // The best epoch is the first (nothing improves by 1e9); its weights are final.
        assert_eq!(
            read_weights(&out.join("weights.safetensors")).unwrap(),
            read_weights(&out.join("best.safetensors")).unwrap()
        );
    }
    // Deterministic: the same rows but for the timings.
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut()
            .unwrap()
            .retain(|k, _| k != "seconds" && k != "samples_per_s");
        v
    };
    let (a, b) = (rows(&dir.join("a")), rows(&dir.join("b")));
    assert_eq!(
        a.into_iter().map(strip).collect::<Vec<_>>(),
        b.into_iter().map(strip).collect::<Vec<_>>()
    );
    // The validation split is held out of training: 10 % fewer training samples.
    let plain = dir.join("plain");
    let file2 = program(&dir, "q.nn", "");
    ok(&nnc(&[
        "train",
        &file2,
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &s(&plain),
    ]));
    assert!(rows(&plain)[0].get("val_loss").is_none());
}

#[test]
fn bad_control_settings_are_located_errors_with_hints() {
    let dir = scratch("control", "bad");
    let cases = [
        (
            "early_stopping = early_stopping(patience = -1)",
            "`patience` of `early_stopping` must be an integer ≥ 1",
        ),
        (
            "early_stopping = early_stopping(monitor = \"loss\")",
            "`early_stopping` cannot monitor `loss`",
        ),
        (
            "validation = 0.1\n    early_stopping = early_stopping(monitor = \"val_f1\")",
            "add `f1` to `metrics`",
        ),
        (
            "early_stopping = early_stopping(monitor = \"val_loss\")",
            "add `validation = 0.1`",
        ),
        (
            "validation = 1.5",
            "`validation` must be a fraction between 0 and 1",
        ),
        (
            "checkpoint_every = 0",
            "`checkpoint_every` must be a positive integer",
        ),
        (
            "early_stopping = early_stopping(mode = \"up\")",
            "`mode` of `early_stopping` must be",
        ),
        ("clip_norm = -1", "`clip_norm` must be a number > 0"),
        ("clip_value = 0", "`clip_value` must be a number > 0"),
        ("weight_decay = -0.1", "`weight_decay` must be a number ≥ 0"),
    ];
    for (i, (setting, message)) in cases.iter().enumerate() {
        let file = program(&dir, &format!("b{i}.nn"), &format!("    {setting}\n"));
        let e = fails(&nnc(&["check", &file]));
        assert!(e.contains(message), "{setting}: {e}");
        assert!(e.contains(&format!("b{i}.nn:")), "located: {e}");
    }
    // `label_smoothing` is an argument of the loss.
    let file = program(&dir, "ls.nn", "");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "loss = cross_entropy",
        "loss = cross_entropy(label_smoothing = 1.5)",
    );
    std::fs::write(&file, text).unwrap();
    let e = fails(&nnc(&["check", &file]));
    assert!(
        e.contains("`label_smoothing` of `cross_entropy` must be"),
        "{e}"
    );
    // On the command line, a checkpoint cadence of 0 is a usage error.
    let file = program(&dir, "c.nn", "");
    let o = nnc(&["train", &file, "--checkpoint-every", "0"]);
    assert_eq!(o.status.code(), Some(2));
}

#[cfg(unix)]
#[test]
fn ctrl_c_mid_epoch_then_resume_gives_the_uninterrupted_weights() {
    let dir = scratch("control", "interrupt");
    let file = example("fashion_mlp.nn");
    let data = s(&root().join("examples/data/mnist-10k"));
    let args = |out: &Path| {
        vec![
            "train".to_string(),
            file.clone(),
            "--data".into(),
            data.clone(),
            "--epochs".into(),
            "40".into(),
            "--quiet".into(),
            "--out".into(),
            s(out),
        ]
    };
    let straight = dir.join("straight");
    ok(&nnc(&args(&straight)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()));
    let run = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args(&run))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first epoch is logged, training is under way: interrupt it.
    let log = run.join("metrics.jsonl");
    for _ in 0..2000 {
        if std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted in epoch") && err.contains("--resume"),
        "{err}"
    );
    let mut resume = args(&run);
    resume.extend(["--resume".into(), s(&run)]);
    ok(&nnc(&resume.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(
        std::fs::read(straight.join("weights.safetensors")).unwrap(),
        std::fs::read(run.join("weights.safetensors")).unwrap(),
        "resumed weights differ: {err}"
    );
}

/// `lr` in every row of a run with `schedule`, and the per-row monitored values.
fn rates(dir: &Path, name: &str, schedule: &str, extra: &str) -> Vec<serde_json::Value> {
    let file = program(dir, name, &format!("    schedule = {schedule}\n{extra}"));
    let out = dir.join(name.replace(".nn", ""));
    ok(&nnc(&["train", &file, "--quiet", "--out", &s(&out)]));
    rows(&out)
}

#[test]
fn schedules_log_the_closed_form_rate_at_every_epoch() {
    let dir = scratch("control", "schedules");
    // 8,000 training digits at batch 64: 125 steps per epoch, 6 epochs.
    let (lr, s_per, epochs) = (1e-3f64, 125.0f64, 6.0f64);
    let total = s_per * epochs;
    let close = |got: &serde_json::Value, want: f64, what: &str| {
        let got = got["lr"]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no lr"));
        assert!(
            (got - want).abs() <= 1e-12 + 1e-9 * want.abs(),
            "{what}: lr {got}, closed form {want}"
        );
    };
    let r = rates(&dir, "cos.nn", "cosine(min_lr = 1e-5, warmup = 0.5)", "");
    for row in &r {
        // The rate of the epoch's last step, k = e·S − 1.
        let k = row["epoch"].as_f64().unwrap() * s_per - 1.0;
        let w = 0.5 * s_per;
        let want = if k < w {
            lr * (k + 1.0) / w
        } else {
            let p = (k - w) / (total - 1.0 - w);
            1e-5 + (lr - 1e-5) * (1.0 + (std::f64::consts::PI * p).cos()) / 2.0
        };
        close(row, want, "cosine");
    }
    close(&r[5], 1e-5, "cosine ends at min_lr");
    let r = rates(&dir, "step.nn", "step(every = 2, gamma = 0.5)", "");
    for row in &r {
        let e = row["epoch"].as_u64().unwrap() - 1;
        close(row, lr * 0.5f64.powi((e / 2) as i32), "step");
    }
    let r = rates(&dir, "exp.nn", "exponential(gamma = 0.9)", "");
    for row in &r {
        let e = row["epoch"].as_u64().unwrap() - 1;
        close(row, lr * 0.9f64.powi(e as i32), "exponential");
    }
    // Plateau: the rate halves after each epoch whose val_loss did not improve.
    let r = rates(
        &dir,
        "plateau.nn",
        "plateau(monitor = \"val_loss\", patience = 1, factor = 0.5)",
        "    validation = 0.1\n",
    );
    let mut want = lr;
    let mut best = f64::INFINITY;
    for row in &r {
        close(row, want, "plateau");
        let v = row["val_loss"].as_f64().unwrap();
        if v < best {
            best = v;
        } else {
            want *= 0.5;
        }
    }
    // A constant schedule logs no rate (it is compiled into the step).
    let r = rates(&dir, "const.nn", "constant", "");
    assert!(r[0].get("lr").is_none());
}

#[test]
fn bad_schedules_are_located_errors_with_hints() {
    let dir = scratch("control", "bad-schedules");
    let cases = [
        (
            "schedule = plateau(monitor = \"val_loss\")",
            "`plateau` monitors `val_loss`, but there is no validation set",
        ),
        (
            "schedule = cosine(min_lr = -1)",
            "`min_lr` of `cosine` must be",
        ),
        ("schedule = step(gamma = 0.5)", "`every`"),
        (
            "schedule = early_stopping(patience = 2)",
            "`early_stopping` is not a learning-rate schedule",
        ),
        ("schedule = linear", "linear"),
    ];
    for (i, (setting, message)) in cases.iter().enumerate() {
        let file = program(&dir, &format!("s{i}.nn"), &format!("    {setting}\n"));
        let e = fails(&nnc(&["check", &file]));
        assert!(e.contains(message), "{setting}: {e}");
    }
}

#[test]
fn a_separate_validation_source_is_read_whole_and_by_column_name() {
    let dir = scratch("control", "valsource");
    std::fs::copy(root().join("examples/data/xor.csv"), dir.join("xor.csv")).unwrap();
    // Four validation rows, columns in another order.
    std::fs::write(
        dir.join("val.csv"),
        "label,b,a\n0,0,0\n1,1,0\n1,0,1\n0,1,1\n",
    )
    .unwrap();
    let file = dir.join("x.nn");
    std::fs::write(
        &file,
        "model Xor {\n    input ab: [2]\n    output p = ab |> dense(8) |> tanh |> dense(2) |> softmax\n}\n\ntrain Xor {\n    data = csv(\"xor.csv\", target = \"label\", standardize = true)\n    validation = csv(\"val.csv\", target = \"label\")\n    loss = cross_entropy\n    optimizer = adam(lr = 0.05)\n    batch = 16\n    epochs = 60\n    metrics = [accuracy]\n    seed = 3\n    early_stopping = early_stopping(monitor = \"val_accuracy\", patience = 60)\n}\n",
    )
    .unwrap();
    let out = dir.join("run");
    ok(&nnc(&["train", &s(&file), "--quiet", "--out", &s(&out)]));
    let r = rows(&out);
    for row in &r {
        let acc = row["val_accuracy"].as_f64().expect("val_accuracy");
        assert_eq!((acc * 4.0).fract(), 0.0, "four validation rows: {acc}");
    }
    let last = r.last().unwrap()["val_accuracy"].as_f64().unwrap();
    assert_eq!(last, 1.0, "XOR learned, judged on the separate rows: {r:?}");
}
