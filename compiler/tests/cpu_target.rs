//! The compiled targets against the reference (`cpu` always, `cuda` where a GPU is): for
//! every example, the compiled executor and the interpreter executor start from the same
//! seed, run the same random batches (full ones and a partial one), and must agree on the
//! loss and every state tensor after each step (each step starting from the interpreter's
//! state), and on an eval batch; then training end to end through the CLI gives the same
//! losses on both targets and reaches the accuracy the issues ask for.
//!
//! Tolerance: compiled code sums matrix products in the GEMM library's order and
//! evaluates `exp`/`log` with its own polynomials while the interpreter accumulates in
//! f64, so values agree to `1e-3·|x| + 1e-4` after a few steps, not bit for bit.

use std::path::{Path, PathBuf};
use std::process::Command;

use nnc::driver::cpu::cpu_executor;
use nnc::driver::interp::InterpExecutor;
use nnc_runtime::executor::Executor;
use nnc_runtime::tensor::Tensor;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    v.sort();
    v
}

/// A small deterministic generator (xorshift) for batches.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-3 * b.abs() + 1e-4 || (a.is_nan() && b.is_nan())
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(close(g, w), "{what}[{i}]: compiled {g}, interp {w}");
    }
}

/// A random batch of `n` samples: inputs in [0, 1), labels valid for the output (class
/// indices for classifiers, values in [0, 1) otherwise).
fn batch(exec: &dyn Executor, n: usize, classes: Option<usize>, rng: &mut Rng) -> (Tensor, Tensor) {
    let mut xs = vec![n];
    xs.extend(exec.input_shape());
    let x = Tensor {
        data: (0..xs.iter().product::<usize>())
            .map(|_| rng.next())
            .collect(),
        shape: xs,
    };
    let y = match classes {
        Some(c) => Tensor {
            shape: vec![n],
            data: (0..n)
                .map(|_| ((rng.next() * c as f32) as usize).min(c - 1) as f32)
                .collect(),
        },
        None => {
            let mut ys = vec![n];
            ys.extend(exec.output_shape());
            Tensor {
                data: (0..ys.iter().product::<usize>())
                    .map(|_| rng.next())
                    .collect(),
                shape: ys,
            }
        }
    };
    (x, y)
}

/// A compiled executor of one target for a compiled train block: `(compiled, model, seed)`.
type MakeExecutor = dyn Fn(
    &nnc::pipeline::CompiledTrain,
    &nnc::sema::typed::TypedModel,
    u64,
) -> Result<Box<dyn Executor>, nnc::driver::DriverError>;

#[test]
fn every_example_steps_like_the_interpreter() {
    steps_like_the_interpreter(&cpu_executor);
}

/// The same comparison on the GPU; skipped, with the reason printed, without one.
#[cfg(feature = "cuda")]
#[test]
fn every_example_steps_like_the_interpreter_on_the_gpu() {
    if let Err(e) = nnc_runtime::cuda::open_device(0) {
        eprintln!("skipped: no usable GPU here ({})", e.message);
        return;
    }
    steps_like_the_interpreter(&nnc::driver::cuda::cuda_executor);
}

