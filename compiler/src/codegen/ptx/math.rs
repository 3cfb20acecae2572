//! Floating-point functions on the GPU: LLVM intrinsics (`fma`, `fabs`, `sqrt`, …) and
//! the inline-assembly approximations of `exp`, `log`, `tanh` and `pow` (see the `ptx`
//! module doc for their accuracy).

use inkwell::intrinsics::Intrinsic;
use inkwell::values::{BasicMetadataValueEnum, FloatValue};
use inkwell::FloatPredicate;
use nnc_kernels::ir::Expr;

use super::kernel::KernelGen;
use super::{PtxError, R};

impl<'ctx> KernelGen<'_, 'ctx> {
    pub(super) fn intrinsic_f32(
        &self,
        name: &str,
        args: &[FloatValue<'ctx>],
    ) -> R<FloatValue<'ctx>> {
        let decl = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[self.f32t.into()]))
            .ok_or_else(|| PtxError(format!("LLVM has no intrinsic `{name}`")))?;
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|a| (*a).into()).collect();
        Ok(self.call(decl, &args)?.into_float_value())
    }

    pub(super) fn fma(
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

    pub(super) fn fconst(&self, c: f32) -> FloatValue<'ctx> {
        self.f32t.const_float(f64::from(c))
    }

    pub(super) fn exp(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let scaled = self
            .builder
            .build_float_mul(x, self.fconst(std::f32::consts::LOG2_E), "")?;
        self.asm_f32("ex2.approx.f32", scaled)
    }

    pub(super) fn log(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let l2 = self.asm_f32("lg2.approx.f32", x)?;
        Ok(self
            .builder
            .build_float_mul(l2, self.fconst(std::f32::consts::LN_2), "")?)
    }

    pub(super) fn tanh(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
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

    pub(super) fn pow(&self, a: &Expr, e: &Expr) -> R<FloatValue<'ctx>> {
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

    /// `x^y` for any operands (see the `ptx` module doc).
    pub(super) fn pow_values(
        &self,
        x: FloatValue<'ctx>,
        y: FloatValue<'ctx>,
    ) -> R<FloatValue<'ctx>> {
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
}
