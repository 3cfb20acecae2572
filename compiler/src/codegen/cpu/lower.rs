//! Lowering of one kernel to a Cranelift function.
//!
//! Shape: the entry block loads every buffer's base pointer from `bufs` once; loop
//! variables and locals are `cranelift_frontend::Variable`s (locals start at 0.0, as the
//! IR requires), so SSA construction is Cranelift's job. A loop is
//! `header: i < extent ? body : exit`, the extent being evaluated once before the loop.
//! Index arithmetic is wrapping i64, as in the interpreter; `Div`/`Rem` by a positive
//! constant use floor semantics (`div_euclid`/`rem_euclid`), as shifts and masks for
//! powers of two. A `Select` whose arms load memory branches, so that the arm not taken
//! never reads (it may be out of bounds, exactly as in the interpreter); other selects are
//! a `select` instruction.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, Endianness, Function, InstBuilder, MemFlagsData, Signature, StackSlotData,
    StackSlotKind, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use nnc_kernels::abi::KernelCtx;
use nnc_kernels::ir::{
    BinOp, BufId, Expr, Gemm, Idx, Kernel, LocalId, MatRef, Program, Stmt, UnOp, VarId,
};

use super::math;
use super::CodegenError;

const I64: types::Type = types::I64;
const F32: types::Type = types::F32;

/// `(ctx, bufs, n, start, end)`, all pointer-sized integers, no result.
pub(super) fn kernel_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..5 {
        sig.params.push(AbiParam::new(I64));
    }
    sig
}

/// The signature of `KernelCtx::sgemm` (`usize`/`isize`/pointers are i64 here).
fn sgemm_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    let mut push = |t| sig.params.push(AbiParam::new(t));
    for t in [
        I64, I64, I64, F32, I64, I64, I64, I64, I64, I64, F32, I64, I64, I64,
    ] {
        push(t);
    }
    sig
}

