//! Inline math emitted into kernels: transcendentals, NaN-ignoring min/max, and the
//! counter-based random numbers of `ir::rand_uniform`.
//!
//! `exp`, `log`, `tanh` and `pow` of an f32 are evaluated in f64 with polynomials whose
//! truncation error is below 3e-13 (relative), then rounded once to f32. The result is the
//! correctly rounded value except in rare double-rounding ties: measured error ≤ 1 ulp of
//! the f64 reference over sweeps including subnormals and the overflow thresholds (see
//! `tests.rs`). Special values follow C / Rust: `exp(-inf) = 0`, `exp(x) = inf` above
//! 88.72, `log(0) = -inf`, `log(x < 0) = NaN`, `log(inf) = inf`, `tanh(±inf) = ±1`, NaN in
//! gives NaN out, and `pow` has C99's special cases (`pow(x, 0) = 1`, `pow(1, y) = 1`,
//! odd integer powers of negative bases keep the sign, `pow(x < 0, non-integer) = NaN`).
//!
//! - exp: `x = k·ln2 + r`, `|r| ≤ ln2/2`, Taylor polynomial of degree 10 for `e^r`,
//!   scaled by `2^k` built in the exponent bits. The argument is first clamped to
//!   `[-104, 89]` (beyond both ends the f32 result is 0 or inf anyway), so the scale never
//!   overflows f64.
//! - log: `x = 2^e·m` with `m ∈ [√½, √2)`, `log m = 2·atanh(s)`, `s = (m-1)/(m+1)`,
//!   `|s| ≤ 0.172`, odd series to `s^13`. f32 inputs (subnormals included) are normal f64
//!   numbers, so the exponent comes straight from the f64 bits.
//! - tanh: `(e^{2a} - 1)/(e^{2a} + 1)` for `a = min(|x|, 20)`, `a - a³/3 + 2a⁵/15` below
//!   `a < 1e-3` (where the subtraction would cancel), sign copied from `x`.
//! - pow: `exp(y·log|x|)` in f64, then the special cases as selects.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use nnc_kernels::ir::mix64;

const F32: types::Type = types::F32;
const F64: types::Type = types::F64;
const I64: types::Type = types::I64;

/// `p(x) = c[0] + c[1]·x + …` by Horner's rule with fused multiply-adds (f64).
fn horner(b: &mut FunctionBuilder, x: Value, coeffs: &[f64]) -> Value {
    let mut acc = b.ins().f64const(coeffs[coeffs.len() - 1]);
    for &c in coeffs[..coeffs.len() - 1].iter().rev() {
        let c = b.ins().f64const(c);
        acc = b.ins().fma(acc, x, c);
    }
    acc
}

/// `e^x` for an f64 `x` already within `[-700, 700]` (or NaN, which propagates).
fn exp_f64_core(b: &mut FunctionBuilder, x: Value) -> Value {
    // ln 2 split (fdlibm): the high part has trailing zero bits so `k·LN2_HI` is exact.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    let log2e = b.ins().f64const(std::f64::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let k = b.ins().nearest(t);
    let neg_k = b.ins().fneg(k);
    let hi = b.ins().f64const(LN2_HI);
    let lo = b.ins().f64const(LN2_LO);
    let r = b.ins().fma(neg_k, hi, x);
    let r = b.ins().fma(neg_k, lo, r);
    let mut coeffs = [1.0f64; 11];
    for i in 1..coeffs.len() {
        coeffs[i] = coeffs[i - 1] / i as f64;
    }
    let p = horner(b, r, &coeffs);
    // 2^k from its exponent bits; NaN saturates k to 0, and p carries the NaN.
    let ki = b.ins().fcvt_to_sint_sat(I64, k);
    let biased = b.ins().iadd_imm_s(ki, 1023);
    let bits = b.ins().ishl_imm_u(biased, 52);
    let scale = b.ins().bitcast(F64, MemFlagsData::new(), bits);
    b.ins().fmul(p, scale)
}

/// `ln x` for a positive, finite, normal f64 `x` (other inputs give garbage, no trap).
fn log_f64_core(b: &mut FunctionBuilder, x: Value) -> Value {
    let bits = b.ins().bitcast(I64, MemFlagsData::new(), x);
    let biased = b.ins().ushr_imm_u(bits, 52);
    let e = b.ins().iadd_imm_s(biased, -1023);
    let frac = b.ins().band_imm_s(bits, 0x000f_ffff_ffff_ffff);
    let one_bits = b.ins().iconst(I64, 0x3ff0_0000_0000_0000);
    let mbits = b.ins().bor(frac, one_bits);
    let m = b.ins().bitcast(F64, MemFlagsData::new(), mbits);
    // Bring m into [√½, √2).
    let sqrt2 = b.ins().f64const(std::f64::consts::SQRT_2);
    let big = b.ins().fcmp(FloatCC::GreaterThanOrEqual, m, sqrt2);
    let half = b.ins().f64const(0.5);
    let m_half = b.ins().fmul(m, half);
    let m = b.ins().select(big, m_half, m);
    let e1 = b.ins().iadd_imm_s(e, 1);
    let e = b.ins().select(big, e1, e);
    let one = b.ins().f64const(1.0);
    let num = b.ins().fsub(m, one);
    let den = b.ins().fadd(m, one);
    let s = b.ins().fdiv(num, den);
    let z = b.ins().fmul(s, s);
    // 2·atanh(s) = 2s·(1 + z/3 + z²/5 + … + z⁶/13).
    let coeffs: Vec<f64> = (0..7).map(|i| 2.0 / (2 * i + 1) as f64).collect();
    let p = horner(b, z, &coeffs);
    let log_m = b.ins().fmul(s, p);
    let ef = b.ins().fcvt_from_sint(F64, e);
    let ln2 = b.ins().f64const(std::f64::consts::LN_2);
    b.ins().fma(ef, ln2, log_m)
}

