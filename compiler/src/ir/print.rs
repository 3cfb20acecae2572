//! The text form of a graph, the test surface of every graph stage:
//!
//! ```text
//! graph line  # 5 nodes
//!   %0: [N, 1] = input name="x"
//!   %1: [1, 1] = input name="w"
//!   %2: [N, 1] = matmul %0, %1
//! output "y" = %2
//! ```
//!
//! Nodes print in id order, so numbering is deterministic; call [`Graph::compact`] first
//! to drop dead nodes and renumber densely. `parse::parse_graph` reads this text back.

use std::fmt::Write;

use super::graph::Graph;

pub fn print_graph(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "graph {}  # {} nodes", g.name, g.len());
    for id in g.ids() {
        let op = g.op(id);
        let _ = write!(s, "  {id}: {} = {}", g.shape(id), op.mnemonic());
        for (k, v) in op.attrs() {
            let _ = write!(s, " {k}={v}");
        }
        let args: Vec<String> = g.args(id).iter().map(|a| a.to_string()).collect();
        if !args.is_empty() {
            let _ = write!(s, " {}", args.join(", "));
        }
        s.push('\n');
    }
    for (name, id) in g.outputs() {
        let _ = writeln!(s, "output {} = {id}", super::ops::Attr::Str(name.clone()));
    }
    s
}
