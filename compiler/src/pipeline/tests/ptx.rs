//! The PTX of every compiled step: each example and golden program, train and eval step,
//! through the pipeline's GPU program and the PTX renderer, for both architectures, and
//! assembled by ptxas.

use nnc_kernels::ir::Program;

use super::agreement::files;
use crate::codegen::ptx::tests::{assemble, entries, ptxas, scratch};
use crate::codegen::ptx::{render_program, GpuArch};
use crate::pipeline::{compile_program, StepKind};

/// The kernel programs of the train and eval steps of every `train` block of every
/// example and `tests/golden/{ir,models}` program, as the CUDA executor loads them (the pipeline's GPU programs), labelled `file.nn train` / `file.nn eval`.
fn compiled_steps() -> Vec<(String, Program)> {
    let mut out = Vec::new();
    for path in files() {
        let src = std::fs::read_to_string(&path).expect("readable");
        let program = crate::check_source(&src, path.parent().expect("folder"))
            .unwrap_or_else(|_| panic!("{} checks", path.display()));
        let stem = path.file_name().expect("name").to_string_lossy();
        let steps = compile_program(&program, None).unwrap_or_else(|e| panic!("{stem}: {e}"));
        for c in steps {
            for kind in [StepKind::Train, StepKind::Eval] {
                let p = c
                    .gpu_program(kind)
                    .unwrap_or_else(|e| panic!("{stem}: {e}"));
                let step = if kind == StepKind::Train {
                    "train"
                } else {
                    "eval"
                };
                out.push((format!("{stem} {step}"), p));
            }
        }
    }
    out
}

/// Every step the compiler lowers becomes PTX for both architectures: one `.entry` per
/// kernel, in order, no helper functions, no calls; ptxas (when present) assembles it
/// without spills (several ptxas at a time: the large steps take seconds each).
#[test]
fn every_compiled_step_of_every_example_becomes_ptx_that_ptxas_accepts() {
    let steps = compiled_steps();
    assert!(steps.len() >= 40, "{} steps", steps.len());
    let mut rendered = Vec::new();
    for (label, p) in &steps {
        for arch in GpuArch::ALL {
            let ptx = render_program(p, arch).unwrap_or_else(|e| panic!("{label}: {e}"));
            let names: Vec<String> = p.kernels.iter().map(|k| k.name.clone()).collect();
            assert_eq!(entries(&ptx), names, "{label}:\n{ptx}");
            assert!(!ptx.contains(".func"), "{label}: a helper function remains");
            assert!(!ptx.contains("call"), "{label}: a call remains:\n{ptx}");
            rendered.push((label, arch, ptx));
        }
    }
    let Some(ptxas) = ptxas() else { return };
    let dir = scratch("steps");
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((label, arch, ptx)) = rendered.get(i) else {
                    break;
                };
                assemble(&ptxas, &dir, label, *arch, ptx);
            });
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The data-parallel halves of the training step (`--distributed nccl`) of the examples
/// become PTX that ptxas assembles for both architectures, as the CUDA executor loads
/// them.
#[test]
fn the_data_parallel_steps_of_the_examples_become_ptx_that_ptxas_accepts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let ptxas = ptxas();
    let dir = scratch("parallel");
    for name in ["mnist_mlp.nn", "lenet.nn", "residual.nn"] {
        let path = root.join(name);
        let src = std::fs::read_to_string(&path).expect("readable");
        let program = crate::check_source(&src, &root).expect("checks");
        let train = &program.trains[0];
        let model = &program.models[train.model];
        let mut c = crate::pipeline::compile_train(model, train, 32, None).expect("compiles");
        crate::pipeline::compile_parallel(&mut c, model, train, 16).expect("splits");
        let p = c.parallel.as_ref().expect("parallel steps");
        assert_eq!(
            p.grads.len(),
            model.params.len(),
            "{name}: one gradient per parameter"
        );
        for (half, step) in [("grad", &p.grad), ("apply", &p.apply)] {
            let program = crate::pipeline::gpu_program(step).expect("GPU schedule");
            for arch in GpuArch::ALL {
                let ptx = render_program(&program, arch).expect("renders");
                if let Some(ptxas) = &ptxas {
                    assemble(ptxas, &dir, &format!("{name} {half}"), arch, &ptx);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
