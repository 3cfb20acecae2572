//! The PTX backend: kernel IR → LLVM IR (through inkwell) → PTX text for one NVIDIA GPU
//! architecture (`sm_80` or `sm_90`). Built only with the `cuda` cargo feature, because
//! it links the system's LLVM 19.
//!
//! Translation scheme: the input is the GPU schedule's program (`crate::lower::gpu`):
//! every kernel is written for one thread and says how it is launched; this module only
//! translates, statement by statement.
//! - every kernel becomes one `.entry` (LLVM calling convention 71, `ptx_kernel`) named
//!   like the kernel, taking one `ptr addrspace(1)` per buffer in `Kernel::params` order
//!   followed by the batch size `n: i64`. The CUDA executor launches it on the grid
//!   [`nnc_kernels::gpu::launch_dims`] evaluates.
//! - the thread and block indices are the `tid.x` and `ctaid.x/y/z` special registers;
//!   each shared array is an internal `addrspace(3)` global of the kernel
//!   (`<kernel>_s<i>`, static `.shared` memory); a barrier is `llvm.nvvm.barrier0`
//!   (`bar.sync 0`) and a shuffle `llvm.nvvm.shfl.sync.bfly.f32` over the full warp.
//! - loops count up from 0 (signed compare); an `if` branches on its conditions.
//! - loop variables and locals are `alloca`s promoted to registers by the optimizer
//!   (`default<O3>`); a `select` branches, so only the chosen side is evaluated (it may
//!   guard an out-of-range load), as in the interpreter.
//!
//! Floating point: `+ - * /` and `sqrt` are IEEE round-to-nearest (`div.rn`, `sqrt.rn`);
//! `mul` and `add` are never contracted (LLVM 19's NVPTX only fuses under fast-math),
//! so only the IR's `fma` fuses. Transcendentals never go through `llvm.exp`/`llvm.log`/
//! `llvm.tanh` (LLVM 19 aborts the process on them for NVPTX) nor libdevice (which would
//! tie the compiler to a CUDA installation); they use the hardware approximations
//! through inline assembly:
//! - `exp(x) = ex2.approx(x·log₂e)`, `log(x) = lg2.approx(x)·ln 2` (about 2 ulp, plus the
//!   rounding of the scaling, like CUDA's `__expf`/`__logf`);
//! - `tanh(x) = sign(x)·(1 − 2/(exp(2|x|) + 1))` for `|x| ≥ 0.125` and the odd Taylor
//!   polynomial to `x⁷` below it (relative error about 1e-6 everywhere, unlike
//!   `tanh.approx.f32`'s 2⁻¹¹);
//! - `pow(a, b) = ex2(b·lg2|a|)`, with `a^0 = 1`, a negative base giving a negative
//!   result for odd integer `b` and NaN for a non-integer `b`; the constant exponents
//!   `2`, `1` and `0.5` become `a·a`, `a` and `sqrt(a)`.
//!
//! Random numbers ([`nnc_kernels::ir::Expr::Rand`]) are the same 64-bit integer hash as
//! [`nnc_kernels::ir::rand_uniform`] (the seed and key words folded at compile time), so
//! GPU, CPU and interpreter agree bit for bit.

use std::fmt;

use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::types::{FloatType, IntType};
use inkwell::values::{BasicMetadataValueEnum, FloatValue, FunctionValue, IntValue, PointerValue};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate, OptimizationLevel};

use inkwell::module::Linkage;
use inkwell::values::GlobalValue;
use nnc_kernels::ir::{
    mix64, BinOp, BufId, CmpOp, Cond, Expr, Idx, Kernel, LocalId, Program, SharedId, Stmt, UnOp,
    VarId,
};

pub mod ptxas;
#[cfg(test)]
mod tests;

/// The LLVM calling convention that makes a function a PTX `.entry`.
const PTX_KERNEL_CC: u32 = 71;

/// A GPU architecture PTX is generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GpuArch {
    #[default]
    Sm80,
    Sm90,
}

impl GpuArch {
    pub const ALL: [GpuArch; 2] = [GpuArch::Sm80, GpuArch::Sm90];

