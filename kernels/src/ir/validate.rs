//! Validation of a kernel program against the invariants listed in the `ir` module doc.

use std::fmt;

use super::{BufId, Expr, Idx, Kernel, Program, SharedId, Stmt, VarId};

/// Why a program breaks an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidProgram(pub String);

impl fmt::Display for InvalidProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid kernel program: {}", self.0)
    }
}

impl std::error::Error for InvalidProgram {}

impl Program {
    /// Checks the invariants listed in the module doc.
    pub fn validate(&self) -> Result<(), InvalidProgram> {
        for k in &self.kernels {
            let mut bound = Vec::new();
            let mut parallel = 0;
            for s in &k.body {
                if let Stmt::Loop { parallel: true, .. } = s {
                    parallel += 1;
                }
                self.validate_stmt(k, s, &mut bound, true)?;
            }
            if parallel > 0 && k.body.len() > 1 {
                return Err(InvalidProgram(format!(
                    "kernel `{}` has a parallel loop beside other top-level statements",
                    k.name
                )));
            }
            if let Some(g) = &k.gpu {
                let err = |m: String| Err(InvalidProgram(format!("kernel `{}`: {m}", k.name)));
                if g.threads == 0 || g.threads % 32 != 0 || g.threads > 1024 {
                    return err(format!(
                        "{} threads per block (a multiple of 32, at most 1024)",
                        g.threads
                    ));
                }
                for i in &g.grid {
                    self.validate_idx(k, i, &[])?;
                    if i.uses_gpu_indices() {
                        return err("the grid size depends on a thread or block index".into());
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_gpu(&self, k: &Kernel, what: &str) -> Result<(), InvalidProgram> {
        if k.gpu.is_none() {
            return Err(InvalidProgram(format!(
                "kernel `{}` uses {what} but is not a GPU kernel",
                k.name
            )));
        }
        Ok(())
    }

    fn validate_shared(&self, k: &Kernel, buf: SharedId) -> Result<(), InvalidProgram> {
        self.validate_gpu(k, "shared memory")?;
        match &k.gpu {
            Some(g) if (buf.0 as usize) < g.shared.len() => Ok(()),
            _ => Err(InvalidProgram(format!(
                "kernel `{}` uses shared array s{} it does not declare",
                k.name, buf.0
            ))),
        }
    }

    fn validate_stmt(
        &self,
        k: &Kernel,
        s: &Stmt,
        bound: &mut Vec<VarId>,
        top: bool,
    ) -> Result<(), InvalidProgram> {
        let err = |m: String| Err(InvalidProgram(format!("kernel `{}`: {m}", k.name)));
        match s {
            Stmt::Loop {
                var,
                extent,
                parallel,
                ..
            } => {
                if *parallel && !top {
                    return err(format!("parallel loop {var:?} is not at the top level"));
                }
                if *parallel && k.gpu.is_some() {
                    return err("a GPU kernel has a parallel loop (threads replace it)".into());
                }
                if var.0 >= k.num_vars || bound.contains(var) {
                    return err(format!("loop variable {var:?} is out of range or rebound"));
                }
                self.validate_idx(k, extent, bound)?;
            }
            Stmt::Store { buf, index, value } => {
                self.validate_buf(k, *buf)?;
                self.validate_idx(k, index, bound)?;
                self.validate_expr(k, value, bound)?;
            }
            Stmt::Assign { local, value } => {
                if local.0 >= k.num_locals {
                    return err(format!("local {local:?} out of range"));
                }
                self.validate_expr(k, value, bound)?;
            }
            Stmt::If { conds, .. } => {
                self.validate_gpu(k, "`if`")?;
                for c in conds {
                    self.validate_idx(k, &c.a, bound)?;
                    self.validate_idx(k, &c.b, bound)?;
                }
            }
            Stmt::SharedStore { buf, index, value } => {
                self.validate_shared(k, *buf)?;
                self.validate_idx(k, index, bound)?;
                self.validate_expr(k, value, bound)?;
            }
            Stmt::Barrier => self.validate_gpu(k, "a barrier")?,
            Stmt::Gemm(_) if k.gpu.is_some() => {
                return err("a GPU kernel holds a `gemm` (the GPU schedule tiles it)".into())
            }
            Stmt::Gemm(g) => {
                for i in [&g.m, &g.n, &g.k] {
                    self.validate_idx(k, i, bound)?;
                }
                for r in [&g.a, &g.b, &g.c] {
                    self.validate_buf(k, r.buf)?;
                    for i in [&r.offset, &r.row_stride, &r.col_stride] {
                        self.validate_idx(k, i, bound)?;
                    }
                }
                if let Some((count, strides)) = &g.batch {
                    self.validate_idx(k, count, bound)?;
                    for i in strides {
                        self.validate_idx(k, i, bound)?;
                    }
                }
                if let Some(w) = &g.windows {
                    w.check()
                        .map_err(|e| InvalidProgram(format!("kernel `{}`: {e}", k.name)))?;
                    self.validate_idx(k, &w.first, bound)?;
                    if g.batch.is_some() {
                        return err("a `gemm` over windows is not batched".into());
                    }
                }
            }
        }
        // The body, with a loop's variable bound inside it.
        let var = match s {
            Stmt::Loop { var, .. } => Some(*var),
            _ => None,
        };
        bound.extend(var);
        for s in s.body().unwrap_or_default() {
            self.validate_stmt(k, s, bound, false)?;
        }
        if var.is_some() {
            bound.pop();
        }
        Ok(())
    }

    fn validate_buf(&self, k: &Kernel, buf: BufId) -> Result<(), InvalidProgram> {
        if buf.0 as usize >= self.buffers.len() || !k.params.contains(&buf) {
            return Err(InvalidProgram(format!(
                "kernel `{}` uses buffer {} it does not list",
                k.name, buf.0
            )));
        }
        Ok(())
    }

    fn validate_idx(&self, k: &Kernel, i: &Idx, bound: &[VarId]) -> Result<(), InvalidProgram> {
        match i {
            Idx::Const(_) | Idx::N => Ok(()),
            Idx::Thread => self.validate_gpu(k, "a thread index"),
            Idx::Block(axis) if *axis < 3 => self.validate_gpu(k, "a block index"),
            Idx::Block(axis) => Err(InvalidProgram(format!(
                "kernel `{}` reads block index axis {axis} (axes are 0, 1, 2)",
                k.name
            ))),
            Idx::Var(v) if bound.contains(v) => Ok(()),
            Idx::Var(v) => Err(InvalidProgram(format!(
                "kernel `{}` reads unbound loop variable {v:?}",
                k.name
            ))),
            Idx::Add(a, b) | Idx::Sub(a, b) | Idx::Mul(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
                self.validate_idx(k, a, bound)?;
                self.validate_idx(k, b, bound)
            }
            Idx::Div(a, c) | Idx::Rem(a, c) => {
                if *c <= 0 {
                    return Err(InvalidProgram(format!(
                        "kernel `{}` divides an index by {c}",
                        k.name
                    )));
                }
                self.validate_idx(k, a, bound)
            }
        }
    }

    fn validate_expr(&self, k: &Kernel, e: &Expr, bound: &[VarId]) -> Result<(), InvalidProgram> {
        match e {
            Expr::Const(_) => Ok(()),
            Expr::Local(l) if l.0 < k.num_locals => Ok(()),
            Expr::Local(l) => Err(InvalidProgram(format!(
                "kernel `{}` reads local {l:?} out of range",
                k.name
            ))),
            Expr::Load { buf, index } => {
                self.validate_buf(k, *buf)?;
                self.validate_idx(k, index, bound)
            }
            Expr::Unary(_, a) => self.validate_expr(k, a, bound),
            Expr::Binary(_, a, b) => {
                self.validate_expr(k, a, bound)?;
                self.validate_expr(k, b, bound)
            }
            Expr::Fma(a, b, c) => {
                self.validate_expr(k, a, bound)?;
                self.validate_expr(k, b, bound)?;
                self.validate_expr(k, c, bound)
            }
            Expr::Select {
                a,
                b,
                then,
                otherwise,
                ..
            } => {
                for x in [a, b, then, otherwise] {
                    self.validate_expr(k, x, bound)?;
                }
                Ok(())
            }
            Expr::FromIdx(i) => self.validate_idx(k, i, bound),
            Expr::Rand { step, counter, .. } => {
                self.validate_expr(k, step, bound)?;
                self.validate_idx(k, counter, bound)
            }
            Expr::SharedLoad { buf, index } => {
                self.validate_shared(k, *buf)?;
                self.validate_idx(k, index, bound)
            }
            Expr::ShuffleXor { local, lanes } => {
                self.validate_gpu(k, "a warp shuffle")?;
                if local.0 >= k.num_locals || *lanes == 0 || *lanes >= 32 {
                    return Err(InvalidProgram(format!(
                        "kernel `{}`: shuffle of local {local:?} with lane mask {lanes} \
                         (the mask must be in 1..32)",
                        k.name
                    )));
                }
                Ok(())
            }
        }
    }
}
