//! Fusion groups → kernel IR. Every scheduling decision is made here and is visible in
//! the kernel IR: which loops are parallel, which values are read through `Gemm`
//! strides, which values are recomputed, and where every buffer lives.
//!
//! - [`expr`]: a node's value at a symbolic index (elementwise and layout ops inlined);
//! - [`kernel`]: one kernel per group (pointwise loop nest; `Gemm` + epilogue;
//!   reduction loops with accumulators and their epilogue);
//! - [`memory`]: buffer lifetimes → offsets in one arena, with reuse.
//!
//! Buffers: graph inputs are runtime buffers; an output named like an input (an updated
//! parameter, optimizer state, `step`) is written *in place* into that input's buffer
//! (`InOut`) when that is safe: every other reader of the old value runs earlier, and the
//! writing kernel reads the old value only at the element it writes. Otherwise the new
//! value goes to a temporary and a copy kernel at the end of the step writes it back.
//! Other outputs (`loss`, `output`) are `Output` buffers; everything else stored is a
//! temporary in the arena.

pub mod expr;
pub mod gpu;
pub mod hoist;
pub mod kernel;
pub mod lanes;
pub mod memory;
pub mod split;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;

use nnc_kernels::ir::{
    BufId, BufferDecl, BufferKind, Expr, Idx, Kernel, Program, Size, Stmt, VarId,
};

use crate::ir::graph::{Graph, NodeId, Shape};
use crate::passes::fuse::{Fusion, Placement};

/// Why a graph could not be lowered (a construct the lowering does not handle).
#[derive(Clone, Debug, PartialEq)]
pub struct LowerError(pub String);

impl fmt::Display for LowerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LowerError {}

/// What `nnc explain` says about one kernel.
#[derive(Clone, Debug)]
pub struct KernelReport {
    pub name: String,
    /// The ops of the group, `%id mnemonic`.
    pub members: Vec<String>,
    /// Fusion decisions (and refusals) behind this kernel.
    pub notes: Vec<String>,
    /// Estimated floating-point operations at the report's batch size.
    pub flops: u64,
    /// Estimated bytes read and written (each touched buffer once).
    pub bytes: u64,
}

/// A lowered step.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub program: Program,
    pub reports: Vec<KernelReport>,
    /// Outputs that could not be updated in place (copied back at the end).
    pub copied_back: Vec<String>,
}

/// Lowers a (simplified) graph with its partition into a kernel program. `batch` is
/// only used for the estimates in the reports.
pub fn lower_graph(g: &Graph, fusion: &Fusion, batch: usize) -> Result<Lowered, LowerError> {
    let mut no_alias: HashSet<String> = HashSet::new();
    loop {
        let (lowered, hazards) = lower_once(g, fusion, batch, &no_alias)?;
        if hazards.is_empty() {
            return Ok(lowered);
        }
        let before = no_alias.len();
        no_alias.extend(hazards);
        if no_alias.len() == before {
            return Err(LowerError(
                "in-place update hazard could not be resolved".into(),
            ));
        }
    }
}

/// The buffers of a step being built.
pub struct Plan {
    pub buffers: Vec<BufferDecl>,
    pub home: HashMap<NodeId, BufId>,
}

impl Plan {
    pub fn add(&mut self, name: String, len: Size, kind: BufferKind) -> BufId {
        self.buffers.push(BufferDecl { name, len, kind });
        BufId(self.buffers.len() as u32 - 1)
    }

    /// A scratch buffer (its offset is set by memory planning).
    pub fn temp(&mut self, name: String, len: Size) -> BufId {
        self.add(
            name,
            len,
            BufferKind::Temp {
                offset: Size::fixed(0),
            },
        )
    }
}

fn lower_once(
    g: &Graph,
    fusion: &Fusion,
    batch: usize,
    no_alias: &HashSet<String>,
) -> Result<(Lowered, Vec<String>), LowerError> {
    let mut plan = Plan {
        buffers: Vec::new(),
        home: HashMap::new(),
    };
    let out_names: HashSet<&str> = g.outputs().iter().map(|(n, _)| n.as_str()).collect();
    let mut by_name: HashMap<String, BufId> = HashMap::new();
    for (name, id) in g.inputs() {
        let kind = if out_names.contains(name.as_str()) {
            BufferKind::InOut
        } else {
            BufferKind::Input
        };
        let b = plan.add(name.clone(), size_of(g.shape(id))?, kind);
        plan.home.insert(id, b);
        by_name.insert(name, b);
    }
    // (from, to) copies run after every kernel.
    let mut copies: Vec<(BufId, BufId, Size)> = Vec::new();
    let mut copied_back = Vec::new();
    let mut writers: Vec<(String, NodeId, BufId)> = Vec::new();
    for (name, id) in g.outputs() {
        let len = size_of(g.shape(*id))?;
        let dest = match by_name.get(name) {
            Some(&b) if g.input_id(name) == Some(*id) => {
                let _ = b;
                continue; // passed through unchanged
            }
            Some(&b) => b,
            None => plan.add(name.clone(), len, BufferKind::Output),
        };
        let in_place = by_name.contains_key(name) && !no_alias.contains(name);
        match plan.home.get(id) {
            Some(&src) => copies.push((src, dest, len)),
            None if in_place || !by_name.contains_key(name) => {
                plan.home.insert(*id, dest);
                if in_place {
                    writers.push((name.clone(), *id, dest));
                }
            }
            None => {
                let t = plan.temp(format!("{name}.new"), len);
                plan.home.insert(*id, t);
                copies.push((t, dest, len));
                copied_back.push(name.clone());
            }
        }
    }
    for grp in &fusion.groups {
        for &s in &grp.stored {
            if !plan.home.contains_key(&s) {
                let b = plan.temp(format!("t{}", s.0), size_of(g.shape(s))?);
                plan.home.insert(s, b);
            }
        }
    }
    let mut kernels = Vec::new();
    let mut reports = Vec::new();
    for i in 0..fusion.groups.len() {
        let (k, r) = kernel::build_group(g, fusion, i, &mut plan, batch)?;
        kernels.push(k);
        reports.push(r);
    }
    for (n, (from, to, len)) in copies.iter().enumerate() {
        let v = VarId(0);
        let extent = size_idx(*len);
        kernels.push(Kernel {
            name: format!("k{}_copy", kernels.len()),
            params: vec![*from, *to],
            body: vec![Stmt::Loop {
                var: v,
                extent,
                parallel: true,
                body: vec![Stmt::Store {
                    buf: *to,
                    index: Idx::Var(v),
                    value: Expr::Load {
                        buf: *from,
                        index: Idx::Var(v),
                    },
                }],
            }],
            num_vars: 1,
            num_locals: 0,
            note: format!("copy {} back", plan.buffers[to.0 as usize].name),
            gpu: None,
        });
        let bytes = 8 * len.resolve(batch) as u64;
        reports.push(KernelReport {
            name: kernels[kernels.len() - 1].name.clone(),
            members: vec![format!("copy #{n}")],
            notes: vec!["the in-place update was unsafe; copied after every reader".into()],
            flops: 0,
            bytes,
        });
    }
    let hazards = alias_hazards(g, fusion, &kernels, &writers);
    kernels.iter_mut().for_each(hoist::hoist_invariants);
    let mut program = Program {
        name: g.name.clone(),
        buffers: plan.buffers,
        kernels,
        arena: Size::default(),
    };
    memory::plan_arena(&mut program);
    Ok((
        Lowered {
            program,
            reports,
            copied_back,
        },
        hazards,
    ))
}