    /// The name `ptxas -arch` and `--gpu-arch` use.
    pub fn name(self) -> &'static str {
        match self {
            GpuArch::Sm80 => "sm_80",
            GpuArch::Sm90 => "sm_90",
        }
    }

    /// Parses `sm_80` / `sm_90`.
    pub fn parse(s: &str) -> Option<GpuArch> {
        GpuArch::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// Why a program cannot be turned into PTX (an internal error: kernel programs that
/// validate always translate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxError(pub String);

impl fmt::Display for PtxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot generate PTX: {}", self.0)
    }
}

impl std::error::Error for PtxError {}

impl From<BuilderError> for PtxError {
    fn from(e: BuilderError) -> PtxError {
        PtxError(format!("LLVM builder: {e}"))
    }
}

type R<T> = Result<T, PtxError>;

/// The PTX text of every kernel of `program` (a GPU-scheduled program), for `arch`.
pub fn render_program(program: &Program, arch: GpuArch) -> R<String> {
    let (module_text, _) = translate(program, arch, true)?;
    Ok(module_text)
}

/// The optimised LLVM IR of `program` (for `--emit llvm` and debugging).
pub fn render_llvm_ir(program: &Program, arch: GpuArch) -> R<String> {
    let (_, ir) = translate(program, arch, false)?;
    Ok(ir)
}

/// Builds and optimises the module; returns `(ptx, llvm ir)`, the PTX only when asked.
fn translate(program: &Program, arch: GpuArch, want_ptx: bool) -> R<(String, String)> {
    program.validate().map_err(|e| PtxError(e.to_string()))?;
    if let Some(k) = program.kernels.iter().find(|k| k.gpu.is_none()) {
        return Err(PtxError(format!(
            "kernel `{}` has no GPU launch (the GPU schedule was not applied)",
            k.name
        )));
    }
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let target = Target::from_triple(&triple).map_err(|e| PtxError(e.to_string()))?;
    let machine = target
        .create_target_machine(
            &triple,
            arch.name(),
            "",
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| PtxError(format!("LLVM has no NVPTX target for {}", arch.name())))?;
    let context = Context::create();
    let module = context.create_module(&program.name);
    module.set_triple(&triple);
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    for k in &program.kernels {
        KernelGen::new(&context, &module, k)?.emit()?;
    }
    module
        .verify()
        .map_err(|e| PtxError(format!("invalid LLVM IR: {e}")))?;
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| PtxError(format!("LLVM passes: {e}")))?;
    let ir = module.print_to_string().to_string();
    let ptx = if want_ptx {
        emit_ptx(&machine, &module)?
    } else {
        String::new()
    };
    Ok((ptx, ir))
}

fn emit_ptx(machine: &TargetMachine, module: &Module) -> R<String> {
    let buf = machine
        .write_to_memory_buffer(module, FileType::Assembly)
        .map_err(|e| PtxError(format!("LLVM code generation: {e}")))?;
    String::from_utf8(buf.as_slice().to_vec())
        .map_err(|_| PtxError("LLVM produced PTX that is not UTF-8".into()))
}

/// A PTX identifier: `[A-Za-z_$][A-Za-z0-9_$]*`.
fn is_ptx_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// Translates one kernel into one `.entry` function.
struct KernelGen<'a, 'ctx> {
    ctx: &'ctx Context,
    module: &'a Module<'ctx>,
    builder: Builder<'ctx>,
    kernel: &'a Kernel,
    function: FunctionValue<'ctx>,
    f32t: FloatType<'ctx>,
    i64t: IntType<'ctx>,
    /// Base pointer of each buffer, indexed by `BufId` (only the kernel's params set).
    bufs: Vec<Option<PointerValue<'ctx>>>,
    n: IntValue<'ctx>,
    vars: Vec<PointerValue<'ctx>>,
    locals: Vec<PointerValue<'ctx>>,
    /// The kernel's shared arrays and their lengths.
    shared: Vec<(GlobalValue<'ctx>, u32)>,
}

impl<'a, 'ctx> KernelGen<'a, 'ctx> {
    fn new(ctx: &'ctx Context, module: &'a Module<'ctx>, kernel: &'a Kernel) -> R<Self> {
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

    fn emit(mut self) -> R<()> {
        for s in &self.kernel.body {
            self.stmt(s)?;
        }
        self.builder.build_return(None)?;
        Ok(())
    }

    // ---- threads and loops ----

    /// An intrinsic without overloads, declared on first use.
    fn nvvm(&self, name: &str, ty: inkwell::types::FunctionType<'ctx>) -> FunctionValue<'ctx> {
        match self.module.get_function(name) {
            Some(f) => f,
            None => self.module.add_function(name, ty, None),
        }
    }

    fn sreg(&self, name: &str) -> R<IntValue<'ctx>> {
        let ty = self.ctx.i32_type().fn_type(&[], false);
        let f = self.nvvm(&format!("llvm.nvvm.read.ptx.sreg.{name}"), ty);
        let v = self.call(f, &[])?.into_int_value();
        Ok(self.builder.build_int_z_extend(v, self.i64t, name)?)
    }

    /// `for (*slot = start; *slot < end; *slot += step) body` (signed compare).
    fn counted_loop(
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

    fn load_i64(&self, slot: PointerValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self
            .builder
            .build_load(self.i64t, slot, "")?
            .into_int_value())
    }

    fn var(&self, v: VarId) -> R<PointerValue<'ctx>> {
        self.vars
            .get(v.0 as usize)
            .copied()
            .ok_or_else(|| PtxError(format!("loop variable i{} out of range", v.0)))
    }

