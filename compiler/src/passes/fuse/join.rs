//! Whether a node may join the group of its users: the rule for one user group
//! ([`can_join`]) and the row merge of several user groups into one reduction kernel
//! ([`merge_rows`]). Each answer carries the reason `nnc explain` prints.

use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::Op;

use super::{cheap, inlinable, same_modulo_ones, Group, GroupKind, Placement};

/// `full` with the reduced `axes` set to 1.
fn reduced_shape(full: &Shape, axes: &[usize]) -> Shape {
    Shape(
        full.dims()
            .iter()
            .enumerate()
            .map(|(d, x)| if axes.contains(&d) { Dim::K(1) } else { *x })
            .collect(),
    )
}

/// Whether some group outside `set` both reads a value of `set` (directly or further
/// down) and feeds `set`: merging `set` into one kernel would then need that group both
/// before and after it.
fn merge_makes_cycle(
    groups: &[Group],
    set: &[usize],
    place: &[Option<Placement>],
    users: &[Vec<NodeId>],
) -> bool {
    let in_set =
        |n: NodeId| matches!(&place[n.index()], Some(Placement::Group(k)) if set.contains(k));
    let mut stack: Vec<NodeId> = Vec::new();
    for &k in set {
        for &m in &groups[k].members {
            stack.extend(users[m.index()].iter().copied().filter(|u| !in_set(*u)));
        }
    }
    let mut seen = vec![false; place.len()];
    let mut seen_group = vec![false; groups.len()];
    while let Some(n) = stack.pop() {
        if std::mem::replace(&mut seen[n.index()], true) {
            continue;
        }
        if in_set(n) {
            return true;
        }
        if let Some(Placement::Group(k)) = &place[n.index()] {
            // The whole group runs after `set`, so whatever it feeds does too.
            if !std::mem::replace(&mut seen_group[*k], true) {
                stack.extend(groups[*k].members.iter().copied());
            }
        }
        stack.extend(users[n.index()].iter().copied());
    }
    false
}

