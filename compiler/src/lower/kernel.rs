//! One kernel per fusion group.
//!
//! - pointwise: a loop nest over the root's shape (the outermost loop `parallel`), every
//!   stored member computed into a local and then stored;
//! - matrix product: a `Gemm` whose operands are buffers read through strides (so a
//!   transposed or reshaped operand costs nothing), then the epilogue as a sequential
//!   loop over the product (the product is read back from the buffer it was written to);
//! - reduction: a loop nest over the kept dims (outermost `parallel`), and inside it
//!   passes over the reduced dims: pass `p` accumulates into locals every reduction
//!   whose prologue reads reductions of earlier passes only (softmax + cross-entropy:
//!   max and the label sum; Σ exp(x − max); the loss term). The values of the full
//!   shape are stored in the last pass when they do not read its reductions (the
//!   softmax output and the gradient row beside the loss term), else in one more pass;
//!   the values of the reduced shape are stored at the end. Values that are not
//!   reductions are recomputed in each pass that reads them, except a transcendental
//!   one (`exp`, `log`, `tanh`, `sigmoid`) read by several passes: the first stores it
//!   in a scratch row, the later ones load it (so softmax evaluates `exp` once per
//!   element). Accumulation is in f32, in index order.
//!
//! Sizes of 1 get no loop (the index is the constant 0).

use std::collections::HashMap;

use nnc_kernels::build::{binary, constant, load};
use nnc_kernels::ir::{
    BinOp, BufId, BufferKind, Expr, Gemm, Idx, Kernel, MatRef, Size, Stmt, VarId,
};

use super::expr::{dim_idx, ExprBuilder};
use super::{dims_idx, linear, size_of, KernelReport, LowerError, Plan};
use crate::ir::graph::{Dim, Graph, NodeId, Shape};
use crate::ir::ops::elementwise::UnaryOp;
use crate::ir::ops::reduce::ReduceOp;
use crate::ir::Op;
use crate::passes::fuse::{same_modulo_ones, Fusion, GroupKind, Placement};

struct Vars(u32);

impl Vars {
    fn next(&mut self) -> VarId {
        self.0 += 1;
        VarId(self.0 - 1)
    }
}

/// Loops over `dims` (a var per non-1 dim) around `body`; returns the index.
fn index_for(dims: &[Dim], vars: &mut Vars) -> (Vec<Idx>, Vec<(VarId, Idx)>) {
    let mut idx = Vec::new();
    let mut loops = Vec::new();
    for d in dims {
        if *d == Dim::K(1) {
            idx.push(Idx::Const(0));
        } else {
            let v = vars.next();
            idx.push(Idx::Var(v));
            loops.push((v, dim_idx(d)));
        }
    }
    (idx, loops)
}

/// For a convolution product whose output is an image `[N, h, w, f]`, the number of its
/// rows `N·h·w` as the `Gemm` states it (`conv`, `conv_data`; a weight gradient is a plain
/// matrix).
fn image_rows(g: &Graph, m: NodeId) -> Option<Idx> {
    let pixels = match g.op(m) {
        Op::Conv(cv) => cv.out[0] * cv.out[1],
        Op::ConvData(cv) => cv.image[0] * cv.image[1],
        _ => return None,
    };
    Some(Idx::N * pixels as i64)
}

/// Whether the epilogue of image-shaped product `m` reads every value either at the
/// product's own element or broadcast along all but the channel axis (a bias): then it
/// can run over the product's rows (see [`product_rows_index`]). Gathers (a pooling
/// gradient fused after an input gradient) need the image index and cannot.
fn rowwise_epilogue(g: &Graph, grp: &crate::passes::fuse::Group, m: NodeId) -> bool {
    let full = g.shape(m);
    let fits = |s: &Shape| {
        s == full
            || s.dims()[..s.rank().saturating_sub(1)]
                .iter()
                .all(|d| *d == Dim::K(1))
    };
    grp.members.iter().all(|&u| {
        u == m
            || (g.op(u).is_elementwise()
                && fits(g.shape(u))
                && g.args(u).iter().all(|a| fits(g.shape(*a))))
    })
}