/// For every example, a compiled executor and the interpreter start from the same seed,
/// run the same random batches and must agree after each step and on an eval batch.
fn steps_like_the_interpreter(make: &MakeExecutor) {
    let mut checked = 0;
    for path in examples() {
        let src = std::fs::read_to_string(&path).expect("readable");
        let program = nnc::check_source(&src, &repo().join("examples")).expect("checks");
        for train in &program.trains {
            let model = &program.models[train.model];
            let compiled =
                nnc::pipeline::compile_train(model, train, train.batch, None).expect("compiles");
            let label = format!("{} / {}", path.display(), model.name);
            let mut cpu = make(&compiled, model, 7)
                .unwrap_or_else(|e| panic!("{label}: compiled executor: {e:?}"));
            let mut interp = InterpExecutor::new(compiled.graphs, model, 7);
            // Classifiers (cross-entropy on labels) get class indices.
            let out = cpu.output_shape();
            let classes = matches!(train.loss, nnc::sema::typed::Loss::CrossEntropy)
                .then(|| out.last().copied().unwrap_or(1));
            let mut rng = Rng(0x9e37_79b9 ^ (checked as u64 + 1));
            let full = train.batch.min(16);
            for (step, n) in [full, full, 3].into_iter().enumerate() {
                let (x, y) = batch(cpu.as_ref(), n, classes, &mut rng);
                let a = cpu.train_step(&x, &y).expect("compiled step");
                let b = interp.train_step(&x, &y).expect("interp step");
                assert!(
                    close(a.loss, b.loss),
                    "{label} step {step}: loss compiled {} interp {}",
                    a.loss,
                    b.loss
                );
                let (sa, sb) = (cpu.state().expect("state"), interp.state().expect("state"));
                for (ta, tb) in sa.iter().zip(&sb) {
                    assert_eq!(ta.name, tb.name);
                    assert_close(
                        &format!("{label} step {step} `{}`", ta.name),
                        &ta.tensor.data,
                        &tb.tensor.data,
                    );
                }
                // Each step is compared from the same state: rounding differences do
                // not compound (and cannot flip a near-tie of max pooling later on).
                cpu.set_state(&sb).expect("set state");
            }
            let (x, y) = batch(cpu.as_ref(), 5, classes, &mut rng);
            let a = cpu.eval_batch(&x, &y).expect("compiled eval");
            let b = interp.eval_batch(&x, &y).expect("interp eval");
            assert!(close(a.loss, b.loss), "{label} eval loss");
            assert_close(
                &format!("{label} eval output"),
                &a.output.data,
                &b.output.data,
            );
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} train blocks checked");
}

fn nnc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .output()
        .expect("nnc runs")
}

/// Runs `nnc <command> examples/<example> <args>`, asserting success; returns stdout.
fn nnc_ok(command: &str, example: &str, args: &[&str]) -> String {
    let file = repo().join("examples").join(example).display().to_string();
    let o = nnc(&[&[command, file.as_str()], args].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn train_losses(target: &str, out: &Path) -> Vec<f64> {
    let out_s = out.display().to_string();
    let args = [
        "--epochs", "2", "--quiet", "--target", target, "--out", &out_s,
    ];
    nnc_ok("train", "mnist_mlp.nn", &args);
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["train_loss"].as_f64().expect("train_loss")
        })
        .collect()
}

