//! `nnc build --emit`: the text of each requested pipeline stage for a checked file, from
//! the same objects a real build makes.
//! Every section starts with a `# == <stage> ==` line (a comment to the graph parser);
//! graph stages print each graph with its node count in the header.

use nnc_kernels::print::print_program;

use super::{compile_program, report, step_graphs, CompiledTrain, StepKind};
use crate::ir::lower::lower_forward;
use crate::ir::print::print_graph;
use crate::sema::typed::Program;
use crate::syntax::ast::File;

/// A printable stage of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The parsed file, pretty-printed.
    Ast,
    /// Each model's forward graph (inference form).
    Graph,
    /// Each `train` block's training-step graph.
    TrainGraph,
    /// Each `train` block's evaluation graph.
    EvalGraph,
    /// The fusion groups of each train and eval step (after the graph passes).
    Fused,
    /// The kernel IR of each train and eval step.
    Kernels,
    /// The kernel IR as the CPU runs it: indices simplified, products split in two parts.
    CpuKernels,
    /// The Cranelift IR of every CPU kernel.
    Clif,
    /// The host machine code of every CPU kernel (Cranelift's disassembly).
    Asm,
    /// The kernel IR as the GPU runs it: the GPU schedule's kernels with their grids,
    /// shared arrays, barriers and shuffles (the `cuda` target; no feature needed).
    GpuKernels,
    /// The PTX of every GPU kernel (the `cuda` target; needs the `cuda` feature).
    Ptx,
    /// The optimised LLVM IR the PTX is generated from (the `cuda` target).
    Llvm,
}

impl Stage {
    pub const ALL: [(Stage, &'static str); 12] = [
        (Stage::Ast, "ast"),
        (Stage::Graph, "graph"),
        (Stage::TrainGraph, "train-graph"),
        (Stage::EvalGraph, "eval-graph"),
        (Stage::Fused, "fused"),
        (Stage::Kernels, "kernels"),
        (Stage::CpuKernels, "cpu-kernels"),
        (Stage::Clif, "clif"),
        (Stage::Asm, "asm"),
        (Stage::GpuKernels, "gpu-kernels"),
        (Stage::Ptx, "ptx"),
        (Stage::Llvm, "llvm"),
    ];

    pub fn name(self) -> &'static str {
        Stage::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("?", |(_, n)| n)
    }

    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }

    /// The target whose code this stage shows (`Some("cpu")` / `Some("cuda")`), or `None`
    /// for target-independent stages.
    pub fn target(self) -> Option<&'static str> {
        match self {
            Stage::CpuKernels | Stage::Clif | Stage::Asm => Some("cpu"),
            Stage::GpuKernels | Stage::Ptx | Stage::Llvm => Some("cuda"),
            _ => None,
        }
    }

    /// Whether the stage shows compiled steps (the `train` blocks taken through the
    /// passes, fusion and lowering).
    pub fn needs_compiling(self) -> bool {
        !matches!(
            self,
            Stage::Ast | Stage::Graph | Stage::TrainGraph | Stage::EvalGraph
        )
    }
}

/// Options of [`emit`] that only some stages use.
#[derive(Clone, Debug, Default)]
pub struct EmitOptions {
    /// The GPU architecture of the `ptx` and `llvm` stages (`sm_80` when `None`).
    pub gpu_arch: Option<String>,
    /// After each step's PTX, `ptxas -v`'s report of every kernel's registers, spills,
    /// stack and shared memory (needs `ptxas`).
    pub verbose: bool,
}

/// The text of the requested stages, in the order given; compiles the program's `train`
/// blocks only if a stage needs them.
pub fn emit(
    file: &File,
    program: &Program,
    stages: &[Stage],
    options: &EmitOptions,
) -> Result<String, String> {
    let compiled = if stages.iter().any(|s| s.needs_compiling()) {
        compile_program(program, None)?
    } else {
        Vec::new()
    };
    emit_compiled(file, program, &compiled, stages, options)
}

