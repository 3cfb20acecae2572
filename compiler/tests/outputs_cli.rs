//! Nothing a user has is lost and bad requests fail cleanly: an output folder with an
//! earlier run's results is refused without `--overwrite`, `--log` never replaces a file
//! that is not a metrics log, a resumed run writes where it resumed from and may change
//! the epochs and the rate (with warnings) but not the data, checkpoints hold state and
//! not the history, command-line counts of 0 are usage errors (exit 2), a NaN in
//! evaluation is blamed on the data, and IDX folder mix-ups are named.

use std::path::Path;

mod common;
use common::*;

/// XOR on a copy of the bundled CSV, with `lr` and the test split given.
fn xor(dir: &Path, name: &str, lr: &str, test: &str) -> String {
    std::fs::copy(root().join("examples/data/xor.csv"), dir.join("xor.csv")).unwrap();
    let text = format!(
        "model Xor {{\n    input ab: [2]\n    output p = ab |> dense(8) |> tanh |> dense(2) |> softmax\n}}\n\ntrain Xor {{\n    data = csv(\"xor.csv\", target = \"label\", test = {test})\n    loss = cross_entropy\n    optimizer = adam(lr = {lr})\n    batch = 16\n    epochs = 2\n    metrics = [accuracy]\n    seed = 3\n}}\n"
    );
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    s(&file)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_fresh_run_refuses_a_folder_with_results_and_overwrite_replaces_them() {
    let dir = scratch("outputs", "fresh");
    let file = xor(&dir, "x.nn", "0.05", "0.25");
    let out = s(&dir.join("run"));
    ok(&nnc(&["train", &file, "--quiet", "--out", &out]));
    let before = std::fs::read(dir.join("run/metrics.jsonl")).unwrap();
    let err = fails(&nnc(&[
        "train", &file, "--quiet", "--out", &out, "--epochs", "1",
    ]));
    assert!(
        err.contains("already holds the results of a run")
            && err.contains("--overwrite")
            && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("run/metrics.jsonl")).unwrap(),
        before,
        "the refused run touched nothing"
    );
    ok(&nnc(&[
        "train",
        &file,
        "--quiet",
        "--out",
        &out,
        "--epochs",
        "1",
        "--overwrite",
    ]));
    let rows = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 1, "{rows}");
    let leftovers: Vec<String> = std::fs::read_dir(dir.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn log_never_overwrites_a_file_that_is_not_a_metrics_log() {
    let dir = scratch("outputs", "log");
    let file = xor(&dir, "x.nn", "0.05", "0.25");
    let source = std::fs::read(&file).unwrap();
    let err = fails(&train(
        &file,
        &dir.join("a"),
        &["--log", &file, "--overwrite"],
    ));
    assert!(err.contains("not a metrics log"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), source, "the source survived");
    let log = s(&dir.join("log.jsonl"));
    ok(&train(&file, &dir.join("b"), &["--log", &log]));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    let err = fails(&train(&file, &dir.join("c"), &["--log", &log]));
    assert!(err.contains("metrics of an earlier run"), "{err}");
}

#[test]
fn resume_writes_to_its_folder_and_may_change_epochs_and_rate_but_not_data() {
    let dir = scratch("outputs", "resume");
    let file = xor(&dir, "x.nn", "0.05", "0.25");
    let run = dir.join("run");
    ok(&train(&file, &run, &[]));
    // Another rate, more epochs, no `--out`: warnings, and the rows go on in `run`.
    let faster = xor(&dir, "y.nn", "0.01", "0.25");
    let err = ok_stderr(&nnc(&[
        "train",
        &faster,
        "--quiet",
        "--resume",
        &s(&run),
        "--epochs",
        "4",
    ]));
    assert!(
        err.contains("the learning rate was 0.05, it is 0.01")
            && err.contains("started for 2 epochs, it now runs to 4"),
        "{err}"
    );
    let rows = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = rows
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [1, 2, 3, 4]);
    assert!(!dir.join("runs").exists() && !root().join("runs/y").exists());
    // A schedule where there was none: the rate state is set by the loop, not restored.
    std::fs::write(
        &faster,
        std::fs::read_to_string(&faster).unwrap().replace(
            "    seed = 3\n",
            "    seed = 3\n    schedule = cosine(min_lr = 0)\n",
        ),
    )
    .unwrap();
    let err = ok_stderr(&nnc(&[
        "train",
        &faster,
        "--quiet",
        "--resume",
        &s(&run),
        "--epochs",
        "5",
    ]));
    assert!(
        err.contains("the schedule was `constant`, it is `cosine(min_lr = 0, warmup = 0)`"),
        "{err}"
    );
    // Other data (another test split) is refused.
    let other = xor(&dir, "z.nn", "0.05", "0.5");
    let err = fails(&nnc(&[
        "train",
        &other,
        "--quiet",
        "--resume",
        &s(&run),
        "--epochs",
        "6",
    ]));
    assert!(
        err.contains("trained on other data") && err.contains("--init"),
        "{err}"
    );
    // Another model is refused too.
    std::fs::write(
        dir.join("w.nn"),
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("dense(8)", "dense(9)"),
    )
    .unwrap();
    let err = fails(&nnc(&[
        "train",
        &s(&dir.join("w.nn")),
        "--quiet",
        "--resume",
        &s(&run),
        "--epochs",
        "6",
    ]));
    assert!(err.contains("another model"), "{err}");
}

