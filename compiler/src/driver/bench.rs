//! `nnc bench`: how fast one `train` block's training step runs on a target.
//!
//! Reports compile time, kernels per step, the median step time, samples/s and GFLOP/s
//! of the training step after a warm-up, and the process's peak resident memory. The
//! data are synthetic (uniform inputs, valid labels) so that a benchmark needs no files:
//! a pool of 4,096 samples is reshuffled every pass and each step gathers its batch from
//! it inside the timed region, as the training loop does. FLOPs are the compiler's own
//! estimate of the step (matrix products at 2·m·n·k, one per element otherwise).

use std::fmt;
use std::time::Instant;

use nnc_runtime::executor::{Executor, TaskKind};
use nnc_runtime::rng::Rng;
use nnc_runtime::tensor::Tensor;

use super::interp::InterpExecutor;
use super::train::{select_train, task_kind, Target};
use super::DriverError;
use crate::pipeline;
use crate::sema::typed::Program;

/// Settings of `nnc bench`.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub model: Option<String>,
    pub target: Target,
    pub batch: Option<usize>,
    pub steps: usize,
    pub warmup: usize,
    /// After the timed steps, run as many again timing every kernel.
    pub profile: bool,
    /// The memory limit in bytes (default: the machine's memory).
    pub max_memory: Option<u64>,
}

/// One kernel's share of the training step (`nnc bench --profile`).
#[derive(Clone, Debug)]
pub struct KernelProfile {
    pub name: String,
    /// Mean microseconds per step.
    pub mean_us: f64,
    /// The compiler's estimate of its floating-point operations per step.
    pub flops: u64,
    /// The compiler's estimate of the bytes it reads and writes per step.
    pub bytes: u64,
}

/// What `nnc bench` measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub model: String,
    pub target: &'static str,
    pub batch: usize,
    pub steps: usize,
    /// Seconds from the checked program to a loaded executor (step graphs, passes,
    /// lowering, code generation and loading).
    pub compile_s: f64,
    pub train_kernels: Option<usize>,
    pub eval_kernels: Option<usize>,
    pub arena_bytes: Option<usize>,
    pub flops_per_step: u64,
    pub median_step_us: f64,
    pub samples_per_s: f64,
    pub gflops: f64,
    pub peak_rss_bytes: Option<u64>,
    /// Samples per second of whole epochs over the pool run by the executor itself (data
    /// resident on the GPU, steps replayed as a graph); `None` for backends without
    /// that path.
    pub epoch_samples_per_s: Option<f64>,
    /// Per kernel, in launch order, with `--profile`.
    pub kernels: Vec<KernelProfile>,
    /// The runtime's GEMM peak on this machine (GFLOP/s), measured with `--profile` on
    /// the CPU: each kernel's GFLOP/s is also given as a share of it.
    pub gemm_peak_gflops: Option<f64>,
}

impl KernelProfile {
    /// `v` (FLOPs or bytes per step) per second, in billions.
    fn per_s(&self, v: u64) -> f64 {
        v as f64 / (self.mean_us * 1e-6).max(1e-12) / 1e9
    }
}

impl BenchReport {
    /// The kernels' time per step, in µs.
    fn kernels_us(&self) -> f64 {
        self.kernels.iter().map(|k| k.mean_us).sum()
    }

    /// `gflops` as a percentage of the measured GEMM peak, where there is one.
    fn of_peak(&self, gflops: f64) -> Option<f64> {
        self.gemm_peak_gflops
            .filter(|p| *p > 0.0)
            .map(|p| 100.0 * gflops / p)
    }

    /// The training-step kernel `name` (as `nnc explain` names it, `k3_conv`) as
    /// profiled: its time per step and share of the step, GFLOP/s, and their share of
    /// the GEMM peak where measured; `None` without `--profile` or for other names.
    pub fn measured_kernel(&self, name: &str) -> Option<String> {
        let k = self
            .kernels
            .iter()
            .find(|k| k.name.strip_prefix("train_") == Some(name))?;
        let gflops = k.per_s(k.flops);
        let mut line = format!(
            "{:.1} µs per step ({:.1}% of the kernels' time), {gflops:.1} GFLOP/s",
            k.mean_us,
            100.0 * k.mean_us / self.kernels_us().max(1e-12)
        );
        if let Some(share) = self.of_peak(gflops) {
            line += &format!(", {share:.0}% of the GEMM peak");
        }
        Some(line)
    }