/// The epilogue loops of an image-shaped product as two loops, over its rows (`N·h·w`,
/// the `Gemm`'s `m`) and its channels: the CPU schedule cuts such a kernel by rows like a
/// dense layer's (the product and the epilogue of each half on its own core). The index
/// is `[0, 0, row, c]`: for values of the product's shape (row-major) and channel-wise
/// broadcasts, the only ones [`rowwise_epilogue`] lets in, it addresses `row·f + c`.
fn product_rows_index(shape: &Shape, rows: Idx, vars: &mut Vars) -> (Vec<Idx>, Vec<(VarId, Idx)>) {
    let dims = dims_idx(shape);
    let (r, c) = (vars.next(), vars.next());
    let idx = vec![Idx::Const(0), Idx::Const(0), Idx::Var(r), Idx::Var(c)];
    (idx, vec![(r, rows), (c, dims[3].clone())])
}

fn nest(loops: &[(VarId, Idx)], body: Vec<Stmt>, parallel: bool) -> Vec<Stmt> {
    let mut body = body;
    for (i, (v, e)) in loops.iter().enumerate().rev() {
        body = vec![Stmt::Loop {
            var: *v,
            extent: e.clone(),
            body,
            parallel: parallel && i == 0,
        }];
    }
    body
}

/// The index of a value of shape `to` at iteration index `idx` over `from` (the two
/// equal up to size-1 dims).
fn reindex(idx: &[Idx], from: &Shape, to: &Shape) -> Result<Vec<Idx>, LowerError> {
    if !same_modulo_ones(from, to) {
        return Err(LowerError(format!(
            "cannot store a {to} value in a loop over {from}"
        )));
    }
    super::expr::reshape_index(idx, from.dims(), to.dims())
}

/// Computes every value in `ids` at its index into a local, then stores them all.
fn store_all(eb: &mut ExprBuilder, items: &[(NodeId, Vec<Idx>)]) -> Result<Vec<Stmt>, LowerError> {
    let mut stores = Vec::new();
    for (id, idx) in items {
        let v = eb.value(*id, idx)?;
        let l = eb.new_local();
        eb.pre.push(Stmt::Assign { local: l, value: v });
        let buf = eb.home[id];
        stores.push(Stmt::Store {
            buf,
            index: linear(idx, &dims_idx(eb.g.shape(*id))),
            value: Expr::Local(l),
        });
    }
    let mut body = std::mem::take(&mut eb.pre);
    body.extend(stores);
    eb.cache.clear();
    Ok(body)
}

