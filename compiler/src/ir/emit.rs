//! `nnc build --emit`: the text of each requested pipeline stage for a checked file.
//! Every section starts with a `# == <stage> ==` line (a comment to the graph parser);
//! graph stages print each graph with its node count in the header.

use super::lower::lower_forward;
use super::print::print_graph;
use super::train::build_step_graphs;
use super::{ir_bail, IrError, IrResult};
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

/// The text of the requested stages, in the order given.
pub fn emit(
    file: &File,
    program: &Program,
    stages: &[Stage],
    options: &EmitOptions,
) -> IrResult<String> {
    let mut out = String::new();
    for &stage in stages {
        out.push_str(&format!("# == {} ==\n", stage.name()));
        match stage {
            Stage::Ast => out.push_str(&crate::syntax::print::print_file(file)),
            Stage::Graph => {
                for model in &program.models {
                    out.push_str(&print_graph(&lower_forward(model, false, 0)?));
                }
            }
            Stage::GpuKernels | Stage::Ptx | Stage::Llvm => {
                let steps =
                    crate::lower::report::compile_program(program, None).map_err(IrError::new)?;
                for (t, e, _) in &steps {
                    for step in [t, e] {
                        let gpu = crate::lower::gpu::schedule(&step.lowered.program)
                            .map_err(IrError::new)?;
                        out.push_str(&match stage {
                            Stage::GpuKernels => nnc_kernels::print::print_program(&gpu),
                            _ => gpu_text(&gpu, stage, options)?,
                        });
                    }
                }
            }
            Stage::Fused | Stage::Kernels | Stage::CpuKernels | Stage::Clif | Stage::Asm => {
                let steps =
                    crate::lower::report::compile_program(program, None).map_err(IrError::new)?;
                for (t, e, batch) in &steps {
                    for step in [t, e] {
                        // CPU code is shown with the CPU schedule the artifact uses.
                        let mut p = step.lowered.program.clone();
                        crate::lower::split::split_gemm_rows(&mut p.kernels, *batch);
                        let p = &p;
                        out.push_str(&match stage {
                            Stage::Fused => crate::lower::report::fused_text(step),
                            Stage::Kernels => crate::lower::report::kernels_text(step),
                            Stage::CpuKernels => nnc_kernels::print::print_program(p),
                            Stage::Clif => crate::codegen::cpu::emit_clif(p)
                                .map_err(|e| IrError::new(e.to_string()))?,
                            _ => crate::codegen::cpu::emit_asm(p)
                                .map_err(|e| IrError::new(e.to_string()))?,
                        });
                    }
                }
            }
            Stage::TrainGraph | Stage::EvalGraph => {
                for train in &program.trains {
                    let Some(model) = program.models.get(train.model) else {
                        ir_bail!("a train block refers to a missing model");
                    };
                    let sg = build_step_graphs(model, train)?;
                    let g = if stage == Stage::TrainGraph {
                        &sg.train
                    } else {
                        &sg.eval
                    };
                    out.push_str(&print_graph(g));
                }
            }
        }
    }
    Ok(out)
}

/// The PTX or LLVM IR of one step's kernels, in the GPU schedule (no CPU row split);
/// with `verbose`, the PTX is followed by `ptxas -v`'s resource report.
#[cfg(feature = "cuda")]
fn gpu_text(
    program: &nnc_kernels::ir::Program,
    stage: Stage,
    options: &EmitOptions,
) -> IrResult<String> {
    use crate::codegen::ptx::{ptxas, render_llvm_ir, render_program, GpuArch};
    let arch = match options.gpu_arch.as_deref() {
        None => GpuArch::default(),
        Some(name) => GpuArch::parse(name).ok_or_else(|| {
            let known: Vec<&str> = GpuArch::ALL.iter().map(|a| a.name()).collect();
            IrError::new(format!(
                "unknown GPU architecture `{name}`; known: {}",
                known.join(", ")
            ))
        })?,
    };
    if stage == Stage::Llvm {
        return render_llvm_ir(program, arch).map_err(|e| IrError::new(e.to_string()));
    }
    let mut text = render_program(program, arch).map_err(|e| IrError::new(e.to_string()))?;
    if options.verbose {
        let Some(tool) = ptxas::find_ptxas() else {
            return Err(IrError::new(
                "`-v` needs NVIDIA's `ptxas`: set PTXAS to its path or install the pip \
                 package `nvidia-cuda-nvcc-cu12` (as `.ci/run` does)",
            ));
        };
        let mut kernels = ptxas::assemble(&tool, &text, arch).map_err(|e| IrError::new(e.0))?;
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
) -> IrResult<String> {
    Err(IrError::new(format!(
        "stage `{}`: {}",
        stage.name(),
        crate::driver::cuda::UNAVAILABLE
    )))
}
