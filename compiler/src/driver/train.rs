//! `nnc train` and `nnc eval`: from a checked program to a trained (or evaluated) model.

use std::path::{Path, PathBuf};

use nnc_runtime::data::{
    load_csv, load_idx, load_image_folder, load_npy_data, read_csv_dataset, DataError, Splits,
    TestSplit,
};
use nnc_runtime::executor::{Executor, TaskKind};
use nnc_runtime::train::{
    evaluate, train_loop, EvalReport, ProgressMode, Schedule as RtSchedule, ScheduleKind, StopFlag,
    Summary, TrainConfig, TrainError,
};

use super::interp::InterpExecutor;
use super::DriverError;
use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::pipeline;
use crate::sema::typed::{DataSpec, Loss, Program, TypedModel, TypedTrain};
use crate::syntax::ast::Span;

/// Where the training step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The reference interpreter of the graph IR.
    Interp,
    /// Native code for this CPU.
    Cpu,
    /// PTX on an NVIDIA GPU.
    Cuda,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Interp => "interp",
            Target::Cpu => "cpu",
            Target::Cuda => "cuda",
        }
    }
}

/// Command-line settings of `nnc train`; `None` keeps the file's value.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub model: Option<String>,
    pub target: Target,
    /// Replaces the data source's path (relative to the working directory).
    pub data: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub quiet: bool,
    /// Start from these parameters (overrides the block's `init`).
    pub init: Option<PathBuf>,
    /// Write the checkpoint every this many epochs (overrides `checkpoint_every`).
    pub checkpoint_every: Option<usize>,
    /// A fresh run may replace an earlier run's results in the output folder.
    pub overwrite: bool,
    /// The memory limit in bytes (default: the machine's memory).
    pub max_memory: Option<u64>,
    /// Data-parallel training over this transport, one process per rank.
    pub distributed: Option<Transport>,
    /// How long a collective operation waits for the other ranks.
    pub collective_timeout: std::time::Duration,
}

/// The transport of data-parallel training (`--distributed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// MPI between processes (CPU clusters; feature `mpi`).
    Mpi,
    /// NCCL between GPUs, one process each (feature `nccl`).
    Nccl,
}

/// Command-line settings of `nnc eval`.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub model: Option<String>,
    pub target: Target,
    pub weights: PathBuf,
    pub data: Option<PathBuf>,
    pub batch: Option<usize>,
    /// The memory limit in bytes (default: the machine's memory).
    pub max_memory: Option<u64>,
}

/// Trains the selected `train` block of `program` (checked from the file at `path`).
pub fn run_train(
    program: &Program,
    path: &Path,
    opts: &TrainOptions,
) -> Result<Summary, DriverError> {
    let distributed = match opts.distributed {
        Some(t) => Some(super::distributed::join(
            t,
            opts.target,
            opts.collective_timeout,
        )?),
        None => None,
    };
    run_train_in(program, path, opts, distributed)
}