/// Builds the Cranelift function of `kernel` (not yet optimised).
pub(super) fn lower_kernel(
    program: &Program,
    kernel: &Kernel,
    isa: &dyn TargetIsa,
    fctx: &mut FunctionBuilderContext,
) -> Result<Function, CodegenError> {
    if isa.pointer_type() != I64 {
        return Err(CodegenError(format!(
            "the CPU backend needs a 64-bit target, the host has {}-bit pointers",
            isa.pointer_type().bits()
        )));
    }
    if kernel.gpu.is_some() {
        return Err(CodegenError(format!(
            "kernel `{}` is a GPU kernel; the CPU backend takes the CPU schedule's kernels",
            kernel.name
        )));
    }
    let call_conv = isa.default_call_conv();
    let mut func =
        Function::with_name_signature(UserFuncName::default(), kernel_signature(call_conv));
    let mut b = FunctionBuilder::new(&mut func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (ctx, bufs, n, start, end) = (params[0], params[1], params[2], params[3], params[4]);

    let mut bases = vec![None; program.buffers.len()];
    for (i, buf) in kernel.params.iter().enumerate() {
        let p = b
            .ins()
            .load(I64, MemFlagsData::trusted(), bufs, (8 * i) as i32);
        bases[buf.0 as usize] = Some(p);
    }
    let vars = (0..kernel.num_vars).map(|_| b.declare_var(I64)).collect();
    let zero = b.ins().f32const(0.0);
    let locals: Vec<Variable> = (0..kernel.num_locals)
        .map(|_| {
            let v = b.declare_var(F32);
            b.def_var(v, zero);
            v
        })
        .collect();
    let sgemm_sig = b.import_signature(sgemm_signature(call_conv));

    let mut l = Lower {
        b,
        bases,
        vars,
        vlocals: vec![None; locals.len()],
        vptrs: std::collections::HashMap::new(),
        vcopy: 0,
        locals,
        ctx,
        n,
        sgemm_sig,
        kernel,
    };
    for s in &kernel.body {
        match s {
            Stmt::Loop {
                var,
                extent,
                body,
                parallel: true,
            } => {
                let extent = l.idx(extent)?;
                let zero = l.b.ins().iconst(I64, 0);
                let lo = l.b.ins().smax(start, zero);
                let hi = l.b.ins().smin(end, extent);
                l.lower_loop(*var, lo, hi, body)?;
            }
            s => l.stmt(s)?,
        }
    }
    l.b.ins().return_(&[]);
    l.b.seal_all_blocks();
    l.b.finalize(isa.frontend_config());
    Ok(func)
}

struct Lower<'f, 'k> {
    b: FunctionBuilder<'f>,
    /// Base pointer of each program buffer this kernel lists (by `BufId`).
    bases: Vec<Option<Value>>,
    vars: Vec<Variable>,
    locals: Vec<Variable>,
    /// The f32x4 value of each loop-private local while a vector loop body is lowered
    /// (`None` outside it, and for locals the body does not assign: those are splats).
    vlocals: Vec<Option<Value>>,
    /// While a vector loop body is lowered: `&buf[f(0)]` of each unit-stride access
    /// `buf[f(var)]`, computed before the loop.
    vptrs: std::collections::HashMap<(u32, Idx), Value>,
    /// Which copy of an unrolled vector body is being lowered (lanes `var + 4·vcopy ..`).
    vcopy: i32,
    ctx: Value,
    n: Value,
    sgemm_sig: cranelift_codegen::ir::SigRef,
    kernel: &'k Kernel,
}

impl Lower<'_, '_> {
    fn fail<T>(&self, msg: String) -> Result<T, CodegenError> {
        Err(CodegenError(format!(
            "kernel `{}`: {msg}",
            self.kernel.name
        )))
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        for (i, s) in body.iter().enumerate() {
            match s {
                // A value computed before a loop (a hoisted invariant) goes through a
                // stack slot: Cranelift's egraph would otherwise re-elaborate the pure
                // arithmetic at its uses, i.e. sink it back into the loop.
                Stmt::Assign { local, value }
                    if body[i + 1..].iter().any(|s| matches!(s, Stmt::Loop { .. })) =>
                {
                    let v = self.expr(value)?;
                    let v = self.opaque(v, types::F32);
                    self.b.def_var(self.locals[local.0 as usize], v);
                }
                s => self.stmt(s)?,
            }
        }
        Ok(())
    }

    /// `v` (of type `ty`) through a stack slot: the reloaded value is opaque to
    /// Cranelift's egraph, which would otherwise re-elaborate pure arithmetic at its uses
    /// and so sink values computed before a loop back into it.
    fn opaque(&mut self, v: Value, ty: types::Type) -> Value {
        let size = ty.bytes();
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            size,
            size.trailing_zeros() as u8,
        ));
        self.b.ins().stack_store(types::I64, v, slot, 0);
        self.b.ins().stack_load(types::I64, ty, slot, 0)
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), CodegenError> {
        match s {
            Stmt::Loop {
                var, extent, body, ..
            } => {
                let hi = self.idx(extent)?;
                let lo = self.b.ins().iconst(I64, 0);
                self.lower_loop(*var, lo, hi, body)
            }
            Stmt::If { .. } | Stmt::SharedStore { .. } | Stmt::Barrier => {
                self.fail("a GPU-only statement".into())
            }
            Stmt::Store { buf, index, value } => {
                let v = self.expr(value)?;
                let addr = self.address(buf.0, index)?;
                self.b.ins().store(MemFlagsData::trusted(), v, addr, 0);
                Ok(())
            }
            Stmt::Assign { local, value } => {
                let v = self.expr(value)?;
                self.b.def_var(self.locals[local.0 as usize], v);
                Ok(())
            }
            Stmt::Gemm(g) => self.gemm(g),
        }
    }

    /// `for var in lo..hi { body }`, vectorised by 4 when [`vectorisable`] allows.
    fn lower_loop(
        &mut self,
        var: VarId,
        lo: Value,
        hi: Value,
        body: &[Stmt],
    ) -> Result<(), CodegenError> {
        let v = self.vars[var.0 as usize];
        if !vectorisable(var, body) || self.locals_escape(body) {
            return self.counted_loop(v, lo, hi, |l| l.stmts(body));
        }
        // Every unit-stride access `buf[f(var)]` becomes `p + 4·var` with `p = &buf[f(0)]`
        // computed once here: the index arithmetic of the outer loops (row offsets, the
        // row split's `min`) leaves the loop.
        let zero = self.b.ins().iconst(I64, 0);
        self.b.def_var(v, zero);
        let mut accesses: Vec<(u32, Idx)> = Vec::new();
        for s in body {
            let value = match s {
                Stmt::Store { buf, index, value } => {
                    accesses.push((buf.0, index.clone()));
                    value
                }
                Stmt::Assign { value, .. } => value,
                _ => continue,
            };
            value.for_each_load(&mut |b, i| {
                if i.stride(var) == Some(1) {
                    accesses.push((b.0, i.clone()));
                }
            });
        }
        self.vptrs.clear();
        for (buf, index) in accesses {
            if !self.vptrs.contains_key(&(buf, index.clone())) {
                let p = self.address(buf, &index)?;
                let p = self.opaque(p, I64);
                self.vptrs.insert((buf, index), p);
            }
        }
        self.b.def_var(v, lo);
        // Two copies of the body per iteration (8 lanes: independent chains of `sqrt` and
        // `div` overlap), then one (4 lanes), then the scalar loop finishes.
        for copies in [2, 1] {
            let header = self.b.create_block();
            let body_block = self.b.create_block();
            let exit = self.b.create_block();
            self.b.ins().jump(header, &[]);
            self.b.switch_to_block(header);
            let i = self.b.use_var(v);
            let end = self.b.ins().iadd_imm_s(i, LANES * copies);
            let more = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, end, hi);
            self.b.ins().brif(more, body_block, &[], exit, &[]);
            self.b.switch_to_block(body_block);
            for copy in 0..copies {
                self.vcopy = copy as i32;
                for s in body {
                    match s {
                        Stmt::Store { buf, index, value } => {
                            let x = self.vexpr(var, value)?;
                            let (addr, off) = self.vaddress(var, buf.0, index)?;
                            self.b.ins().store(vector_flags(), x, addr, off);
                        }
                        Stmt::Assign { local, value } => {
                            let x = self.vexpr(var, value)?;
                            self.vlocals[local.0 as usize] = Some(x);
                        }
                        _ => {
                            return self
                                .fail("a vectorised loop body holds a loop or a gemm".into())
                        }
                    }
                }
                self.vlocals.fill(None);
            }
            let i = self.b.use_var(v);
            let next = self.b.ins().iadd_imm_s(i, LANES * copies);
            self.b.def_var(v, next);
            self.b.ins().jump(header, &[]);
            self.b.switch_to_block(exit);
        }
        self.vptrs.clear();
        self.vcopy = 0;
        let rest = self.b.use_var(v);
        self.counted_loop(v, rest, hi, |l| l.stmts(body))
    }

    /// The address of lanes `var + 4·copy ..` of a unit-stride access, as a base value and
    /// a constant byte offset.
    fn vaddress(
        &mut self,
        var: VarId,
        buf: u32,
        index: &Idx,
    ) -> Result<(Value, i32), CodegenError> {
        let Some(p) = self.vptrs.get(&(buf, index.clone())).copied() else {
            return self.fail(format!("no row pointer for a unit-stride access of b{buf}"));
        };
        let i = self.b.use_var(self.vars[var.0 as usize]);
        let bytes = self.b.ins().ishl_imm_u(i, 2);
        Ok((self.b.ins().iadd(p, bytes), 16 * self.vcopy))
    }

    /// Whether a local assigned in the loop `body` is read anywhere in the kernel outside
    /// that body. The vector loop keeps such locals in vector registers only and the scalar
    /// remainder (which may run zero times) is what defines the scalar variables, so a read
    /// after the loop could see a stale value: such loops stay scalar.
    fn locals_escape(&self, body: &[Stmt]) -> bool {
        let assigned = assigned_locals(body);
        !assigned.is_empty() && reads_outside(&self.kernel.body, body, &assigned)
    }

    /// The f32x4 value of `e` for lanes `var .. var + 4` (`e` passed [`vector_expr_ok`]).
    fn vexpr(&mut self, var: VarId, e: &Expr) -> Result<Value, CodegenError> {
        Ok(match e {
            Expr::Load { buf, index } if index.stride(var) == Some(1) => {
                let (addr, off) = self.vaddress(var, buf.0, index)?;
                self.b.ins().load(F32X4, vector_flags(), addr, off)
            }
            Expr::Local(l) if self.vlocals[l.0 as usize].is_some() => {
                self.vlocals[l.0 as usize].expect("checked by the guard")
            }
            Expr::Const(_) | Expr::Local(_) | Expr::Load { .. } => {
                let x = self.expr(e)?;
                self.b.ins().splat(F32X4, x)
            }
            Expr::Unary(op, a) => {
                let a = self.vexpr(var, a)?;
                match op {
                    UnOp::Neg => self.b.ins().fneg(a),
                    UnOp::Abs => self.b.ins().fabs(a),
                    UnOp::Sqrt => self.b.ins().sqrt(a),
                    UnOp::Floor => self.b.ins().floor(a),
                    UnOp::Recip => {
                        let one = self.b.ins().f32const(1.0);
                        let one = self.b.ins().splat(F32X4, one);
                        self.b.ins().fdiv(one, a)
                    }
                    UnOp::Exp | UnOp::Log | UnOp::Tanh => {
                        return self.fail(format!("no vector form of {}", op.name()))
                    }
                }
            }
            Expr::Binary(op, a, c) => {
                let (a, c) = (self.vexpr(var, a)?, self.vexpr(var, c)?);
                match op {
                    BinOp::Add => self.b.ins().fadd(a, c),
                    BinOp::Sub => self.b.ins().fsub(a, c),
                    BinOp::Mul => self.b.ins().fmul(a, c),
                    BinOp::Div => self.b.ins().fdiv(a, c),
                    BinOp::Max => self.vpick(FloatCC::GreaterThan, a, c),
                    BinOp::Min => self.vpick(FloatCC::LessThan, a, c),
                    BinOp::Pow => return self.fail("no vector form of pow".into()),
                }
            }
            Expr::Fma(a, m, c) => {
                let (a, m, c) = (
                    self.vexpr(var, a)?,
                    self.vexpr(var, m)?,
                    self.vexpr(var, c)?,
                );
                self.b.ins().fma(a, m, c)
            }
            Expr::Select {
                op,
                a,
                b,
                then,
                otherwise,
            } => {
                let (a, b) = (self.vexpr(var, a)?, self.vexpr(var, b)?);
                let (t, o) = (self.vexpr(var, then)?, self.vexpr(var, otherwise)?);
                let mask = self.b.ins().fcmp(float_cc(*op), a, b);
                let mask = self.b.ins().bitcast(F32X4, vector_bitcast(), mask);
                self.b.ins().bitselect(mask, t, o)
            }
            Expr::FromIdx(_)
            | Expr::Rand { .. }
            | Expr::SharedLoad { .. }
            | Expr::ShuffleXor { .. } => {
                return self.fail("no vector form of this expression".into())
            }
        })
    }

    /// Lane-wise `f32::max`/`f32::min` (`cc` picks `a`; a NaN operand yields the other).
    fn vpick(&mut self, cc: FloatCC, a: Value, c: Value) -> Value {
        let take_a = self.b.ins().fcmp(cc, a, c);
        let take_a = self.b.ins().bitcast(F32X4, vector_bitcast(), take_a);
        let m = self.b.ins().bitselect(take_a, a, c);
        let c_nan = self.b.ins().fcmp(FloatCC::Unordered, c, c);
        let c_nan = self.b.ins().bitcast(F32X4, vector_bitcast(), c_nan);
        self.b.ins().bitselect(c_nan, a, m)
    }

    /// `for var in lo..hi { body }` (nothing when `hi <= lo`).
    fn counted_loop(
        &mut self,
        var: Variable,
        lo: Value,
        hi: Value,
        body: impl FnOnce(&mut Self) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.def_var(var, lo);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(var);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(more, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self)?;
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    fn base(&self, buf: u32) -> Result<Value, CodegenError> {
        match self.bases.get(buf as usize).copied().flatten() {
            Some(v) => Ok(v),
            None => self.fail(format!("buffer b{buf} is not a parameter")),
        }
    }

    /// `base(buf) + 4·index`.
    fn address(&mut self, buf: u32, index: &Idx) -> Result<Value, CodegenError> {
        let base = self.base(buf)?;
        let i = self.idx(index)?;
        let off = self.b.ins().ishl_imm_u(i, 2);
        Ok(self.b.ins().iadd(base, off))
    }

    fn idx(&mut self, i: &Idx) -> Result<Value, CodegenError> {
        Ok(match i {
            Idx::Const(c) => self.b.ins().iconst(I64, *c),
            Idx::Var(v) => self.b.use_var(self.vars[v.0 as usize]),
            Idx::N => self.n,
            Idx::Thread | Idx::Block(_) => return self.fail("a GPU index".into()),
            Idx::Add(a, c) => {
                let (a, c) = (self.idx(a)?, self.idx(c)?);
                self.b.ins().iadd(a, c)
            }
            Idx::Sub(a, c) => {
                let (a, c) = (self.idx(a)?, self.idx(c)?);
                self.b.ins().isub(a, c)
            }
            Idx::Mul(a, c) => {
                let (a, c) = (self.idx(a)?, self.idx(c)?);
                self.b.ins().imul(a, c)
            }
            Idx::Min(a, c) => {
                let (a, c) = (self.idx(a)?, self.idx(c)?);
                self.b.ins().smin(a, c)
            }
            Idx::Max(a, c) => {
                let (a, c) = (self.idx(a)?, self.idx(c)?);
                self.b.ins().smax(a, c)
            }
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

    fn expr(&mut self, e: &Expr) -> Result<Value, CodegenError> {
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
                    let (t, o) = (self.expr(then)?, self.expr(otherwise)?);
                    self.b.ins().select(cond, t, o)
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

    /// `base(m.buf) + 4·(offset + batch_offset)` and the two strides.
    fn matrix(&mut self, m: &MatRef, batch_offset: Value) -> Result<[Value; 3], CodegenError> {
        let off = self.idx(&m.offset)?;
        let off = self.b.ins().iadd(off, batch_offset);
        let bytes = self.b.ins().ishl_imm_u(off, 2);
        let base = self.base(m.buf.0)?;
        let ptr = self.b.ins().iadd(base, bytes);
        Ok([ptr, self.idx(&m.row_stride)?, self.idx(&m.col_stride)?])
    }

    fn gemm(&mut self, g: &Gemm) -> Result<(), CodegenError> {
        let zero = self.b.ins().iconst(I64, 0);
        let m = self.idx(&g.m)?;
        let n = self.idx(&g.n)?;
        let k = self.idx(&g.k)?;
        // Negative sizes mean an empty product, as in the interpreter's loops.
        let dims = [m, n, k].map(|d| self.b.ins().smax(d, zero));
        let call = |l: &mut Self, p: Value, strides: [Value; 3]| -> Result<(), CodegenError> {
            let mut offs = [zero; 3];
            for (o, s) in offs.iter_mut().zip(strides) {
                *o = l.b.ins().imul(p, s);
            }
            let [a, ra, ca] = l.matrix(&g.a, offs[0])?;
            let [b, rb, cb] = l.matrix(&g.b, offs[1])?;
            let [c, rc, cc] = l.matrix(&g.c, offs[2])?;
            let alpha = l.b.ins().f32const(g.alpha);
            let beta = l.b.ins().f32const(g.beta);
            let f = l.b.ins().load(
                I64,
                MemFlagsData::trusted(),
                l.ctx,
                std::mem::offset_of!(KernelCtx, sgemm) as i32,
            );
            let args = [
                dims[0], dims[1], dims[2], alpha, a, ra, ca, b, rb, cb, beta, c, rc, cc,
            ];
            l.b.ins().call_indirect(l.sgemm_sig, f, &args);
            Ok(())
        };
        match &g.batch {
            None => call(self, zero, [zero; 3]),
            Some((count, strides)) => {
                let count = self.idx(count)?;
                let strides = [
                    self.idx(&strides[0])?,
                    self.idx(&strides[1])?,
                    self.idx(&strides[2])?,
                ];
                let p = self.b.declare_var(I64);
                self.counted_loop(p, zero, count, |l| {
                    let pv = l.b.use_var(p);
                    call(l, pv, strides)
                })
            }
        }
    }
}

const LANES: i64 = 4;
const F32X4: types::Type = types::F32X4;

/// Vector loads and stores: never trapping, but only 4-byte aligned.
fn vector_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

fn vector_bitcast() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// The locals the statements of `body` (not of nested loops) assign.
fn assigned_locals(body: &[Stmt]) -> Vec<LocalId> {
    body.iter()
        .filter_map(|s| match s {
            Stmt::Assign { local, .. } => Some(*local),
            _ => None,
        })
        .collect()
}

/// Whether a loop over `var` can run four iterations at once: its body is only stores at
/// unit stride and assignments of loop-private locals, all of [`vector_expr_ok`] values;
/// no buffer it stores is read at any other index than the one stored (so lanes never
/// depend on each other); and every local it assigns is assigned in the body before any
/// read of it in the body (so no value flows from one iteration to the next; an
/// accumulator keeps the loop scalar). Distinct buffers are assumed not to overlap, as the
/// runtime allocates them. Whether such locals are read after the loop is checked
/// separately ([`Lower::locals_escape`]).
fn vectorisable(var: VarId, body: &[Stmt]) -> bool {
    let mut stores: Vec<(BufId, &Idx)> = Vec::new();
    let mut values: Vec<&Expr> = Vec::new();
    let assigned = assigned_locals(body);
    let mut defined: Vec<LocalId> = Vec::new();
    for s in body {
        if let Stmt::Store { buf, index, .. } = s {
            if index.stride(var) != Some(1) {
                return false;
            }
            stores.push((*buf, index));
        }
    }
    for s in body {
        let value = match s {
            Stmt::Store { value, .. } | Stmt::Assign { value, .. } => value,
            _ => return false,
        };
        if !vector_expr_ok(value, var, &stores) {
            return false;
        }
        let mut private = true;
        value.for_each_local(&mut |l| {
            private &= !assigned.contains(&l) || defined.contains(&l);
        });
        if !private {
            return false;
        }
        if let Stmt::Assign { local, .. } = s {
            defined.push(*local);
        }
        values.push(value);
    }
    if stores.is_empty() {
        return false;
    }
    stores.iter().all(|(buf, index)| {
        stores.iter().all(|(b2, i2)| b2 != buf || i2 == index)
            && values
                .iter()
                .all(|v| v.all_loads(|b, i| b != *buf || i == *index))
    })
}

/// Whether a statement of `stmts`, outside the loop whose body is `body`, reads one of
/// `locals`.
fn reads_outside(stmts: &[Stmt], body: &[Stmt], locals: &[LocalId]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::Loop { body: b, .. } => {
            !std::ptr::eq(b.as_slice(), body) && reads_outside(b, body, locals)
        }
        Stmt::Store { value, .. } | Stmt::Assign { value, .. } => {
            let mut reads = false;
            value.for_each_local(&mut |l| reads |= locals.contains(&l));
            reads
        }
        Stmt::Gemm(_) | Stmt::Barrier => false,
        Stmt::If { .. } | Stmt::SharedStore { .. } => true,
    })
}

/// Whether `e` has a lane-wise f32x4 form: loads at stride 0 or 1, arithmetic, min/max,
/// fma and selects without loads in their arms (transcendentals, `pow`, `FromIdx` and
/// `Rand` stay scalar for now).
fn vector_expr_ok(e: &Expr, var: VarId, stores: &[(BufId, &Idx)]) -> bool {
    let ok = |x: &Expr| vector_expr_ok(x, var, stores);
    match e {
        Expr::Const(_) | Expr::Local(_) => true,
        Expr::Load { index, .. } => matches!(index.stride(var), Some(0 | 1)),
        Expr::Unary(op, a) => !matches!(op, UnOp::Exp | UnOp::Log | UnOp::Tanh) && ok(a),
        Expr::Binary(op, a, b) => *op != BinOp::Pow && ok(a) && ok(b),
        Expr::Fma(a, b, c) => [a, b, c].iter().all(|x| ok(x)),
        // Lanes evaluate both sides, so a side may load only where the body stores anyway
        // (always in range): a select can guard an out-of-range load (padding).
        Expr::Select {
            a,
            b,
            then,
            otherwise,
            ..
        } => {
            [then, otherwise]
                .iter()
                .all(|x| x.all_loads(|b, i| stores.iter().any(|(sb, si)| *sb == b && *si == i)))
                && [a, b, then, otherwise].iter().all(|x| ok(x))
        }
        Expr::FromIdx(_)
        | Expr::Rand { .. }
        | Expr::SharedLoad { .. }
        | Expr::ShuffleXor { .. } => false,
    }
}

/// The ordered comparisons of the IR (false on NaN), and `Ne` (true on NaN).
fn float_cc(op: nnc_kernels::ir::CmpOp) -> FloatCC {
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
