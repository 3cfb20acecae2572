//! The tiled matrix product on the GPU: tile sizes, the shared-memory kernel with its
//! register blocks, the folding of enclosing loops into the grid, and the fused epilogue.
//! A windows operand (implicit GEMM) differs only in its `A` tile loads, whose source
//! element and validity come from `windows.rs` instead of strides.

use std::collections::HashSet;

use nnc_kernels::build::{assign, for_, store};
use nnc_kernels::gpu::eval_idx;
use nnc_kernels::ir::{
    BinOp, BufId, Cond, Expr, Gemm, GpuLaunch, Idx, Kernel, LocalId, MatRef, SharedId, Stmt, VarId,
};

use super::analysis::{loads_of, locals_private, stores_of};
use super::build::{ceil_div, combine, gpu_kernel, lt, one, subst, Fresh};
use super::windows::windows_element;
use super::{serial_kernel_named, NOMINAL_BATCH};

/// The tiled product: a `tile × tile` piece of `C` per block, `TILE_K` deep slices of
/// `A` and `B` per step, `GEMM_THREADS` threads (16 × 16) with a `reg × reg` register
/// block each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    pub tile: i64,
    pub reg: i64,
}

/// 64×64 tiles, 4×4 register blocks: the most reuse per load.
pub const LARGE_TILES: Tiling = Tiling { tile: 64, reg: 4 };
/// 32×32 tiles, 2×2 register blocks: four times the blocks, for products too small to
/// fill the GPU with large tiles.
pub const SMALL_TILES: Tiling = Tiling { tile: 32, reg: 2 };
/// Below this many large tiles (at the nominal batch) a product uses small tiles: a GPU
/// has 100+ multiprocessors, each wanting a block or more.
const FEW_TILES: i64 = 128;
pub const TILE_K: i64 = 16;
pub const GEMM_THREADS: u32 = 256;

impl Tiling {
    /// Threads along a tile's columns (and rows).
    fn threads_per_side(self) -> i64 {
        self.tile / self.reg
    }

    /// Shared tile rows are padded by one float so that a warp's column reads hit
    /// distinct banks.
    fn pitch(self) -> i64 {
        self.tile + 1
    }

    /// The tiling for a product with `m × n` outputs `z` times (at the nominal batch).
    fn for_product(m: &Idx, n: &Idx, z: &Idx) -> Tiling {
        let tiles = |t: i64| {
            let e = |i: &Idx| eval_idx(i, NOMINAL_BATCH);
            Some((e(m)? + t - 1) / t * ((e(n)? + t - 1) / t) * e(z)?.max(1))
        };
        match tiles(LARGE_TILES.tile) {
            Some(count) if count < FEW_TILES => SMALL_TILES,
            _ => LARGE_TILES,
        }
    }
}

/// The tiled product (inside `loops`, folded into the grid's third axis), with its
/// epilogue fused or as a kernel of its own.
pub(super) fn gemm_kernels(
    k: &Kernel,
    name: String,
    g: &Gemm,
    loops: &[(VarId, Idx)],
    epilogue: &[Stmt],
) -> Result<Vec<Kernel>, String> {
    if g.c.buf == g.a.buf || g.c.buf == g.b.buf {
        return Err(format!(
            "cannot schedule kernel `{}` for the GPU: a product writes one of its operands",
            k.name
        ));
    }
    let mut fresh = Fresh::new(k);
    let fused = if loops.is_empty() {
        fusable_epilogue(g, epilogue)
    } else {
        None
    };
    let (body, launch) = tiled_gemm(g, loops, fused.as_ref(), &mut fresh)
        .map_err(|why| format!("cannot schedule kernel `{}` for the GPU: {why}", k.name))?;
    let mut out = vec![gpu_kernel(k, name.clone(), body, &fresh, launch)];
    if fused.is_none() && !epilogue.is_empty() {
        out.push(serial_kernel_named(k, format!("{name}_epilogue"), epilogue));
    }
    Ok(out)
}