/// Outputs written in place whose old value is still needed after (or elsewhere in)
/// the writing kernel.
fn alias_hazards(
    g: &Graph,
    fusion: &Fusion,
    kernels: &[Kernel],
    writers: &[(String, NodeId, BufId)],
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, node, buf) in writers {
        let Some(input) = g.input_id(name) else {
            continue;
        };
        let Placement::Group(w) = fusion.placement[node.index()] else {
            continue;
        };
        // Groups that read the input (directly or through a view).
        let mut late_reader = false;
        for u in g.ids() {
            let Placement::Group(k) = fusion.placement[u.index()] else {
                continue;
            };
            let reads = g.args(u).iter().any(|&a| view_root(g, fusion, a) == input);
            if reads && k > w {
                late_reader = true;
            }
        }
        let (mut loads, mut stores, mut gemm) = (Vec::new(), Vec::new(), false);
        for s in &kernels[w].body {
            kernel::accesses(s, *buf, &mut loads, &mut stores, &mut gemm);
        }
        // Each element is read only where it is written, and before: one store, or (a
        // reduction over several channels per iteration) distinct stores each preceded
        // by the loads of its own element.
        let distinct = stores
            .iter()
            .enumerate()
            .all(|(i, a)| stores[..i].iter().all(|b| b != a));
        let same_point = distinct
            && !stores.is_empty()
            && loads.iter().all(|l| stores.contains(l))
            && reads_before_writes(&kernels[w].body, *buf);
        if late_reader || gemm || !same_point {
            out.push(name.clone());
        }
    }
    out
}

/// Whether, in statement order, no element of `buf` is loaded after a store to the same
/// (symbolic) index.
fn reads_before_writes(body: &[Stmt], buf: BufId) -> bool {
    fn walk(s: &Stmt, buf: BufId, stored: &mut Vec<Idx>) -> bool {
        let mut ok = true;
        let mut check = |e: &nnc_kernels::ir::Expr, stored: &Vec<Idx>| {
            e.for_each_load(&mut |b, i| ok &= b != buf || !stored.contains(i));
        };
        match s {
            Stmt::Store {
                buf: b,
                index,
                value,
            } => {
                check(value, stored);
                if *b == buf {
                    stored.push(index.clone());
                }
            }
            Stmt::Assign { value, .. } => check(value, stored),
            _ => {}
        }
        ok && s
            .body()
            .unwrap_or_default()
            .iter()
            .all(|s| walk(s, buf, stored))
    }
    let mut stored = Vec::new();
    body.iter().all(|s| walk(s, buf, &mut stored))
}

/// The node a view chain reads (the node itself when it is not a view).
fn view_root(g: &Graph, fusion: &Fusion, mut id: NodeId) -> NodeId {
    while let Placement::View { .. } = fusion.placement[id.index()] {
        id = g.args(id)[0];
    }
    id
}

/// The element count of a shape as `per_batch·N + fixed`.
pub fn size_of(s: &Shape) -> Result<Size, LowerError> {
    match s.volume() {
        Some((0, k)) => Ok(Size::fixed(k)),
        Some((1, k)) => Ok(Size::per_batch(k)),
        _ => Err(LowerError(format!("values of shape {s} are not supported"))),
    }
}

pub fn size_idx(s: Size) -> Idx {
    Idx::N * Idx::Const(s.per_batch as i64) + Idx::Const(s.fixed as i64)
}

pub fn dims_idx(s: &Shape) -> Vec<Idx> {
    s.dims().iter().map(expr::dim_idx).collect()
}

/// Row-major linear index of `idx` in a shape of extents `dims`.
pub fn linear(idx: &[Idx], dims: &[Idx]) -> Idx {
    let mut lin = Idx::Const(0);
    for (i, d) in idx.iter().zip(dims) {
        lin = lin * d.clone() + i.clone();
    }
    lin
}
