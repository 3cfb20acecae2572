//! The `nnc` command line: `check`, `build`, `fmt`, `doc` (and, as it lands, `train`).
//! Exit codes: 0 success, 1 user error (diagnostics on stderr), 2 usage error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use nnc::diag::{self, ColorChoice};
use nnc::driver::{self, DriverError, EvalOptions, Target, TrainOptions};
use nnc::pipeline;
use nnc::Source;

#[derive(Parser)]
#[command(
    name = "nnc",
    version,
    about = "A compiler for neural-network models (.nn files)"
)]
struct Cli {
    /// When to colour diagnostics.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// Flags shared by `train` and `eval`.
#[derive(clap::Args)]
struct RunArgs {
    /// The model whose `train` block to use, when the file has several.
    #[arg(long)]
    model: Option<String>,
    /// Where the training step runs: native code for this CPU (default), the reference
    /// interpreter, or an NVIDIA GPU.
    #[arg(long, value_enum, default_value_t = TargetArg::Cpu)]
    target: TargetArg,
    /// Data to use instead of the file's (a folder for `idx`, a file for `csv`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Batch size (overrides the file).
    #[arg(long, value_parser = positive)]
    batch: Option<usize>,
    /// Refuse a run that needs more memory than this (`8G`, `512M`, bytes) [default:
    /// the machine's memory].
    #[arg(long, value_name = "SIZE", value_parser = memory_size)]
    max_memory: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    /// MPI (CPU clusters; `--target cpu`).
    Mpi,
    /// NCCL (one process per GPU; `--target cuda`).
    Nccl,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Interp,
    Cpu,
    Cuda,
}

impl TargetArg {
    fn target(self) -> Target {
        match self {
            TargetArg::Interp => Target::Interp,
            TargetArg::Cpu => Target::Cpu,
            TargetArg::Cuda => Target::Cuda,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check programs for errors without running them (data files are not opened).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rewrite programs in the canonical layout (files with syntax errors are left alone).
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; list the files that would change and exit 1 if any would.
        #[arg(long)]
        check: bool,
    },
    /// Show the reference of a layer, function, loss, optimizer, setting..., or the index.
    Doc {
        /// The name to describe; without it, every name grouped by kind.
        name: Option<String>,
    },
    /// Train a model: the file's only `train` block, or the one of `--model`.
    Train {
        file: PathBuf,
        #[command(flatten)]
        common: RunArgs,
        /// Number of epochs (overrides the file).
        #[arg(long, value_parser = positive)]
        epochs: Option<usize>,
        /// Seed of initial weights and shuffles (overrides the file).
        #[arg(long)]
        seed: Option<u64>,
        /// Output folder for weights, checkpoint, metrics and plots [default: runs/<file>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the checkpoint in this output folder.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Also write the per-epoch metrics to this JSON-lines file.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Print nothing but the final summary.
        #[arg(long)]
        quiet: bool,
        /// Start from the parameters of this weights file, matched by name (overrides the
        /// block's `init`; fine-tuning).
        #[arg(long)]
        init: Option<PathBuf>,
        /// A fresh run may replace the results of an earlier run in the output folder
        /// (without it, it refuses them).
        #[arg(long)]
        overwrite: bool,
        /// Data-parallel training, one process per rank, started by the cluster's
        /// launcher (`mpirun -np N nnc train FILE --distributed mpi`); `batch` is the
        /// global batch.
        #[arg(long, value_enum)]
        distributed: Option<TransportArg>,
        /// Seconds a collective operation waits for the other ranks before the job is
        /// aborted (a rank died or hangs).
        #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
        collective_timeout: u64,
        /// Write the checkpoint every N epochs (overrides `checkpoint_every`).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        checkpoint_every: Option<u64>,
    },
    /// Evaluate saved weights on the test split: loss, metrics, confusion matrix.
    Eval {
        file: PathBuf,
        #[command(flatten)]
        common: RunArgs,
        /// A `weights.safetensors` written by `nnc train`.
        #[arg(long)]
        weights: PathBuf,
    },
    /// Run a trained model on new samples: an IDX, CSV, .npy, PNG or JPEG file, or a
    /// folder of images; prints one CSV row per sample (or writes `--output`)
    Predict {
        file: PathBuf,
        /// A `weights.safetensors` written by `nnc train`.
        #[arg(long)]
        weights: PathBuf,
        /// The samples, as they are in the data (pixel bytes, raw CSV values).
        #[arg(long)]
        input: PathBuf,
        /// Write the predictions here (`.csv`, or `.jsonl` for JSON lines) instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// The model to use, when the file trains several.
        #[arg(long)]
        model: Option<String>,
        /// Samples per evaluation step [default: the file's batch, at least 256].
        #[arg(long, value_parser = positive)]
        batch: Option<usize>,
        /// Where the model runs.
        #[arg(long, value_enum, default_value_t = TargetArg::Cpu)]
        target: TargetArg,
        /// Scale images of another size to the model input's size.
        #[arg(long)]
        resize: bool,
    },
    /// Write the model with trained weights as an ONNX model (opset 17, dynamic batch,
    /// the data's preprocessing as its first nodes)
    Export {
        file: PathBuf,
        /// A `weights.safetensors` written by `nnc train`.
        #[arg(long)]
        weights: PathBuf,
        /// The ONNX file to write.
        #[arg(long)]
        onnx: PathBuf,
        /// The model to export, when the file trains several.
        #[arg(long)]
        model: Option<String>,
    },
    /// Compile a program and print the requested pipeline stages.
    Build {
        file: PathBuf,
        /// Stages to print, comma-separated: ast, graph, train-graph, eval-graph, fused,
        /// kernels, cpu-kernels, clif and asm (target cpu), gpu-kernels, ptx and llvm (target
        /// cuda). Without `--emit`, prints only the summary line.
        #[arg(long, value_delimiter = ',')]
        emit: Vec<String>,
        /// The target whose code `--emit` shows (clif/asm are cpu's, gpu-kernels/ptx/llvm
        /// cuda's).
        #[arg(long, value_enum, default_value_t = TargetArg::Cpu)]
        target: TargetArg,
        /// The GPU architecture of `--emit ptx,llvm`: sm_80 or sm_90.
        #[arg(long, default_value = "sm_80")]
        gpu_arch: String,
        /// With `--emit ptx`: after each step's PTX, the registers, spills, stack and
        /// shared memory of every kernel, as `ptxas -v` reports them (needs ptxas).
        #[arg(short, long)]
        verbose: bool,
        /// Print the step graphs after this pass: simplify, dce, fuse.
        #[arg(long)]
        dump_after: Option<String>,
        /// Write an inference artifact into this folder: `libnnc_model.so` (the evaluation
        /// step with a C API, `nnc_model.h`), `weights.safetensors`, `manifest.json`, and
        /// with `--target cuda` the evaluation step's PTX.
        #[arg(short = 'o', long = "out-dir")]
        out_dir: Option<PathBuf>,
        /// The trained weights the artifact holds (default: the seeded initial weights).
        #[arg(long, requires = "out_dir")]
        weights: Option<PathBuf>,
        /// The model of the artifact, when the file trains several.
        #[arg(long, requires = "out_dir")]
        model: Option<String>,
    },
    /// Measure the training step: compile time, kernels per step, samples/s, GFLOP/s
    /// and peak memory, on synthetic data after a warm-up.
    Bench {
        file: PathBuf,
        /// The model whose `train` block to use, when the file has several.
        #[arg(long)]
        model: Option<String>,
        /// Where the training step runs.
        #[arg(long, value_enum, default_value_t = TargetArg::Cpu)]
        target: TargetArg,
        /// Batch size (overrides the file).
        #[arg(long, value_parser = positive)]
        batch: Option<usize>,
        /// Timed steps.
        #[arg(long, default_value_t = 500, value_parser = positive)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 50)]
        warmup: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Then run as many steps again timing every kernel, and print each one's share.
        #[arg(long)]
        profile: bool,
        /// Refuse a model that needs more memory than this [default: the machine's memory].
        #[arg(long, value_name = "SIZE", value_parser = memory_size)]
        max_memory: Option<u64>,
    },
    /// Print each kernel of the compiled steps: the ops it fused and why (or why a
    /// fusion was refused), and its estimated FLOPs and bytes moved.
    Explain {
        file: PathBuf,
        /// Also run the training step on the CPU (synthetic data, as `nnc bench
        /// --profile`) and print under each of its kernels the time per step, the
        /// GFLOP/s reached and their share of the machine's GEMM peak.
        #[arg(long)]
        measure: bool,
        /// With `--measure`: timed steps (after 10 of warm-up), and as many profiled.
        #[arg(long, default_value_t = 50, value_parser = positive)]
        steps: usize,
    },
}

/// A `--max-memory` size.
fn memory_size(text: &str) -> Result<u64, String> {
    driver::resources::parse_size(text)
}

/// A command-line count that must be at least 1 (a batch, epochs, steps).
fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        Color::Always => ColorChoice::Always,
        Color::Never => ColorChoice::Never,
        Color::Auto if std::io::stderr().is_terminal() => ColorChoice::Always,
        Color::Auto => ColorChoice::Never,
    };
    let ok = match cli.command {
        Command::Check { files } => files.iter().all_ok(|f| check(f, color)),
        Command::Fmt { files, check } => files.iter().all_ok(|f| fmt(f, check, color)),
        Command::Doc { name } => doc(name.as_deref()),
        Command::Train {
            file,
            common,
            epochs,
            seed,
            out,
            resume,
            log,
            quiet,
            init,
            overwrite,
            distributed,
            collective_timeout,
            checkpoint_every,
        } => {
            let opts = TrainOptions {
                model: common.model,
                target: common.target.target(),
                data: common.data,
                epochs,
                batch: common.batch,
                seed,
                out,
                resume,
                log,
                quiet,
                init,
                checkpoint_every: checkpoint_every.map(|n| n as usize),
                overwrite,
                max_memory: common.max_memory,
                distributed: distributed.map(|t| match t {
                    TransportArg::Mpi => driver::Transport::Mpi,
                    TransportArg::Nccl => driver::Transport::Nccl,
                }),
                collective_timeout: std::time::Duration::from_secs(collective_timeout),
            };
            with_program(&file, color, |program, source| {
                match driver::run_train(program, &file, &opts) {
                    Ok(summary) => {
                        if summary.rank == 0 {
                            println!("{summary}");
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
                .map_err(|e| report(e, source, color))
            })
        }
        Command::Eval {
            file,
            common,
            weights,
        } => {
            let opts = EvalOptions {
                model: common.model,
                target: common.target.target(),
                weights,
                data: common.data,
                batch: common.batch,
                max_memory: common.max_memory,
            };
            with_program(&file, color, |program, source| {
                match driver::run_eval(program, &opts) {
                    Ok(report) => {
                        print!("{report}");
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
                .map_err(|e| report(e, source, color))
            })
        }
        Command::Predict {
            file,
            weights,
            input,
            output,
            model,
            batch,
            target,
            resize,
        } => {
            let opts = driver::PredictOptions {
                model,
                target: target.target(),
                weights,
                input,
                output,
                batch,
                resize,
            };
            with_program(&file, color, |program, source| {
                match driver::run_predict(program, &opts) {
                    Ok(summary) => {
                        let to = summary
                            .written_to
                            .map(|p| format!(" to {}", p.display()))
                            .unwrap_or_default();
                        eprintln!(
                            "predicted {} samples{to} in {:.3} s",
                            summary.samples, summary.seconds
                        );
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
                .map_err(|e| report(e, source, color))
            })
        }
        Command::Export {
            file,
            weights,
            onnx,
            model,
        } => {
            let opts = driver::ExportOptions {
                model,
                weights,
                onnx,
            };
            with_program(&file, color, |program, source| {
                match driver::run_export(program, &opts) {
                    Ok(bytes) => {
                        eprintln!("wrote {} ({bytes} bytes)", opts.onnx.display());
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
                .map_err(|e| report(e, source, color))
            })
        }
        Command::Bench {
            file,
            model,
            target,
            batch,
            steps,
            warmup,
            json,
            profile,
            max_memory,
        } => {
            let opts = driver::BenchOptions {
                model,
                target: target.target(),
                batch,
                steps,
                warmup,
                profile,
                max_memory,
            };
            with_program(&file, color, |program, source| {
                driver::run_bench(program, &opts)
                    .map(|r| {
                        if json {
                            println!("{}", r.to_json());
                        } else {
                            print!("{r}");
                        }
                    })
                    .map_err(|e| report(e, source, color))
            })
        }
        Command::Explain {
            file,
            measure,
            steps,
        } => with_program(
            &file,
            color,
            |program, source| match pipeline::compile_program(program, None) {
                Ok(compiled) => {
                    for (c, train) in compiled.iter().zip(&program.trains) {
                        let profile = if measure {
                            let opts = driver::BenchOptions {
                                model: Some(program.models[train.model].name.clone()),
                                target: driver::Target::Cpu,
                                batch: None,
                                steps,
                                warmup: 10,
                                profile: true,
                                max_memory: None,
                            };
                            Some(
                                driver::run_bench(program, &opts)
                                    .map_err(|e| report(e, source, color))?,
                            )
                        } else {
                            None
                        };
                        if let Some(r) = &profile {
                            println!("{}", r.measured_header());
                        }
                        let measured =
                            |name: &str| profile.as_ref().and_then(|r| r.measured_kernel(name));
                        print!(
                            "{}",
                            pipeline::report::explain_measured(&c.train, c.batch, &measured)
                        );
                        print!("{}", pipeline::report::explain(&c.eval, c.batch));
                    }
                    Ok(())
                }
                Err(m) => {
                    eprintln!("error: {m}");
                    Err(())
                }
            },
        ),
        Command::Build {
            file,
            out_dir: Some(out_dir),
            weights,
            model,
            target,
            ..
        } => {
            let target = target.target();
            if target == Target::Cuda && !cfg!(feature = "cuda") {
                eprintln!("error: {}", pipeline::emit::CUDA_UNAVAILABLE);
                return ExitCode::from(1);
            }
            let opts = driver::ArtifactOptions {
                model,
                weights,
                out_dir,
                target,
            };
            with_program(&file, color, |program, source| {
                match driver::run_build_artifact(program, &opts) {
                    Ok(summary) => {
                        for f in &summary.files {
                            println!("wrote {}", f.display());
                        }
                        eprintln!(
                            "compiled in {:.1} ms (code generation and linking included)",
                            summary.compile_time.as_secs_f64() * 1000.0
                        );
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
                .map_err(|e| report(e, source, color))
            })
        }
        Command::Build {
            file,
            emit,
            target,
            gpu_arch,
            verbose,
            dump_after,
            ..
        } => {
            if let Some(p) = &dump_after {
                if !nnc::passes::DUMPABLE.contains(&p.as_str()) {
                    eprintln!("error: unknown pass `{p}` for `--dump-after`");
                    eprintln!("help: passes are {}", nnc::passes::DUMPABLE.join(", "));
                    return ExitCode::from(2);
                }
            }
            let mut stages = Vec::new();
            for name in &emit {
                match pipeline::emit::Stage::from_name(name.trim()) {
                    Some(s) => stages.push(s),
                    None => {
                        let known: Vec<&str> =
                            pipeline::emit::Stage::ALL.iter().map(|(_, n)| *n).collect();
                        eprintln!("error: unknown stage `{name}` for `--emit`");
                        eprintln!("help: stages are {}", known.join(", "));
                        return ExitCode::from(2);
                    }
                }
            }
            let target_name = match target {
                TargetArg::Interp => "interp",
                TargetArg::Cpu => "cpu",
                TargetArg::Cuda => "cuda",
            };
            if let Some(s) = stages
                .iter()
                .find(|s| s.target().is_some_and(|t| t != target_name))
            {
                let wanted = s.target().unwrap_or("cpu");
                eprintln!(
                    "error: the `{}` stage is code of the {wanted} target, not of `--target {target_name}`",
                    s.name()
                );
                eprintln!("help: add `--target {wanted}`");
                return ExitCode::from(2);
            }
            // The GPU schedule's kernel IR needs no LLVM; PTX, LLVM IR and the build
            // summary of the cuda target do.
            let needs_llvm = stages.is_empty()
                || stages
                    .iter()
                    .any(|s| matches!(s, pipeline::emit::Stage::Ptx | pipeline::emit::Stage::Llvm));
            if target_name == "cuda" && !cfg!(feature = "cuda") && needs_llvm {
                eprintln!("error: {}", pipeline::emit::CUDA_UNAVAILABLE);
                return ExitCode::from(1);
            }
            if !["sm_80", "sm_90"].contains(&gpu_arch.as_str()) {
                eprintln!("error: unknown GPU architecture `{gpu_arch}` for `--gpu-arch`");
                eprintln!("help: architectures are sm_80, sm_90");
                return ExitCode::from(2);
            }
            let options = pipeline::emit::EmitOptions {
                gpu_arch: Some(gpu_arch),
                verbose,
            };
            build(
                &file,
                target_name == "cpu",
                &stages,
                &options,
                dump_after.as_deref(),
                color,
            )
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs `f` on every item (never stopping early) and says whether all succeeded.
trait AllOk<T> {
    fn all_ok(self, f: impl FnMut(T) -> bool) -> bool;
}

impl<T, I: Iterator<Item = T>> AllOk<T> for I {
    fn all_ok(self, mut f: impl FnMut(T) -> bool) -> bool {
        self.fold(true, |ok, x| f(x) & ok)
    }
}

/// Prints the registry's index or the reference of one name; unknown names fail with a
/// suggestion.
fn doc(name: Option<&str>) -> bool {
    use nnc::sema::registry;
    match name {
        None => {
            print!("{}", registry::index());
            true
        }
        Some(name) => match registry::reference(name) {
            Some(text) => {
                print!("{text}");
                true
            }
            None => {
                let names = registry::all_names();
                eprintln!("error: nothing called `{name}` is documented");
                match diag::did_you_mean(name, names.iter().copied()) {
                    Some(help) => eprintln!("help: {help}"),
                    None => eprintln!("help: run `nnc doc` to list every name"),
                }
                false
            }
        },
    }
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn check(path: &Path, color: ColorChoice) -> bool {
    checked(path, color).is_some()
}

/// Reads `path` (an error names the file), printing the read error.
fn read(path: &Path) -> Option<(Vec<u8>, Source)> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let source = Source::from_bytes(&path.display().to_string(), &bytes);
            Some((bytes, source))
        }
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            None
        }
    }
}

/// Reads and checks `path`; prints what went wrong (read errors, diagnostics) and returns
/// `None` then.
fn checked(
    path: &Path,
    color: ColorChoice,
) -> Option<(Source, nnc::syntax::ast::File, nnc::sema::typed::Program)> {
    let (bytes, source) = read(path)?;
    match pipeline::front_end(&bytes, &base_dir(path)) {
        Ok((file, program)) => Some((source, file, program)),
        Err(diags) => {
            eprint!(
                "{}",
                diag::render_all(&diags, &source.path, &source.text, color)
            );
            None
        }
    }
}

/// Formats one file in place (through a temporary file and a rename), or with `check_only`
/// reports whether it would change. Returns false on errors and on files `--check` finds
/// unformatted.
fn fmt(path: &Path, check_only: bool, color: ColorChoice) -> bool {
    let Some((bytes, source)) = read(path) else {
        return false;
    };
    let parsed = match std::str::from_utf8(&bytes) {
        Ok(text) => nnc::syntax::parse_file(text),
        // `check_bytes` reports invalid UTF-8 without looking further.
        Err(_) => Err(nnc::check_bytes(&bytes, &base_dir(path))
            .err()
            .unwrap_or_default()),
    };
    let file = match parsed {
        Ok(file) => file,
        Err(diags) => {
            eprint!(
                "{}",
                diag::render_all(&diags, &source.path, &source.text, color)
            );
            return false;
        }
    };
    let formatted = nnc::syntax::fmt::format_file(&file, &source.text);
    let Some(diff) = nnc::syntax::fmt::short_diff(&source.text, &formatted, 6) else {
        return true;
    };
    if check_only {
        println!("would reformat {}, {diff}", path.display());
        return false;
    }
    match replace_file(path, &formatted) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            false
        }
    }
}

/// Replaces the contents of the file `path` names. Through a symbolic link the file it
/// points to is rewritten (the link stays a link). A file with one name is replaced
/// atomically: a temporary file beside it, given its permissions, renamed over it. A file
/// with several hard links is rewritten in place, so that every name keeps seeing it.
fn replace_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&target)?;
    #[cfg(unix)]
    let linked = std::os::unix::fs::MetadataExt::nlink(&meta) > 1;
    #[cfg(not(unix))]
    let linked = false;
    if linked {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&target)?;
        f.write_all(contents.as_bytes())?;
        return f.sync_all();
    }
    let name = target
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = base_dir(&target).join(format!(".{name}.nnc-fmt.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::set_permissions(&tmp, meta.permissions()))
        .and_then(|()| std::fs::rename(&tmp, &target));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Parses, checks and prints the requested stages of one file.
fn build(
    path: &Path,
    cpu: bool,
    stages: &[pipeline::emit::Stage],
    options: &pipeline::emit::EmitOptions,
    dump_after: Option<&str>,
    color: ColorChoice,
) -> bool {
    let Some((source, file, program)) = checked(path, color) else {
        return false;
    };
    // What is built must fit in memory at the batch it is built for.
    for train in &program.trains {
        let model = &program.models[train.model];
        if let Err(e) = driver::resources::check(model, Some(train), train.batch, None) {
            report(e, &source, color);
            return false;
        }
    }
    // Every block is compiled once: for the compiled stages, the dumps and the summary.
    let result = pipeline::compile_program(&program, dump_after).and_then(|steps| {
        pipeline::emit::emit_compiled(&file, &program, &steps, stages, options)
            .map(|text| (text, steps))
    });
    match result {
        Ok((text, steps)) => {
            print!("{text}");
            for c in &steps {
                for (pass, text) in c.train.dumps.iter().chain(&c.eval.dumps) {
                    println!("# == after {pass} ==");
                    print!("{text}");
                }
                // The CPU target's summary counts Cranelift's code generation too.
                let codegen = if cpu {
                    match pipeline::report::cpu_codegen_time(c) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            eprintln!("error: {e}");
                            return false;
                        }
                    }
                } else {
                    None
                };
                eprintln!("{}", pipeline::report::summary(c, codegen));
            }
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

/// Reads and checks `path`, then runs `f` on the checked program; diagnostics of the
/// check are printed here. Returns whether everything succeeded.
fn with_program(
    path: &Path,
    color: ColorChoice,
    f: impl FnOnce(&nnc::sema::typed::Program, &Source) -> Result<(), ()>,
) -> bool {
    match checked(path, color) {
        Some((source, _, program)) => f(&program, &source).is_ok(),
        None => false,
    }
}

/// Prints a driver error: diagnostics against the source, messages as `error: ..`.
fn report(e: DriverError, source: &Source, color: ColorChoice) {
    match e {
        DriverError::Diagnostics(diags) => eprint!(
            "{}",
            diag::render_all(&diags, &source.path, &source.text, color)
        ),
        DriverError::Message(m) => eprintln!("error: {}", diag::escape::printable_text(&m)),
        DriverError::Interrupted(m) => {
            eprintln!("{}", diag::escape::printable_text(&m));
            // 128 + SIGINT, as a shell reports a process stopped by Ctrl-C.
            std::process::exit(130);
        }
    }
}