fn clamp_f64(b: &mut FunctionBuilder, x: Value, lo: f64, hi: f64) -> Value {
    let hi = b.ins().f64const(hi);
    let lo = b.ins().f64const(lo);
    let x = b.ins().fmin(x, hi);
    b.ins().fmax(x, lo)
}

/// `e^x` of an f32.
pub(super) fn exp_f32(b: &mut FunctionBuilder, x: Value) -> Value {
    let xd = b.ins().fpromote(F64, x);
    let xd = clamp_f64(b, xd, -104.0, 89.0);
    let y = exp_f64_core(b, xd);
    b.ins().fdemote(F32, y)
}

/// `ln x` of an f32.
pub(super) fn log_f32(b: &mut FunctionBuilder, x: Value) -> Value {
    let xd = b.ins().fpromote(F64, x);
    let y = log_f64_core(b, xd);
    let r = b.ins().fdemote(F32, y);
    let zero = b.ins().f32const(0.0);
    let inf = b.ins().f32const(f32::INFINITY);
    let neg_inf = b.ins().f32const(f32::NEG_INFINITY);
    let nan = b.ins().f32const(f32::NAN);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let r = b.ins().select(is_inf, inf, r);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let r = b.ins().select(is_zero, neg_inf, r);
    // Negative or NaN.
    let bad = b.ins().fcmp(FloatCC::UnorderedOrLessThan, x, zero);
    b.ins().select(bad, nan, r)
}

/// `tanh x` of an f32.
pub(super) fn tanh_f32(b: &mut FunctionBuilder, x: Value) -> Value {
    let xd = b.ins().fpromote(F64, x);
    let a = b.ins().fabs(xd);
    let twenty = b.ins().f64const(20.0);
    let a = b.ins().fmin(a, twenty);
    let two_a = b.ins().fadd(a, a);
    let t = exp_f64_core(b, two_a);
    let one = b.ins().f64const(1.0);
    let num = b.ins().fsub(t, one);
    let den = b.ins().fadd(t, one);
    let big = b.ins().fdiv(num, den);
    // a·(1 - a²/3 + 2a⁴/15) near zero.
    let a2 = b.ins().fmul(a, a);
    let p = horner(b, a2, &[1.0, -1.0 / 3.0, 2.0 / 15.0]);
    let small = b.ins().fmul(a, p);
    let limit = b.ins().f64const(1e-3);
    let is_small = b.ins().fcmp(FloatCC::LessThan, a, limit);
    let y = b.ins().select(is_small, small, big);
    let y = b.ins().fcopysign(y, xd);
    b.ins().fdemote(F32, y)
}

