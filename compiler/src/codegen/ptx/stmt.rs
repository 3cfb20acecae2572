//! Statements of the kernel IR as LLVM control flow and stores: loops, `if`s, stores to
//! global and shared memory, barriers.

use inkwell::values::IntValue;
use inkwell::IntPredicate;
use nnc_kernels::ir::{CmpOp, Cond, Stmt};

use super::kernel::KernelGen;
use super::{PtxError, R};

impl<'ctx> KernelGen<'_, 'ctx> {
    pub(super) fn stmt(&mut self, s: &Stmt) -> R<()> {
        match s {
            Stmt::Loop {
                var, extent, body, ..
            } => {
                let end = self.idx(extent)?;
                let slot = self.var(*var)?;
                let zero = self.i64t.const_zero();
                let one = self.i64t.const_int(1, false);
                self.counted_loop(slot, zero, end, one, |gen| {
                    for s in body {
                        gen.stmt(s)?;
                    }
                    Ok(())
                })?;
            }
            Stmt::Store { buf, index, value } => {
                let v = self.expr(value)?;
                let ptr = self.element(*buf, index)?;
                self.builder.build_store(ptr, v)?;
            }
            Stmt::Assign { local, value } => {
                let v = self.expr(value)?;
                let slot = self.local(*local)?;
                self.builder.build_store(slot, v)?;
            }
            Stmt::If { conds, body } => {
                let holds = self.conds(conds)?;
                let then = self.ctx.append_basic_block(self.function, "if.then");
                let done = self.ctx.append_basic_block(self.function, "if.done");
                self.builder.build_conditional_branch(holds, then, done)?;
                self.builder.position_at_end(then);
                for s in body {
                    self.stmt(s)?;
                }
                self.builder.build_unconditional_branch(done)?;
                self.builder.position_at_end(done);
            }
            Stmt::SharedStore { buf, index, value } => {
                let v = self.expr(value)?;
                let ptr = self.shared_element(*buf, index)?;
                self.builder.build_store(ptr, v)?;
            }
            Stmt::Barrier => {
                let ty = self.ctx.void_type().fn_type(&[], false);
                let f = self.nvvm("llvm.nvvm.barrier0", ty);
                self.builder.build_call(f, &[], "")?;
            }
            Stmt::Gemm(_) => {
                return Err(PtxError(format!(
                    "kernel `{}` holds a `gemm` (the GPU schedule tiles products)",
                    self.kernel.name
                )))
            }
        }
        Ok(())
    }

    /// The conjunction of an `if`'s conditions (signed compares of indices).
    fn conds(&self, conds: &[Cond]) -> R<IntValue<'ctx>> {
        let b = &self.builder;
        let mut all = self.ctx.bool_type().const_int(1, false);
        for c in conds {
            let pred = match c.op {
                CmpOp::Lt => IntPredicate::SLT,
                CmpOp::Le => IntPredicate::SLE,
                CmpOp::Gt => IntPredicate::SGT,
                CmpOp::Ge => IntPredicate::SGE,
                CmpOp::Eq => IntPredicate::EQ,
                CmpOp::Ne => IntPredicate::NE,
            };
            let holds = b.build_int_compare(pred, self.idx(&c.a)?, self.idx(&c.b)?, "")?;
            all = b.build_and(all, holds, "")?;
        }
        Ok(all)
    }
}
