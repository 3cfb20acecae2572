//! `mpirun -np 2 nnc train FILE --distributed mpi` end to end (feature `mpi`; skipped
//! with a printed reason where `mpirun` is missing): the same weights as one process with
//! the same global batch, rank 0 alone writing, and a rank that dies or hangs ending the
//! run within seconds with a message.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn mpirun() -> Option<Command> {
    let found = Command::new("mpirun")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("skipped: no `mpirun` on PATH (apt-get install openmpi-bin libopenmpi-dev)");
        return None;
    }
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"]);
    Some(c)
}

#[test]
fn two_mpi_ranks_reach_the_weights_and_accuracy_of_one_process() {
    let Some(mut mpi) = mpirun() else { return };
    let dir = scratch("mpi", "same");
    let file = example("mnist_mlp.nn");
    let one = dir.join("one");
    let two = dir.join("two");
    ok(&nnc(&[
        "train",
        &file,
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &s(&one),
    ]));
    let o = mpi
        .args([
            env!("CARGO_BIN_EXE_nnc"),
            "train",
            &file,
            "--epochs",
            "1",
            "--quiet",
        ])
        .args(["--distributed", "mpi", "--out", &s(&two)])
        .output()
        .unwrap();
    let stdout = ok(&o);
    assert_eq!(
        stdout.matches("trained 1 epochs").count(),
        1,
        "rank 0 alone reports: {stdout}"
    );
    let diff = max_weight_diff(
        &one.join("weights.safetensors"),
        &two.join("weights.safetensors"),
    );
    assert!(diff <= 1e-5, "weights differ by {diff}");
    assert_eq!(test_accuracy(&one), test_accuracy(&two));
}

/// Starts a long two-rank run and returns it with the PIDs of its two ranks.
fn long_run(dir: &Path, extra: &[&str]) -> Option<(Guard, Vec<u32>)> {
    let mut mpi = mpirun()?;
    let child = mpi
        .args([env!("CARGO_BIN_EXE_nnc"), "train", &example("mnist_mlp.nn")])
        .args(["--epochs", "100000", "--quiet", "--distributed", "mpi"])
        .args(["--out", &s(&dir.join("run"))])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = Guard(Some(child));
    // Wait until both ranks train (the first epoch is logged).
    let log = dir.join("run/metrics.jsonl");
    let started = Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no epoch finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ranks: Vec<u32> = String::from_utf8(
        Command::new("pgrep")
            .args(["-f", "--", &format!("--out {}", s(&dir.join("run")))])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .filter(|&pid| child.0.as_ref().is_some_and(|c| pid != c.id()))
    .collect();
    Some((child, ranks))
}

/// Kills the launcher (and so its ranks) when a test fails before it ends.
struct Guard(Option<std::process::Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ends_within(mut child: Guard, limit: Duration) -> (Duration, String) {
    let started = Instant::now();
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(took < limit, "the run took {took:?} to end");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (took, text)
}

#[test]
fn a_rank_that_dies_ends_the_run_within_seconds_naming_it() {
    let dir = scratch("mpi", "die");
    let Some((child, ranks)) = long_run(&dir, &[]) else {
        return;
    };
    let victim = *ranks.iter().max().expect("two rank processes");
    Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    let (_, text) = ends_within(child, Duration::from_secs(20));
    // The launcher names the rank that died and how.
    assert!(
        text.contains("process rank") && text.contains("exited on signal 9"),
        "{text}"
    );
}

#[test]
fn a_rank_that_hangs_ends_the_run_after_the_collective_timeout() {
    let dir = scratch("mpi", "hang");
    let Some((child, ranks)) = long_run(&dir, &["--collective-timeout", "3"]) else {
        return;
    };
    let victim = *ranks.iter().max().expect("two rank processes");
    Command::new("kill")
        .args(["-STOP", &victim.to_string()])
        .status()
        .unwrap();
    let (_, text) = ends_within(child, Duration::from_secs(30));
    let _ = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status();
    assert!(
        text.contains("got no answer from every rank within 3 s")
            && text.contains(&format!("(PID {victim}) is stopped")),
        "{text}"
    );
}

#[test]
fn an_empty_shard_of_a_short_last_batch_takes_part_in_the_overlapped_reduction() {
    let Some(mut mpi) = mpirun() else { return };
    let dir = scratch("mpi", "empty");
    let file = example("xor.nn");
    let (one, two) = (dir.join("one"), dir.join("two"));
    // 52 training rows in batches of 3: the last batch has one row, rank 1 none of it.
    let args = ["--epochs", "3", "--batch", "3", "--quiet"];
    ok(&nnc(&[
        &["train", file.as_str(), "--out", &s(&one)][..],
        &args[..],
    ]
    .concat()));
    let o = mpi
        .args([env!("CARGO_BIN_EXE_nnc"), "train", &file])
        .args(args)
        .args(["--distributed", "mpi", "--out", &s(&two)])
        .output()
        .unwrap();
    ok(&o);
    let diff = max_weight_diff(
        &one.join("weights.safetensors"),
        &two.join("weights.safetensors"),
    );
    assert!(diff <= 1e-5, "weights differ by {diff}");
}