/// LeNet (two convolutions, two max pools, three dense layers) trains one epoch of the
/// bundled digits on the native CPU target through the implicit-GEMM convolutions and
/// gathered pooling: measured 0.90 test accuracy (8,000 training digits, batch 64).
#[test]
fn lenet_learns_the_digits_on_the_cpu() {
    let out = std::env::temp_dir().join(format!("nnc-cpu-lenet-{}", std::process::id()));
    let out_s = out.display().to_string();
    let args = ["--quiet", "--target", "cpu", "--out", &out_s];
    nnc_ok("train", "lenet.nn", &args);
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("an epoch")).expect("json");
    let acc = last["test_accuracy"].as_f64().expect("test_accuracy");
    assert!(acc >= 0.85, "LeNet test accuracy {acc} after one epoch");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn cpu_and_interp_training_give_the_same_losses() {
    let tmp = std::env::temp_dir().join(format!("nnc-cpu-target-{}", std::process::id()));
    let cpu = train_losses("cpu", &tmp.join("cpu"));
    let interp = train_losses("interp", &tmp.join("interp"));
    assert_eq!(cpu.len(), 2);
    assert!(interp[1] < interp[0], "the loss falls: {interp:?}");
    for (c, i) in cpu.iter().zip(&interp) {
        assert!((c - i).abs() <= 1e-3 * i.abs(), "cpu {c} vs interp {i}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn bench_reports_kernels_throughput_and_flops_as_json() {
    let args = [
        "--steps",
        "20",
        "--warmup",
        "2",
        "--batch",
        "32",
        "--json",
        "--profile",
    ];
    let text = nnc_ok("bench", "mnist_mlp.nn", &args);
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    assert_eq!(v["target"], "cpu");
    assert_eq!(v["batch"], 32);
    assert_eq!(v["train_kernels"], 14);
    assert!(v["samples_per_s"].as_f64().expect("samples/s") > 0.0);
    // Per weight and sample: 2 FLOPs forward, 2 for its gradient, 2 for the gradient of
    // the layer's input (not needed for the first layer, whose input is data).
    let flops = v["flops_per_step"].as_f64().expect("flops");
    let gemm = (4.0 * 784.0 * 128.0 + 6.0 * (128.0 * 64.0 + 64.0 * 10.0)) * 32.0;
    assert!(flops >= gemm && flops <= gemm * 1.2, "{flops} vs {gemm}");
    // `--profile`: every train kernel, in order, timed, with the compiler's estimates.
    let kernels = v["kernels"].as_array().expect("kernel profile");
    assert_eq!(kernels.len(), 14);
    assert!(kernels[0]["name"]
        .as_str()
        .expect("name")
        .starts_with("train_k0"));
    assert!(kernels
        .iter()
        .all(|k| k["mean_us"].as_f64().expect("µs") > 0.0));
    let kernel_flops: f64 = kernels
        .iter()
        .map(|k| k["flops"].as_f64().expect("flops"))
        .sum();
    assert_eq!(kernel_flops, flops);
}

/// `nnc explain --measure`: every kernel of the training step gets a line of
/// measurements (time, GFLOP/s, share of the GEMM peak), the convolutions included; the
/// evaluation step's kernels, which are not run, get none.
#[test]
fn explain_measures_each_training_kernel() {
    let text = nnc_ok("explain", "lenet.nn", &["--measure", "--steps", "3"]);
    assert!(text.starts_with("measured on cpu"), "{text}");
    assert!(text.contains("GEMM peak"), "{text}");
    let (train, eval) = text
        .split_once("_eval:")
        .expect("the eval step after the train step");
    let kernels = train.lines().filter(|l| l.starts_with("  k")).count();
    let measured: Vec<&str> = train
        .lines()
        .filter_map(|l| l.strip_prefix("    measured: "))
        .collect();
    assert_eq!(kernels, 30, "{train}");
    assert_eq!(measured.len(), kernels, "{train}");
    assert!(measured.iter().all(|m| m.contains("µs per step")
        && m.contains("GFLOP/s")
        && m.contains("% of the GEMM peak")));
    let conv = train
        .split("\n  k")
        .find(|k| k.contains("implicit: windows"))
        .expect("a convolution kernel");
    assert!(conv.contains("measured: "), "{conv}");
    assert!(!eval.contains("measured: "), "{eval}");
}

#[cfg(feature = "cuda")]
#[test]
fn build_emits_ptx_for_the_cuda_target() {
    let text = nnc_ok(
        "build",
        "mnist_mlp.nn",
        &["--target", "cuda", "--emit", "ptx"],
    );
    assert!(text.starts_with("# == ptx =="));
    assert!(text.contains(".target sm_80"));
    // One entry per kernel: 14 in the train step, 5 in the eval step.
    assert_eq!(text.matches(".entry ").count(), 14 + 5, "{text}");
    let args = [
        "--target",
        "cuda",
        "--emit",
        "llvm,ptx",
        "--gpu-arch",
        "sm_90",
    ];
    let text = nnc_ok("build", "mnist_mlp.nn", &args);
    assert!(text.starts_with("# == llvm =="));
    assert!(text.contains("nvptx64-nvidia-cuda"), "{text}");
    assert!(text.contains(".target sm_90"));
}

/// `-v` appends ptxas's resource report of every kernel (skipped without ptxas).
#[cfg(feature = "cuda")]
#[test]
fn build_reports_registers_and_spills_with_v() {
    if nnc::codegen::ptx::ptxas::find_ptxas().is_none() {
        let reason = "no ptxas: set PTXAS or install nvidia-cuda-nvcc-cu12 (see .ci/run)";
        // `.ci/run` sets CI and installs ptxas: there a missing one is a failure.
        assert!(std::env::var_os("CI").is_none(), "CI is set but {reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    let args = ["--target", "cuda", "--emit", "ptx", "-v"];
    let text = nnc_ok("build", "mnist_mlp.nn", &args);
    assert_eq!(
        text.matches("// ptxas -v (sm_80)").count(),
        2,
        "train and eval steps"
    );
    // (LLVM's own `// k0_matmul_s0 has been demoted` comments are not report rows.)
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("// k") && !l.contains("demoted"))
        .collect();
    assert_eq!(rows.len(), 14 + 5, "{text}");
    assert!(
        rows[0].starts_with("// k0_"),
        "in the step's order: {rows:?}"
    );
    for r in rows {
        let fields: Vec<u64> = r
            .split_whitespace()
            .skip(2)
            .map(|f| f.parse().expect("number"))
            .collect();
        assert_eq!(fields.len(), 5, "{r}");
        assert!(fields[0] > 0, "registers: {r}");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn ptx_without_the_cuda_feature_says_how_to_get_it() {
    let file = repo().join("examples/line.nn");
    let file = file.display().to_string();
    let o = nnc(&["build", &file, "--target", "cuda", "--emit", "ptx"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--features cuda"), "{err}");
    let o = nnc(&["train", &file, "--target", "cuda"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--features cuda"));
}

/// The GPU schedule's kernel IR needs no LLVM: it prints in every build, with each
/// kernel's grid, shared arrays, barriers and shuffles.
#[test]
fn build_emits_the_gpu_schedule_in_every_build() {
    let args = ["--target", "cuda", "--emit", "gpu-kernels"];
    let text = nnc_ok("build", "mnist_mlp.nn", &args);
    assert!(text.starts_with("# == gpu-kernels =="), "{text}");
    // 14 train and 5 eval kernels, each with its launch.
    assert_eq!(text.matches("gpu kernel ").count(), 14 + 5, "{text}");
    assert!(
        text.contains("gpu kernel k0_matmul(b0, b2, b3, b17) grid=(4, (N + 31)/32, 1) threads=256"),
        "{text}"
    );
    for needle in ["shared s0[528] \"a_tile\"", "barrier", "shfl_xor(acc0, 16)"] {
        assert!(text.contains(needle), "`{needle}` missing:\n{text}");
    }
}

#[test]
fn a_stage_of_another_target_is_a_usage_error() {
    let file = repo().join("examples/line.nn");
    let file = file.display().to_string();
    let o = nnc(&["build", &file, "--emit", "ptx"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("help: add `--target cuda`"), "{err}");
    let o = nnc(&["build", &file, "--target", "cuda", "--emit", "asm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("help: add `--target cpu`"));
}

#[test]
fn build_emits_clif_and_machine_code() {
    let text = nnc_ok("build", "line.nn", &["--emit", "clif,asm"]);
    assert!(text.contains("# == clif =="));
    assert!(text.contains("# == asm =="));
    assert!(text.contains("function "), "Cranelift IR functions");
    assert!(text.contains("ret"), "machine code ends in ret");
}

#[test]
fn cpu_is_the_default_target() {
    let out = std::env::temp_dir().join(format!("nnc-default-target-{}", std::process::id()));
    nnc_ok(
        "train",
        "xor.nn",
        &["--epochs", "1", "--out", &out.display().to_string()],
    );
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    assert!(!text.is_empty());
    let _ = std::fs::remove_dir_all(&out);
}

/// The cpu executor's own parameter scan (both lanes over large tensors) finds a NaN in
/// either half of a large weight and an infinity in a small one, by name and position.
#[test]
fn the_cpu_executor_finds_non_finite_parameters() {
    let path = repo().join("examples/mnist_mlp.nn");
    let src = std::fs::read_to_string(&path).expect("readable");
    let program = nnc::check_source(&src, &repo().join("examples")).expect("checks");
    let train = &program.trains[0];
    let model = &program.models[train.model];
    let compiled = nnc::pipeline::compile_train(model, train, train.batch, None).expect("compiles");
    let mut exec = cpu_executor(&compiled, model, 7).expect("cpu executor");
    assert_eq!(exec.first_non_finite_param().expect("scan"), None);
    let clean = exec.state().expect("state");
    let params = || {
        clean
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == nnc_runtime::executor::StateKind::Param)
    };
    let (big, _) = params()
        .find(|(_, s)| s.tensor.data.len() >= 1 << 16)
        .expect("a large weight");
    let (small, _) = params()
        .rfind(|(_, s)| s.tensor.data.len() < 1 << 16)
        .expect("a small parameter");
    let len = clean[big].tensor.data.len();
    for (at, which, bad) in [
        (3, big, f32::NAN),
        (len - 2, big, f32::NAN),
        (1, small, f32::NEG_INFINITY),
    ] {
        let mut state = clean.clone();
        state[which].tensor.data[at] = bad;
        exec.set_state(&state).expect("set state");
        let found = exec.first_non_finite_param().expect("scan").expect("found");
        assert_eq!(found.name, clean[which].name);
        assert_eq!(found.index, at);
        assert!(!found.value.is_finite());
    }
}