    fn local(&self, l: LocalId) -> R<PointerValue<'ctx>> {
        self.locals
            .get(l.0 as usize)
            .copied()
            .ok_or_else(|| PtxError(format!("local acc{} out of range", l.0)))
    }

    fn call(&self, f: FunctionValue<'ctx>, args: &[BasicMetadataValueEnum<'ctx>]) -> R<BvE<'ctx>> {
        let site = self.builder.build_call(f, args, "")?;
        match site.try_as_basic_value() {
            inkwell::values::ValueKind::Basic(v) => Ok(v),
            inkwell::values::ValueKind::Instruction(_) => {
                Err(PtxError("call without a value".into()))
            }
        }
    }

    // ---- statements ----

    fn stmt(&mut self, s: &Stmt) -> R<()> {
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

    fn shared_element(&self, buf: SharedId, i: &Idx) -> R<PointerValue<'ctx>> {
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

    fn element(&self, b: BufId, i: &Idx) -> R<PointerValue<'ctx>> {
        let i = self.idx(i)?;
        self.element_at(b, i)
    }

    // ---- indices ----

    fn idx(&self, i: &Idx) -> R<IntValue<'ctx>> {
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

    // ---- scalar expressions ----

    fn load_f32(&self, ptr: PointerValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self
            .builder
            .build_load(self.f32t, ptr, "")?
            .into_float_value())
    }

    fn intrinsic_f32(&self, name: &str, args: &[FloatValue<'ctx>]) -> R<FloatValue<'ctx>> {
        let decl = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[self.f32t.into()]))
            .ok_or_else(|| PtxError(format!("LLVM has no intrinsic `{name}`")))?;
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|a| (*a).into()).collect();
        Ok(self.call(decl, &args)?.into_float_value())
    }

    fn fma(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
        c: FloatValue<'ctx>,
    ) -> R<FloatValue<'ctx>> {
        self.intrinsic_f32("llvm.fma", &[a, b, c])
    }

    /// One PTX instruction `op $0, $1;` on an f32, as inline assembly.
    fn asm_f32(&self, op: &str, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let ty = self.f32t.fn_type(&[self.f32t.into()], false);
        let asm = self.ctx.create_inline_asm(
            ty,
            format!("{op} $0, $1;"),
            "=f,f".into(),
            false,
            false,
            None,
            false,
        );
        let v = self
            .builder
            .build_indirect_call(ty, asm, &[x.into()], "")?
            .try_as_basic_value();
        match v {
            inkwell::values::ValueKind::Basic(v) => Ok(v.into_float_value()),
            inkwell::values::ValueKind::Instruction(_) => {
                Err(PtxError("inline assembly without a value".into()))
            }
        }
    }

    fn fconst(&self, c: f32) -> FloatValue<'ctx> {
        self.f32t.const_float(f64::from(c))
    }

    fn exp(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let scaled = self
            .builder
            .build_float_mul(x, self.fconst(std::f32::consts::LOG2_E), "")?;
        self.asm_f32("ex2.approx.f32", scaled)
    }

    fn log(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let l2 = self.asm_f32("lg2.approx.f32", x)?;
        Ok(self
            .builder
            .build_float_mul(l2, self.fconst(std::f32::consts::LN_2), "")?)
    }

    fn tanh(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let b = &self.builder;
        let ax = self.intrinsic_f32("llvm.fabs", &[x])?;
        // Large |x|: 1 − 2/(e^{2|x|} + 1), with the sign of x.
        let e = self.exp(b.build_float_mul(ax, self.fconst(2.0), "")?)?;
        let den = b.build_float_add(e, self.fconst(1.0), "")?;
        let big = b.build_float_sub(
            self.fconst(1.0),
            b.build_float_div(self.fconst(2.0), den, "")?,
            "",
        )?;
        let big = self.intrinsic_f32("llvm.copysign", &[big, x])?;
        // Small |x|: x − x³/3 + 2x⁵/15 − 17x⁷/315.
        let x2 = b.build_float_mul(x, x, "")?;
        let mut poly = self.fconst(-17.0 / 315.0);
        for c in [2.0 / 15.0, -1.0 / 3.0, 1.0] {
            poly = self.fma(poly, x2, self.fconst(c))?;
        }
        let small = b.build_float_mul(poly, x, "")?;
        let is_small = b.build_float_compare(FloatPredicate::OLT, ax, self.fconst(0.125), "")?;
        Ok(b.build_select(is_small, small, big, "")?.into_float_value())
    }

    fn pow(&self, a: &Expr, e: &Expr) -> R<FloatValue<'ctx>> {
        let b = &self.builder;
        match e {
            Expr::Const(c) if *c == 2.0 => {
                let x = self.expr(a)?;
                return Ok(b.build_float_mul(x, x, "")?);
            }
            Expr::Const(c) if *c == 1.0 => return self.expr(a),
            Expr::Const(c) if *c == 0.5 => {
                let x = self.expr(a)?;
                return self.intrinsic_f32("llvm.sqrt", &[x]);
            }
            _ => {}
        }
        let (x, y) = (self.expr(a)?, self.expr(e)?);
        self.pow_values(x, y)
    }

    /// `x^y` for any operands (see the module doc).
    fn pow_values(&self, x: FloatValue<'ctx>, y: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let b = &self.builder;
        let ax = self.intrinsic_f32("llvm.fabs", &[x])?;
        let l = self.asm_f32("lg2.approx.f32", ax)?;
        let mag = self.asm_f32("ex2.approx.f32", b.build_float_mul(y, l, "")?)?;
        // A negative base: an integer exponent keeps the magnitude (negated when odd),
        // any other exponent gives NaN.
        let fl = self.intrinsic_f32("llvm.floor", &[y])?;
        let is_int = b.build_float_compare(FloatPredicate::OEQ, fl, y, "")?;
        let half = b.build_float_mul(y, self.fconst(0.5), "")?;
        let half_fl = self.intrinsic_f32("llvm.floor", &[half])?;
        let is_even = b.build_float_compare(FloatPredicate::OEQ, half_fl, half, "")?;
        let neg_mag = b.build_float_neg(mag, "")?;
        let signed = b
            .build_select(is_even, mag, neg_mag, "")?
            .into_float_value();
        let neg_result = b
            .build_select(is_int, signed, self.fconst(f32::NAN), "")?
            .into_float_value();
        let base_neg = b.build_float_compare(FloatPredicate::OLT, x, self.fconst(0.0), "")?;
        let r = b
            .build_select(base_neg, neg_result, mag, "")?
            .into_float_value();
        let y_zero = b.build_float_compare(FloatPredicate::OEQ, y, self.fconst(0.0), "")?;
        Ok(b.build_select(y_zero, self.fconst(1.0), r, "")?
            .into_float_value())
    }

    fn expr(&self, e: &Expr) -> R<FloatValue<'ctx>> {
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
        self.builder.position_at_end(then_bb);
        let tv = self.expr(then)?;
        let then_end = self
            .builder
            .get_insert_block()
            .ok_or_else(|| PtxError("builder lost its block".into()))?;
        self.builder.build_unconditional_branch(join)?;
        self.builder.position_at_end(else_bb);
        let ev = self.expr(otherwise)?;
        let else_end = self
            .builder
            .get_insert_block()
            .ok_or_else(|| PtxError("builder lost its block".into()))?;
        self.builder.build_unconditional_branch(join)?;
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

type BvE<'ctx> = inkwell::values::BasicValueEnum<'ctx>;