/// [`emit`] with the program's `train` blocks already compiled (by [`compile_program`]).
pub fn emit_compiled(
    file: &File,
    program: &Program,
    compiled: &[CompiledTrain],
    stages: &[Stage],
    options: &EmitOptions,
) -> Result<String, String> {
    let mut out = String::new();
    for &stage in stages {
        out.push_str(&format!("# == {} ==\n", stage.name()));
        match stage {
            Stage::Ast => out.push_str(&crate::syntax::print::print_file(file)),
            Stage::Graph => {
                for model in &program.models {
                    let g = lower_forward(model, false, 0).map_err(|e| e.message)?;
                    out.push_str(&print_graph(&g));
                }
            }
            Stage::TrainGraph | Stage::EvalGraph => {
                for train in &program.trains {
                    let model = program
                        .models
                        .get(train.model)
                        .ok_or("a train block refers to a missing model")?;
                    let sg = step_graphs(model, train)?;
                    let g = if stage == Stage::TrainGraph {
                        &sg.train
                    } else {
                        &sg.eval
                    };
                    out.push_str(&print_graph(g));
                }
            }
            _ => {
                for c in compiled {
                    for kind in [StepKind::Train, StepKind::Eval] {
                        out.push_str(&step_text(c, kind, stage, options)?);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The text of a compiled stage of one step.
fn step_text(
    c: &CompiledTrain,
    kind: StepKind,
    stage: Stage,
    options: &EmitOptions,
) -> Result<String, String> {
    let codegen = |e: crate::codegen::cpu::CodegenError| e.to_string();
    Ok(match stage {
        Stage::Fused => report::fused_text(c.step(kind)),
        Stage::Kernels => report::kernels_text(c.step(kind)),
        Stage::CpuKernels => print_program(&c.cpu_program(kind)?),
        Stage::Clif => crate::codegen::cpu::emit_clif(&c.cpu_program(kind)?).map_err(codegen)?,
        Stage::Asm => crate::codegen::cpu::emit_asm(&c.cpu_program(kind)?).map_err(codegen)?,
        Stage::GpuKernels => print_program(&c.gpu_program(kind)?),
        Stage::Ptx | Stage::Llvm => gpu_text(&c.gpu_program(kind)?, stage, options)?,
        Stage::Ast | Stage::Graph | Stage::TrainGraph | Stage::EvalGraph => {
            return Err(format!(
                "stage `{}` is not one of a compiled step",
                stage.name()
            ))
        }
    })
}

/// The PTX or LLVM IR of one step's kernels, in the GPU schedule (no CPU row split);
/// with `verbose`, the PTX is followed by `ptxas -v`'s resource report.
#[cfg(feature = "cuda")]
fn gpu_text(
    program: &nnc_kernels::ir::Program,
    stage: Stage,
    options: &EmitOptions,
) -> Result<String, String> {
    use crate::codegen::ptx::{ptxas, render_llvm_ir, render_program, GpuArch};
    let arch = match options.gpu_arch.as_deref() {
        None => GpuArch::default(),
        Some(name) => GpuArch::parse(name).ok_or_else(|| {
            let known: Vec<&str> = GpuArch::ALL.iter().map(|a| a.name()).collect();
            format!(
                "unknown GPU architecture `{name}`; known: {}",
                known.join(", ")
            )
        })?,
    };
    if stage == Stage::Llvm {
        return render_llvm_ir(program, arch).map_err(|e| e.to_string());
    }
    let mut text = render_program(program, arch).map_err(|e| e.to_string())?;
    if options.verbose {
        let Some(tool) = ptxas::find_ptxas() else {
            return Err(
                "`-v` needs NVIDIA's `ptxas`: set PTXAS to its path or install the pip \
                 package `nvidia-cuda-nvcc-cu12` (as `.ci/run` does)"
                    .into(),
            );
        };
        let mut kernels = ptxas::assemble(&tool, &text, arch).map_err(|e| e.0)?;
        // In the step's order (ptxas reports them in its own).
        kernels.sort_by_key(|k| program.kernels.iter().position(|p| p.name == k.name));
        text.push_str(&ptxas::report_text(arch, &kernels));
    }
    Ok(text)
}

/// Without the `cuda` feature there is no LLVM to generate PTX with: an error that says
/// how to get it.
#[cfg(not(feature = "cuda"))]
fn gpu_text(
    _program: &nnc_kernels::ir::Program,
    stage: Stage,
    _options: &EmitOptions,
) -> Result<String, String> {
    Err(format!("stage `{}`: {}", stage.name(), CUDA_UNAVAILABLE))
}

/// Why the `cuda` target (running on it, or emitting its code) is missing from a build
/// without the `cuda` feature, and how to get it.
pub const CUDA_UNAVAILABLE: &str = "the `cuda` target is not available in this build\n\
     help: rebuild with `cargo build --release --features cuda` (needs LLVM 19: the Debian \
     package `llvm-19-dev`), or use `--target cpu` or `--target interp`";