    /// What `nnc explain --measure` says before the kernels: where and how the step was
    /// measured, its median time and the GEMM peak the kernels' shares refer to.
    pub fn measured_header(&self) -> String {
        let peak = self
            .gemm_peak_gflops
            .map_or_else(|| "-".to_string(), |p| format!("{p:.1} GFLOP/s"));
        format!(
            "measured on {} (nnc bench --profile, batch {}, {} steps): median step {:.1} µs, \
             GEMM peak {peak} (512³ sgemm on both lanes)",
            self.target, self.batch, self.steps, self.median_step_us
        )
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<usize>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        writeln!(
            f,
            "{} on {}, batch {}, {} timed steps",
            self.model, self.target, self.batch, self.steps
        )?;
        writeln!(f, "  compile time      {:.3} s", self.compile_s)?;
        writeln!(
            f,
            "  kernels per step  {} (train), {} (eval)",
            opt(self.train_kernels),
            opt(self.eval_kernels)
        )?;
        writeln!(f, "  arena             {} bytes", opt(self.arena_bytes))?;
        writeln!(f, "  median step       {:.1} µs", self.median_step_us)?;
        writeln!(f, "  throughput        {:.0} samples/s", self.samples_per_s)?;
        writeln!(
            f,
            "  compute           {:.1} GFLOP/s ({:.1} MFLOP per step)",
            self.gflops,
            self.flops_per_step as f64 / 1e6
        )?;
        match self.peak_rss_bytes {
            Some(b) => writeln!(f, "  peak memory       {:.1} MiB", b as f64 / 1048576.0)?,
            None => writeln!(f, "  peak memory       -")?,
        }
        if let Some(v) = self.epoch_samples_per_s {
            writeln!(
                f,
                "  resident epochs   {v:.0} samples/s (data on the device, one readback per epoch)"
            )?;
        }
        if !self.kernels.is_empty() {
            let total = self.kernels_us();
            writeln!(
                f,
                "  per kernel (mean of the profiled steps; {total:.1} µs in kernels, the rest \
                 of the step is the host's)"
            )?;
            if let Some(peak) = self.gemm_peak_gflops {
                writeln!(
                    f,
                    "  GEMM peak         {peak:.1} GFLOP/s (512³ sgemm on both lanes; \"peak\" below is a share of it)"
                )?;
            }
            writeln!(
                f,
                "    {:<28} {:>9} {:>6} {:>9} {:>6} {:>9}",
                "kernel", "µs", "share", "GFLOP/s", "peak", "GB/s"
            )?;
            for k in &self.kernels {
                let of_peak = self
                    .of_peak(k.per_s(k.flops))
                    .map_or_else(|| "-".to_string(), |s| format!("{s:.0}%"));
                writeln!(
                    f,
                    "    {:<28} {:>9.1} {:>5.1}% {:>9.1} {:>6} {:>9.1}",
                    k.name,
                    k.mean_us,
                    100.0 * k.mean_us / total.max(1e-12),
                    k.per_s(k.flops),
                    of_peak,
                    k.per_s(k.bytes)
                )?;
            }
        }
        Ok(())
    }
}

