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

mod expr;
mod vector;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, Function, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind,
    UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use nnc_kernels::abi::{KernelCtx, WindowsGemm};
use nnc_kernels::ir::{Gemm, Idx, Kernel, MatRef, Program, Stmt, Windows};

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

/// The signature of `KernelCtx::sgemm_windows`: one pointer to a `WindowsGemm`.
fn sgemm_windows_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(I64));
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
    let sgemm_windows_sig = b.import_signature(sgemm_windows_signature(call_conv));

    let mut l = Lower {
        b,
        bases,
        vars,
        vlocals: vec![None; locals.len()],
        vptrs: std::collections::HashMap::new(),
        vlane: 0,
        vwidth: 4,
        vmoving: false,
        promoted: std::collections::HashMap::new(),
        locals,
        ctx,
        n,
        sgemm_sig,
        sgemm_windows_sig,
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
    /// The first lane of the vector body being lowered (`var + vlane ..`), and how many of
    /// its four lanes are real (4, or 2 or 1 at the end of a straight-line loop).
    vlane: i32,
    vwidth: u8,
    /// Whether the vector loop's variable moves (a counted loop) rather than being 0
    /// (straight-line code): addresses then add it.
    vmoving: bool,
    /// The vector variables holding lanes `lane .. lane + 4` of an accumulator
    /// `buf[index]` while its accumulation nest is lowered, by (buf, index, lane).
    promoted: std::collections::HashMap<(u32, Idx, i32), Variable>,
    ctx: Value,
    n: Value,
    sgemm_sig: cranelift_codegen::ir::SigRef,
    sgemm_windows_sig: cranelift_codegen::ir::SigRef,
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
                if let Some(c) = self.unrollable(*var, extent, body) {
                    return self.unrolled_vector_loop(*var, c, body);
                }
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
        if let Some(w) = &g.windows {
            return self.gemm_windows(g, w);
        }
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

    /// A product over windows: the descriptor is filled in a stack slot and passed to
    /// `KernelCtx::sgemm_windows`.
    fn gemm_windows(&mut self, g: &Gemm, w: &Windows) -> Result<(), CodegenError> {
        use std::mem::{offset_of, size_of};
        let size = size_of::<WindowsGemm>() as u32;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            size,
            3,
        ));
        let zero = self.b.ins().iconst(I64, 0);
        let put = |l: &mut Self, v: Value, at: usize| {
            l.b.ins().stack_store(I64, v, slot, at as i32);
        };
        for (size, at) in [
            (&g.m, offset_of!(WindowsGemm, m)),
            (&g.n, offset_of!(WindowsGemm, n)),
            (&g.k, offset_of!(WindowsGemm, k)),
        ] {
            let v = self.idx(size)?;
            let v = self.b.ins().smax(v, zero);
            put(self, v, at);
        }
        let [a, _, _] = self.matrix(&g.a, zero)?;
        put(self, a, offset_of!(WindowsGemm, a));
        let geometry: [(&[i64], usize); 7] = [
            (&w.image, offset_of!(WindowsGemm, image)),
            (&w.grid, offset_of!(WindowsGemm, grid)),
            (&w.taps, offset_of!(WindowsGemm, taps)),
            (&w.step, offset_of!(WindowsGemm, step)),
            (&w.tap, offset_of!(WindowsGemm, tap)),
            (&w.pad, offset_of!(WindowsGemm, pad)),
            (&w.div, offset_of!(WindowsGemm, div)),
        ];
        for (values, at) in geometry {
            for (i, &v) in values.iter().enumerate() {
                let v = self.b.ins().iconst(I64, v);
                put(self, v, at + 8 * i);
            }
        }
        let first = self.idx(&w.first)?;
        put(self, first, offset_of!(WindowsGemm, first));
        let t = self.b.ins().iconst(I64, i64::from(w.transposed));
        put(self, t, offset_of!(WindowsGemm, transposed));
        let [b, rb, cb] = self.matrix(&g.b, zero)?;
        put(self, b, offset_of!(WindowsGemm, b));
        put(self, rb, offset_of!(WindowsGemm, rsb));
        put(self, cb, offset_of!(WindowsGemm, csb));
        let [c, rc, cc] = self.matrix(&g.c, zero)?;
        put(self, c, offset_of!(WindowsGemm, c));
        put(self, rc, offset_of!(WindowsGemm, rsc));
        put(self, cc, offset_of!(WindowsGemm, csc));
        let alpha = self.b.ins().f32const(g.alpha);
        put(self, alpha, offset_of!(WindowsGemm, alpha));
        let beta = self.b.ins().f32const(g.beta);
        put(self, beta, offset_of!(WindowsGemm, beta));
        let desc = self.b.ins().stack_addr(I64, slot, 0);
        let f = self.b.ins().load(
            I64,
            MemFlagsData::trusted(),
            self.ctx,
            offset_of!(KernelCtx, sgemm_windows) as i32,
        );
        self.b
            .ins()
            .call_indirect(self.sgemm_windows_sig, f, &[desc]);
        Ok(())
    }
}
