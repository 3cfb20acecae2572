//! One kernel per fusion group.
//!
//! - pointwise: a loop nest over the root's shape (the outermost loop `parallel`), every
//!   stored member computed into a local and then stored;
//! - matrix product: a `Gemm` whose operands are buffers read through strides (so a
//!   transposed or reshaped operand costs nothing), then the epilogue as a sequential
//!   loop over the product (the product is read back from the buffer it was written to);
//! - reduction: a loop nest over the kept dims (outermost `parallel`), and inside it,
//!   for each reduction in order, a loop over the reduced dims accumulating into a local;
//!   then the values of the reduced shape are stored, then (in one more pass over the
//!   reduced dims) the values of the full shape. Accumulation is in f32, in index order.
//!
//! Sizes of 1 get no loop (the index is the constant 0).

use std::collections::HashMap;

use nnc_kernels::build::{binary, constant, load};
use nnc_kernels::ir::{BinOp, BufId, BufferKind, Expr, Gemm, Idx, Kernel, MatRef, Stmt, VarId};

use super::expr::{dim_idx, ExprBuilder};
use super::{dims_idx, linear, size_of, KernelReport, LowerError, Plan};
use crate::ir::graph::{Dim, Graph, NodeId, Shape};
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
                let (idx, loops) = index_for(shape.dims(), &mut vars);
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
            Op::MatMul => {}
            Op::Reduce { .. } => {
                flops += g
                    .shape(g.args(m)[0])
                    .resolve(batch)
                    .iter()
                    .product::<usize>() as u64
            }
            op if op.is_elementwise() => flops += n,
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

fn reduce_body(
    eb: &mut ExprBuilder,
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
    let (red_idx, outer) = index_for(reduced.dims(), vars);
    let inner_dims: Vec<Dim> = full
        .dims()
        .iter()
        .enumerate()
        .map(|(d, x)| if axes.contains(&d) { *x } else { Dim::K(1) })
        .collect();
    let mut body = Vec::new();
    for r in anchors {
        let func = match g.op(r) {
            Op::Reduce { func, .. } => *func,
            _ => return Err(LowerError(format!("{r} is not a reduction"))),
        };
        let acc = eb.new_local();
        let init = match func {
            ReduceOp::Sum => 0.0,
            ReduceOp::Max => f32::NEG_INFINITY,
        };
        body.push(Stmt::Assign {
            local: acc,
            value: constant(init),
        });
        let (inner_idx, inner) = index_for(&inner_dims, vars);
        let full_idx: Vec<Idx> = red_idx
            .iter()
            .zip(&inner_idx)
            .map(|(a, b)| {
                if matches!(b, Idx::Const(0)) {
                    a.clone()
                } else {
                    b.clone()
                }
            })
            .collect();
        let v = eb.value(g.args(r)[0], &full_idx)?;
        let op = match func {
            ReduceOp::Sum => BinOp::Add,
            ReduceOp::Max => BinOp::Max,
        };
        let mut step = std::mem::take(&mut eb.pre);
        step.push(Stmt::Assign {
            local: acc,
            value: binary(op, Expr::Local(acc), v),
        });
        eb.cache.clear();
        body.extend(nest(&inner, step, false));
        eb.fixed.insert(r, Expr::Local(acc));
    }
    let (small, big): (Vec<NodeId>, Vec<NodeId>) = stored
        .iter()
        .partition(|s| same_modulo_ones(g.shape(**s), &reduced));
    let items = stored_items(g, small.into_iter(), &red_idx, &reduced)?;
    body.extend(store_all(eb, &items)?);
    if !big.is_empty() {
        let (inner_idx, inner) = index_for(&inner_dims, vars);
        let full_idx: Vec<Idx> = red_idx
            .iter()
            .zip(&inner_idx)
            .map(|(a, b)| {
                if matches!(b, Idx::Const(0)) {
                    a.clone()
                } else {
                    b.clone()
                }
            })
            .collect();
        let items = stored_items(g, big.into_iter(), &full_idx, full)?;
        let step = store_all(eb, &items)?;
        body.extend(nest(&inner, step, false));
    }
    Ok(nest(&outer, body, true))
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
    });
    let outn: usize = out.resolve(batch).iter().product();
    let kk = g.shape(a).resolve(batch)[ra - 1];
    Ok((nest(&loops, vec![stmt], false), 2 * (outn * kk) as u64))
}

/// Buffers a statement touches.
pub fn collect_bufs(s: &Stmt, out: &mut Vec<BufId>) {
    match s {
        Stmt::Loop { body, .. } => body.iter().for_each(|s| collect_bufs(s, out)),
        Stmt::Store { buf, value, .. } => {
            out.push(*buf);
            expr_bufs(value, out);
        }
        Stmt::Assign { value, .. } => expr_bufs(value, out),
        Stmt::Gemm(g) => out.extend([g.a.buf, g.b.buf, g.c.buf]),
    }
}

fn expr_bufs(e: &Expr, out: &mut Vec<BufId>) {
    walk_loads(e, &mut |b, _| out.push(b));
}

fn walk_loads(e: &Expr, f: &mut dyn FnMut(BufId, &Idx)) {
    match e {
        Expr::Load { buf, index } => f(*buf, index),
        Expr::Const(_) | Expr::Local(_) | Expr::FromIdx(_) => {}
        Expr::Unary(_, a) => walk_loads(a, f),
        Expr::Binary(_, a, b) => {
            walk_loads(a, f);
            walk_loads(b, f);
        }
        Expr::Fma(a, b, c) => {
            walk_loads(a, f);
            walk_loads(b, f);
            walk_loads(c, f);
        }
        Expr::Select {
            a,
            b,
            then,
            otherwise,
            ..
        } => {
            for x in [a, b, then, otherwise] {
                walk_loads(x, f);
            }
        }
        Expr::Rand { step, .. } => walk_loads(step, f),
    }
}

/// Every load and store index of `buf` in a statement, and whether a `Gemm` reads it.
pub fn accesses(
    s: &Stmt,
    buf: BufId,
    loads: &mut Vec<Idx>,
    stores: &mut Vec<Idx>,
    gemm: &mut bool,
) {
    match s {
        Stmt::Loop { body, .. } => body
            .iter()
            .for_each(|s| accesses(s, buf, loads, stores, gemm)),
        Stmt::Store {
            buf: b,
            index,
            value,
        } => {
            if *b == buf {
                stores.push(index.clone());
            }
            walk_loads(value, &mut |b, i| {
                if b == buf {
                    loads.push(i.clone())
                }
            });
        }
        Stmt::Assign { value, .. } => walk_loads(value, &mut |b, i| {
            if b == buf {
                loads.push(i.clone())
            }
        }),
        Stmt::Gemm(g) => *gemm |= g.a.buf == buf || g.b.buf == buf,
    }
}
