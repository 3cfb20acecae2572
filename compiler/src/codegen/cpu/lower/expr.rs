//! Scalar expressions and index arithmetic as Cranelift values: addresses of buffer
//! elements, wrapping i64 indices with floor division, f32 arithmetic (transcendentals
//! through [`math`]), and selects that branch when an arm loads memory.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use nnc_kernels::ir::{BinOp, Expr, Idx, UnOp};

use super::{Lower, F32, I64};
use crate::codegen::cpu::{math, CodegenError};
use cranelift_codegen::ir::types::I32;

impl Lower<'_, '_> {
    pub(super) fn base(&self, buf: u32) -> Result<Value, CodegenError> {
        match self.bases.get(buf as usize).copied().flatten() {
            Some(v) => Ok(v),
            None => self.fail(format!("buffer b{buf} is not a parameter")),
        }
    }

    /// `base(buf) + 4·index`.
    pub(super) fn address(&mut self, buf: u32, index: &Idx) -> Result<Value, CodegenError> {
        let base = self.base(buf)?;
        let i = self.idx(index)?;
        let off = self.b.ins().ishl_imm_u(i, 2);
        Ok(self.b.ins().iadd(base, off))
    }

    pub(super) fn idx(&mut self, i: &Idx) -> Result<Value, CodegenError> {
        Ok(match i {
            Idx::Const(c) => self.b.ins().iconst(I64, *c),
            Idx::Var(v) => self.b.use_var(self.vars[v.0 as usize]),
            Idx::N => self.n,
            Idx::Thread | Idx::Block(_) => return self.fail("a GPU index".into()),
            Idx::Add(a, c) => self.idx_op(a, c, |b, x, y| b.ins().iadd(x, y))?,
            Idx::Sub(a, c) => self.idx_op(a, c, |b, x, y| b.ins().isub(x, y))?,
            Idx::Mul(a, c) => self.idx_op(a, c, |b, x, y| b.ins().imul(x, y))?,
            Idx::Min(a, c) => self.idx_op(a, c, |b, x, y| b.ins().smin(x, y))?,
            Idx::Max(a, c) => self.idx_op(a, c, |b, x, y| b.ins().smax(x, y))?,
            Idx::Div(a, c) => {
                let a = self.idx(a)?;
                self.floor_div(a, *c)?
            }
            Idx::Rem(a, c) => {
                let v = self.idx(a)?;
                if *c > 0 && (*c as u64).is_power_of_two() {
                    self.b.ins().band_imm_s(v, *c - 1)
                } else {
                    let q = self.floor_div(v, *c)?;
                    let qc = self.b.ins().imul_imm_s(q, *c);
                    self.b.ins().isub(v, qc)
                }
            }
        })
    }

    /// `op(a, c)` of the two operands' values, `a` evaluated first.
    fn idx_op(
        &mut self,
        a: &Idx,
        c: &Idx,
        op: impl FnOnce(&mut FunctionBuilder<'_>, Value, Value) -> Value,
    ) -> Result<Value, CodegenError> {
        let (a, c) = (self.idx(a)?, self.idx(c)?);
        Ok(op(&mut self.b, a, c))
    }

    /// `a.div_euclid(c)` for a positive constant `c` (floor division).
    fn floor_div(&mut self, a: Value, c: i64) -> Result<Value, CodegenError> {
        if c <= 0 {
            return self.fail(format!("index division by {c}"));
        }
        if (c as u64).is_power_of_two() {
            return Ok(self.b.ins().sshr_imm_u(a, i64::from(c.trailing_zeros())));
        }
        // Truncating division of `a - (c - 1)` equals the floor for negative `a`.
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, a, 0);
        let shifted = self.b.ins().iadd_imm_s(a, 1 - c);
        let num = self.b.ins().select(neg, shifted, a);
        let divisor = self.b.ins().iconst(I64, c);
        Ok(self.b.ins().sdiv(num, divisor))
    }