/// `x^y` of two f32 with C99 `powf` special cases.
pub(super) fn pow_f32(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let xd = b.ins().fpromote(F64, x);
    let yd = b.ins().fpromote(F64, y);
    let ax = b.ins().fabs(xd);
    let l = log_f64_core(b, ax);
    let zero_d = b.ins().f64const(0.0);
    let inf_d = b.ins().f64const(f64::INFINITY);
    let neg_inf_d = b.ins().f64const(f64::NEG_INFINITY);
    let ax_zero = b.ins().fcmp(FloatCC::Equal, ax, zero_d);
    let l = b.ins().select(ax_zero, neg_inf_d, l);
    let ax_inf = b.ins().fcmp(FloatCC::Equal, ax, inf_d);
    let l = b.ins().select(ax_inf, inf_d, l);
    let x_nan = b.ins().fcmp(FloatCC::Unordered, xd, xd);
    let l = b.ins().select(x_nan, xd, l);
    let t = b.ins().fmul(yd, l);
    let t = clamp_f64(b, t, -104.0, 89.0);
    let mag = exp_f64_core(b, t);
    let mag = b.ins().fdemote(F32, mag);

    // y an integer? odd?
    let fl = b.ins().floor(y);
    let y_int = b.ins().fcmp(FloatCC::Equal, fl, y);
    let ay = b.ins().fabs(y);
    let two24 = b.ins().f32const(16_777_216.0);
    let small_y = b.ins().fcmp(FloatCC::LessThan, ay, two24);
    let yi = b.ins().fcvt_to_sint_sat(I64, y);
    let low = b.ins().band_imm_s(yi, 1);
    let odd_bit = b.ins().icmp_imm_s(IntCC::NotEqual, low, 0);
    let int_small = b.ins().band(y_int, small_y);
    let y_odd = b.ins().band(int_small, odd_bit);

    let xbits = b.ins().bitcast(types::I32, MemFlagsData::new(), x);
    let x_signed = b.ins().icmp_imm_s(IntCC::SignedLessThan, xbits, 0);
    let flip = b.ins().band(x_signed, y_odd);
    let neg_mag = b.ins().fneg(mag);
    let r = b.ins().select(flip, neg_mag, mag);

    // Finite negative base with a non-integer exponent.
    let zero = b.ins().f32const(0.0);
    let neg_inf = b.ins().f32const(f32::NEG_INFINITY);
    let x_neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let x_fin = b.ins().fcmp(FloatCC::GreaterThan, x, neg_inf);
    let y_not_int = b.ins().fcmp(FloatCC::NotEqual, fl, y);
    let neg_fin = b.ins().band(x_neg, x_fin);
    let bad = b.ins().band(neg_fin, y_not_int);
    let nan = b.ins().f32const(f32::NAN);
    let r = b.ins().select(bad, nan, r);

    // Results that are 1: |x| = 1 with infinite y, x = 1, y = 0 (even for NaN).
    let one = b.ins().f32const(1.0);
    let inf = b.ins().f32const(f32::INFINITY);
    let ax32 = b.ins().fabs(x);
    let ax_one = b.ins().fcmp(FloatCC::Equal, ax32, one);
    let y_inf = b.ins().fcmp(FloatCC::Equal, ay, inf);
    let one_inf = b.ins().band(ax_one, y_inf);
    let x_one = b.ins().fcmp(FloatCC::Equal, x, one);
    let y_zero = b.ins().fcmp(FloatCC::Equal, y, zero);
    let any = b.ins().bor(one_inf, x_one);
    let any = b.ins().bor(any, y_zero);
    b.ins().select(any, one, r)
}

/// Rust's `f32::max`: the larger, or the other operand when one is NaN.
pub(super) fn max_ignoring_nan(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let gt = b.ins().fcmp(FloatCC::GreaterThan, x, y);
    let m = b.ins().select(gt, x, y);
    let y_nan = b.ins().fcmp(FloatCC::Unordered, y, y);
    b.ins().select(y_nan, x, m)
}

/// Rust's `f32::min`: the smaller, or the other operand when one is NaN.
pub(super) fn min_ignoring_nan(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let lt = b.ins().fcmp(FloatCC::LessThan, x, y);
    let m = b.ins().select(lt, x, y);
    let y_nan = b.ins().fcmp(FloatCC::Unordered, y, y);
    b.ins().select(y_nan, x, m)
}

/// `ir::rand_uniform(seed, key, max(step, 0) as u64, counter as u64)`, bit for bit.
pub(super) fn rand_uniform(
    b: &mut FunctionBuilder,
    seed: u64,
    key: u64,
    step: Value,
    counter: Value,
) -> Value {
    const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
    let zero = b.ins().f32const(0.0);
    let step = max_ignoring_nan(b, step, zero);
    // `as u64` saturates (NaN cannot occur after the max).
    let step = b.ins().fcvt_to_uint_sat(I64, step);
    // The seed and key words are compile-time constants: fold them here.
    let fixed = mix64(mix64(seed.wrapping_add(GOLDEN)) ^ key.wrapping_add(GOLDEN.wrapping_mul(2)));
    let z = b.ins().iconst(I64, fixed as i64);
    let s = b.ins().iadd_imm_s(step, GOLDEN.wrapping_mul(3) as i64);
    let z = b.ins().bxor(z, s);
    let z = emit_mix64(b, z);
    let c = b.ins().iadd_imm_s(counter, GOLDEN.wrapping_mul(4) as i64);
    let z = b.ins().bxor(z, c);
    let z = emit_mix64(b, z);
    let top = b.ins().ushr_imm_u(z, 40);
    let f = b.ins().fcvt_from_uint(F32, top);
    let scale = b.ins().f32const(1.0 / (1u64 << 24) as f32);
    b.ins().fmul(f, scale)
}

/// The splitmix64 finaliser in cranelift IR, the twin of [`nnc_kernels::ir::mix64`].
fn emit_mix64(b: &mut FunctionBuilder, z: Value) -> Value {
    let mix = |b: &mut FunctionBuilder, z: Value, shift: i64, mul: u64| {
        let s = b.ins().ushr_imm_u(z, shift);
        let x = b.ins().bxor(z, s);
        b.ins().imul_imm_s(x, mul as i64)
    };
    let z = mix(b, z, 30, 0xbf58_476d_1ce4_e5b9);
    let z = mix(b, z, 27, 0x94d0_49bb_1331_11eb);
    let s = b.ins().ushr_imm_u(z, 31);
    b.ins().bxor(z, s)
}
