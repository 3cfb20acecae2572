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
use crate::ir::train::build_step_graphs;
use crate::lower::report::compile_step;
use crate::sema::typed::Program;

/// Settings of `nnc bench`.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub model: Option<String>,
    pub target: Target,
    pub batch: Option<usize>,
    pub steps: usize,
    pub warmup: usize,
}

/// What `nnc bench` measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub model: String,
    pub target: &'static str,
    pub batch: usize,
    pub steps: usize,
    /// Seconds from the step graphs to a loaded executor.
    pub compile_s: f64,
    pub train_kernels: Option<usize>,
    pub eval_kernels: Option<usize>,
    pub arena_bytes: Option<usize>,
    pub flops_per_step: u64,
    pub median_step_us: f64,
    pub samples_per_s: f64,
    pub gflops: f64,
    pub peak_rss_bytes: Option<u64>,
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
            Some(b) => writeln!(f, "  peak memory       {:.1} MiB", b as f64 / 1048576.0),
            None => writeln!(f, "  peak memory       -"),
        }
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
                "\"samples_per_s\":{:.1},\"gflops\":{:.2},\"peak_rss_bytes\":{}}}"
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
    let graphs = build_step_graphs(model, train).map_err(|e| {
        DriverError::Message(format!(
            "cannot build the training step of `{}`: {e}",
            model.name
        ))
    })?;
    let flops = compile_step(&graphs.train, batch, None)
        .map_err(DriverError::Message)?
        .lowered
        .reports
        .iter()
        .map(|r| r.flops)
        .sum();
    let start = Instant::now();
    let (mut exec, kernels, arena): (Box<dyn Executor>, _, _) = match opts.target {
        Target::Interp => (
            Box::new(InterpExecutor::new(graphs, model, train.seed)),
            None,
            None,
        ),
        Target::Cpu => {
            let (exec, art) = super::cpu::load_cpu(&graphs, model, train.seed, batch)?;
            let p = &art.train.lowered.program;
            (
                Box::new(exec),
                Some((p.kernels.len(), art.eval.lowered.program.kernels.len())),
                Some(4 * p.arena.resolve(batch)),
            )
        }
        Target::Cuda => (
            super::cuda::cuda_executor(&graphs, model, train.seed, batch)?,
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
    let total = Instant::now();
    let mut timed_from = total;
    for step in 0..opts.warmup + opts.steps {
        if step == opts.warmup {
            timed_from = Instant::now();
        }
        let t = Instant::now();
        if cursor + batch > order.len() {
            rng.shuffle(&mut order);
            cursor = 0;
        }
        let end = (cursor + batch).min(order.len());
        gather(&pool, &order[cursor..end], &shapes, &mut x, &mut y);
        cursor += batch;
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
