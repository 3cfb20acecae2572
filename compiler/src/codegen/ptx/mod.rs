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

use inkwell::builder::BuilderError;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;
use nnc_kernels::ir::Program;

mod expr;
mod index;
mod kernel;
mod math;
mod stmt;

use kernel::KernelGen;

pub mod ptxas;
#[cfg(test)]
pub(crate) mod tests;

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

type BvE<'ctx> = inkwell::values::BasicValueEnum<'ctx>;
