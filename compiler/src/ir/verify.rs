//! The verifier: the invariants every transformation must keep. Tests run it after every
//! pass, so later code may index operands and trust shapes without checking.
//!
//! - every operand id is smaller than its user's id (topological order);
//! - every node's recorded shape is what its op's shape rule gives for its operands;
//! - input names are unique, outputs name existing nodes and are named once;
//! - no two pure nodes are identical (hash-consing held).

use std::collections::{HashMap, HashSet};

use super::graph::Graph;
use super::op::Op;
use super::{ir_bail, IrResult};

pub fn verify(g: &Graph) -> IrResult<()> {
    let (nodes, shapes) = g.parts();
    if nodes.len() != shapes.len() {
        ir_bail!("{} nodes but {} shapes", nodes.len(), shapes.len());
    }
    let mut names = HashSet::new();
    let mut seen: HashMap<(&Op, &[super::NodeId]), usize> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        for a in &node.args {
            if a.index() >= i {
                ir_bail!("node %{i} uses {a}, which does not come before it");
            }
        }
        if let Op::Input { name } = &node.op {
            if !node.args.is_empty() {
                ir_bail!("input %{i} has operands");
            }
            if !names.insert(name.as_str()) {
                ir_bail!("input `{name}` is defined twice");
            }
            continue;
        }
        let arg_shapes: Vec<_> = node.args.iter().map(|a| &shapes[a.index()]).collect();
        let want = node
            .op
            .shape(&arg_shapes)
            .map_err(|e| super::IrError::new(format!("node %{i}: {e}")))?;
        if want != shapes[i] {
            ir_bail!(
                "node %{i} is recorded as {} but its op gives {want}",
                shapes[i]
            );
        }
        if let Some(j) = seen.insert((&node.op, &node.args), i) {
            ir_bail!("nodes %{j} and %{i} are identical (hash-consing broken)");
        }
    }
    let mut outs = HashSet::new();
    for (name, id) in g.outputs() {
        if id.index() >= nodes.len() {
            ir_bail!("output `{name}` refers to missing node {id}");
        }
        if !outs.insert(name) {
            ir_bail!("output `{name}` is named twice");
        }
    }
    Ok(())
}
