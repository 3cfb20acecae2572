//! Building blocks of the kernels the GPU schedule writes: fresh loop variables, locals
//! and shared arrays, the scheduled kernel record, and small index and expression
//! constructors.

use nnc_kernels::ir::{
    BinOp, CmpOp, Cond, Expr, GpuLaunch, Idx, Kernel, LocalId, SharedDecl, SharedId, Stmt, VarId,
};

/// A kernel like `k` with a new body and launch.
pub(super) fn gpu_kernel(
    k: &Kernel,
    name: String,
    body: Vec<Stmt>,
    fresh: &Fresh,
    launch: GpuLaunch,
) -> Kernel {
    Kernel {
        name,
        params: k.params.clone(),
        body,
        num_vars: fresh.vars,
        num_locals: fresh.locals,
        note: k.note.clone(),
        gpu: Some(launch),
    }
}

/// Allocates new loop variables, locals and shared arrays for a kernel being scheduled.
pub(super) struct Fresh {
    vars: u32,
    locals: u32,
    shared: Vec<SharedDecl>,
}

impl Fresh {
    pub(super) fn new(k: &Kernel) -> Fresh {
        Fresh {
            vars: k.num_vars,
            locals: k.num_locals,
            shared: Vec::new(),
        }
    }

    pub(super) fn var(&mut self) -> VarId {
        self.vars += 1;
        VarId(self.vars - 1)
    }

    pub(super) fn local(&mut self) -> LocalId {
        self.locals += 1;
        LocalId(self.locals - 1)
    }

    pub(super) fn shared(&mut self, name: String, len: i64) -> SharedId {
        self.shared.push(SharedDecl {
            name,
            len: len as u32,
        });
        SharedId(self.shared.len() as u32 - 1)
    }

    pub(super) fn launch(&mut self, threads: u32, grid: [Idx; 3]) -> GpuLaunch {
        GpuLaunch {
            threads,
            grid,
            shared: std::mem::take(&mut self.shared),
        }
    }
}

pub(super) fn lt(a: Idx, b: Idx) -> Cond {
    Cond {
        a,
        op: CmpOp::Lt,
        b,
    }
}

pub(super) fn ceil_div(a: Idx, d: i64) -> Idx {
    (a + (d - 1)).div(d)
}

pub(super) fn one() -> Idx {
    Idx::Const(1)
}

/// `Block(0)·threads + Thread`, the global index of a thread on a one-dimensional grid.
pub(super) fn global_thread(threads: u32) -> Idx {
    Idx::Block(0) * i64::from(threads) + Idx::Thread
}

/// `body` with loop variable `var` replaced by `by`.
pub(super) fn subst(body: &[Stmt], var: VarId, by: &Idx) -> Vec<Stmt> {
    let f = |i: &Idx| i.map_vars(&|v| if v == var { by.clone() } else { Idx::Var(v) });
    body.iter().map(|s| s.map_indices(&f)).collect()
}

pub(super) fn combine(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary(op, Box::new(a), Box::new(b))
}
