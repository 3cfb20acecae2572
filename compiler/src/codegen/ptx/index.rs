//! Index arithmetic and addresses: `Idx` as signed 64-bit integers (floor division),
//! and the element pointers of global buffers and shared arrays.

use inkwell::values::{IntValue, PointerValue};
use inkwell::IntPredicate;
use nnc_kernels::ir::{BufId, Idx, SharedId};

use super::kernel::KernelGen;
use super::{PtxError, R};

impl<'ctx> KernelGen<'_, 'ctx> {
    pub(super) fn shared_element(&self, buf: SharedId, i: &Idx) -> R<PointerValue<'ctx>> {
        let (g, len) = self
            .shared
            .get(buf.0 as usize)
            .copied()
            .ok_or_else(|| PtxError(format!("shared array s{} is not declared", buf.0)))?;
        let i = self.idx(i)?;
        let ty = self.f32t.array_type(len);
        // SAFETY (of the LLVM IR): the simulator checks shared indices are in bounds.
        Ok(unsafe {
            self.builder.build_in_bounds_gep(
                ty,
                g.as_pointer_value(),
                &[self.i64t.const_zero(), i],
                "",
            )?
        })
    }

    fn buffer(&self, b: BufId) -> R<PointerValue<'ctx>> {
        self.bufs
            .get(b.0 as usize)
            .copied()
            .flatten()
            .ok_or_else(|| PtxError(format!("buffer b{} is not a parameter", b.0)))
    }

    fn element_at(&self, b: BufId, i: IntValue<'ctx>) -> R<PointerValue<'ctx>> {
        let base = self.buffer(b)?;
        // SAFETY (of the LLVM IR): indices are in bounds for valid programs, which the
        // interpreter checks; the GEP only computes an address.
        Ok(unsafe {
            self.builder
                .build_in_bounds_gep(self.f32t, base, &[i], "")?
        })
    }

    pub(super) fn element(&self, b: BufId, i: &Idx) -> R<PointerValue<'ctx>> {
        let i = self.idx(i)?;
        self.element_at(b, i)
    }

    pub(super) fn idx(&self, i: &Idx) -> R<IntValue<'ctx>> {
        let b = &self.builder;
        Ok(match i {
            Idx::Const(c) => self.i64t.const_int(*c as u64, true),
            Idx::Var(v) => self.load_i64(self.var(*v)?)?,
            Idx::N => self.n,
            Idx::Thread => self.sreg("tid.x")?,
            Idx::Block(a) => {
                self.sreg(["ctaid.x", "ctaid.y", "ctaid.z"][usize::from(*a).min(2)])?
            }
            Idx::Add(x, y) => b.build_int_add(self.idx(x)?, self.idx(y)?, "")?,
            Idx::Sub(x, y) => b.build_int_sub(self.idx(x)?, self.idx(y)?, "")?,
            Idx::Mul(x, y) => b.build_int_mul(self.idx(x)?, self.idx(y)?, "")?,
            Idx::Div(x, c) | Idx::Rem(x, c) => {
                // Floor division and its non-negative remainder (`div_euclid`,
                // `rem_euclid` for a positive divisor).
                let x = self.idx(x)?;
                let c = self.i64t.const_int(*c as u64, true);
                let q = b.build_int_signed_div(x, c, "")?;
                let r = b.build_int_signed_rem(x, c, "")?;
                let neg = b.build_int_compare(IntPredicate::SLT, r, self.i64t.const_zero(), "")?;
                if matches!(i, Idx::Div(..)) {
                    let q1 = b.build_int_sub(q, self.i64t.const_int(1, false), "")?;
                    b.build_select(neg, q1, q, "")?.into_int_value()
                } else {
                    let r1 = b.build_int_add(r, c, "")?;
                    b.build_select(neg, r1, r, "")?.into_int_value()
                }
            }
            Idx::Min(x, y) | Idx::Max(x, y) => {
                let (x, y) = (self.idx(x)?, self.idx(y)?);
                let pred = if matches!(i, Idx::Min(..)) {
                    IntPredicate::SLT
                } else {
                    IntPredicate::SGT
                };
                let pick = b.build_int_compare(pred, x, y, "")?;
                b.build_select(pick, x, y, "")?.into_int_value()
            }
        })
    }
}