/// [`run_train`] as one rank of `distributed` (a group already joined), or alone.
pub(super) fn run_train_in(
    program: &Program,
    path: &Path,
    opts: &TrainOptions,
    distributed: Option<nnc_runtime::dist::Distributed>,
) -> Result<Summary, DriverError> {
    let train = select_train(program, opts.model.as_deref())?;
    let model = &program.models[train.model];
    let seed = opts.seed.unwrap_or(train.seed);
    let batch = opts.batch.unwrap_or(train.batch);
    super::resources::check(model, Some(train), batch, opts.max_memory)?;
    let mut exec = match &distributed {
        Some(d) => {
            let shard = batch.div_ceil(d.0.size());
            super::distributed::parallel_executor(opts.target, model, train, seed, shard, d)?
        }
        None => make_executor(opts.target, model, train, seed)?,
    };
    if let Some(init) = opts.init.as_ref().or(train.init.as_ref()) {
        super::weights::init_from(exec.as_mut(), init, model, opts.quiet)?;
    }
    let data = load_data(train, opts.data.as_deref(), model, exec.as_ref())?;
    let validation = match &train.validation_source {
        Some(spec) => Some(
            validation_set(spec, &data, train.seed)
                .map_err(|e| data_diagnostic(Code::Data, &e, train.data_span))?,
        ),
        None => None,
    };
    let task = task_kind(model, train.loss);
    // Resuming writes into the folder resumed from unless told otherwise; a fresh run
    // without `--out` takes the next free default folder rather than an earlier run's.
    let out_dir = match opts.out.clone().or_else(|| opts.resume.clone()) {
        Some(dir) => dir,
        None => free_default_dir(default_out_dir(program, path, model), opts),
    };
    let mut config = TrainConfig::new(task, out_dir);
    config.epochs = opts.epochs.unwrap_or(train.epochs);
    config.batch = opts.batch.unwrap_or(train.batch);
    config.seed = seed;
    config.shuffle = train.shuffle;
    config.log = opts.log.clone();
    config.progress = if opts.quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::Auto
    };
    config.metrics = train.metrics.clone();
    config.weights_metadata = super::weights::weights_metadata(model, train, exec.as_ref(), task)?;
    config.validation = train.validation;
    config.validation_set = validation;
    config.early_stopping = train.early_stopping.clone();
    config.schedule = schedule(train);
    config.overwrite = opts.overwrite;
    config.distributed = distributed;
    config.lr = Some(crate::optim::base_lr(&train.optimizer));
    config.checkpoint_every_epochs = opts
        .checkpoint_every
        .or(train.checkpoint_every)
        .unwrap_or(1);
    if config.epochs == 0 || config.batch == 0 {
        return Err(DriverError::Message(
            "`--epochs` and `--batch` must be positive".into(),
        ));
    }
    if let Some(log) = &opts.log {
        check_log_file(log, opts.resume.is_some(), opts.overwrite)?;
    }
    let resume = opts
        .resume
        .as_ref()
        .map(|dir| dir.join(nnc_runtime::train::CHECKPOINT_FILE));
    // Ctrl-C or SIGTERM: finish the step in flight, write the checkpoint, stop. The same
    // signal a second time while stopping exits at once; one of each (a launcher that
    // passes Ctrl-C on and then terminates its processes) does not.
    let stop = StopFlag::default();
    #[cfg(unix)]
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, seen.clone());
        let _ = signal_hook::flag::register(signal, seen);
        let _ = signal_hook::flag::register(signal, stop.0.clone());
    }
    config.stop = Some(stop);
    let out_dir = config.out_dir.clone();
    train_loop(exec.as_mut(), data, &config, resume.as_deref()).map_err(|e| match e {
        TrainError::Interrupted { .. } => DriverError::Interrupted(format!(
            "{e}\nhelp: continue with `nnc train {} --resume {} --out {}` (and the other options given now)",
            path.display(),
            out_dir.display(),
            out_dir.display()
        )),
        e => DriverError::Message(e.to_string()),
    })
}

/// `--log FILE` may name a new file, or a metrics log of nnc's own: one a resumed run
/// continues, or (with `--overwrite`) one a fresh run replaces. Anything else (the model
/// file, data, a checkpoint) is never overwritten.
fn check_log_file(log: &Path, resuming: bool, overwrite: bool) -> Result<(), DriverError> {
    let refuse = |why: String, help: &str| {
        Err(DriverError::Message(format!(
            "`--log {}`: {why}\nhelp: {help}",
            log.display()
        )))
    };
    let Ok(meta) = std::fs::metadata(log) else {
        return Ok(());
    };
    if !meta.is_file() {
        return refuse(
            "this is a folder, not a file".into(),
            "name a file, e.g. `--log run.jsonl`",
        );
    }
    let text = match std::fs::read(log) {
        Ok(bytes) => bytes,
        Err(e) => return refuse(format!("cannot read it: {e}"), "name a new file"),
    };
    let is_log = std::str::from_utf8(&text).is_ok_and(|t| {
        t.lines().all(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v.get("epoch").is_some_and(|e| e.is_u64()))
        })
    });
    if !is_log {
        return refuse(
            "the file exists and is not a metrics log written by nnc; it is not overwritten".into(),
            "name a new file for the log",
        );
    }
    if !text.is_empty() && !resuming && !overwrite {
        return refuse(
            "the file holds the metrics of an earlier run".into(),
            "replace it with `--overwrite`, or name a new file",
        );
    }
    Ok(())
}

