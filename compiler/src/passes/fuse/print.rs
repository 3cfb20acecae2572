//! The fusion partition as text (`--emit fused`, `--dump-after fuse`): each group with
//! its kind, members and the views read through `gemm` strides.

use std::fmt::Write;

use super::{Fusion, GroupKind, Placement};
use crate::ir::graph::Graph;

/// The fused graph as text: each group with its kind, members and notes.
pub fn print_fusion(g: &Graph, f: &Fusion) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "fused {}  # {} kernels", g.name, f.groups.len());
    for (i, grp) in f.groups.iter().enumerate() {
        let kind = match &grp.kind {
            GroupKind::Pointwise => "pointwise".to_string(),
            GroupKind::MatMul => "matmul".to_string(),
            GroupKind::Reduce { axes, full } => format!("reduce axes={axes:?} over {full}"),
        };
        let _ = writeln!(
            s,
            "  group {i}: {kind} root={} shape={}",
            grp.root,
            g.shape(grp.root)
        );
        for m in &grp.members {
            let mark = if grp.stored.contains(m) {
                " (stored)"
            } else {
                ""
            };
            let _ = writeln!(s, "    {m} {}{mark}", g.op(*m).mnemonic());
        }
    }
    let views: Vec<String> = g
        .ids()
        .filter_map(|id| match &f.placement[id.index()] {
            Placement::View { base } => Some(format!("{id}→{base}")),
            _ => None,
        })
        .collect();
    if !views.is_empty() {
        let _ = writeln!(s, "  views (gemm strides): {}", views.join(", "));
    }
    s
}
