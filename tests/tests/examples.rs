//! Properties of every example program, in place of snapshots too large to review: each
//! one builds for both targets (CPU code through Cranelift, the GPU schedule), and the
//! number of kernels of each train and eval step is pinned per stage, so that a change to
//! fusion or to a schedule that adds or removes kernels shows up here by name.
//! (That compiled code computes what the interpreter does is `compiler/tests/cpu_target.rs`.)

use std::collections::BTreeMap;

use nnc::pipeline::emit::Stage;
use nnc_tests::{example_files, stages_of};

/// Kernels per step: (example file, step program, kernels, cpu-kernels, gpu-kernels).
/// The GPU schedule splits some products into a tiled product and an epilogue kernel.
const KERNEL_COUNTS: &[(&str, &str, usize, usize, usize)] = &[
    ("fashion_mlp.nn", "Fashion_train_step", 14, 14, 17),
    ("fashion_mlp.nn", "Fashion_eval", 5, 5, 5),
    ("lenet.nn", "LeNet_train_step", 30, 30, 34),
    ("lenet.nn", "LeNet_eval", 9, 9, 9),
    ("line.nn", "Line_train_step", 6, 6, 8),
    ("line.nn", "Line_eval", 2, 2, 2),
    ("mnist_mlp.nn", "Mnist_train_step", 14, 14, 14),
    ("mnist_mlp.nn", "Mnist_eval", 5, 5, 5),
    ("residual.nn", "Residual_train_step", 18, 18, 22),
    ("residual.nn", "Residual_eval", 6, 6, 6),
    ("tour.nn", "Digits_train_step", 49, 49, 50),
    ("tour.nn", "Digits_eval", 8, 8, 8),
    ("tour.nn", "Fit_train_step", 24, 24, 27),
    ("tour.nn", "Fit_eval", 7, 7, 7),
    ("tour.nn", "Gate_train_step", 14, 14, 17),
    ("tour.nn", "Gate_eval", 4, 4, 5),
    ("tour.nn", "Robust_train_step", 14, 14, 17),
    ("tour.nn", "Robust_eval", 3, 3, 3),
    ("xor.nn", "Xor_train_step", 10, 10, 12),
    ("xor.nn", "Xor_eval", 4, 4, 4),
];

/// The kernels of each step program in one stage's text: `program <name>  # <n> kernels`
/// headers, each checked against the kernel definitions that follow it.
fn kernels_per_program(text: &str) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut headers: BTreeMap<String, usize> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("program ") {
            let (name, comment) = rest.split_once("  # ").expect("a program header");
            let n = comment
                .split_once(" kernels")
                .and_then(|(n, _)| n.parse().ok())
                .expect("the header counts kernels");
            headers.insert(name.to_string(), n);
            counts.insert(name.to_string(), 0);
            current = Some(name.to_string());
        } else if line.starts_with("kernel ") || line.starts_with("gpu kernel ") {
            let name = current.as_ref().expect("kernels belong to a program");
            *counts.get_mut(name).expect("counted") += 1;
        }
    }
    assert_eq!(counts, headers, "headers disagree with the kernels printed");
    counts
}

#[test]
fn every_example_builds_for_both_targets_with_the_pinned_kernel_counts() {
    let mut seen = Vec::new();
    for path in example_files() {
        let file = path
            .file_name()
            .expect("named")
            .to_string_lossy()
            .into_owned();
        // Cranelift compiles every CPU kernel; the GPU schedule accepts every kernel.
        let clif = stages_of(&path, &[Stage::Clif]);
        assert!(clif.contains("function "), "{file}: no CPU code");
        let per_stage = [Stage::Kernels, Stage::CpuKernels, Stage::GpuKernels]
            .map(|stage| kernels_per_program(&stages_of(&path, &[stage])));
        let pinned: Vec<_> = KERNEL_COUNTS.iter().filter(|r| r.0 == file).collect();
        assert!(
            !pinned.is_empty(),
            "{file}: add its kernel counts to KERNEL_COUNTS"
        );
        for counts in &per_stage {
            let names: Vec<&str> = counts.keys().map(String::as_str).collect();
            let mut want: Vec<&str> = pinned.iter().map(|r| r.1).collect();
            want.sort();
            assert_eq!(names, want, "{file}: step programs");
        }
        for &&(_, step, kernels, cpu, gpu) in &pinned {
            let got = per_stage.each_ref().map(|c| c[step]);
            assert_eq!(
                got,
                [kernels, cpu, gpu],
                "{file} {step}: kernels, cpu-kernels, gpu-kernels"
            );
        }
        seen.push(file);
    }
    let mut listed: Vec<&str> = KERNEL_COUNTS.iter().map(|r| r.0).collect();
    listed.dedup();
    assert_eq!(seen, listed, "KERNEL_COUNTS names every example, in order");
}