/// The `nnc.progress` metadata of a checkpoint.
fn progress(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]["nnc.progress"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn checkpoints_hold_state_not_the_history() {
    let dir = scratch("outputs", "history");
    let file = xor(&dir, "x.nn", "0.05", "0.25");
    ok(&train(&file, &dir.join("a"), &["--epochs", "2"]));
    ok(&train(&file, &dir.join("b"), &["--epochs", "60"]));
    let short = progress(&dir.join("a/checkpoint.safetensors"));
    let long = progress(&dir.join("b/checkpoint.safetensors"));
    assert!(!long.contains("history"), "{long}");
    assert!(
        long.len() <= short.len() + 4,
        "the progress record grows with the epochs:\n{short}\n{long}"
    );
}

#[test]
fn counts_of_zero_are_usage_errors() {
    let file = example("xor.nn");
    for args in [
        vec!["eval", &file, "--weights", "w.safetensors", "--batch", "0"],
        vec!["train", &file, "--batch", "0"],
        vec!["train", &file, "--epochs", "0"],
        vec!["bench", &file, "--steps", "0"],
    ] {
        let o = nnc(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("must be at least 1"), "{}", stderr(&o));
    }
}

#[test]
fn a_nan_in_evaluation_is_blamed_on_the_data_not_the_rate() {
    let dir = scratch("outputs", "nan");
    std::fs::write(
        dir.join("test.csv"),
        "a,b,label\n3e38,3e38,1\n-3e38,3e38,0\n",
    )
    .unwrap();
    let file = xor(&dir, "x.nn", "0.05", "\"test.csv\", standardize = false");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("|> tanh", "|> relu");
    std::fs::write(&file, text).unwrap();
    let err = fails(&train(&file, &dir.join("o"), &[]));
    assert!(err.contains("the test loss became"), "{err}");
    assert!(!err.contains("learning rate"), "{err}");
    assert!(err.contains("evaluated data"), "{err}");
}

#[test]
fn idx_sources_name_a_file_given_for_the_folder_and_a_folder_given_for_a_file() {
    let dir = scratch("outputs", "idx");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("train-images-idx3-ubyte")).unwrap();
    let program = |path: &Path| {
        let file = dir.join("m.nn");
        std::fs::write(
            &file,
            format!(
                "model M {{\n    input x: [28, 28]\n    output p = x |> flatten |> dense(10) |> softmax\n}}\n\ntrain M {{\n    data = idx(\"{}\")\n    loss = cross_entropy\n    optimizer = sgd(lr = 0.1)\n}}\n",
                path.display()
            ),
        )
        .unwrap();
        s(&file)
    };
    let err = fails(&train(&program(&data), &dir.join("o"), &[]));
    assert!(err.contains("is a folder, not an IDX file"), "{err}");
    let plain = data.join("notes.txt");
    std::fs::write(&plain, "x").unwrap();
    let err = fails(&train(&program(&plain), &dir.join("o"), &[]));
    assert!(
        err.contains("this is a file; an IDX data source is the folder"),
        "{err}"
    );
}

