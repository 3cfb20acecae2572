//! Fusion: partitions a graph into groups, each of which `lower/` turns into one kernel.
//!
//! A group has at most one kind of *anchor* and any number of inlined members:
//! - `Pointwise`: elementwise and layout ops, iterated over the root's shape;
//! - `MatMul`: one matrix product (a `Gemm`) and the elementwise ops after it, run over
//!   its output as an epilogue (bias + activation, the activation gradient, a
//!   parameter's optimizer update);
//! - `Reduce`: one or more reductions over the same axes of the same shape, with their
//!   prologue inlined into the accumulation loops and their consumers as epilogue. A
//!   reduction may read an earlier one broadcast along the reduced axes (max → Σ
//!   exp(x − max) → …): `lower/` runs them as successive passes over each row. With
//!   last-axis reductions this is the row kernel of softmax / log-softmax +
//!   cross-entropy, forward and backward: max, exp-sum, the softmax output, the per-row
//!   loss term and the gradient row in one kernel (the batch mean of the loss reduces
//!   other axes and stays a kernel of its own).
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
//! 4. *row merge*: a node whose users are in several groups first merges those groups
//!    into one `Reduce` group and joins it, when that involves a reduction (the node or
//!    a user group's), all the reductions share axes and shape, every member downstream
//!    of a reduction reads it elementwise, only values of the full or the reduced shape
//!    are stored, and no other group both reads from and feeds the merged ones. Since
//!    what is not a reduction is recomputed by every pass that reads it (`lower/` keeps
//!    only transcendental values in a scratch row), only cheap nodes (elementwise,
//!    broadcast, reshape) trigger a merge, pointwise groups merge only when made of
//!    such nodes and only into reductions over the trailing axes (passes walk
//!    contiguous rows), and no gathering layout op (`im2col`, `col2im`, …) joins a
//!    group of several reductions;
//! 5. a graph output is stored by whichever group computes it;
//! 6. no member is inlined more than [`MAX_INLINE_DEPTH`] users below its group's
//!    root: a longer chain (thousands of `let` bindings adding one each) is cut into
//!    several kernels, so that the kernel expressions `lower/` builds, and every
//!    recursive walk over them (printing, codegen, the kernel interpreter), stay shallow.
//!
//! Invariants: a node with users outside its group is stored by it; the root (the
//! member with the largest id) is stored. Groups run in a topological order of their
//! dependences, the smallest root first among the ready ones: without row merges every
//! cross-group edge goes from a lower root to a higher one, so that order is by root; a
//! merged group may feed a group with a lower root (the per-row loss terms feed the
//! batch mean), which then runs after it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::Op;

mod join;
mod print;

use join::{can_join, merge_rows};
pub use print::print_fusion;

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

