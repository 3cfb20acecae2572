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

/// `nnc build`'s summary of one `train` block; `codegen` is the time the target's code
/// generation took (Cranelift for the CPU), counted in the compile time.
pub fn summary(c: &CompiledTrain, codegen: Option<std::time::Duration>) -> String {
    let (train, eval, batch) = (&c.train, &c.eval, c.batch);
    let bytes = 4 * train.lowered.program.arena.resolve(batch);
    let front = train.elapsed + eval.elapsed;
    let total = front + codegen.unwrap_or_default();
    let split = codegen.map_or_else(String::new, |cg| {
        format!(
            " ({:.1} ms of it code generation)",
            cg.as_secs_f64() * 1000.0
        )
    });
    format!(
        "{}: {} kernels per training step, {} per eval step; arena {} bytes at batch {batch} ({} floats); compiled in {:.1} ms{split}",
        train.graph.name,
        train.lowered.program.kernels.len(),
        eval.lowered.program.kernels.len(),
        bytes,
        train.lowered.program.arena,
        total.as_secs_f64() * 1000.0,
    )
}

/// The time Cranelift takes to generate the CPU code of both steps of `c` (one object
/// file, as the CPU artifact holds them).
pub fn cpu_codegen_time(c: &CompiledTrain) -> Result<std::time::Duration, String> {
    let train = c.cpu_program(super::StepKind::Train)?;
    let eval = c.cpu_program(super::StepKind::Eval)?;
    let start = std::time::Instant::now();
    crate::codegen::cpu::emit_object_of(&[&train, &eval])
        .map_err(|e| format!("cannot generate CPU code: {e}"))?;
    Ok(start.elapsed())
}

/// `nnc explain`: each kernel, what it fused and why, and its estimated cost.
/// The matrix products of a kernel, one line each: `m × n × k` at `batch`, and for a
/// convolution the windows its left operand reads (an implicit GEMM). `nnc bench
/// --profile` gives the GFLOP/s each reaches and its share of the machine's GEMM peak.
fn products(k: &nnc_kernels::ir::Kernel, batch: usize) -> Vec<String> {
    let mut out = Vec::new();
    for s in &k.body {
        s.visit(&mut |s| {
            let nnc_kernels::ir::Stmt::Gemm(g) = s else {
                return;
            };
            let size = |i: &nnc_kernels::ir::Idx| {
                nnc_kernels::gpu::eval_idx(i, batch as i64)
                    .map_or_else(|| nnc_kernels::print::idx(i), |v| v.to_string())
            };
            let mut line = format!("gemm {} × {} × {}", size(&g.m), size(&g.n), size(&g.k));
            if let Some(w) = &g.windows {
                let _ = write!(
                    line,
                    ", implicit: {}windows of a {}×{}×{} image, {}×{} taps, step {}×{}, tap step {}×{}, pad {}×{}{}",
                    if w.transposed { "transposed " } else { "" },
                    w.image[0], w.image[1], w.image[2],
                    w.taps[0], w.taps[1],
                    w.step[0], w.step[1],
                    w.tap[0], w.tap[1],
                    w.pad[0], w.pad[1],
                    if w.div != [1, 1] { format!(", positions divided by {}×{}", w.div[0], w.div[1]) } else { String::new() }
                );
            }
            out.push(line);
        });
    }
    out
}

pub fn explain(s: &CompiledStep, batch: usize) -> String {
    explain_measured(s, batch, &|_| None)
}

/// [`explain`] with a line of measurements under each kernel that `measured` has one for
/// (`nnc explain --measure`: its time per step, GFLOP/s and share of the GEMM peak).
pub fn explain_measured(
    s: &CompiledStep,
    batch: usize,
    measured: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::new();
    let p = &s.lowered.program;
    let _ = writeln!(
        out,
        "{}: {} kernels, arena {} bytes at batch {batch}",
        p.name,
        p.kernels.len(),
        4 * p.arena.resolve(batch)
    );
    for (i, r) in s.lowered.reports.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}  ~{} FLOPs, ~{} bytes moved",
            r.name, r.flops, r.bytes
        );
        if let Some(line) = measured(&r.name) {
            let _ = writeln!(out, "    measured: {line}");
        }
        let _ = writeln!(out, "    ops: {}", r.members.join(", "));
        if let Some(k) = p.kernels.get(i) {
            for line in products(k, batch) {
                let _ = writeln!(out, "    {line}");
            }
        }
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