    pub(super) fn expr(&mut self, e: &Expr) -> Result<Value, CodegenError> {
        Ok(match e {
            Expr::SharedLoad { .. } | Expr::ShuffleXor { .. } => {
                return self.fail("a GPU-only expression".into())
            }
            Expr::Const(c) => self.b.ins().f32const(*c),
            Expr::Load { buf, index } => {
                let addr = self.address(buf.0, index)?;
                self.b.ins().load(F32, MemFlagsData::trusted(), addr, 0)
            }
            Expr::Local(l) => self.b.use_var(self.locals[l.0 as usize]),
            Expr::Unary(op, a) => {
                let a = self.expr(a)?;
                match op {
                    UnOp::Neg => self.b.ins().fneg(a),
                    UnOp::Abs => self.b.ins().fabs(a),
                    UnOp::Sqrt => self.b.ins().sqrt(a),
                    UnOp::Floor => self.b.ins().floor(a),
                    UnOp::Recip => {
                        let one = self.b.ins().f32const(1.0);
                        self.b.ins().fdiv(one, a)
                    }
                    UnOp::Exp => math::exp_f32(&mut self.b, a),
                    UnOp::Log => math::log_f32(&mut self.b, a),
                    UnOp::Tanh => math::tanh_f32(&mut self.b, a),
                }
            }
            Expr::Binary(op, a, c) => {
                let (a, c) = (self.expr(a)?, self.expr(c)?);
                match op {
                    BinOp::Add => self.b.ins().fadd(a, c),
                    BinOp::Sub => self.b.ins().fsub(a, c),
                    BinOp::Mul => self.b.ins().fmul(a, c),
                    BinOp::Div => self.b.ins().fdiv(a, c),
                    BinOp::Max => math::max_ignoring_nan(&mut self.b, a, c),
                    BinOp::Min => math::min_ignoring_nan(&mut self.b, a, c),
                    BinOp::Pow => math::pow_f32(&mut self.b, a, c),
                }
            }
            Expr::Fma(a, m, c) => {
                let (a, m, c) = (self.expr(a)?, self.expr(m)?, self.expr(c)?);
                self.b.ins().fma(a, m, c)
            }
            Expr::Select {
                op,
                a,
                b,
                then,
                otherwise,
            } => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                let cond = self.b.ins().fcmp(float_cc(*op), a, b);
                if then.loads_any() || otherwise.loads_any() {
                    self.branchy_select(cond, then, otherwise)?
                } else {
                    // Bitwise, so that no branch depends on the data (Cranelift lowers an
                    // f32 `select` on x86 as a jump around a move).
                    let (t, o) = (self.expr(then)?, self.expr(otherwise)?);
                    let mask = self.b.ins().bmask(I32, cond);
                    let flags = MemFlagsData::new();
                    let ti = self.b.ins().bitcast(I32, flags, t);
                    let oi = self.b.ins().bitcast(I32, flags, o);
                    let keep = self.b.ins().band(ti, mask);
                    let other = self.b.ins().band_not(oi, mask);
                    let bits = self.b.ins().bor(keep, other);
                    self.b.ins().bitcast(F32, flags, bits)
                }
            }
            Expr::FromIdx(i) => {
                let i = self.idx(i)?;
                self.b.ins().fcvt_from_sint(F32, i)
            }
            Expr::Rand {
                seed,
                key,
                step,
                counter,
            } => {
                let step = self.expr(step)?;
                let counter = self.idx(counter)?;
                math::rand_uniform(&mut self.b, *seed, *key, step, counter)
            }
        })
    }

    /// `cond ? then : otherwise`, evaluating only the arm taken.
    fn branchy_select(
        &mut self,
        cond: Value,
        then: &Expr,
        otherwise: &Expr,
    ) -> Result<Value, CodegenError> {
        let then_block = self.b.create_block();
        let else_block = self.b.create_block();
        let merge = self.b.create_block();
        let result = self.b.append_block_param(merge, F32);
        self.b.ins().brif(cond, then_block, &[], else_block, &[]);
        self.b.switch_to_block(then_block);
        let t = self.expr(then)?;
        self.b.ins().jump(merge, &[t.into()]);
        self.b.switch_to_block(else_block);
        let o = self.expr(otherwise)?;
        self.b.ins().jump(merge, &[o.into()]);
        self.b.switch_to_block(merge);
        Ok(result)
    }
}

/// The ordered comparisons of the IR (false on NaN), and `Ne` (true on NaN).
pub(super) fn float_cc(op: nnc_kernels::ir::CmpOp) -> FloatCC {
    use nnc_kernels::ir::CmpOp;
    match op {
        CmpOp::Lt => FloatCC::LessThan,
        CmpOp::Le => FloatCC::LessThanOrEqual,
        CmpOp::Gt => FloatCC::GreaterThan,
        CmpOp::Ge => FloatCC::GreaterThanOrEqual,
        CmpOp::Eq => FloatCC::Equal,
        CmpOp::Ne => FloatCC::NotEqual,
    }
}