/// Evaluates saved weights on the test split of the selected block's data.
pub fn run_eval(program: &Program, opts: &EvalOptions) -> Result<EvalReport, DriverError> {
    let train = select_train(program, opts.model.as_deref())?;
    let model = &program.models[train.model];
    let batch = opts.batch.unwrap_or(train.batch).max(1);
    super::resources::check(model, Some(train), train.batch, opts.max_memory)?;
    super::resources::check(model, None, batch, opts.max_memory)?;
    let mut exec = make_executor(opts.target, model, train, train.seed)?;
    super::weights::load_weights(exec.as_mut(), &opts.weights, model, train)?;
    let data = load_data(train, opts.data.as_deref(), model, exec.as_ref())?;
    let metrics = &train.metrics;
    evaluate(
        exec.as_mut(),
        data.test,
        batch,
        task_kind(model, train.loss),
        metrics,
    )
    .map_err(|e| DriverError::Message(e.to_string()))
}

/// The `train` block to run: the only one, or the one for `--model NAME`.
pub(super) fn select_train<'p>(
    program: &'p Program,
    model: Option<&str>,
) -> Result<&'p TypedTrain, Diagnostic> {
    let name_of = |t: &TypedTrain| program.models[t.model].name.as_str();
    match model {
        Some(name) => program
            .trains
            .iter()
            .find(|t| name_of(t) == name)
            .ok_or_else(|| {
                let names: Vec<&str> = program.trains.iter().map(name_of).collect();
                let help = did_you_mean(name, names.iter().copied()).unwrap_or_else(|| {
                    if names.is_empty() {
                        "this file has no `train` block".to_string()
                    } else {
                        format!("the trained models are {}", quoted(&names))
                    }
                });
                Diagnostic::new(
                    Code::UnknownModel,
                    format!("no `train` block for a model named `{name}`"),
                )
                .help(help)
            }),
        None => match program.trains.as_slice() {
            [only] => Ok(only),
            [] => {
                let mut d = Diagnostic::new(Code::NoTrainBlock, "no `train` block in this file");
                if let Some(m) = program.models.first() {
                    d = d
                        .label(
                            Span {
                                start: m.span.start,
                                end: m.span.start + "model".len() as u32,
                            },
                            format!("model `{}` is never trained", m.name),
                        )
                        .help(format!(
                            "add `train {} {{ data = .., loss = .., optimizer = .. }}`",
                            m.name
                        ));
                }
                Err(d)
            }
            several => {
                let names: Vec<&str> = several.iter().map(name_of).collect();
                let mut d = Diagnostic::new(
                    Code::AmbiguousTrain,
                    format!(
                        "{} `train` blocks and no `--model` to choose one",
                        several.len()
                    ),
                );
                d = d.label(several[0].name_span, "the first of them");
                Err(d.help(format!("choose with `--model NAME`: {}", quoted(&names))))
            }
        },
    }
}

fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    q.join(", ")
}

pub(super) fn make_executor(
    target: Target,
    model: &TypedModel,
    train: &TypedTrain,
    seed: u64,
) -> Result<Box<dyn Executor>, DriverError> {
    // Compiled code is scheduled for the file's batch size; it runs at any batch size.
    match target {
        Target::Interp => {
            let graphs = pipeline::step_graphs(model, train).map_err(DriverError::Message)?;
            Ok(Box::new(InterpExecutor::new(graphs, model, seed)))
        }
        Target::Cpu | Target::Cuda => {
            let compiled = pipeline::compile_train(model, train, train.batch, None)
                .map_err(DriverError::Message)?;
            if target == Target::Cpu {
                super::cpu::cpu_executor(&compiled, model, seed)
            } else {
                super::cuda::cuda_executor(&compiled, model, seed)
            }
        }
    }
}

/// The runtime's view of what the model predicts.
pub(super) fn task_kind(model: &TypedModel, loss: Loss) -> TaskKind {
    let out = &model.nodes[model.output.0 as usize].shape;
    match loss {
        Loss::CrossEntropy => TaskKind::Classification {
            classes: out.dims.last().copied().unwrap_or(1),
        },
        Loss::BinaryCrossEntropy if out.elems() == 1 => TaskKind::Binary,
        _ => TaskKind::Regression {
            outputs: out.elems(),
        },
    }
}

/// `runs/<file stem>`, or `runs/<file stem>-<model>` when the file trains several models.
/// `base` unless it holds an earlier run's results (and `--overwrite` was not given);
/// then `base-2`, `base-3`, …, the first that does not, with a note saying so.
fn free_default_dir(base: PathBuf, opts: &TrainOptions) -> PathBuf {
    let holds_results = |dir: &Path| !nnc_runtime::train::outdir::results_in(dir).is_empty();
    if opts.overwrite || !holds_results(&base) {
        return base;
    }
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let free = (2..)
        .map(|k| base.with_file_name(format!("{name}-{k}")))
        .find(|d| !holds_results(d))
        .unwrap_or(base.clone());
    if !opts.quiet {
        eprintln!(
            "note: `{}` holds an earlier run; this one writes to `{}` (`--out DIR` chooses, `--overwrite` replaces)",
            base.display(),
            free.display()
        );
    }
    free
}

