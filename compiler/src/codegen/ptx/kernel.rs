//! One kernel's `.entry` function: its parameters, the stack slots of its loop variables
//! and locals, its shared arrays, and the builder helpers (special registers, counted
//! loops, calls) the translation of its body uses.

use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{FloatType, IntType};
use inkwell::values::{BasicMetadataValueEnum, FunctionValue, GlobalValue, IntValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};
use nnc_kernels::ir::{Kernel, LocalId, VarId};

use super::{is_ptx_identifier, BvE, PtxError, PTX_KERNEL_CC, R};

/// Translates one kernel into one `.entry` function.
pub(super) struct KernelGen<'a, 'ctx> {
    pub(super) ctx: &'ctx Context,
    pub(super) module: &'a Module<'ctx>,
    pub(super) builder: Builder<'ctx>,
    pub(super) kernel: &'a Kernel,
    pub(super) function: FunctionValue<'ctx>,
    pub(super) f32t: FloatType<'ctx>,
    pub(super) i64t: IntType<'ctx>,
    /// Base pointer of each buffer, indexed by `BufId` (only the kernel's params set).
    pub(super) bufs: Vec<Option<PointerValue<'ctx>>>,
    pub(super) n: IntValue<'ctx>,
    pub(super) vars: Vec<PointerValue<'ctx>>,
    pub(super) locals: Vec<PointerValue<'ctx>>,
    /// The kernel's shared arrays and their lengths.
    pub(super) shared: Vec<(GlobalValue<'ctx>, u32)>,
}

impl<'a, 'ctx> KernelGen<'a, 'ctx> {
    pub(super) fn new(ctx: &'ctx Context, module: &'a Module<'ctx>, kernel: &'a Kernel) -> R<Self> {
        if !is_ptx_identifier(&kernel.name) {
            return Err(PtxError(format!(
                "kernel name `{}` is not a PTX identifier",
                kernel.name
            )));
        }
        let f32t = ctx.f32_type();
        let i64t = ctx.i64_type();
        let global_ptr = ctx.ptr_type(AddressSpace::from(1u16));
        let mut params: Vec<_> = kernel.params.iter().map(|_| global_ptr.into()).collect();
        params.push(i64t.into());
        let fn_type = ctx.void_type().fn_type(&params, false);
        let function = module.add_function(&kernel.name, fn_type, None);
        function.set_call_conventions(PTX_KERNEL_CC);
        let builder = ctx.create_builder();
        let entry = ctx.append_basic_block(function, "entry");
        builder.position_at_end(entry);
        let max_buf = kernel.params.iter().map(|b| b.0 as usize + 1).max();
        let mut bufs = vec![None; max_buf.unwrap_or(0)];
        for (p, b) in kernel.params.iter().enumerate() {
            let v = function
                .get_nth_param(p as u32)
                .ok_or_else(|| PtxError("missing parameter".into()))?
                .into_pointer_value();
            v.set_name(&format!("b{}", b.0));
            bufs[b.0 as usize] = Some(v);
        }
        let n = function
            .get_nth_param(kernel.params.len() as u32)
            .ok_or_else(|| PtxError("missing parameter".into()))?
            .into_int_value();
        n.set_name("n");
        let mut vars = Vec::new();
        for v in 0..kernel.num_vars {
            vars.push(builder.build_alloca(i64t, &format!("i{v}"))?);
        }
        let mut locals = Vec::new();
        for l in 0..kernel.num_locals {
            let slot = builder.build_alloca(f32t, &format!("acc{l}"))?;
            builder.build_store(slot, f32t.const_zero())?;
            locals.push(slot);
        }
        let mut shared = Vec::new();
        for (i, d) in kernel.gpu.iter().flat_map(|g| &g.shared).enumerate() {
            let ty = f32t.array_type(d.len);
            let name = format!("{}_s{i}", kernel.name);
            let g = module.add_global(ty, Some(AddressSpace::from(3u16)), &name);
            g.set_linkage(Linkage::Internal);
            g.set_initializer(&ty.get_undef());
            g.set_alignment(16);
            shared.push((g, d.len));
        }
        Ok(KernelGen {
            ctx,
            module,
            builder,
            kernel,
            function,
            f32t,
            i64t,
            bufs,
            n,
            vars,
            locals,
            shared,
        })
    }

    pub(super) fn emit(mut self) -> R<()> {
        for s in &self.kernel.body {
            self.stmt(s)?;
        }
        self.builder.build_return(None)?;
        Ok(())
    }

    /// An intrinsic without overloads, declared on first use.
    pub(super) fn nvvm(
        &self,
        name: &str,
        ty: inkwell::types::FunctionType<'ctx>,
    ) -> FunctionValue<'ctx> {
        match self.module.get_function(name) {
            Some(f) => f,
            None => self.module.add_function(name, ty, None),
        }
    }

    pub(super) fn sreg(&self, name: &str) -> R<IntValue<'ctx>> {
        let ty = self.ctx.i32_type().fn_type(&[], false);
        let f = self.nvvm(&format!("llvm.nvvm.read.ptx.sreg.{name}"), ty);
        let v = self.call(f, &[])?.into_int_value();
        Ok(self.builder.build_int_z_extend(v, self.i64t, name)?)
    }

    /// `for (*slot = start; *slot < end; *slot += step) body` (signed compare).
    pub(super) fn counted_loop(
        &mut self,
        slot: PointerValue<'ctx>,
        start: IntValue<'ctx>,
        end: IntValue<'ctx>,
        step: IntValue<'ctx>,
        body: impl FnOnce(&mut Self) -> R<()>,
    ) -> R<()> {
        let cond = self.ctx.append_basic_block(self.function, "loop.cond");
        let body_bb = self.ctx.append_basic_block(self.function, "loop.body");
        let exit = self.ctx.append_basic_block(self.function, "loop.exit");
        self.builder.build_store(slot, start)?;
        self.builder.build_unconditional_branch(cond)?;
        self.builder.position_at_end(cond);
        let v = self.load_i64(slot)?;
        let more = self
            .builder
            .build_int_compare(IntPredicate::SLT, v, end, "more")?;
        self.builder.build_conditional_branch(more, body_bb, exit)?;
        self.builder.position_at_end(body_bb);
        body(self)?;
        let v = self.load_i64(slot)?;
        let next = self.builder.build_int_nsw_add(v, step, "next")?;
        self.builder.build_store(slot, next)?;
        self.builder.build_unconditional_branch(cond)?;
        self.builder.position_at_end(exit);
        Ok(())
    }

    pub(super) fn load_i64(&self, slot: PointerValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self
            .builder
            .build_load(self.i64t, slot, "")?
            .into_int_value())
    }

    pub(super) fn var(&self, v: VarId) -> R<PointerValue<'ctx>> {
        self.vars
            .get(v.0 as usize)
            .copied()
            .ok_or_else(|| PtxError(format!("loop variable i{} out of range", v.0)))
    }

    pub(super) fn local(&self, l: LocalId) -> R<PointerValue<'ctx>> {
        self.locals
            .get(l.0 as usize)
            .copied()
            .ok_or_else(|| PtxError(format!("local acc{} out of range", l.0)))
    }

    pub(super) fn call(
        &self,
        f: FunctionValue<'ctx>,
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> R<BvE<'ctx>> {
        let site = self.builder.build_call(f, args, "")?;
        match site.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(v) => Ok(v),
            inkwell::values::ValueKind::Instruction(_) => {
                Err(PtxError("call without a value".into()))
            }
        }
    }
}
