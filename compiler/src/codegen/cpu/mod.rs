//! The CPU backend: kernel IR → Cranelift IR → object file → shared library.
//!
//! Decision: CPU code is an ahead-of-time artifact. Every kernel of a
//! [`Program`] becomes one exported function in an object file written by
//! `cranelift-object`; [`link_shared_object`] turns it into `kernels.so` with the system C
//! compiler (`cc -shared`), and the runtime loads that library with `libloading`. The
//! runtime therefore never depends on the compiler, an artifact built once runs wherever
//! the runtime runs, and the library can be inspected with `objdump -d`.
//!
//! ABI (shared with the runtime through [`nnc_kernels::abi`]): each kernel is
//! `extern "C" fn(ctx: *const KernelCtx, bufs: *const *mut f32, n: i64, start: i64, end: i64)`.
//! `bufs[i]` is the base pointer of the kernel's i-th buffer in `Kernel::params` order, `n`
//! the batch size, and `start..end` the part of the kernel's top-level parallel loop to run
//! (clamped to `0..extent`; a kernel without a parallel loop runs whole and ignores them).
//! `Stmt::Gemm` calls `KernelCtx::sgemm` indirectly; nothing else calls out, so the object
//! has no undefined symbols.
//!
//! Semantics follow `nnc_kernels::interp` exactly except where documented in [`math`]:
//! `exp`, `log`, `tanh` and `pow` are inline f64 polynomial evaluations rounded once to
//! f32 (measured ≤ 1 ulp from the f64 reference), and a `Gemm` accumulates in whatever
//! order the runtime's sgemm chooses (the interpreter accumulates in f64).
//!
//! Host features come from `cranelift_native`, so `fma` is a real `vfmadd` and `floor` /
//! `nearest` are `roundss`/`roundsd` (x86-64 needs SSE4.1, which every x86-64 machine of the
//! last fifteen years has).
//!
//! Vectorisation: a loop whose body is only unit-stride stores of lane-wise expressions
//! (arithmetic, min/max, fma, selects, loads at stride 0 or 1) and assignments to locals
//! that are private to one iteration (written before they are read, in every iteration),
//! and that reads no stored buffer at another index, runs four iterations at a time on
//! f32x4 (two independent bodies per iteration, eight lanes, so that chains of `sqrt` and
//! `div` overlap; then one body; then the scalar loop finishes); results are
//! bit-identical to the scalar loop. Unit-stride accesses are addressed from row pointers
//! computed before the loop. A loop of constant extent up to 32 (a block of channels)
//! becomes straight-line vector code instead: fours, then a 2- and/or 1-lane piece as a
//! narrow vector, no loop control and no scalar remainder. An accumulation nest (row
//! loops around such a lane loop that adds into an element the row loops do not move)
//! keeps its accumulators in vector variables for the whole nest, loaded before it and
//! stored after it.
//! Both arms of a vector `select` are evaluated, so an arm may load only where the loop
//! stores (a select can guard an out-of-range load, as padding does). Loops that carry a
//! local across iterations (reductions), transcendentals, `pow`, `FromIdx`, `Rand` or
//! other loads under a select stay scalar. Distinct buffers are assumed not to overlap.

mod lower;
mod math;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{default_libcall_names, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use nnc_kernels::ir::Program;

/// Why CPU code generation or linking failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodegenError(pub String);

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodegenError {}

fn err<T>(msg: impl Into<String>) -> Result<T, CodegenError> {
    Err(CodegenError(msg.into()))
}

/// The host ISA with optimisation on and position-independent code (for `-shared`).
fn host_isa() -> Result<OwnedTargetIsa, CodegenError> {
    let mut flags = settings::builder();
    for (name, value) in [("opt_level", "speed"), ("is_pic", "true")] {
        if let Err(e) = flags.set(name, value) {
            return err(format!("cannot set cranelift flag `{name}`: {e}"));
        }
    }
    let builder = match cranelift_native::builder() {
        Ok(b) => b,
        Err(e) => {
            return err(format!(
                "the host machine is not supported by cranelift: {e}"
            ))
        }
    };
    builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| CodegenError(format!("cannot configure the host ISA: {e}")))
}

fn checked(program: &Program) -> Result<(), CodegenError> {
    program
        .validate()
        .map_err(|e| CodegenError(format!("cannot compile: {e}")))
}

/// Compiles every kernel of `program` into one relocatable object file (host format),
/// each exported under the kernel's name with the ABI of the module doc.
pub fn emit_object(program: &Program) -> Result<Vec<u8>, CodegenError> {
    emit_object_of(&[program])
}