fn default_out_dir(program: &Program, path: &Path, model: &TypedModel) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    if program.trains.len() > 1 {
        PathBuf::from("runs").join(format!("{stem}-{}", model.name.to_lowercase()))
    } else {
        PathBuf::from("runs").join(stem)
    }
}

/// Loads the block's data (or `--data`), and checks that its samples fit the model input.
pub(super) fn load_data(
    train: &TypedTrain,
    data_override: Option<&Path>,
    model: &TypedModel,
    exec: &dyn Executor,
) -> Result<Splits, DriverError> {
    let loaded = load_source(&train.data, data_override, train.seed);
    let mut splits = loaded.map_err(|e| data_diagnostic(Code::Data, &e, train.data_span))?;
    let input = exec.input_shape();
    for split in [&mut splits.train, &mut splits.test] {
        split.fit_input(&input).map_err(|e| {
            data_diagnostic(Code::DataShapeMismatch, &e, train.data_span).note(format!(
                "the model `{}` takes `{}` of shape {}",
                model.name,
                model.inputs[0].name,
                nnc_runtime::tensor::format_shape(&input)
            ))
        })?;
    }
    Ok(splits)
}

/// The runtime's form of the block's learning-rate schedule (`None` for a constant rate,
/// which the step has compiled in).
fn schedule(train: &TypedTrain) -> Option<RtSchedule> {
    (train.schedule != ScheduleKind::Constant).then(|| RtSchedule {
        base_lr: crate::optim::base_lr(&train.optimizer),
        kind: train.schedule.clone(),
    })
}

/// The splits of a data source (`data_override` replaces its main path).
fn load_source(
    spec: &DataSpec,
    data_override: Option<&Path>,
    seed: u64,
) -> Result<Splits, DataError> {
    match spec {
        DataSpec::Idx { dir, scale } => load_idx(data_override.unwrap_or(dir), *scale as f32),
        DataSpec::Csv {
            path,
            target,
            standardize,
            test,
        } => load_csv(
            data_override.unwrap_or(path),
            target,
            *standardize,
            &test_split(test),
        ),
        DataSpec::Images {
            dir,
            size,
            channels,
            scale,
            test,
        } => load_image_folder(
            data_override.unwrap_or(dir),
            *size,
            *channels,
            *scale as f32,
            *test,
            seed,
        ),
        DataSpec::Npy {
            x,
            y,
            test_xy,
            scale,
            test,
        } => load_npy_data(
            data_override.unwrap_or(x),
            y,
            test_xy.as_ref().map(|(a, b)| (a.as_path(), b.as_path())),
            *scale as f32,
            *test,
        ),
    }
}

/// A separate validation set (`validation = csv(..)`), read whole: both splits of the
/// source. A CSV source is read by the training columns' names and standardized with the
/// training statistics, as the training samples were.
fn validation_set(
    spec: &DataSpec,
    training: &Splits,
    seed: u64,
) -> Result<nnc_runtime::data::Dataset, DataError> {
    if let (DataSpec::Csv { path, target, .. }, Some(columns)) =
        (spec, &training.preprocess.columns)
    {
        let mut set = read_csv_dataset(path, columns, target)?;
        if let Some(st) = &training.preprocess.standardize {
            st.apply(&mut set);
        }
        return Ok(set);
    }
    let splits = load_source(spec, None, seed)?;
    splits.train.concat(&splits.test)
}

/// The runtime's form of a CSV test split.
pub(super) fn test_split(t: &crate::sema::typed::TestSplit) -> TestSplit {
    match t {
        crate::sema::typed::TestSplit::Fraction(f) => TestSplit::Fraction(*f),
        crate::sema::typed::TestSplit::File(p) => TestSplit::File(p.clone()),
    }
}

fn data_diagnostic(code: Code, e: &DataError, span: Span) -> Diagnostic {
    let text = e.to_string();
    let (message, help) = match text.split_once("\nhelp: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (text, e.help.clone()),
    };
    Diagnostic::new(code, message)
        .label(span, "data loaded from here")
        .maybe_help(help)
}
