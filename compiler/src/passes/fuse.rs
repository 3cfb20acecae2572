//! Fusion: partitions a graph into groups, each of which `lower/` turns into one kernel.
//!
//! A group has at most one kind of *anchor* and any number of inlined members:
//! - `Pointwise`: elementwise and layout ops, iterated over the root's shape;
//! - `MatMul`: one matrix product (a `Gemm`) and the elementwise ops after it, run over
//!   its output as an epilogue (bias + activation, the activation gradient, a
//!   parameter's optimizer update);
//! - `Reduce`: one or more reductions over the same axes of the same shape, with their
//!   prologue inlined into the accumulation loop and their consumers as epilogue; with
//!   last-axis reductions this is the row kernel of softmax / log-softmax +
//!   cross-entropy, forward and backward.
//!
//! Rules, applied in reverse topological order (each decision is recorded as a note for
//! `nnc explain`):
//! 1. inputs are buffers; constants, `iota`, the batch size and short elementwise
//!    chains over inputs and constants (one-hot labels, `-1/N`) are recomputed where
//!    used; transposes and reshapes read only by matrix products are *views* (strides of
//!    the `Gemm`, no copy);
//! 2. a node joins the group of its users when all of them are in one group and the
//!    group can take it; otherwise (several groups, a matrix-product operand, a view)
//!    it is materialized as the root of a new group;
//! 3. a matrix product or reduction joins a pointwise group as its anchor when every
//!    member downstream of it is elementwise with the anchor's shape (for reductions:
//!    the input's or the output's shape), so each value it feeds is read at the current
//!    iteration point;
//! 4. a graph output is stored by whichever group computes it.
//!
//! Invariant (why groups can run in order of their roots): a node with users outside
//! its group is its group's root, and a root has the largest id in its group, so every
//! cross-group edge goes from a lower root to a higher one.

use std::fmt::Write;

use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::Op;

/// What a group computes around its anchor.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupKind {
    Pointwise,
    MatMul,
    /// Reductions over `axes` of values of shape `full`.
    Reduce {
        axes: Vec<usize>,
        full: Shape,
    },
}

/// One future kernel.
#[derive(Clone, Debug)]
pub struct Group {
    pub kind: GroupKind,
    /// The member with the largest id; its shape is a pointwise group's iteration space.
    pub root: NodeId,
    /// Matrix product or reductions, in id order.
    pub anchors: Vec<NodeId>,
    /// Every member, in id order.
    pub members: Vec<NodeId>,
    /// Members whose value is stored (used elsewhere or a graph output), in id order.
    pub stored: Vec<NodeId>,
    /// Why members were fused, and why other nodes were refused.
    pub notes: Vec<String>,
}

/// Where a node's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    /// A graph input: a runtime buffer.
    Input,
    /// A scalar constant, `iota` or the batch size: recomputed wherever it is used.
    Free,
    /// A transpose/reshape read only by matrix products: `Gemm` strides over `base`.
    View { base: NodeId },
    /// A member of group `i`.
    Group(usize),
}

/// The partition of a graph.
#[derive(Clone, Debug)]
pub struct Fusion {
    pub placement: Vec<Placement>,
    /// In execution order (sorted by root).
    pub groups: Vec<Group>,
}

/// Two shapes equal once size-1 dims are dropped (so an element has the same linear
/// index in both).
pub fn same_modulo_ones(a: &Shape, b: &Shape) -> bool {
    let strip =
        |s: &Shape| -> Vec<Dim> { s.0.iter().copied().filter(|d| *d != Dim::K(1)).collect() };
    strip(a) == strip(b)
}

/// The base and the chain of a transpose/reshape view, when a `Gemm` can read it as
/// strides: transposes of anything, reshapes only of a contiguous (untransposed) value.
pub fn view_base(g: &Graph, id: NodeId) -> Option<NodeId> {
    // Walking from the consumer down: a reshape must not be applied to a transposed
    // value, so once a reshape is seen no transpose may follow below it.
    let mut cur = id;
    let mut seen_reshape = false;
    let mut steps = 0;
    loop {
        match g.op(cur) {
            Op::Transpose { .. } if seen_reshape => return None,
            Op::Transpose { .. } => {}
            Op::Reshape { .. } => seen_reshape = true,
            Op::Const(_) | Op::Iota { .. } | Op::BatchSize => return None,
            _ => return if steps > 0 { Some(cur) } else { None },
        }
        cur = g.args(cur)[0];
        steps += 1;
    }
}