/// Whether every `(z, row, col)` of a product (z over the enclosing `loops`, then the
/// batch) names its own element of `C`, checked at several batch sizes: the strides,
/// sorted by size, must each exceed the span of the smaller ones. When they do not (a sum
/// of products into one `C`, say), the z-blocks may not run side by side.
fn c_cells_disjoint(g: &Gemm, loops: &[(VarId, Idx)]) -> bool {
    [1, 2, 3, 7, 64, 128, 1000].into_iter().all(|n| {
        let e = |i: &Idx| eval_idx(i, n);
        let mut terms: Vec<(Option<i64>, Option<i64>)> =
            vec![(e(&g.c.row_stride), e(&g.m)), (e(&g.c.col_stride), e(&g.n))];
        if let Some((count, st)) = &g.batch {
            terms.push((e(&st[2]), e(count)));
        }
        for (v, extent) in loops {
            terms.push((g.c.offset.stride(*v), e(extent)));
        }
        let Some(mut terms) = terms
            .into_iter()
            .map(|(s, x)| Some((s?.unsigned_abs(), x?)))
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        terms.retain(|&(_, extent)| extent > 1);
        terms.sort_unstable();
        let mut span: u64 = 0;
        terms.into_iter().all(|(stride, extent)| {
            let ok = stride > span;
            span = span.saturating_add(stride.saturating_mul(extent as u64 - 1));
            ok
        })
    })
}

/// `i` with the block index along axis 2 replaced by loop variable `v`.
fn block_z_to_var(i: &Idx, v: VarId) -> Idx {
    i.map_leaves(&|leaf| (*leaf == Idx::Block(2)).then_some(Idx::Var(v)))
}

/// An epilogue `for i0 in 0..m { for i1 in 0..n { body } }` of an unbatched product whose
/// straight-line body touches every buffer it writes only at `C`'s element `(i0, i1)`:
/// `(i0, i1, body)`.
struct Epilogue {
    row: VarId,
    col: VarId,
    body: Vec<Stmt>,
}

fn fusable_epilogue(g: &Gemm, epilogue: &[Stmt]) -> Option<Epilogue> {
    let [Stmt::Loop {
        var: row,
        extent: m,
        body: outer,
        ..
    }] = epilogue
    else {
        return None;
    };
    let [Stmt::Loop {
        var: col,
        extent: n,
        body,
        ..
    }] = outer.as_slice()
    else {
        return None;
    };
    if g.batch.is_some() || *m != g.m || *n != g.n {
        return None;
    }
    let element = g.c.offset.clone()
        + Idx::Var(*row) * g.c.row_stride.clone()
        + Idx::Var(*col) * g.c.col_stride.clone();
    let mut stores = Vec::new();
    for s in body {
        if !matches!(s, Stmt::Assign { .. } | Stmt::Store { .. }) || !stores_of(s, &mut stores) {
            return None;
        }
    }
    let written: HashSet<BufId> = stores.iter().map(|(b, _)| *b).chain([g.c.buf]).collect();
    if written.contains(&g.a.buf) || written.contains(&g.b.buf) {
        return None;
    }
    let loads: Vec<(BufId, Idx)> = body.iter().flat_map(loads_of).collect();
    let at_element = |(b, i): &(BufId, Idx)| !written.contains(b) || *i == element;
    if !stores.iter().all(at_element) || !loads.iter().all(at_element) {
        return None;
    }
    // Each thread runs the epilogue on its own elements: no local may carry a value from
    // one element to the next.
    if !locals_private(body) {
        return None;
    }
    Some(Epilogue {
        row: *row,
        col: *col,
        body: body.clone(),
    })
}

/// The index of element `(row, col)` of a product's matrix `m`, plus `batch` (the offset of
/// the batch entry).
fn element(m: &MatRef, batch: Idx, row: Idx, col: Idx) -> Idx {
    m.offset.clone() + batch + row * m.row_stride.clone() + col * m.col_stride.clone()
}

