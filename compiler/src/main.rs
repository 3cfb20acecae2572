//! The `nnc` command line: `check`, `build`, `fmt`, `doc` (and, as it lands, `train`).
//! Exit codes: 0 success, 1 user error (diagnostics on stderr), 2 usage error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use nnc::diag::{self, ColorChoice};
use nnc::Source;

#[derive(Parser)]
#[command(name = "nnc", version, about = "A compiler for neural-network models (.nn files)")]
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

#[derive(Subcommand)]
enum Command {
    /// Check programs for errors without running them (data files are not opened).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Compile a program and print the requested pipeline stages.
    Build {
        file: PathBuf,
        /// Stages to print, comma-separated: ast, graph, train-graph, eval-graph.
        #[arg(long, value_delimiter = ',', default_value = "graph")]
        emit: Vec<String>,
    },
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
        Command::Build { file, emit } => {
            let mut stages = Vec::new();
            for name in &emit {
                match nnc::ir::emit::Stage::from_name(name.trim()) {
                    Some(s) => stages.push(s),
                    None => {
                        let known: Vec<&str> =
                            nnc::ir::emit::Stage::ALL.iter().map(|(_, n)| *n).collect();
                        eprintln!("error: unknown stage `{name}` for `--emit`");
                        eprintln!("help: stages are {}", known.join(", "));
                        return ExitCode::from(2);
                    }
                }
            }
            build(&file, &stages, color)
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

fn base_dir(path: &Path) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn check(path: &Path, color: ColorChoice) -> bool {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            return false;
        }
    };
    let source = Source::from_bytes(&path.display().to_string(), &bytes);
    match nnc::check_bytes(&bytes, &base_dir(path)) {
        Ok(_) => true,
        Err(diags) => {
            eprint!("{}", diag::render_all(&diags, &source.path, &source.text, color));
            false
        }
    }
}

/// Parses, checks and prints the requested stages of one file.
fn build(path: &Path, stages: &[nnc::ir::emit::Stage], color: ColorChoice) -> bool {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            return false;
        }
    };
    let source = Source::from_bytes(&path.display().to_string(), &bytes);
    let program = match nnc::check_bytes(&bytes, &base_dir(path)) {
        Ok(program) => program,
        Err(diags) => {
            eprint!("{}", diag::render_all(&diags, &source.path, &source.text, color));
            return false;
        }
    };
    // Checking succeeded, so the text is UTF-8 and parses.
    let file = match nnc::syntax::parse_file(&source.text) {
        Ok(file) => file,
        Err(diags) => {
            eprint!("{}", diag::render_all(&diags, &source.path, &source.text, color));
            return false;
        }
    };
    match nnc::ir::emit::emit(&file, &program, stages) {
        Ok(text) => {
            print!("{text}");
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}