/// Whether a node is cheap to recompute in every kernel that needs it: an elementwise
/// or layout op over inputs and constants only (the one-hot labels, `-1/N`), at most a
/// few ops deep.
fn recomputable(g: &Graph, id: NodeId, depth: usize) -> bool {
    let op = g.op(id);
    if matches!(op, Op::Const(_) | Op::Iota { .. } | Op::BatchSize) {
        return true;
    }
    if depth == 0
        || !(op.is_elementwise() || matches!(op, Op::Reshape { .. } | Op::Broadcast { .. }))
    {
        return false;
    }
    g.args(id)
        .iter()
        .all(|&a| matches!(g.op(a), Op::Input { .. }) || recomputable(g, a, depth - 1))
}

fn inlinable(op: &Op) -> bool {
    op.is_elementwise() || op.is_layout() || matches!(op, Op::Rand { .. })
}

pub fn partition(g: &Graph) -> Fusion {
    let n = g.len();
    let mut users: Vec<Vec<NodeId>> = vec![Vec::new(); n];
    for id in g.ids() {
        for a in g.args(id) {
            if !users[a.index()].contains(&id) {
                users[a.index()].push(id);
            }
        }
    }
    let mut is_output = vec![false; n];
    for (_, id) in g.outputs() {
        is_output[id.index()] = true;
    }
    let mut place: Vec<Option<Placement>> = vec![None; n];
    let mut groups: Vec<Group> = Vec::new();
    for id in g.ids().collect::<Vec<_>>().into_iter().rev() {
        let op = g.op(id);
        let us = &users[id.index()];
        if matches!(op, Op::Input { .. }) {
            place[id.index()] = Some(Placement::Input);
            continue;
        }
        let used_by_gemm = us.iter().any(|u| matches!(g.op(*u), Op::MatMul));
        if !is_output[id.index()] && !used_by_gemm && recomputable(g, id, 4) {
            place[id.index()] = Some(Placement::Free);
            continue;
        }
        if us.is_empty() && !is_output[id.index()] {
            continue; // dead; the DCE pass removes it
        }
        let gemm_or_view = |u: &NodeId| {
            matches!(g.op(*u), Op::MatMul)
                || matches!(place[u.index()], Some(Placement::View { .. }))
        };
        if !is_output[id.index()] && !us.is_empty() && us.iter().all(gemm_or_view) {
            if let Some(base) = view_base(g, id) {
                place[id.index()] = Some(Placement::View { base });
                continue;
            }
        }
        // The groups of the users, or why there is no single one.
        let mut target: Option<usize> = None;
        let mut refusal: Option<String> = None;
        for u in us {
            match &place[u.index()] {
                _ if matches!(g.op(*u), Op::MatMul) => {
                    refusal = Some(format!(
                        "{id} is a matrix-product operand (read from memory)"
                    ));
                }
                Some(Placement::Group(k)) => match target {
                    None => target = Some(*k),
                    Some(t) if t == *k => {}
                    Some(_) => refusal = Some(format!("{id} is used by several kernels")),
                },
                _ => refusal = Some(format!("{id} is read through a view")),
            }
            if refusal.is_some() {
                break;
            }
        }
        if let (Some(t), None) = (target, &refusal) {
            match can_join(g, &groups[t], id, &users) {
                Ok(reason) => {
                    let grp = &mut groups[t];
                    grp.members.push(id);
                    grp.notes
                        .push(format!("fused {id} {}: {reason}", op.mnemonic()));
                    if is_output[id.index()] {
                        grp.stored.push(id);
                    }
                    match op {
                        Op::MatMul => {
                            grp.kind = GroupKind::MatMul;
                            grp.anchors.push(id);
                        }
                        Op::Reduce { axes, .. } => {
                            grp.kind = GroupKind::Reduce {
                                axes: axes.clone(),
                                full: g.shape(g.args(id)[0]).clone(),
                            };
                            grp.anchors.push(id);
                        }
                        _ => {}
                    }
                    place[id.index()] = Some(Placement::Group(t));
                    continue;
                }
                Err(why) => refusal = Some(format!("{id} {} not fused: {why}", op.mnemonic())),
            }
        }
        // A new group rooted here.
        let (kind, anchors) = match op {
            Op::MatMul => (GroupKind::MatMul, vec![id]),
            Op::Reduce { axes, .. } => (
                GroupKind::Reduce {
                    axes: axes.clone(),
                    full: g.shape(g.args(id)[0]).clone(),
                },
                vec![id],
            ),
            _ => (GroupKind::Pointwise, Vec::new()),
        };
        let mut notes = vec![format!("root {id} {}", op.mnemonic())];
        if let Some(r) = refusal {
            notes.push(format!("materialized: {r}"));
        }
        groups.push(Group {
            kind,
            root: id,
            anchors,
            members: vec![id],
            stored: vec![id],
            notes,
        });
        place[id.index()] = Some(Placement::Group(groups.len() - 1));
    }
    // Execution order: by root id; renumber placements.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&i| groups[i].root);
    let mut new_index = vec![0; groups.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let placement = place
        .into_iter()
        .map(|p| match p {
            Some(Placement::Group(k)) => Placement::Group(new_index[k]),
            Some(p) => p,
            None => Placement::Free,
        })
        .collect();
    let mut sorted: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    let groups = order
        .iter()
        .map(|&i| {
            let mut grp = sorted[i].take().expect("each group is taken once");
            grp.members.sort();
            grp.stored.sort();
            grp.anchors.sort();
            grp
        })
        .collect();
    Fusion { placement, groups }
}

/// Whether `id` (all of whose users are in `grp`) can join it, and why.
fn can_join(g: &Graph, grp: &Group, id: NodeId, users: &[Vec<NodeId>]) -> Result<String, String> {
    let op = g.op(id);
    let shape = g.shape(id);
    let stored_fit = |allowed: &[&Shape]| {
        grp.stored
            .iter()
            .all(|s| allowed.iter().any(|a| same_modulo_ones(g.shape(*s), a)))
    };
    let downstream_fit = |allowed: &[&Shape]| -> Result<(), String> {
        // Every member that depends on `id` must read it at the iteration point.
        let mut stack = users[id.index()].clone();
        let mut seen = Vec::new();
        while let Some(u) = stack.pop() {
            if seen.contains(&u) {
                continue;
            }
            seen.push(u);
            if !grp.members.contains(&u) {
                continue; // read from memory by another kernel, after this one
            }
            let op = g.op(u);
            let ok_op = op.is_elementwise()
                || matches!(op, Op::Broadcast { .. } | Op::Reshape { .. })
                || (grp.anchors.contains(&u) && matches!(op, Op::Reduce { .. }));
            if !ok_op || !allowed.iter().any(|a| same_modulo_ones(g.shape(u), a)) {
                return Err(format!(
                    "{u} {} does not read it elementwise",
                    op.mnemonic()
                ));
            }
            stack.extend(users[u.index()].iter().copied());
        }
        Ok(())
    };
    match op {
        Op::MatMul => {
            if grp.kind != GroupKind::Pointwise {
                return Err("its consumer kernel already has an anchor".into());
            }
            if !stored_fit(&[shape]) {
                return Err("the consumer kernel stores values of another shape".into());
            }
            downstream_fit(&[shape])?;
            Ok("matrix product with its consumers as the epilogue".into())
        }
        Op::Reduce { axes, .. } => {
            let full = g.shape(g.args(id)[0]);
            match &grp.kind {
                GroupKind::MatMul => Err("its consumer kernel is a matrix product".into()),
                GroupKind::Reduce { axes: a2, full: f2 } if a2 != axes || f2 != full => {
                    Err("its consumer kernel reduces other axes".into())
                }
                _ => {
                    if !stored_fit(&[full, shape]) {
                        return Err("the consumer kernel stores values of another shape".into());
                    }
                    downstream_fit(&[full, shape])?;
                    Ok(format!(
                        "reduction over {axes:?} sharing the consumer's loops"
                    ))
                }
            }
        }
        op if inlinable(op) => {
            let iter_shapes: Vec<&Shape> = match &grp.kind {
                GroupKind::Pointwise => vec![g.shape(grp.root)],
                GroupKind::MatMul => vec![g.shape(grp.anchors[0])],
                GroupKind::Reduce { full, .. } => vec![full, g.shape(grp.anchors[0])],
            };
            if users_need_store(g, id) && !iter_shapes.iter().any(|s| same_modulo_ones(shape, s)) {
                return Err("it is a graph output of another shape".into());
            }
            Ok(match &grp.kind {
                GroupKind::Pointwise => "elementwise chain".into(),
                GroupKind::MatMul => "inlined into the matrix product's epilogue".into(),
                GroupKind::Reduce { .. } => "inlined into the reduction kernel".into(),
            })
        }
        _ => Err(format!("`{}` is not fusible", op.mnemonic())),
    }
}

/// Whether a node is a graph output (so a group that takes it must store it).
fn users_need_store(g: &Graph, id: NodeId) -> bool {
    g.outputs().iter().any(|(_, o)| *o == id)
}

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