#[test]
fn a_model_past_the_memory_limit_is_an_error_with_the_numbers_not_an_abort() {
    let dir = scratch("outputs", "memory");
    let file = dir.join("big.nn");
    std::fs::write(
        &file,
        "model Big {\n    input x: [100000, 100000, 100]\n    output y = x |> flatten |> dense(10) |> softmax\n}\n\ntrain Big {\n    data = idx(\"data\")\n    loss = cross_entropy\n    optimizer = sgd(lr = 0.1)\n}\n",
    )
    .unwrap();
    let file = s(&file);
    for args in [
        vec!["build", file.as_str()],
        vec!["train", file.as_str(), "--quiet"],
        vec!["bench", file.as_str()],
    ] {
        let err = fails(&nnc(&args));
        assert!(
            err.contains("E0311") && err.contains("TiB") && err.contains("dense_0.w"),
            "{args:?}: {err}"
        );
    }
    // A batch that overflows any count.
    let err = fails(&nnc(&[
        "bench",
        &example("xor.nn"),
        "--batch",
        "18446744073709551615",
    ]));
    assert!(
        err.contains("E0311") && err.contains("lower `batch`"),
        "{err}"
    );
    // An explicit limit.
    let err = fails(&nnc(&[
        "train",
        &example("mnist_mlp.nn"),
        "--batch",
        "4096",
        "--max-memory",
        "10M",
        "--quiet",
        "--out",
        &s(&dir.join("o")),
    ]));
    assert!(
        err.contains("`--max-memory` limit") && err.contains("10.0 MiB"),
        "{err}"
    );
    assert!(!dir.join("o").exists(), "nothing was written");
}

#[test]
fn a_huge_csv_cell_is_cut_in_the_error_and_control_bytes_are_escaped() {
    let dir = scratch("outputs", "cell");
    let huge = "\u{1b}[31m".to_string() + &"9".repeat(1000) + &"z".repeat(10_000_000);
    std::fs::write(dir.join("bad.csv"), format!("a,b,label\n1,{huge},0\n")).unwrap();
    let file = dir.join("m.nn");
    std::fs::write(
        &file,
        "model M {\n    input ab: [2]\n    output p = ab |> dense(2) |> softmax\n}\n\ntrain M {\n    data = csv(\"bad.csv\", target = \"label\")\n    loss = cross_entropy\n    optimizer = sgd(lr = 0.1)\n}\n",
    )
    .unwrap();
    let err = fails(&train(&s(&file), &dir.join("o"), &[]));
    assert!(err.len() < 2000, "the message is {} bytes long", err.len());
    assert!(err.contains("bytes in all"), "{err}");
    assert!(!err.contains('\u{1b}') && err.contains("\\u{1b}"), "{err}");
}

#[test]
fn a_plain_and_a_gzip_copy_of_an_idx_file_is_a_warning_naming_the_one_read() {
    let dir = scratch("outputs", "gz");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for entry in std::fs::read_dir(root().join("examples/data/mnist-10k")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, data.join(p.file_name().unwrap())).unwrap();
    }
    let gz = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("train-labels-idx1-ubyte.gz"))
        .expect("the bundled labels are gzip files");
    let plain = gz.with_extension("");
    let unzipped = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .output()
        .expect("gzip runs");
    std::fs::write(&plain, unzipped.stdout).unwrap();
    let file = dir.join("m.nn");
    std::fs::write(
        &file,
        format!(
            "model M {{\n    input x: [28, 28]\n    output p = x |> flatten |> dense(10) |> softmax\n}}\n\ntrain M {{\n    data = idx(\"{}\", scale = 1 / 255)\n    loss = cross_entropy\n    optimizer = sgd(lr = 0.1)\n    epochs = 1\n}}\n",
            data.display()
        ),
    )
    .unwrap();
    let err = ok_stderr(&train(&s(&file), &dir.join("o"), &[]));
    assert!(
        err.contains("warning: both") && err.contains("reading `train-labels-idx1-ubyte`"),
        "{err}"
    );
}

#[test]
fn a_second_run_into_a_folder_in_use_is_refused_naming_the_first() {
    let dir = scratch("outputs", "lock");
    let file = xor(&dir, "x.nn", "0.05", "0.25");
    let out = s(&dir.join("run"));
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args([
            "train", &file, "--quiet", "--epochs", "1000000", "--out", &out,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.join("run/metrics.jsonl");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()) {
        assert!(
            started.elapsed().as_secs() < 60,
            "the first run never logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = nnc(&["train", &file, "--quiet", "--out", &out, "--overwrite"]);
    let _ = first.kill();
    let _ = first.wait();
    let err = fails(&second);
    assert!(
        err.contains(&format!(
            "is in use by another nnc run (PID {})",
            first.id()
        )),
        "{err}"
    );
}

#[test]
fn a_second_run_without_out_takes_the_next_free_default_folder() {
    let dir = scratch("outputs", "default");
    let file = xor(&dir, "x.nn", "0.05", "0.25");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_nnc"))
            .args(["train", &file, "--epochs", "1"])
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    ok(&run());
    let before = std::fs::read(dir.join("runs/x/metrics.jsonl")).unwrap();
    let err = ok_stderr(&run());
    assert!(
        err.contains("`runs/x` holds an earlier run; this one writes to `runs/x-2`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("runs/x/metrics.jsonl")).unwrap(),
        before
    );
    assert!(dir.join("runs/x-2/weights.safetensors").is_file());
}