pub fn build_group(
    g: &Graph,
    fusion: &Fusion,
    gi: usize,
    plan: &mut Plan,
    batch: usize,
) -> Result<(Kernel, KernelReport), LowerError> {
    let grp = &fusion.groups[gi];
    let mut uses: HashMap<NodeId, usize> = HashMap::new();
    for &m in &grp.members {
        for &a in g.args(m) {
            *uses.entry(a).or_default() += 1;
        }
    }
    for &s in &grp.stored {
        *uses.entry(s).or_default() += 1;
    }
    let mut vars = Vars(0);
    let mut extra_flops: u64 = 0;
    let mut gemm_target: Option<(NodeId, BufId)> = None;
    let mut prelude: Vec<Stmt> = Vec::new();
    if grp.kind == GroupKind::MatMul {
        let m = grp.anchors[0];
        let target = match plan.home.get(&m) {
            Some(&b) => b,
            None => {
                let reuse = grp.stored.iter().find(|s| {
                    g.shape(**s) == g.shape(m)
                        && !matches!(
                            plan.buffers[plan.home[*s].0 as usize].kind,
                            BufferKind::InOut
                        )
                });
                match reuse {
                    Some(s) => plan.home[s],
                    None => plan.temp(format!("t{}", m.0), size_of(g.shape(m))?),
                }
            }
        };
        gemm_target = Some((m, target));
        let (stmts, flops) = gemm(g, fusion, plan, m, target, &mut vars, batch)?;
        prelude = stmts;
        extra_flops = flops;
    }
    let home = plan.home.clone();
    let mut eb = ExprBuilder {
        g,
        fusion,
        group: gi,
        home: &home,
        fixed: HashMap::new(),
        spilled: HashMap::new(),
        uses,
        cache: HashMap::new(),
        pre: Vec::new(),
        num_locals: 0,
    };
    let body = match &grp.kind {
        GroupKind::Pointwise => {
            let shape = g.shape(grp.root);
            let (idx, loops) = index_for(shape.dims(), &mut vars);
            let items = stored_items(g, grp.stored.iter().copied(), &idx, shape)?;
            let inner = store_all(&mut eb, &items)?;
            nest(&loops, inner, true)
        }
        GroupKind::MatMul => {
            let (m, target) = gemm_target.ok_or_else(|| LowerError("no gemm".into()))?;
            let rest: Vec<NodeId> = grp
                .stored
                .iter()
                .copied()
                .filter(|s| !(*s == m && home.get(&m) == Some(&target)))
                .collect();
            let mut body = prelude;
            if !rest.is_empty() {
                let shape = g.shape(m);
                let (idx, loops) = match image_rows(g, m) {
                    Some(rows) if rowwise_epilogue(g, grp, m) => {
                        product_rows_index(shape, rows, &mut vars)
                    }
                    _ => index_for(shape.dims(), &mut vars),
                };
                eb.fixed
                    .insert(m, load(target, linear(&idx, &dims_idx(shape))));
                let items = stored_items(g, rest.into_iter(), &idx, shape)?;
                let inner = store_all(&mut eb, &items)?;
                body.extend(nest(&loops, inner, false));
            }
            body
        }
        GroupKind::Reduce { axes, full } => reduce_body(
            &mut eb,
            plan,
            grp.anchors.clone(),
            &grp.stored,
            axes,
            full,
            &mut vars,
        )?,
    };
    let mut params: Vec<BufId> = Vec::new();
    for s in &body {
        collect_bufs(s, &mut params);
    }
    params.sort();
    params.dedup();
    let anchor_name = grp
        .anchors
        .first()
        .map_or_else(|| g.op(grp.root).mnemonic(), |a| g.op(*a).mnemonic());
    let name = format!("k{gi}_{anchor_name}");
    let members: Vec<String> = grp
        .members
        .iter()
        .map(|m| format!("{m} {}", g.op(*m).mnemonic()))
        .collect();
    let note = format!("{}: {}", kind_name(&grp.kind), members.join(", "));
    let mut flops = extra_flops;
    for &m in &grp.members {
        let n = g.shape(m).resolve(batch).iter().product::<usize>() as u64;
        match g.op(m) {
            op if op.is_product() => {}
            Op::Reduce { .. } => {
                flops += g
                    .shape(g.args(m)[0])
                    .resolve(batch)
                    .iter()
                    .product::<usize>() as u64
            }
            op if op.is_elementwise() => flops += n,
            // One comparison or addition per tap of each window.
            Op::Pool(_, cv) | Op::PoolTies(cv) => flops += n * cv.taps() as u64,
            Op::PoolGrad(_, cv) => {
                let windows =
                    cv.kernel[0].div_ceil(cv.stride[0]) * cv.kernel[1].div_ceil(cv.stride[1]);
                flops += n * windows as u64
            }
            _ => {}
        }
    }
    let bytes = params
        .iter()
        .map(|b| 4 * plan.buffers[b.0 as usize].len.resolve(batch) as u64)
        .sum();
    let kernel = Kernel {
        name: name.clone(),
        params,
        body,
        num_vars: vars.0,
        num_locals: eb.num_locals,
        note,
        gpu: None,
    };
    let report = KernelReport {
        name,
        members,
        notes: grp.notes.clone(),
        flops,
        bytes,
    };
    Ok((kernel, report))
}

fn kind_name(k: &GroupKind) -> &'static str {
    match k {
        GroupKind::Pointwise => "pointwise",
        GroupKind::MatMul => "gemm + epilogue",
        GroupKind::Reduce { .. } => "reduction",
    }
}

fn stored_items(
    g: &Graph,
    ids: impl Iterator<Item = NodeId>,
    idx: &[Idx],
    iter: &Shape,
) -> Result<Vec<(NodeId, Vec<Idx>)>, LowerError> {
    ids.map(|s| Ok((s, reindex(idx, iter, g.shape(s))?)))
        .collect()
}

