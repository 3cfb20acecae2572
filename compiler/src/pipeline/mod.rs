//! The pipeline: the only code that runs the compiler's stages one after another.
//!
//! ```text
//! source ─ syntax ─ sema ─▶ typed program        (check)
//!   ─ step ─▶ train and eval step graphs          (graph IR: forward, loss, backward, update)
//!   ─ passes ─ fuse ─ lower ─▶ CompiledStep       (kernel IR, validated)
//!   ─ CPU schedule ─ codegen::cpu ─▶ CpuArtifact  (kernels.so + manifests)
//!   ─ GPU schedule ─ codegen::ptx ─▶ PTX
//! ```
//!
//! Every entry point (`nnc check`, `build`, each `--emit` stage, `explain`, `bench`,
//! `train`, `eval`, and the tests) asks this module for a stage's result and gets the
//! object a real build makes: `--emit cpu-kernels` prints the program the CPU artifact is
//! generated from ([`cpu_program`]), `--emit gpu-kernels` the one the CUDA executor
//! loads ([`gpu_program`]). Stages themselves never call the next one.
//!
//! - [`emit`]: the printable stages (`--emit`) and their texts;
//! - [`report`]: `nnc build`'s summary and `nnc explain`;
//! - [`artifact`]: the CPU artifact written to a folder, and PTX for the GPU.

pub mod artifact;
pub mod capi;
pub mod emit;
pub mod report;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::{Duration, Instant};

use nnc_kernels::ir::Program as KernelProgram;

use crate::diag::{Code, Diagnostic, Span};
use crate::ir::print::print_graph;
use crate::ir::Graph;
use crate::lower::{lower_graph, Lowered};
use crate::passes::fuse::{partition, print_fusion, Fusion};
use crate::passes::{run_passes, PassOptions};
use crate::sema::typed::{Program, TypedModel, TypedTrain};
use crate::step::{build_step_graphs, StepGraphs};
use crate::syntax::ast::File;

pub use artifact::{build_cpu_artifact, CpuArtifact};

/// Parses and checks a source text. `base_dir` resolves relative data paths.
pub fn check_source(text: &str, base_dir: &Path) -> Result<Program, Vec<Diagnostic>> {
    front_end(text.as_bytes(), base_dir).map(|(_, program)| program)
}

/// Checks raw bytes: invalid UTF-8 is reported as a diagnostic at the first invalid byte
/// (in the lossily decoded text), never a panic.
pub fn check_bytes(bytes: &[u8], base_dir: &Path) -> Result<Program, Vec<Diagnostic>> {
    front_end(bytes, base_dir).map(|(_, program)| program)
}

/// The front end: the file's syntax tree and its checked program.
pub fn front_end(bytes: &[u8], base_dir: &Path) -> Result<(File, Program), Vec<Diagnostic>> {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let file = crate::syntax::parse_file(text)?;
            let program = crate::sema::check_file(&file, base_dir)?;
            Ok((file, program))
        }
        Err(e) => {
            let valid = e.valid_up_to();
            Err(vec![Diagnostic::new(
                Code::InvalidUtf8,
                "file is not valid UTF-8",
            )
            .label(
                Span::new(valid, valid + 1),
                format!("invalid byte at offset {valid}"),
            )
            .help("save the file as UTF-8")])
        }
    }
}

/// The train and eval step graphs of one `train` block (forward, loss, backward, update).
pub fn step_graphs(model: &TypedModel, train: &TypedTrain) -> Result<StepGraphs, String> {
    build_step_graphs(model, train).map_err(|e| {
        format!(
            "cannot build the training step of `{}`: {}",
            model.name, e.message
        )
    })
}

/// One step graph taken through the graph passes, fusion and lowering: the kernel IR
/// program (validated) and what made it.
pub struct CompiledStep {
    /// The graph after the passes.
    pub graph: Graph,
    pub fusion: Fusion,
    pub lowered: Lowered,
    /// `(pass, text)` for the pass named by `--dump-after`.
    pub dumps: Vec<(String, String)>,
    pub elapsed: Duration,
}

impl CompiledStep {
    /// The target-independent kernel IR program.
    pub fn program(&self) -> &KernelProgram {
        &self.lowered.program
    }
}

/// Runs the passes, fusion and lowering on one step graph. `batch` feeds the cost
/// estimates; `dump_after` names a pass whose output is kept as text.
pub fn compile_step(
    g: &Graph,
    batch: usize,
    dump_after: Option<&str>,
) -> Result<CompiledStep, String> {
    let start = Instant::now();
    let opts = PassOptions {
        verify: cfg!(debug_assertions),
        dump_after: dump_after.map(str::to_string),
    };
    let (graph, dumped) = run_passes(g, &opts).map_err(|e| e.message)?;
    let mut dumps: Vec<(String, String)> = dumped
        .into_iter()
        .map(|(n, g)| (n, print_graph(&g)))
        .collect();
    let fusion = partition(&graph);
    if dump_after == Some("fuse") {
        dumps.push(("fuse".into(), print_fusion(&graph, &fusion)));
    }
    let lowered = lower_graph(&graph, &fusion, batch).map_err(|e| e.0)?;
    lowered.program.validate().map_err(|e| e.to_string())?;
    Ok(CompiledStep {
        graph,
        fusion,
        lowered,
        dumps,
        elapsed: start.elapsed(),
    })
}

