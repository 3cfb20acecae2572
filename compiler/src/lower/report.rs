//! The compile driver of one step graph (passes → fusion → kernels) and the texts built
//! from it: `--emit fused`, `--emit kernels`, `--dump-after`, the `nnc build` summary
//! line and `nnc explain`.

use std::fmt::Write;
use std::time::{Duration, Instant};

use nnc_kernels::print::print_program;

use super::{lower_graph, Lowered};
use crate::ir::print::print_graph;
use crate::ir::train::build_step_graphs;
use crate::ir::Graph;
use crate::passes::fuse::{partition, print_fusion, Fusion};
use crate::passes::{run_passes, PassOptions};
use crate::sema::typed::Program as TypedProgram;

/// One step graph taken through the pipeline.
pub struct CompiledStep {
    pub graph: Graph,
    pub fusion: Fusion,
    pub lowered: Lowered,
    /// `(pass, text)` for the pass named by `--dump-after`.
    pub dumps: Vec<(String, String)>,
    pub elapsed: Duration,
}

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

/// The train and eval steps of every `train` block, with the block's batch size.
pub fn compile_program(
    p: &TypedProgram,
    dump_after: Option<&str>,
) -> Result<Vec<(CompiledStep, CompiledStep, usize)>, String> {
    let mut out = Vec::new();
    for train in &p.trains {
        let model = p
            .models
            .get(train.model)
            .ok_or("a train block refers to a missing model")?;
        let sg = build_step_graphs(model, train).map_err(|e| e.message)?;
        let t = compile_step(&sg.train, train.batch, dump_after)?;
        let e = compile_step(&sg.eval, train.batch, dump_after)?;
        out.push((t, e, train.batch));
    }
    Ok(out)
}

pub fn fused_text(s: &CompiledStep) -> String {
    print_fusion(&s.graph, &s.fusion)
}

pub fn kernels_text(s: &CompiledStep) -> String {
    print_program(&s.lowered.program)
}

/// `nnc build`'s summary of one `train` block.
pub fn summary(train: &CompiledStep, eval: &CompiledStep, batch: usize) -> String {
    let bytes = 4 * train.lowered.program.arena.resolve(batch);
    format!(
        "{}: {} kernels per training step, {} per eval step; arena {} bytes at batch {batch} ({} floats); compiled in {:.1} ms",
        train.graph.name,
        train.lowered.program.kernels.len(),
        eval.lowered.program.kernels.len(),
        bytes,
        train.lowered.program.arena,
        (train.elapsed + eval.elapsed).as_secs_f64() * 1000.0,
    )
}

/// `nnc explain`: each kernel, what it fused and why, and its estimated cost.
pub fn explain(s: &CompiledStep, batch: usize) -> String {
    let mut out = String::new();
    let p = &s.lowered.program;
    let _ = writeln!(
        out,
        "{}: {} kernels, arena {} bytes at batch {batch}",
        p.name,
        p.kernels.len(),
        4 * p.arena.resolve(batch)
    );
    for r in &s.lowered.reports {
        let _ = writeln!(
            out,
            "  {}  ~{} FLOPs, ~{} bytes moved",
            r.name, r.flops, r.bytes
        );
        let _ = writeln!(out, "    ops: {}", r.members.join(", "));
        for n in &r.notes {
            let _ = writeln!(out, "    - {n}");
        }
    }
    let views: Vec<String> = s
        .graph
        .ids()
        .filter(|id| {
            matches!(
                s.fusion.placement[id.index()],
                crate::passes::fuse::Placement::View { .. }
            )
        })
        .map(|id| format!("{id} {}", s.graph.op(id).mnemonic()))
        .collect();
    if !views.is_empty() {
        let _ = writeln!(
            out,
            "  no kernel (read as gemm strides): {}",
            views.join(", ")
        );
    }
    if !s.lowered.copied_back.is_empty() {
        let _ = writeln!(
            out,
            "  not updated in place: {}",
            s.lowered.copied_back.join(", ")
        );
    }
    out
}