/// The reductions among `anchors` that the value of `id` reads, directly or through
/// other members of the group (a reduction's own inputs are not followed).
fn anchors_read(
    eb: &ExprBuilder,
    id: NodeId,
    anchors: &[NodeId],
    memo: &mut HashMap<NodeId, Vec<NodeId>>,
) -> Vec<NodeId> {
    if anchors.contains(&id) {
        return vec![id];
    }
    if let Some(v) = memo.get(&id) {
        return v.clone();
    }
    let mut out: Vec<NodeId> = Vec::new();
    if eb.fusion.placement[id.index()] == Placement::Group(eb.group) {
        for &a in eb.g.args(id) {
            for r in anchors_read(eb, a, anchors, memo) {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
    }
    memo.insert(id, out.clone());
    out
}

/// The members of the group that computing `id` evaluates, stopping at `stops`
/// (reductions, values loaded from a scratch buffer) and at other groups' values.
fn reads(eb: &ExprBuilder, id: NodeId, stops: &[NodeId], out: &mut Vec<NodeId>) {
    if stops.contains(&id)
        || out.contains(&id)
        || eb.fusion.placement[id.index()] != Placement::Group(eb.group)
    {
        return;
    }
    out.push(id);
    for &a in eb.g.args(id) {
        reads(eb, a, stops, out);
    }
}

/// The costly values (transcendental functions of the full shape) that a row kernel
/// stores in a scratch row in the first pass that computes them, because a later pass
/// reads them too (softmax: `exp(x − max)` is summed in pass 2 and read again by the
/// output and the gradient), with that first pass. Reloading costs two memory
/// operations per element, recomputing an `exp` some forty instructions. Only values
/// every user reads elementwise qualify (each row then reads back what it wrote).
fn spill_plan(
    eb: &ExprBuilder,
    anchors: &[NodeId],
    level: &HashMap<NodeId, usize>,
    big: &[NodeId],
    big_in_last: bool,
    full: &Shape,
) -> Vec<(NodeId, usize)> {
    let g = eb.g;
    let passes = level.values().copied().max().unwrap_or(0);
    let store_pass = if big_in_last { passes } else { passes + 1 };
    // What each pass evaluates, given the values already spilled (loaded by the passes
    // after the one that stores them).
    let pass_reads = |spilled: &[(NodeId, usize)]| -> Vec<Vec<NodeId>> {
        (1..=store_pass)
            .map(|p| {
                let mut stops = anchors.to_vec();
                stops.extend(spilled.iter().filter(|(_, f)| *f < p).map(|(v, _)| *v));
                let mut out = Vec::new();
                for &r in anchors.iter().filter(|r| level[*r] == p) {
                    reads(eb, g.args(r)[0], &stops, &mut out);
                }
                if p == store_pass {
                    for &s in big {
                        reads(eb, s, &stops, &mut out);
                    }
                }
                out
            })
            .collect()
    };
    let costly = |v: NodeId| {
        matches!(
            g.op(v),
            Op::Unary(UnaryOp::Exp | UnaryOp::Log | UnaryOp::Tanh | UnaryOp::Sigmoid)
        ) && same_modulo_ones(g.shape(v), full)
    };
    let read_elementwise = |v: NodeId| {
        let members = &eb.fusion.groups[eb.group].members;
        (0..g.len()).map(|i| NodeId(i as u32)).all(|u| {
            !members.contains(&u)
                || !g.args(u).contains(&v)
                || anchors.contains(&u)
                || ((g.op(u).is_elementwise()
                    || matches!(g.op(u), Op::Broadcast { .. } | Op::Reshape { .. }))
                    && same_modulo_ones(g.shape(u), full))
        })
    };
    let mut out: Vec<(NodeId, usize)> = Vec::new();
    let mut candidates: Vec<NodeId> = eb.fusion.groups[eb.group]
        .members
        .iter()
        .copied()
        .filter(|&v| costly(v) && read_elementwise(v))
        .collect();
    // Downstream first: a spilled value no longer needs its operands recomputed.
    candidates.sort_by(|a, b| b.cmp(a));
    for v in candidates {
        let per_pass = pass_reads(&out);
        let passes_reading: Vec<usize> = (1..=store_pass)
            .filter(|&p| per_pass[p - 1].contains(&v))
            .collect();
        if let [first, _, ..] = passes_reading[..] {
            out.push((v, first));
        }
    }
    out
}

/// The loops of a reduction group, inside a loop nest over the kept dims (outermost
/// `parallel`). Each reduction gets a level: 1 + the highest level among the reductions
/// its prologue reads (max → Σ exp(x − max) → Σ onehot·(x − max − log Σ) are levels
/// 1, 2, 3); pass `p` is one loop over the reduced dims accumulating every reduction of
/// level `p`. The values of the full shape are stored in the last pass when they read no
/// reduction of the last level, else in one more pass; the values of the reduced shape
/// are stored at the end, after every pass that could read their old value.
fn reduce_body(
    eb: &mut ExprBuilder,
    plan: &mut Plan,
    anchors: Vec<NodeId>,
    stored: &[NodeId],
    axes: &[usize],
    full: &Shape,
    vars: &mut Vars,
) -> Result<Vec<Stmt>, LowerError> {
    let g = eb.g;
    let reduced = Shape(
        full.dims()
            .iter()
            .enumerate()
            .map(|(d, x)| if axes.contains(&d) { Dim::K(1) } else { *x })
            .collect(),
    );
    // Reductions over every axis but the last (per-channel sums of an image: bias and
    // batch-norm gradients) run a block of `block` adjacent channels per iteration of the
    // parallel loop: each pass sweeps the image once per block (not once per channel),
    // its innermost loop runs over the block's channels (contiguous in memory, so it
    // vectorises), and the block's accumulators live in a scratch row indexed by channel.
    let block = channel_block(full, axes);
    let (red_idx, outer, lane) = if block > 1 {
        let last = full.rank() - 1;
        let channels = known_dim(full.dims()[last])?;
        let (v, u) = (vars.next(), vars.next());
        let mut r = vec![Idx::Const(0); full.rank()];
        r[last] = Idx::Var(v) * block as i64 + Idx::Var(u);
        let outer = vec![(v, Idx::Const((channels / block) as i64))];
        (r, outer, Some((u, channels)))
    } else {
        let (r, o) = index_for(reduced.dims(), vars);
        (r, o, None)
    };
    // Statements that depend on the channel: inside the loop over the block's lanes.
    let in_lanes = |stmts: Vec<Stmt>| -> Vec<Stmt> {
        match lane {
            Some((u, _)) if !stmts.is_empty() => vec![Stmt::Loop {
                var: u,
                extent: Idx::Const(block as i64),
                body: stmts,
                parallel: false,
            }],
            _ => stmts,
        }
    };
    let inner_dims: Vec<Dim> = full
        .dims()
        .iter()
        .enumerate()
        .map(|(d, x)| if axes.contains(&d) { *x } else { Dim::K(1) })
        .collect();
    let full_index = |inner_idx: &[Idx]| -> Vec<Idx> {
        red_idx
            .iter()
            .zip(inner_idx)
            .map(|(a, b)| {
                if matches!(b, Idx::Const(0)) {
                    a.clone()
                } else {
                    b.clone()
                }
            })
            .collect()
    };
    let acc_index = linear(&red_idx, &dims_idx(&reduced));
    // Anchors are in id order, so the reductions a prologue reads already have a level.
    let mut memo = HashMap::new();
    let mut level: HashMap<NodeId, usize> = HashMap::new();
    for &r in &anchors {
        let read = anchors_read(eb, g.args(r)[0], &anchors, &mut memo);
        let l = 1 + read.iter().map(|a| level[a]).max().unwrap_or(0);
        level.insert(r, l);
    }
    let passes = level.values().copied().max().unwrap_or(0);
    let (small, big): (Vec<NodeId>, Vec<NodeId>) = stored
        .iter()
        .partition(|s| same_modulo_ones(g.shape(**s), &reduced));
    let big_level = big
        .iter()
        .flat_map(|&s| anchors_read(eb, s, &anchors, &mut memo))
        .map(|a| level[&a])
        .max()
        .unwrap_or(0);
    let big_in_last = !big.is_empty() && big_level < passes;
    let spills = spill_plan(eb, &anchors, &level, &big, big_in_last, full);
    let mut spill_at: HashMap<usize, Vec<(NodeId, BufId)>> = HashMap::new();
    for (v, first) in spills {
        let buf = plan.temp(format!("t{}.row", v.0), size_of(g.shape(v))?);
        spill_at.entry(first).or_default().push((v, buf));
        // Computed into a local, so the store below reuses it.
        eb.uses.insert(v, 2);
    }
    let mut body = Vec::new();
    for p in 1..=passes {
        let (inner_idx, inner) = index_for(&inner_dims, vars);
        let full_idx = full_index(&inner_idx);
        let mut inits = Vec::new();
        let mut step = Vec::new();
        let mut done = Vec::new();
        for &r in anchors.iter().filter(|r| level[r] == p) {
            let func = match g.op(r) {
                Op::Reduce { func, .. } => *func,
                _ => return Err(LowerError(format!("{r} is not a reduction"))),
            };
            let (init, op) = match func {
                ReduceOp::Sum => (0.0, BinOp::Add),
                ReduceOp::Max => (f32::NEG_INFINITY, BinOp::Max),
            };
            let v = eb.value(g.args(r)[0], &full_idx)?;
            step.append(&mut eb.pre);
            match lane {
                Some((_, channels)) => {
                    let buf = plan.temp(format!("t{}.acc", r.0), Size::fixed(channels));
                    let acc = load(buf, acc_index.clone());
                    inits.push(Stmt::Store {
                        buf,
                        index: acc_index.clone(),
                        value: constant(init),
                    });
                    step.push(Stmt::Store {
                        buf,
                        index: acc_index.clone(),
                        value: binary(op, acc.clone(), v),
                    });
                    done.push((r, acc));
                }
                None => {
                    let acc = eb.new_local();
                    body.push(Stmt::Assign {
                        local: acc,
                        value: constant(init),
                    });
                    step.push(Stmt::Assign {
                        local: acc,
                        value: binary(op, Expr::Local(acc), v),
                    });
                    done.push((r, Expr::Local(acc)));
                }
            }
        }
        let spilled = spill_at.remove(&p).unwrap_or_default();
        for &(v, buf) in &spilled {
            let idx = reindex(&full_idx, full, g.shape(v))?;
            let e = eb.value(v, &idx)?;
            step.append(&mut eb.pre);
            step.push(Stmt::Store {
                buf,
                index: linear(&idx, &dims_idx(g.shape(v))),
                value: e,
            });
        }
        if p == passes && big_in_last {
            let items = stored_items(g, big.iter().copied(), &full_idx, full)?;
            step.extend(store_all(eb, &items)?);
        }
        eb.cache.clear();
        body.extend(in_lanes(inits));
        body.extend(nest(&inner, in_lanes(step), false));
        // Known from here on (a pass never reads its own accumulators).
        for (r, acc) in done {
            eb.fixed.insert(r, acc);
        }
        eb.spilled.extend(spilled);
    }
    if !big.is_empty() && !big_in_last {
        let (inner_idx, inner) = index_for(&inner_dims, vars);
        let full_idx = full_index(&inner_idx);
        let items = stored_items(g, big.into_iter(), &full_idx, full)?;
        let step = store_all(eb, &items)?;
        eb.cache.clear();
        body.extend(nest(&inner, in_lanes(step), false));
    }
    // Last: a value updated in place (a parameter of the reduced shape) may be read by
    // every pass before it.
    let items = stored_items(g, small.into_iter(), &red_idx, &reduced)?;
    let last = store_all(eb, &items)?;
    body.extend(in_lanes(last));
    Ok(nest(&outer, body, true))
}

/// The widest channel block of a reduction over every axis but the last: 32 channels,
/// eight f32x4 accumulators (the CPU backend unrolls lane loops of up to 32). A core's
/// block should cover whole cache lines of each row it sweeps, and cores should not
/// sweep the batch again for a second block: with 16, a 64-channel activation was read
/// twice per core, a quarter of each row at a time (10 GB/s).
const MAX_CHANNEL_BLOCK: usize = 32;

/// How many channels a reduction over every axis but the last handles per iteration of
/// its parallel loop (its lane loop, whose accumulators the CPU backend keeps in vector
/// registers): preferably a multiple of the 4 vector lanes, at most
/// [`MAX_CHANNEL_BLOCK`], leaving at least two blocks (one per core); else any divisor of
/// at least 2 that leaves two blocks; else (fewer than 4 or a prime number of channels,
/// up to 16) all channels in one block. 1
/// (a scalar accumulator per channel) for other reductions.
fn channel_block(full: &Shape, axes: &[usize]) -> usize {
    let rank = full.rank();
    if rank < 2 || axes.contains(&(rank - 1)) || !(0..rank - 1).all(|d| axes.contains(&d)) {
        return 1;
    }
    let Dim::K(c) = full.dims()[rank - 1] else {
        return 1;
    };
    let divisors = || {
        (2..=MAX_CHANNEL_BLOCK.min(c / 2))
            .rev()
            .filter(move |b| c % b == 0)
    };
    divisors()
        .find(|b| b % 4 == 0)
        .or_else(|| divisors().next())
        .unwrap_or(if c <= 16 { c } else { 1 })
}

fn known_dim(d: Dim) -> Result<usize, LowerError> {
    match d {
        Dim::K(k) => Ok(k),
        Dim::N => Err(LowerError("a channel dimension is the batch size".into())),
    }
}

/// A strided view of a matrix-product operand: buffer, per-dim strides, offset.
fn operand_view(
    g: &Graph,
    fusion: &Fusion,
    plan: &Plan,
    id: NodeId,
) -> Result<(BufId, Vec<Idx>), LowerError> {
    match (&fusion.placement[id.index()], g.op(id)) {
        (Placement::View { .. }, Op::Transpose { perm }) => {
            let (b, s) = operand_view(g, fusion, plan, g.args(id)[0])?;
            Ok((b, perm.iter().map(|&p| s[p].clone()).collect()))
        }
        (Placement::View { .. }, Op::Reshape { .. }) => {
            let (b, _) = operand_view(g, fusion, plan, g.args(id)[0])?;
            Ok((b, row_major(g.shape(id))))
        }
        _ => {
            let b = *plan
                .home
                .get(&id)
                .ok_or_else(|| LowerError(format!("matrix operand {id} has no buffer")))?;
            Ok((b, row_major(g.shape(id))))
        }
    }
}

fn row_major(s: &Shape) -> Vec<Idx> {
    let dims = dims_idx(s);
    let mut st = vec![Idx::Const(1); dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1].clone() * dims[i + 1].clone();
    }
    st
}

/// The `Gemm` statements of matrix product `m` writing into `target`, and its FLOPs.
fn gemm(
    g: &Graph,
    fusion: &Fusion,
    plan: &Plan,
    m: NodeId,
    target: BufId,
    vars: &mut Vars,
    batch: usize,
) -> Result<(Vec<Stmt>, u64), LowerError> {
    if let Some(conv) = conv_gemm(g, fusion, plan, m, target, batch)? {
        return Ok(conv);
    }
    let (a, b) = (g.args(m)[0], g.args(m)[1]);
    let (ba, sa) = operand_view(g, fusion, plan, a)?;
    let (bb, sb) = operand_view(g, fusion, plan, b)?;
    let out = g.shape(m);
    let sc = row_major(out);
    let r = out.rank();
    let (ra, rb) = (sa.len(), sb.len());
    let dims = dims_idx(out);
    let k_dim = dim_idx(&g.shape(a).dims()[ra - 1]);
    let lead = r - 2;
    // Lead strides of each operand (0 where it broadcasts).
    let lead_stride = |s: &[Idx], shape: &Shape, d: usize| -> Idx {
        let rank = shape.rank();
        let own_lead = rank - 2;
        if d + own_lead < lead {
            return Idx::Const(0);
        }
        let od = d + own_lead - lead;
        if shape.dims()[od] == Dim::K(1) && out.dims()[d] != Dim::K(1) {
            Idx::Const(0)
        } else {
            s[od].clone()
        }
    };
    let (sa_shape, sb_shape) = (g.shape(a), g.shape(b));
    let mut loops = Vec::new();
    let (mut oa, mut ob, mut oc) = (Idx::Const(0), Idx::Const(0), Idx::Const(0));
    for d in 0..lead.saturating_sub(1) {
        let v = vars.next();
        loops.push((v, dims[d].clone()));
        oa = oa + Idx::Var(v) * lead_stride(&sa, sa_shape, d);
        ob = ob + Idx::Var(v) * lead_stride(&sb, sb_shape, d);
        oc = oc + Idx::Var(v) * sc[d].clone();
    }
    let batch_spec = if lead >= 1 {
        let d = lead - 1;
        Some((
            dims[d].clone(),
            [
                lead_stride(&sa, sa_shape, d),
                lead_stride(&sb, sb_shape, d),
                sc[d].clone(),
            ],
        ))
    } else {
        None
    };
    let stmt = Stmt::Gemm(Gemm {
        m: dims[r - 2].clone(),
        n: dims[r - 1].clone(),
        k: k_dim,
        a: MatRef {
            buf: ba,
            offset: oa,
            row_stride: sa[ra - 2].clone(),
            col_stride: sa[ra - 1].clone(),
        },
        b: MatRef {
            buf: bb,
            offset: ob,
            row_stride: sb[rb - 2].clone(),
            col_stride: sb[rb - 1].clone(),
        },
        c: MatRef {
            buf: target,
            offset: oc,
            row_stride: sc[r - 2].clone(),
            col_stride: sc[r - 1].clone(),
        },
        alpha: 1.0,
        beta: 0.0,
        batch: batch_spec,
        windows: None,
    });
    let outn: usize = out.resolve(batch).iter().product();
    let kk = g.shape(a).resolve(batch)[ra - 1];
    Ok((nest(&loops, vec![stmt], false), 2 * (outn * kk) as u64))
}

/// The `Gemm` over windows of convolution product `m` writing into `target`, and its
/// FLOPs; `None` when `m` is a plain matrix product.
///
/// - `conv(x, w)`: `C[B·oh·ow, f] = windows(x)·w`;
/// - `conv_data(dy, wt)`: `C[B·h·w, c] = data_windows(dy)·wt`;
/// - `conv_filter(x, dy)`: `C[kh·kw·c, f] = windows(x)ᵀ·dy`, `dy` read as `[B·oh·ow, f]`.
fn conv_gemm(
    g: &Graph,
    fusion: &Fusion,
    plan: &Plan,
    m: NodeId,
    target: BufId,
    batch: usize,
) -> Result<Option<(Vec<Stmt>, u64)>, LowerError> {
    let (a, b) = (g.args(m)[0], g.args(m)[1]);
    let channels = |id: NodeId| -> Result<usize, LowerError> {
        match g.shape(id).dims().last() {
            Some(Dim::K(c)) => Ok(*c),
            _ => Err(LowerError(format!("{id} has no channel dimension"))),
        }
    };
    let (windows, rows, n, k) = match g.op(m) {
        Op::Conv(cv) => {
            let (c, f) = (channels(a)?, channels(m)?);
            let rows = Idx::N * (cv.out[0] * cv.out[1]) as i64;
            (cv.windows(c), rows, f, cv.taps() * c)
        }
        Op::ConvData(cv) => {
            let (f, c) = (channels(a)?, channels(m)?);
            let rows = Idx::N * (cv.image[0] * cv.image[1]) as i64;
            (cv.data_windows(f), rows, c, cv.taps() * f)
        }
        Op::ConvFilter(cv) => {
            let (c, f) = (channels(a)?, channels(b)?);
            let windows = nnc_kernels::ir::Windows {
                transposed: true,
                ..cv.windows(c)
            };
            let reduced = Idx::N * (cv.out[0] * cv.out[1]) as i64;
            let stmt = Stmt::Gemm(Gemm {
                m: Idx::Const((cv.taps() * c) as i64),
                n: Idx::Const(f as i64),
                k: reduced,
                a: windows_ref(g, fusion, plan, a)?,
                b: MatRef {
                    buf: windows_ref(g, fusion, plan, b)?.buf,
                    offset: Idx::Const(0),
                    row_stride: Idx::Const(f as i64),
                    col_stride: Idx::Const(1),
                },
                c: MatRef {
                    buf: target,
                    offset: Idx::Const(0),
                    row_stride: Idx::Const(f as i64),
                    col_stride: Idx::Const(1),
                },
                alpha: 1.0,
                beta: 0.0,
                batch: None,
                windows: Some(windows),
            });
            let flops = 2 * batch as u64 * cv.macs_per_sample(c, f);
            return Ok(Some((vec![stmt], flops)));
        }
        _ => return Ok(None),
    };
    let stmt = Stmt::Gemm(Gemm {
        m: rows,
        n: Idx::Const(n as i64),
        k: Idx::Const(k as i64),
        a: windows_ref(g, fusion, plan, a)?,
        b: MatRef {
            buf: windows_ref(g, fusion, plan, b)?.buf,
            offset: Idx::Const(0),
            row_stride: Idx::Const(n as i64),
            col_stride: Idx::Const(1),
        },
        c: MatRef {
            buf: target,
            offset: Idx::Const(0),
            row_stride: Idx::Const(n as i64),
            col_stride: Idx::Const(1),
        },
        alpha: 1.0,
        beta: 0.0,
        batch: None,
        windows: Some(windows),
    });
    let outn: usize = g.shape(m).resolve(batch).iter().product();
    Ok(Some((vec![stmt], 2 * (outn * k) as u64)))
}

/// A convolution operand: the buffer holding it row-major (itself or, through reshape
/// views, the value it reshapes), at offset 0.
fn windows_ref(g: &Graph, fusion: &Fusion, plan: &Plan, id: NodeId) -> Result<MatRef, LowerError> {
    let (buf, _) = operand_view(g, fusion, plan, id)?;
    Ok(MatRef {
        buf,
        offset: Idx::Const(0),
        row_stride: Idx::Const(0),
        col_stride: Idx::Const(0),
    })
}

/// Buffers a statement touches (in no particular order, with repeats).
pub fn collect_bufs(s: &Stmt, out: &mut Vec<BufId>) {
    s.visit(&mut |s| match s {
        Stmt::Store { buf, .. } => out.push(*buf),
        Stmt::Gemm(g) => out.extend([g.a.buf, g.b.buf, g.c.buf]),
        _ => {}
    });
    s.for_each_value(&mut |e| e.for_each_load(&mut |b, _| out.push(b)));
}

/// Every load and store index of `buf` in a statement, and whether a `Gemm` reads it.
pub fn accesses(
    s: &Stmt,
    buf: BufId,
    loads: &mut Vec<Idx>,
    stores: &mut Vec<Idx>,
    gemm: &mut bool,
) {
    s.visit(&mut |s| match s {
        Stmt::Store { buf: b, index, .. } if *b == buf => stores.push(index.clone()),
        Stmt::Gemm(g) => *gemm |= g.a.buf == buf || g.b.buf == buf,
        _ => {}
    });
    s.for_each_value(&mut |e| {
        e.for_each_load(&mut |b, i| {
            if b == buf {
                loads.push(i.clone())
            }
        })
    });
}