impl BenchReport {
    /// One JSON object (for `--json`).
    pub fn to_json(&self) -> String {
        let opt = |v: Option<usize>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
        format!(
            concat!(
                "{{\"model\":\"{}\",\"target\":\"{}\",\"batch\":{},\"steps\":{},",
                "\"compile_s\":{:.4},\"train_kernels\":{},\"eval_kernels\":{},",
                "\"arena_bytes\":{},\"flops_per_step\":{},\"median_step_us\":{:.2},",
                "\"samples_per_s\":{:.1},\"gflops\":{:.2},\"peak_rss_bytes\":{},",
                "\"epoch_samples_per_s\":{},\"kernels\":[{}]}}"
            ),
            self.model,
            self.target,
            self.batch,
            self.steps,
            self.compile_s,
            opt(self.train_kernels),
            opt(self.eval_kernels),
            opt(self.arena_bytes),
            self.flops_per_step,
            self.median_step_us,
            self.samples_per_s,
            self.gflops,
            self.peak_rss_bytes
                .map_or_else(|| "null".to_string(), |v| v.to_string()),
            self.epoch_samples_per_s
                .map_or_else(|| "null".to_string(), |v| format!("{v:.1}")),
            self.kernels
                .iter()
                .map(|k| format!(
                    "{{\"name\":\"{}\",\"mean_us\":{:.2},\"flops\":{},\"bytes\":{}}}",
                    k.name, k.mean_us, k.flops, k.bytes
                ))
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// The peak resident set size of this process (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Benchmarks the training step of the selected `train` block.
pub fn run_bench(program: &Program, opts: &BenchOptions) -> Result<BenchReport, DriverError> {
    let train = select_train(program, opts.model.as_deref())?;
    let model = &program.models[train.model];
    let batch = opts.batch.unwrap_or(train.batch);
    if batch == 0 || opts.steps == 0 {
        return Err(DriverError::Message(
            "`--batch` and `--steps` must be positive".into(),
        ));
    }
    super::resources::check(model, Some(train), batch, opts.max_memory)?;
    let start = Instant::now();
    let compiled =
        pipeline::compile_train(model, train, batch, None).map_err(DriverError::Message)?;
    let reports = compiled.train.lowered.reports.clone();
    let flops = reports.iter().map(|r| r.flops).sum();
    let (mut exec, kernels, arena): (Box<dyn Executor>, _, _) = match opts.target {
        Target::Interp => (
            Box::new(InterpExecutor::new(compiled.graphs, model, train.seed)),
            None,
            None,
        ),
        Target::Cpu => {
            let (exec, art) = super::cpu::load_cpu(&compiled, model, train.seed)?;
            (
                Box::new(exec),
                Some((art.train.kernels.len(), art.eval.kernels.len())),
                Some(4 * art.train.arena.resolve(batch)),
            )
        }
        Target::Cuda => (
            super::cuda::cuda_executor(&compiled, model, train.seed)?,
            None,
            None,
        ),
    };
    let compile_s = start.elapsed().as_secs_f64();
    let task = task_kind(model, train.loss);
    let pool = synthetic_pool(exec.as_ref(), task, 4096.max(batch));
    let shapes = (
        exec.input_shape(),
        match task {
            TaskKind::Classification { .. } => Vec::new(),
            _ => exec.output_shape(),
        },
    );
    let mut rng = Rng::from_seed(train.seed);
    let mut order: Vec<usize> = (0..pool.0.len()).collect();
    let mut cursor = order.len();
    let mut times = Vec::with_capacity(opts.steps);
    let mut x = Tensor {
        shape: Vec::new(),
        data: Vec::new(),
    };
    let mut y = x.clone();
    // The next batch of the pool into `x`, `y` (reshuffled at the end of each pass).
    let mut next_batch = |x: &mut Tensor, y: &mut Tensor| {
        if cursor + batch > order.len() {
            rng.shuffle(&mut order);
            cursor = 0;
        }
        let end = (cursor + batch).min(order.len());
        gather(&pool, &order[cursor..end], &shapes, x, y);
        cursor += batch;
    };
    let total = Instant::now();
    let mut timed_from = total;
    for step in 0..opts.warmup + opts.steps {
        if step == opts.warmup {
            timed_from = Instant::now();
        }
        let t = Instant::now();
        next_batch(&mut x, &mut y);
        let out = exec
            .train_step(&x, &y)
            .map_err(|e| DriverError::Message(e.to_string()))?;
        if !out.loss.is_finite() {
            return Err(DriverError::Message(format!(
                "the loss became {} at benchmark step {step}",
                out.loss
            )));
        }
        if step >= opts.warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let elapsed = timed_from.elapsed().as_secs_f64();
    let mut profile = Vec::new();
    if opts.profile {
        exec.set_profiling(true);
        for _ in 0..opts.steps {
            next_batch(&mut x, &mut y);
            exec.train_step(&x, &y)
                .map_err(|e| DriverError::Message(e.to_string()))?;
        }
        // The artifact runs the step's kernels in the compiler's order, one to one.
        profile = exec
            .kernel_profile()
            .into_iter()
            .enumerate()
            .map(|(i, k)| KernelProfile {
                name: k.name,
                mean_us: k.seconds * 1e6 / k.calls.max(1) as f64,
                flops: reports.get(i).map_or(0, |r| r.flops),
                bytes: reports.get(i).map_or(0, |r| r.bytes),
            })
            .collect();
        exec.set_profiling(false);
    }
    let gemm_peak_gflops =
        (opts.profile && exec.backend() == "cpu").then(|| nnc_runtime::cpu::gemm_peak_gflops(2));
    // Whole epochs over the pool, when the backend runs them itself: one untimed epoch
    // (data upload, graph capture), then enough timed ones to cover `steps` steps.
    let mut epoch_samples_per_s = None;
    let mut all = (Tensor::default(), Tensor::default());
    gather(&pool, &order, &shapes, &mut all.0, &mut all.1);
    let epochs = opts.steps.div_ceil(order.len().div_ceil(batch)).max(1);
    let mut timed = None;
    for e in 0..=epochs {
        if e == 1 {
            timed = Some(Instant::now());
        }
        match exec.train_epoch(&all.0, &all.1, &order, batch) {
            None => break,
            Some(run) => {
                let run = run.map_err(|e| DriverError::Message(e.to_string()))?;
                if let Some(bad) = run.losses.iter().find(|l| !l.is_finite()) {
                    return Err(DriverError::Message(format!(
                        "the loss became {bad} in a benchmark epoch"
                    )));
                }
            }
        }
        if e == epochs {
            let secs = timed.map_or(0.0, |t| t.elapsed().as_secs_f64());
            epoch_samples_per_s = Some((epochs * order.len()) as f64 / secs.max(1e-9));
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let samples_per_s = (opts.steps * batch) as f64 / elapsed;
    Ok(BenchReport {
        model: model.name.clone(),
        target: opts.target.name(),
        batch,
        steps: opts.steps,
        compile_s,
        train_kernels: kernels.map(|k| k.0),
        eval_kernels: kernels.map(|k| k.1),
        arena_bytes: arena,
        flops_per_step: flops,
        median_step_us: median * 1e6,
        samples_per_s,
        gflops: flops as f64 * opts.steps as f64 / elapsed / 1e9,
        peak_rss_bytes: peak_rss(),
        epoch_samples_per_s,
        kernels: profile,
        gemm_peak_gflops,
    })
}

/// `count` synthetic samples: inputs uniform in [0, 1); class labels for classifiers,
/// uniform targets otherwise. Returned as per-sample rows.
fn synthetic_pool(
    exec: &dyn Executor,
    task: TaskKind,
    count: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = Rng::from_seed(0x5eed);
    let per_x: usize = exec.input_shape().iter().product();
    let per_y: usize = exec.output_shape().iter().product();
    let classes = task.classes();
    let xs = (0..count)
        .map(|_| (0..per_x).map(|_| uniform(&mut rng)).collect())
        .collect();
    let ys = (0..count)
        .map(|_| match classes {
            Some(c) => vec![((uniform(&mut rng) * c as f32) as usize).min(c - 1) as f32],
            None => (0..per_y).map(|_| uniform(&mut rng)).collect(),
        })
        .collect();
    (xs, ys)
}

fn uniform(rng: &mut Rng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

/// Copies the samples `idx` of the pool into `x` and `y` (shapes as the training loop
/// builds them: `[n, input..]`, and `[n]` for class labels or `[n, output..]`).
fn gather(
    pool: &(Vec<Vec<f32>>, Vec<Vec<f32>>),
    idx: &[usize],
    shapes: &(Vec<usize>, Vec<usize>),
    x: &mut Tensor,
    y: &mut Tensor,
) {
    let (xs, ys) = pool;
    x.data.clear();
    y.data.clear();
    for &i in idx {
        x.data.extend_from_slice(&xs[i]);
        y.data.extend_from_slice(&ys[i]);
    }
    for (t, dims) in [(x, &shapes.0), (y, &shapes.1)] {
        t.shape.clear();
        t.shape.push(idx.len());
        t.shape.extend_from_slice(dims);
    }
}