/// One `train` block compiled for its batch size: both step graphs and both steps in
/// kernel IR. The CPU and GPU programs are derived from it by [`cpu_program`] and
/// [`gpu_program`].
pub struct CompiledTrain {
    pub graphs: StepGraphs,
    pub train: CompiledStep,
    pub eval: CompiledStep,
    /// The batch size the schedules and estimates were made for.
    pub batch: usize,
    /// The training step split for data-parallel training, when asked for
    /// ([`compile_parallel`]).
    pub parallel: Option<ParallelSteps>,
}

/// The gradient and update halves of a training step, compiled (see
/// [`crate::step::ParallelGraphs`]).
pub struct ParallelSteps {
    pub grad: CompiledStep,
    pub apply: CompiledStep,
    /// The gradients handed between them: name and shape, in buffer order.
    pub grads: Vec<(String, Vec<usize>)>,
}

/// Adds the data-parallel halves of the training step to `compiled` (compiled for the
/// batch of one process's shard).
pub fn compile_parallel(
    compiled: &mut CompiledTrain,
    model: &TypedModel,
    train: &TypedTrain,
    shard_batch: usize,
) -> Result<(), String> {
    let graphs = crate::step::build_parallel_graphs(model, train).map_err(|e| {
        format!(
            "cannot build the data-parallel step of `{}`: {}",
            model.name, e.message
        )
    })?;
    let compile = |g: &Graph, what: &str| {
        compile_step(g, shard_batch, None).map_err(|e| format!("cannot compile the {what}: {e}"))
    };
    compiled.parallel = Some(ParallelSteps {
        grad: compile(&graphs.grad, "gradient step")?,
        apply: compile(&graphs.apply, "update step")?,
        grads: graphs.grads,
    });
    Ok(())
}

/// Compiles one `train` block of `model` for batch size `batch`.
pub fn compile_train(
    model: &TypedModel,
    train: &TypedTrain,
    batch: usize,
    dump_after: Option<&str>,
) -> Result<CompiledTrain, String> {
    let graphs = step_graphs(model, train)?;
    let compile = |g: &Graph, what: &str| {
        compile_step(g, batch, dump_after).map_err(|e| format!("cannot compile the {what}: {e}"))
    };
    let train = compile(&graphs.train, "training step")?;
    let eval = compile(&graphs.eval, "evaluation step")?;
    Ok(CompiledTrain {
        graphs,
        train,
        eval,
        batch,
        parallel: None,
    })
}

/// Every `train` block of a program, each at its own batch size.
pub fn compile_program(
    program: &Program,
    dump_after: Option<&str>,
) -> Result<Vec<CompiledTrain>, String> {
    program
        .trains
        .iter()
        .map(|train| {
            let model = program
                .models
                .get(train.model)
                .ok_or("a train block refers to a missing model")?;
            compile_train(model, train, train.batch, dump_after)
        })
        .collect()
}

/// Which of a block's two steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    Train,
    Eval,
}

impl StepKind {
    /// The prefix of the step's kernel symbols in the CPU artifact (both steps share one
    /// library, so their kernel names must not collide).
    pub fn symbol_prefix(self) -> &'static str {
        match self {
            StepKind::Train => "train_",
            StepKind::Eval => "eval_",
        }
    }
}

impl CompiledTrain {
    pub fn step(&self, kind: StepKind) -> &CompiledStep {
        match kind {
            StepKind::Train => &self.train,
            StepKind::Eval => &self.eval,
        }
    }

    /// The program the CPU artifact is generated from: the CPU schedule (indices
    /// simplified, large products split over both cores), kernels renamed with the step's
    /// symbol prefix, validated.
    pub fn cpu_program(&self, kind: StepKind) -> Result<KernelProgram, String> {
        cpu_program(self.step(kind), self.batch, kind)
    }

    /// The program the CUDA executor loads: the GPU schedule of the step's kernels.
    pub fn gpu_program(&self, kind: StepKind) -> Result<KernelProgram, String> {
        gpu_program(self.step(kind))
    }

    /// The CPU programs of the data-parallel halves (`grad_`, `apply_` symbols), if
    /// compiled.
    pub fn parallel_cpu_programs(&self) -> Result<Option<[KernelProgram; 2]>, String> {
        let Some(p) = &self.parallel else {
            return Ok(None);
        };
        Ok(Some([
            cpu_program_prefixed(&p.grad, self.batch, "grad_")?,
            cpu_program_prefixed(&p.apply, self.batch, "apply_")?,
        ]))
    }
}

/// See [`CompiledTrain::cpu_program`].
pub fn cpu_program(
    step: &CompiledStep,
    batch: usize,
    kind: StepKind,
) -> Result<KernelProgram, String> {
    cpu_program_prefixed(step, batch, kind.symbol_prefix())
}

fn cpu_program_prefixed(
    step: &CompiledStep,
    batch: usize,
    prefix: &str,
) -> Result<KernelProgram, String> {
    let mut program = step.lowered.program.clone();
    crate::lower::split::split_gemm_rows(&mut program.kernels, batch);
    crate::lower::lanes::hoist_lane_invariants(&mut program);
    for k in &mut program.kernels {
        k.name = format!("{prefix}{}", k.name);
    }
    program
        .validate()
        .map_err(|e| format!("the CPU schedule broke a kernel: {e}"))?;
    Ok(program)
}

/// See [`CompiledTrain::gpu_program`].
pub fn gpu_program(step: &CompiledStep) -> Result<KernelProgram, String> {
    let program = crate::lower::gpu::schedule(&step.lowered.program)?;
    program
        .validate()
        .map_err(|e| format!("the GPU schedule broke a kernel: {e}"))?;
    Ok(program)
}
