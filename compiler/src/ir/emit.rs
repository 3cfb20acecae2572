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
    /// The Cranelift IR of every CPU kernel.
    Clif,
    /// The host machine code of every CPU kernel (Cranelift's disassembly).
    Asm,
}

impl Stage {
    pub const ALL: [(Stage, &'static str); 8] = [
        (Stage::Ast, "ast"),
        (Stage::Graph, "graph"),
        (Stage::TrainGraph, "train-graph"),
        (Stage::EvalGraph, "eval-graph"),
        (Stage::Fused, "fused"),
        (Stage::Kernels, "kernels"),
        (Stage::Clif, "clif"),
        (Stage::Asm, "asm"),
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
}

/// The text of the requested stages, in the order given.
pub fn emit(file: &File, program: &Program, stages: &[Stage]) -> IrResult<String> {
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
            Stage::Fused | Stage::Kernels | Stage::Clif | Stage::Asm => {
                let steps =
                    crate::lower::report::compile_program(program, None).map_err(IrError::new)?;
                for (t, e, batch) in &steps {
                    for step in [t, e] {
                        // Machine code is shown with the CPU schedule the artifact uses.
                        let mut p = step.lowered.program.clone();
                        crate::lower::split::split_gemm_rows(&mut p.kernels, *batch);
                        let p = &p;
                        out.push_str(&match stage {
                            Stage::Fused => crate::lower::report::fused_text(step),
                            Stage::Kernels => crate::lower::report::kernels_text(step),
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