/// Compiles the kernels of several programs (a train and an eval step) into one object
/// file; kernel names must be unique across the programs, since they are the symbols.
pub fn emit_object_of(programs: &[&Program]) -> Result<Vec<u8>, CodegenError> {
    let mut seen = std::collections::HashSet::new();
    for program in programs {
        checked(program)?;
        for kernel in &program.kernels {
            if !seen.insert(kernel.name.as_str()) {
                return err(format!(
                    "two kernels are named `{}`; symbols must be unique",
                    kernel.name
                ));
            }
        }
    }
    let isa = host_isa()?;
    let name = programs.first().map_or("nnc", |p| p.name.as_str());
    let builder = ObjectBuilder::new(isa, name.as_bytes(), default_libcall_names())
        .map_err(|e| CodegenError(format!("cannot create the object file: {e}")))?;
    let mut module = ObjectModule::new(builder);
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = module.make_context();
    for program in programs {
        for kernel in &program.kernels {
            let sig = lower::kernel_signature(module.isa().default_call_conv());
            let id = module
                .declare_function(&kernel.name, Linkage::Export, &sig)
                .map_err(|e| {
                    CodegenError(format!("cannot declare kernel `{}`: {e}", kernel.name))
                })?;
            module.clear_context(&mut ctx);
            ctx.func = lower::lower_kernel(program, kernel, module.isa(), &mut fctx)?;
            module.define_function(id, &mut ctx).map_err(|e| {
                CodegenError(format!(
                    "cranelift rejected kernel `{}`: {e:?}",
                    kernel.name
                ))
            })?;
        }
    }
    module
        .finish()
        .emit()
        .map_err(|e| CodegenError(format!("cannot write the object file: {e}")))
}

/// The Cranelift IR of every kernel as text (before Cranelift's own optimisation), for
/// `--emit clif`.
pub fn emit_clif(program: &Program) -> Result<String, CodegenError> {
    checked(program)?;
    let isa = host_isa()?;
    let mut fctx = FunctionBuilderContext::new();
    let mut out = String::new();
    for kernel in &program.kernels {
        let func: Function = lower::lower_kernel(program, kernel, &*isa, &mut fctx)?;
        if !kernel.note.is_empty() {
            out.push_str(&format!("; {}: {}\n", kernel.name, kernel.note));
        }
        out.push_str(&format!("; kernel {}\n{}\n", kernel.name, func.display()));
    }
    Ok(out)
}

/// The machine code of every kernel as Cranelift's disassembly, for `--emit asm`.
pub fn emit_asm(program: &Program) -> Result<String, CodegenError> {
    checked(program)?;
    let mut out = String::new();
    for (i, kernel) in program.kernels.iter().enumerate() {
        out.push_str(&format!(
            "; kernel {}\n{}\n",
            kernel.name,
            compiled_disasm(program, i)?
        ));
    }
    Ok(out)
}

/// Compiles one kernel's function and returns Cranelift's disassembly of the machine code
/// (also used by tests to check what the backend emits, e.g. that `fma` is an instruction).
pub(crate) fn compiled_disasm(program: &Program, kernel: usize) -> Result<String, CodegenError> {
    let isa = host_isa()?;
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = cranelift_codegen::Context::new();
    ctx.set_disasm(true);
    ctx.func = lower::lower_kernel(program, &program.kernels[kernel], &*isa, &mut fctx)?;
    let mut ctrl = cranelift_codegen::control::ControlPlane::default();
    let code = ctx
        .compile(&*isa, &mut ctrl)
        .map_err(|e| CodegenError(format!("{:?}", e.inner)))?;
    Ok(code.vcode.clone().unwrap_or_default())
}

/// Writes `obj` to `out_dir/kernels.o` and links it into `out_dir/kernels.so` with
/// `cc -shared`; returns the path of the library.
pub fn link_shared_object(obj: &[u8], out_dir: &Path) -> Result<PathBuf, CodegenError> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| CodegenError(format!("cannot create `{}`: {e}", out_dir.display())))?;
    let obj_path = out_dir.join("kernels.o");
    let so_path = out_dir.join("kernels.so");
    std::fs::write(&obj_path, obj)
        .map_err(|e| CodegenError(format!("cannot write `{}`: {e}", obj_path.display())))?;
    let output = Command::new("cc")
        .arg("-shared")
        .arg("-o")
        .arg(&so_path)
        .arg(&obj_path)
        .output();
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => err(
            "cannot link the CPU kernels: the C compiler `cc` was not found\n\
             help: install a C toolchain (e.g. `apt-get install gcc`) so that `cc` is on PATH",
        ),
        Err(e) => err(format!("cannot run `cc` to link the CPU kernels: {e}")),
        Ok(out) if !out.status.success() => err(format!(
            "`cc -shared -o {} {}` failed ({}):\n{}",
            so_path.display(),
            obj_path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )),
        Ok(_) => Ok(so_path),
    }
}