/// The tiled kernel body of `C = alpha·A·B + beta·C` (see the `gpu` module doc), with the
/// epilogue applied to each stored element; an error (internal: `product_loops_fold`
/// rules it out) when the loops around the product do not fold into the grid.
fn tiled_gemm(
    g: &Gemm,
    loops: &[(VarId, Idx)],
    epilogue: Option<&Epilogue>,
    fresh: &mut Fresh,
) -> Result<(Vec<Stmt>, GpuLaunch), &'static str> {
    // The third grid axis enumerates the enclosing loops' iterations (outermost
    // slowest), then the batch: z = ((v0·E1 + v1)·…)·count + p.
    let count = g.batch.as_ref().map_or(one(), |(c, _)| c.clone());
    let mut z_extent = count.clone();
    let mut g = g.clone();
    let mut inner_size = count.clone();
    for (var, extent) in loops.iter().rev() {
        let value = match (&inner_size, extent) {
            (Idx::Const(d), Idx::Const(e)) => Idx::Block(2).div(*d).rem(*e),
            // An outermost loop of unknown extent takes what is left.
            (Idx::Const(d), _) if loops[0].0 == *var => Idx::Block(2).div(*d),
            // `product_loops_fold` rules this out; the grid would be wrong.
            _ => return Err("a product whose loops do not fold into the grid"),
        };
        g = g.map_indices(&|i| {
            i.map_vars(&|v| {
                if v == *var {
                    value.clone()
                } else {
                    Idx::Var(v)
                }
            })
        });
        z_extent = extent.clone() * z_extent;
        inner_size = extent.clone() * inner_size;
    }
    let batch_index = match &count {
        Idx::Const(1) => Idx::Const(0),
        Idx::Const(c) => Idx::Block(2).rem(*c),
        _ => Idx::Block(2),
    };
    let g = &g;
    let t = Tiling::for_product(&g.m, &g.n, &z_extent);
    let (tile, reg, side, pitch) = (t.tile, t.reg, t.threads_per_side(), t.pitch());
    let threads = i64::from(GEMM_THREADS);
    let a_tile = fresh.shared("a_tile".into(), TILE_K * pitch);
    let b_tile = fresh.shared("b_tile".into(), TILE_K * pitch);
    let (kt, q, kk) = (fresh.var(), fresh.var(), fresh.var());
    let acc: Vec<LocalId> = (0..reg * reg).map(|_| fresh.local()).collect();
    let av: Vec<LocalId> = (0..reg).map(|_| fresh.local()).collect();
    let bv: Vec<LocalId> = (0..reg).map(|_| fresh.local()).collect();
    let (tx, ty) = (Idx::Thread.rem(side), Idx::Thread.div(side));
    let row0 = Idx::Block(1) * tile;
    let col0 = Idx::Block(0) * tile;
    let (sa, sb, sc) = match &g.batch {
        Some((_, s)) => (
            batch_index.clone() * s[0].clone(),
            batch_index.clone() * s[1].clone(),
            batch_index.clone() * s[2].clone(),
        ),
        None => (Idx::Const(0), Idx::Const(0), Idx::Const(0)),
    };
    let mut body: Vec<Stmt> = acc.iter().map(|&l| assign(l, Expr::Const(0.0))).collect();

    // One slice of each operand into shared memory: element e = q·threads + thread of the
    // tile × TILE_K (A) or TILE_K × tile (B) slice; consecutive threads take consecutive
    // addresses of the operand's unit-stride dimension.
    let e = Idx::Var(q) * threads + Idx::Thread;
    let k_of = |e: &Idx, k_fast: bool| {
        if k_fast {
            (e.clone().rem(TILE_K), e.clone().div(TILE_K))
        } else {
            (e.clone().div(tile), e.clone().rem(tile))
        }
    };
    // A[r, kk]: k fastest unless A is stored column-major (row stride 1). A windows
    // operand always takes k fastest: each thread then decomposes one k index per step
    // and its rows once (`windows.rs`).
    let (a_k, a_r) = k_of(&e, g.windows.is_some() || g.a.row_stride != Idx::Const(1));
    let a_row = row0.clone() + a_r.clone();
    let a_kg = Idx::Var(kt) * TILE_K + a_k.clone();
    let mut a_conds = vec![
        lt(a_row.clone(), g.m.clone()),
        lt(a_kg.clone(), g.k.clone()),
    ];
    let a_elem = match &g.windows {
        None => element(&g.a, sa, a_row, a_kg),
        Some(w) => {
            let taps = if w.transposed { &g.m } else { &g.k };
            let (conds, elem) = windows_element(w, &g.a.offset, taps, a_row, a_kg);
            a_conds.extend(conds);
            elem
        }
    };
    let a_slot = a_k * pitch + a_r;
    // B[kk, c]: columns fastest unless B is stored column-major (row stride 1).
    let (b_k, b_c) = k_of(&e, g.b.row_stride == Idx::Const(1));
    let b_col = col0.clone() + b_c.clone();
    let b_kg = Idx::Var(kt) * TILE_K + b_k.clone();
    let b_elem = element(&g.b, sb, b_kg.clone(), b_col.clone());
    let b_slot = b_k * pitch + b_c;
    let fill = |tile: SharedId, slot: Idx, conds: Vec<Cond>, buf: BufId, elem: Idx| {
        vec![
            Stmt::SharedStore {
                buf: tile,
                index: slot.clone(),
                value: Expr::Const(0.0),
            },
            Stmt::If {
                conds,
                body: vec![Stmt::SharedStore {
                    buf: tile,
                    index: slot,
                    value: Expr::Load { buf, index: elem },
                }],
            },
        ]
    };
    let per_thread = tile * TILE_K / threads;
    let mut load = fill(a_tile, a_slot, a_conds, g.a.buf, a_elem);
    load.extend(fill(
        b_tile,
        b_slot,
        vec![lt(b_kg, g.k.clone()), lt(b_col, g.n.clone())],
        g.b.buf,
        b_elem,
    ));
    let mut step = vec![for_(q, per_thread, false, load), Stmt::Barrier];
    // The register block: `reg` values of each tile, `reg²` fused multiply-adds.
    // A's values along the thread's rows (`ty`), B's along its columns (`tx`).
    let mut inner = Vec::new();
    for (regs, buf, lane) in [(&av, a_tile, &ty), (&bv, b_tile, &tx)] {
        for (i, &l) in regs.iter().enumerate() {
            let index = Idx::Var(kk) * pitch + lane.clone() + i as i64 * side;
            inner.push(assign(l, Expr::SharedLoad { buf, index }));
        }
    }
    for i in 0..reg as usize {
        for j in 0..reg as usize {
            let c = acc[i * reg as usize + j];
            let fma = Expr::Fma(
                Box::new(Expr::Local(av[i])),
                Box::new(Expr::Local(bv[j])),
                Box::new(Expr::Local(c)),
            );
            inner.push(assign(c, fma));
        }
    }
    step.push(for_(kk, TILE_K, false, inner));
    step.push(Stmt::Barrier);
    body.push(for_(kt, ceil_div(g.k.clone(), TILE_K), false, step));

    // Store each element of the register block (and run the epilogue on it).
    for i in 0..reg {
        for j in 0..reg {
            let row = row0.clone() + ty.clone() + i * side;
            let col = col0.clone() + tx.clone() + j * side;
            let c_elem = element(&g.c, sc.clone(), row.clone(), col.clone());
            let mut value = Expr::Local(acc[(i * reg + j) as usize]);
            if g.alpha != 1.0 {
                value = combine(BinOp::Mul, Expr::Const(g.alpha), value);
            }
            if g.beta != 0.0 {
                let old = Expr::Load {
                    buf: g.c.buf,
                    index: c_elem.clone(),
                };
                value = combine(
                    BinOp::Add,
                    value,
                    combine(BinOp::Mul, Expr::Const(g.beta), old),
                );
            }
            let mut then = vec![store(g.c.buf, c_elem, value)];
            if let Some(ep) = epilogue {
                let at_row = subst(&ep.body, ep.row, &row);
                then.extend(subst(&at_row, ep.col, &col));
            }
            body.push(Stmt::If {
                conds: vec![lt(row, g.m.clone()), lt(col, g.n.clone())],
                body: then,
            });
        }
    }
    // Products whose z-blocks would write the same elements of C run z in order inside
    // each block instead (a block's tile of C is its own for every z).
    let (body, z_blocks) = if c_cells_disjoint(g, loops) {
        (body, z_extent)
    } else {
        let zv = fresh.var();
        let inner = body
            .iter()
            .map(|s| s.map_indices(&|i| block_z_to_var(i, zv)))
            .collect();
        (vec![for_(zv, z_extent, false, inner)], one())
    };
    let grid = [
        ceil_div(g.n.clone(), tile),
        ceil_div(g.m.clone(), tile),
        z_blocks,
    ];
    Ok((body, fresh.launch(GEMM_THREADS, grid)))
}
