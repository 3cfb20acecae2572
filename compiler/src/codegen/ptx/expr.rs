//! Scalar expressions of the kernel IR as f32 LLVM values: loads, arithmetic, selects
//! that evaluate only the chosen side, warp shuffles and the counter-based random numbers.

use inkwell::basic_block::BasicBlock;
use inkwell::intrinsics::Intrinsic;
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::FloatPredicate;
use nnc_kernels::ir::{mix64, BinOp, CmpOp, Expr, Idx, UnOp};

use super::kernel::KernelGen;
use super::{PtxError, R};

impl<'ctx> KernelGen<'_, 'ctx> {
    fn load_f32(&self, ptr: PointerValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self
            .builder
            .build_load(self.f32t, ptr, "")?
            .into_float_value())
    }

    pub(super) fn expr(&self, e: &Expr) -> R<FloatValue<'ctx>> {
        let b = &self.builder;
        Ok(match e {
            Expr::Const(c) => self.fconst(*c),
            Expr::Load { buf, index } => self.load_f32(self.element(*buf, index)?)?,
            Expr::Local(l) => self.load_f32(self.local(*l)?)?,
            Expr::Unary(op, a) => {
                let x = self.expr(a)?;
                match op {
                    UnOp::Neg => b.build_float_neg(x, "")?,
                    UnOp::Abs => self.intrinsic_f32("llvm.fabs", &[x])?,
                    UnOp::Sqrt => self.intrinsic_f32("llvm.sqrt", &[x])?,
                    UnOp::Exp => self.exp(x)?,
                    UnOp::Log => self.log(x)?,
                    UnOp::Tanh => self.tanh(x)?,
                    UnOp::Recip => b.build_float_div(self.fconst(1.0), x, "")?,
                    UnOp::Floor => self.intrinsic_f32("llvm.floor", &[x])?,
                }
            }
            Expr::Binary(BinOp::Pow, x, y) => self.pow(x, y)?,
            Expr::Binary(op, x, y) => {
                let (x, y) = (self.expr(x)?, self.expr(y)?);

                match op {
                    BinOp::Add => b.build_float_add(x, y, "")?,
                    BinOp::Sub => b.build_float_sub(x, y, "")?,
                    BinOp::Mul => b.build_float_mul(x, y, "")?,
                    BinOp::Div => b.build_float_div(x, y, "")?,
                    // `maxnum`/`minnum` ignore a NaN operand, like `f32::max`/`min`.
                    BinOp::Max => self.intrinsic_f32("llvm.maxnum", &[x, y])?,
                    BinOp::Min => self.intrinsic_f32("llvm.minnum", &[x, y])?,
                    BinOp::Pow => self.pow_values(x, y)?,
                }
            }
            Expr::Fma(x, y, z) => {
                let (x, y, z) = (self.expr(x)?, self.expr(y)?, self.expr(z)?);
                self.fma(x, y, z)?
            }
            Expr::Select {
                op,
                a,
                b: rhs,
                then,
                otherwise,
            } => self.select(*op, a, rhs, then, otherwise)?,
            Expr::FromIdx(i) => {
                let v = self.idx(i)?;
                b.build_signed_int_to_float(v, self.f32t, "")?
            }
            Expr::Rand {
                seed,
                key,
                step,
                counter,
            } => self.rand(*seed, *key, step, counter)?,
            Expr::SharedLoad { buf, index } => self.load_f32(self.shared_element(*buf, index)?)?,
            Expr::ShuffleXor { local, lanes } => {
                let i32t = self.ctx.i32_type();
                let ty = self.f32t.fn_type(
                    &[i32t.into(), self.f32t.into(), i32t.into(), i32t.into()],
                    false,
                );
                let f = self.nvvm("llvm.nvvm.shfl.sync.bfly.f32", ty);
                let v = self.load_f32(self.local(*local)?)?;
                let args = [
                    i32t.const_int(0xffff_ffff, false).into(),
                    v.into(),
                    i32t.const_int(u64::from(*lanes), false).into(),
                    i32t.const_int(0x1f, false).into(),
                ];
                self.call(f, &args)?.into_float_value()
            }
        })
    }

    /// `a op b ? then : otherwise`, evaluating only the chosen side.
    fn select(
        &self,
        op: CmpOp,
        a: &Expr,
        rhs: &Expr,
        then: &Expr,
        otherwise: &Expr,
    ) -> R<FloatValue<'ctx>> {
        let (x, y) = (self.expr(a)?, self.expr(rhs)?);
        let pred = match op {
            CmpOp::Lt => FloatPredicate::OLT,
            CmpOp::Le => FloatPredicate::OLE,
            CmpOp::Gt => FloatPredicate::OGT,
            CmpOp::Ge => FloatPredicate::OGE,
            CmpOp::Eq => FloatPredicate::OEQ,
            CmpOp::Ne => FloatPredicate::UNE,
        };
        let c = self.builder.build_float_compare(pred, x, y, "")?;
        let then_bb = self.ctx.append_basic_block(self.function, "sel.then");
        let else_bb = self.ctx.append_basic_block(self.function, "sel.else");
        let join = self.ctx.append_basic_block(self.function, "sel.join");
        self.builder.build_conditional_branch(c, then_bb, else_bb)?;
        // Each side in its block, then on to `join`: its value and the block it ends in.
        let side = |bb: BasicBlock<'ctx>, e: &Expr| -> R<(FloatValue<'ctx>, BasicBlock<'ctx>)> {
            self.builder.position_at_end(bb);
            let v = self.expr(e)?;
            let end = self
                .builder
                .get_insert_block()
                .ok_or_else(|| PtxError("builder lost its block".into()))?;
            self.builder.build_unconditional_branch(join)?;
            Ok((v, end))
        };
        let (tv, then_end) = side(then_bb, then)?;
        let (ev, else_end) = side(else_bb, otherwise)?;
        self.builder.position_at_end(join);
        let phi = self.builder.build_phi(self.f32t, "sel")?;
        phi.add_incoming(&[(&tv, then_end), (&ev, else_end)]);
        Ok(phi.as_basic_value().into_float_value())
    }

    /// [`nnc_kernels::ir::rand_uniform`] in 64-bit integer arithmetic.
    fn rand(&self, seed: u64, key: u64, step: &Expr, counter: &Idx) -> R<FloatValue<'ctx>> {
        let b = &self.builder;
        let c = |v: u64| self.i64t.const_int(v, false);
        // `step.max(0.0) as u64`: NaN and negatives give 0, huge values saturate.
        let s = self.expr(step)?;
        let s = self.intrinsic_f32("llvm.maxnum", &[s, self.fconst(0.0)])?;
        let sat = Intrinsic::find("llvm.fptoui.sat")
            .and_then(|i| i.get_declaration(self.module, &[self.i64t.into(), self.f32t.into()]))
            .ok_or_else(|| PtxError("LLVM has no intrinsic `llvm.fptoui.sat`".into()))?;
        let s = self.call(sat, &[s.into()])?.into_int_value();
        let counter = self.idx(counter)?;
        // The seed and key words are constants: fold them here.
        const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
        let h = mix64(mix64(seed.wrapping_add(GOLDEN)) ^ key.wrapping_add(GOLDEN.wrapping_mul(2)));
        let mix = |z: IntValue<'ctx>| -> R<IntValue<'ctx>> {
            let z = b.build_xor(z, b.build_right_shift(z, c(30), false, "")?, "")?;
            let z = b.build_int_mul(z, c(0xbf58_476d_1ce4_e5b9), "")?;
            let z = b.build_xor(z, b.build_right_shift(z, c(27), false, "")?, "")?;
            let z = b.build_int_mul(z, c(0x94d0_49bb_1331_11eb), "")?;
            Ok(b.build_xor(z, b.build_right_shift(z, c(31), false, "")?, "")?)
        };
        let word = |w: IntValue<'ctx>, i: u64| b.build_int_add(w, c(GOLDEN.wrapping_mul(i)), "");
        let mut z = mix(b.build_xor(c(h), word(s, 3)?, "")?)?;
        z = mix(b.build_xor(z, word(counter, 4)?, "")?)?;
        let top = b.build_right_shift(z, c(40), false, "")?;
        let f = b.build_unsigned_int_to_float(top, self.f32t, "")?;
        Ok(b.build_float_mul(f, self.fconst(1.0 / (1u64 << 24) as f32), "")?)
    }
}
