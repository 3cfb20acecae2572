//! Texts about compiled steps: `--emit fused`, `--emit kernels`, the `nnc build` summary
//! line and `nnc explain`.

use std::fmt::Write;

use nnc_kernels::print::print_program;

use super::{CompiledStep, CompiledTrain};
use crate::passes::fuse::print_fusion;

pub fn fused_text(s: &CompiledStep) -> String {
    print_fusion(&s.graph, &s.fusion)
}

pub fn kernels_text(s: &CompiledStep) -> String {
    print_program(&s.lowered.program)
}

/// `nnc build`'s summary of one `train` block.
pub fn summary(c: &CompiledTrain) -> String {
    let (train, eval, batch) = (&c.train, &c.eval, c.batch);
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