/// The row kernel made of the groups in `set` (all users of `id`) and ready for `id` to
/// join, when they can be one: pointwise groups and reductions over the same axes of
/// the same shape, whose every member downstream of a reduction reads it elementwise
/// (at the iteration point of a pass over the rows), which store only values of the
/// full or the reduced shape, and which no other kernel sits between. `Err(None)` when
/// no reduction is involved (the groups stay apart without further ado).
pub(super) fn merge_rows(
    g: &Graph,
    groups: &[Group],
    set: &[usize],
    id: NodeId,
    users: &[Vec<NodeId>],
    place: &[Option<Placement>],
    is_output: &[bool],
) -> Result<Group, Option<String>> {
    let mut kind: Option<(Vec<usize>, Shape)> = match g.op(id) {
        Op::Reduce { axes, .. } => Some((axes.clone(), g.shape(g.args(id)[0]).clone())),
        op if op.is_product() => return Err(None),
        _ => None,
    };
    for &k in set {
        match &groups[k].kind {
            GroupKind::MatMul => return Err(None),
            GroupKind::Pointwise => {}
            GroupKind::Reduce { axes, full } => match &kind {
                None => kind = Some((axes.clone(), full.clone())),
                Some((a, f)) if a == axes && f == full => {}
                Some(_) => return Err(Some("its users' kernels reduce other axes".into())),
            },
        }
    }
    let (axes, full) = kind.ok_or(None)?;
    let reduced = reduced_shape(&full, &axes);
    let fits = |s: &Shape| same_modulo_ones(s, &full) || same_modulo_ones(s, &reduced);
    // Whatever is not a reduction is recomputed by every pass that reads it: only cheap
    // elementwise chains, and only where each pass walks contiguous rows (reductions over
    // the trailing axes); a column reduction would walk them strided, on fewer threads.
    let cheap = |m: &NodeId| cheap(g.op(*m)) || matches!(g.op(*m), Op::Reduce { .. });
    let rows = trailing(&axes, full.rank());
    if !cheap(&id) {
        return Err(Some(format!(
            "`{}` would be recomputed by every pass",
            g.op(id).mnemonic()
        )));
    }
    for &k in set {
        let grp = &groups[k];
        if grp.kind != GroupKind::Pointwise {
            continue;
        }
        if !rows {
            return Err(Some("a pointwise kernel would walk columns".into()));
        }
        if !fits(g.shape(grp.root)) {
            return Err(Some("a user kernel iterates over another shape".into()));
        }
        if let Some(m) = grp.members.iter().find(|m| !cheap(m)) {
            return Err(Some(format!(
                "{m} `{}` would be recomputed by every pass",
                g.op(*m).mnemonic()
            )));
        }
    }
    if merge_makes_cycle(groups, set, place, users) {
        return Err(Some(
            "another kernel runs between its users' kernels".into(),
        ));
    }
    let mut members: Vec<NodeId> = set
        .iter()
        .flat_map(|&k| groups[k].members.iter().copied())
        .collect();
    members.sort();
    let mut anchors: Vec<NodeId> = set
        .iter()
        .flat_map(|&k| groups[k].anchors.iter().copied())
        .collect();
    anchors.sort();
    let stored: Vec<NodeId> = members
        .iter()
        .copied()
        .filter(|m| is_output[m.index()] || users[m.index()].iter().any(|u| !members.contains(u)))
        .collect();
    let roots: Vec<String> = set.iter().map(|&k| groups[k].root.to_string()).collect();
    let mut notes = vec![format!(
        "merged the kernels rooted at {} into one row kernel: they share the rows of {id}",
        roots.join(", ")
    )];
    notes.extend(set.iter().flat_map(|&k| groups[k].notes.iter().cloned()));
    let merged = Group {
        kind: GroupKind::Reduce {
            axes: axes.clone(),
            full: full.clone(),
        },
        root: set.iter().map(|&k| groups[k].root).max().unwrap_or(id),
        anchors,
        members,
        stored,
        notes,
    };
    can_join(g, &merged, id, users).map_err(Some)?;
    // With `id` in: every stored value fits a pass, every reduction reads earlier ones
    // (and the epilogue reads all of them) elementwise.
    let mut anchors = merged.anchors.clone();
    let mut members = merged.members.clone();
    members.push(id);
    if matches!(g.op(id), Op::Reduce { .. }) {
        anchors.push(id);
    }
    if let Some(s) = merged.stored.iter().find(|s| !fits(g.shape(**s))) {
        return Err(Some(format!("it would store {s} of shape {}", g.shape(*s))));
    }
    for &a in &anchors {
        match g.op(a) {
            Op::Reduce { axes: ax, .. } if *ax == axes && *g.shape(g.args(a)[0]) == full => {}
            _ => return Err(Some(format!("{a} reduces other axes"))),
        }
        let mut stack = users[a.index()].clone();
        let mut seen = Vec::new();
        while let Some(u) = stack.pop() {
            if seen.contains(&u) || !members.contains(&u) {
                continue;
            }
            seen.push(u);
            let op = g.op(u);
            let ok_op = op.is_elementwise()
                || matches!(op, Op::Broadcast { .. } | Op::Reshape { .. })
                || anchors.contains(&u);
            if !ok_op || !fits(g.shape(u)) {
                return Err(Some(format!(
                    "{u} {} does not read {a} elementwise",
                    op.mnemonic()
                )));
            }
            stack.extend(users[u.index()].iter().copied());
        }
    }
    Ok(merged)
}

/// Whether `id` (all of whose users are in `grp`) can join it, and why.
pub(super) fn can_join(
    g: &Graph,
    grp: &Group,
    id: NodeId,
    users: &[Vec<NodeId>],
) -> Result<String, String> {
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
        _ if op.is_product() => {
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
                GroupKind::Pointwise
                    if !trailing(axes, full.rank())
                        && axes.iter().any(|&a| full.0[a] == Dim::N)
                        && same_modulo_ones(g.shape(grp.root), full) =>
                {
                    // A reduction over the batch (a batch norm's statistics): the consumer
                    // would sweep the whole batch a block of channels at a time, strided,
                    // after the reduction's own sweep (nothing of it left in cache); as a
                    // pointwise kernel of its own it walks memory in order.
                    Err("it reduces over the batch, and its consumer would sweep the whole batch strided".into())
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
            if grp.anchors.len() > 1 && !cheap(op) {
                return Err("it would be recomputed by each pass of the row kernel".into());
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

/// Whether `axes` are the trailing axes of a rank-`rank` shape (a row reduction).
pub(super) fn trailing(axes: &[usize], rank: usize) -> bool {
    axes.iter()
        .enumerate()
        .all(|(i, &a)| a + axes.len() == rank + i)
}

/// Whether a node is a graph output (so a group that takes it must store it).
fn users_need_store(g: &Graph, id: NodeId) -> bool {
    g.outputs().iter().any(|(_, o)| *o == id)
}