/// Whether the chain of views from `id` down to `base` is made of reshapes only.
fn reshapes_only(g: &Graph, id: NodeId, base: NodeId) -> bool {
    let mut cur = id;
    while cur != base {
        if !matches!(g.op(cur), Op::Reshape { .. }) {
            return false;
        }
        cur = g.args(cur)[0];
    }
    true
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

/// Elementwise ops and the layout ops that only rename indices: cheap enough to be
/// recomputed by each pass of a row kernel (gathers such as `im2col` are not).
fn cheap(op: &Op) -> bool {
    op.is_elementwise() || matches!(op, Op::Broadcast { .. } | Op::Reshape { .. })
}

fn inlinable(op: &Op) -> bool {
    op.is_elementwise() || op.is_layout() || op.is_window_gather() || matches!(op, Op::Rand { .. })
}

/// The longest chain of in-group users above a member (rule 6).
pub const MAX_INLINE_DEPTH: usize = 64;

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
    // How many in-group users lie between a member and its group's root (rule 6).
    let mut inline_depth = vec![0usize; n];
    let mut groups: Vec<Group> = Vec::new();
    // Groups merged into another one (left empty).
    let mut dead: Vec<bool> = Vec::new();
    for id in g.ids().collect::<Vec<_>>().into_iter().rev() {
        let op = g.op(id);
        let us = &users[id.index()];
        if matches!(op, Op::Input { .. }) {
            place[id.index()] = Some(Placement::Input);
            continue;
        }
        // A view's base is what the `Gemm` reads from memory: it must be stored too.
        let used_by_gemm = us.iter().any(|u| {
            g.op(*u).is_product() || matches!(place[u.index()], Some(Placement::View { .. }))
        });
        if !is_output[id.index()] && !used_by_gemm && recomputable(g, id, 4) {
            place[id.index()] = Some(Placement::Free);
            continue;
        }
        if us.is_empty() && !is_output[id.index()] {
            continue; // dead; the DCE pass removes it
        }
        let gemm_or_view = |u: &NodeId| {
            g.op(*u).is_product() || matches!(place[u.index()], Some(Placement::View { .. }))
        };
        if !is_output[id.index()] && !us.is_empty() && us.iter().all(gemm_or_view) {
            // A convolution reads its operands as row-major images: only reshapes of a
            // stored value are views for it.
            let conv_user = us.iter().any(|u| g.op(*u).is_conv());
            if let Some(base) = view_base(g, id) {
                if !conv_user || reshapes_only(g, id, base) {
                    place[id.index()] = Some(Placement::View { base });
                    continue;
                }
            }
        }
        // The groups of the users, or why there is no single one.
        let mut user_groups: Vec<usize> = Vec::new();
        let mut refusal: Option<String> = None;
        for u in us {
            match &place[u.index()] {
                _ if matches!(g.op(*u), Op::PoolGrad(..)) => {
                    refusal = Some(format!(
                        "{id} is read by a pooling gradient at every pixel of its window (read from memory)"
                    ));
                }
                _ if g.op(*u).is_product() => {
                    refusal = Some(format!(
                        "{id} is a matrix-product operand (read from memory)"
                    ));
                }
                Some(Placement::Group(k)) => {
                    if !user_groups.contains(k) {
                        user_groups.push(*k);
                    }
                }
                _ => refusal = Some(format!("{id} is read through a view")),
            }
            if refusal.is_some() {
                break;
            }
        }
        let mut target: Option<usize> = None;
        if refusal.is_none() {
            match user_groups[..] {
                [] => {}
                [k] => target = Some(k),
                _ => match merge_rows(g, &groups, &user_groups, id, &users, &place, &is_output) {
                    Ok(merged) => {
                        // The users' kernels become one (the first keeps the merged group).
                        let t = user_groups[0];
                        for &k in &user_groups[1..] {
                            for &m in &groups[k].members {
                                place[m.index()] = Some(Placement::Group(t));
                            }
                            groups[k].members.clear();
                            dead[k] = true;
                        }
                        groups[t] = merged;
                        target = Some(t);
                    }
                    Err(None) => refusal = Some(format!("{id} is used by several kernels")),
                    Err(Some(why)) => {
                        refusal = Some(format!("{id} is used by several kernels ({why})"))
                    }
                },
            }
        }
        if let (Some(t), None) = (target, &refusal) {
            let depth = 1 + us
                .iter()
                .map(|u| inline_depth[u.index()])
                .max()
                .unwrap_or(0);
            let joined = if depth > MAX_INLINE_DEPTH {
                Err(format!("inlined more than {MAX_INLINE_DEPTH} levels deep"))
            } else {
                can_join(g, &groups[t], id, &users)
            };
            match joined {
                Ok(reason) => {
                    let grp = &mut groups[t];
                    grp.members.push(id);
                    grp.notes
                        .push(format!("fused {id} {}: {reason}", op.mnemonic()));
                    if is_output[id.index()] {
                        grp.stored.push(id);
                    }
                    match op {
                        _ if op.is_product() => {
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
                    inline_depth[id.index()] = depth;
                    continue;
                }
                Err(why) => refusal = Some(format!("{id} {} not fused: {why}", op.mnemonic())),
            }
        }
        // A new group rooted here.
        let (kind, anchors) = match op {
            _ if op.is_product() => (GroupKind::MatMul, vec![id]),
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
        dead.push(false);
        place[id.index()] = Some(Placement::Group(groups.len() - 1));
    }
    // Execution order: dependences first, the smallest root first among the ready groups
    // (so groups that were never merged run in order of their roots); renumber placements.
    let order = execution_order(&groups, &dead, &place, &users);
    let mut new_index = vec![usize::MAX; groups.len()];
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

/// The groups that read a value of group `a` (directly or through a view), other than `a`.
fn consumers(
    groups: &[Group],
    a: usize,
    place: &[Option<Placement>],
    users: &[Vec<NodeId>],
) -> Vec<usize> {
    let mut out = Vec::new();
    for &m in &groups[a].members {
        let mut stack = users[m.index()].clone();
        while let Some(u) = stack.pop() {
            match &place[u.index()] {
                Some(Placement::Group(b)) if *b != a && !out.contains(b) => out.push(*b),
                Some(Placement::View { .. }) => stack.extend(users[u.index()].iter().copied()),
                _ => {}
            }
        }
    }
    out
}

/// A topological order of the live groups, taking the group with the smallest root
/// first whenever several are ready.
fn execution_order(
    groups: &[Group],
    dead: &[bool],
    place: &[Option<Placement>],
    users: &[Vec<NodeId>],
) -> Vec<usize> {
    let n = groups.len();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut preds = vec![0usize; n];
    for a in (0..n).filter(|&a| !dead[a]) {
        succs[a] = consumers(groups, a, place, users);
        for &b in &succs[a] {
            preds[b] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<(NodeId, usize)>> = (0..n)
        .filter(|&a| !dead[a] && preds[a] == 0)
        .map(|a| Reverse((groups[a].root, a)))
        .collect();
    let mut order = Vec::new();
    while let Some(Reverse((_, a))) = ready.pop() {
        order.push(a);
        for &b in &succs[a] {
            preds[b] -= 1;
            if preds[b] == 0 {
                ready.push(Reverse((groups[b].root, b)));
            }
        }
    }
    debug_assert_eq!(order.len(), dead.iter().filter(|d| !**d).count());
    order
}
