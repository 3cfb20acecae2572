//! Loops, and the four-lane vector form of those whose iterations are independent: the
//! vectorisability test, row pointers hoisted out of the loop, f32x4 expressions, and the
//! scalar remainder.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Endianness, InstBuilder, MemFlagsData, Value};
use nnc_kernels::ir::{BinOp, BufId, Expr, Idx, LocalId, Stmt, UnOp, VarId};

use super::expr::float_cc;
use super::{Lower, I64};
use crate::codegen::cpu::CodegenError;

impl Lower<'_, '_> {
    /// `for var in lo..hi { body }`, vectorised by 4 when [`vectorisable`] allows; an
    /// accumulation nest keeps its accumulators in registers ([`accumulation_nest`]).
    pub(super) fn lower_loop(
        &mut self,
        var: VarId,
        lo: Value,
        hi: Value,
        body: &[Stmt],
    ) -> Result<(), CodegenError> {
        let v = self.vars[var.0 as usize];
        if self.promoted.is_empty() {
            if let Some(nest) = self.accumulation_nest(var, body) {
                return self.promoting(nest, |l| l.counted_loop(v, lo, hi, |l| l.stmts(body)));
            }
        }
        if !vectorisable(var, body) || self.locals_escape(body) {
            return self.counted_loop(v, lo, hi, |l| l.stmts(body));
        }
        // Every unit-stride access `buf[f(var)]` becomes `p + 4·var` with `p = &buf[f(0)]`
        // computed once here: the index arithmetic of the outer loops (row offsets, the
        // row split's `min`) leaves the loop.
        let zero = self.b.ins().iconst(I64, 0);
        self.b.def_var(v, zero);
        self.row_pointers(var, body)?;
        self.b.def_var(v, lo);
        self.vmoving = true;
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
                self.vector_body(var, body, (LANES * copy) as i32, 4)?;
            }
            let i = self.b.use_var(v);
            let next = self.b.ins().iadd_imm_s(i, LANES * copies);
            self.b.def_var(v, next);
            self.b.ins().jump(header, &[]);
            self.b.switch_to_block(exit);
        }
        self.vptrs.clear();
        self.vmoving = false;
        let rest = self.b.use_var(v);
        self.counted_loop(v, rest, hi, |l| l.stmts(body))
    }

    /// `for var in 0..extent { body }` with a constant `extent` of at most
    /// [`MAX_UNROLLED`] that [`Lower::unrollable`] accepted: straight-line vector code,
    /// four lanes at a time and the last one to three lanes as a narrow vector (no loop
    /// control, no scalar remainder).
    pub(super) fn unrolled_vector_loop(
        &mut self,
        var: VarId,
        extent: i64,
        body: &[Stmt],
    ) -> Result<(), CodegenError> {
        let zero = self.b.ins().iconst(I64, 0);
        self.b.def_var(self.vars[var.0 as usize], zero);
        self.row_pointers(var, body)?;
        for (lane, width) in chunks(extent) {
            self.vector_body(var, body, lane, width)?;
        }
        self.vptrs.clear();
        Ok(())
    }

    /// Whether the loop `for var in 0..extent { body }` runs as straight-line vector code.
    pub(super) fn unrollable(&self, var: VarId, extent: &Idx, body: &[Stmt]) -> Option<i64> {
        match extent {
            Idx::Const(c) if (1..=MAX_UNROLLED).contains(c) => {
                (vectorisable(var, body) && !self.locals_escape(body)).then_some(*c)
            }
            _ => None,
        }
    }

    /// `&buf[f(0)]` of every unit-stride access `buf[f(var)]` of `body` (the loop variable
    /// holding 0), into `vptrs`.
    fn row_pointers(&mut self, var: VarId, body: &[Stmt]) -> Result<(), CodegenError> {
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
            if !self.vptrs.contains_key(&(buf, index.clone())) && !self.is_promoted(buf, &index) {
                let p = self.address(buf, &index)?;
                let p = self.opaque(p, I64);
                self.vptrs.insert((buf, index), p);
            }
        }
        Ok(())
    }

    /// One copy of a vector loop's body: lanes `var + lane ..` of which the first `width`
    /// (4, 2 or 1) are real.
    fn vector_body(
        &mut self,
        var: VarId,
        body: &[Stmt],
        lane: i32,
        width: u8,
    ) -> Result<(), CodegenError> {
        self.vlane = lane;
        self.vwidth = width;
        for s in body {
            match s {
                Stmt::Store { buf, index, value } => {
                    let x = self.vexpr(var, value)?;
                    self.vstore(var, buf.0, index, x)?;
                }
                Stmt::Assign { local, value } => {
                    let x = self.vexpr(var, value)?;
                    self.vlocals[local.0 as usize] = Some(x);
                }
                _ => return self.fail("a vectorised loop body holds a loop or a gemm".into()),
            }
        }
        self.vlocals.fill(None);
        self.vlane = 0;
        self.vwidth = 4;
        Ok(())
    }

    /// The nest `for var … { for … { for lane in 0..c { body } } }` (one loop per level)
    /// whose innermost loop is [`Lower::unrollable`] and stores, at an index the outer
    /// loops do not move, a value reading that same element (`acc[l] = acc[l] + x[…]`):
    /// such accumulators can live in vector registers for the whole nest.
    fn accumulation_nest(&self, var: VarId, body: &[Stmt]) -> Option<Nest> {
        let mut outer = vec![var];
        let mut cur = body;
        let (lane, extent, inner) = loop {
            let [Stmt::Loop {
                var: v,
                extent,
                body: b,
                parallel: false,
            }] = cur
            else {
                return None;
            };
            if b.iter()
                .all(|s| matches!(s, Stmt::Store { .. } | Stmt::Assign { .. }))
            {
                break (*v, extent, b.as_slice());
            }
            outer.push(*v);
            cur = b;
        };
        let extent = self.unrollable(lane, extent, inner)?;
        let mut accs: Vec<(u32, Idx)> = Vec::new();
        for s in inner {
            if let Stmt::Store { buf, index, value } = s {
                let mut reads = false;
                value.for_each_load(&mut |b, i| reads |= b == *buf && i == index);
                if reads
                    && outer.iter().all(|&v| index.stride(v) == Some(0))
                    && !accs.iter().any(|(b, i)| *b == buf.0 && i == index)
                {
                    accs.push((buf.0, index.clone()));
                }
            }
        }
        (!accs.is_empty()).then_some(Nest { lane, extent, accs })
    }

    /// Runs `f` (which lowers the nest) with the nest's accumulators loaded into vector
    /// variables before it and stored back after it.
    fn promoting(
        &mut self,
        nest: Nest,
        f: impl FnOnce(&mut Self) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let zero = self.b.ins().iconst(I64, 0);
        self.b.def_var(self.vars[nest.lane.0 as usize], zero);
        let mut homes = Vec::new();
        for (buf, index) in &nest.accs {
            let p = self.address(*buf, index)?;
            for (lane, width) in chunks(nest.extent) {
                let x = self.narrow_load(p, 4 * lane, width);
                let v = self.b.declare_var(F32X4);
                self.b.def_var(v, x);
                self.promoted.insert((*buf, index.clone(), lane), v);
                homes.push((p, lane, width, v));
            }
        }
        f(self)?;
        self.promoted.clear();
        for (p, lane, width, v) in homes {
            let x = self.b.use_var(v);
            self.narrow_store(p, 4 * lane, width, x);
        }
        Ok(())
    }

    fn is_promoted(&self, buf: u32, index: &Idx) -> bool {
        !self.promoted.is_empty() && self.promoted.contains_key(&(buf, index.clone(), 0))
    }

    /// Lanes `var + vlane ..` of the unit-stride load `buf[index]`.
    fn vload(&mut self, var: VarId, buf: u32, index: &Idx) -> Result<Value, CodegenError> {
        if let Some(&v) = self.promoted.get(&(buf, index.clone(), self.vlane)) {
            return Ok(self.b.use_var(v));
        }
        let (addr, off) = self.vaddress(var, buf, index)?;
        Ok(self.narrow_load(addr, off, self.vwidth))
    }

    /// Stores lanes `var + vlane ..` of `buf[index]`.
    fn vstore(&mut self, var: VarId, buf: u32, index: &Idx, x: Value) -> Result<(), CodegenError> {
        if let Some(&v) = self.promoted.get(&(buf, index.clone(), self.vlane)) {
            self.b.def_var(v, x);
            return Ok(());
        }
        let (addr, off) = self.vaddress(var, buf, index)?;
        self.narrow_store(addr, off, self.vwidth, x);
        Ok(())
    }

    /// The first `width` lanes at `addr + off` (the others zero).
    fn narrow_load(&mut self, addr: Value, off: i32, width: u8) -> Value {
        match width {
            4 => self.b.ins().load(F32X4, vector_flags(), addr, off),
            2 => {
                let x = self.b.ins().load(I64, vector_flags(), addr, off);
                let x = self.b.ins().scalar_to_vector(types::I64X2, x);
                self.b.ins().bitcast(F32X4, vector_bitcast(), x)
            }
            _ => {
                let x = self.b.ins().load(types::F32, vector_flags(), addr, off);
                self.b.ins().scalar_to_vector(F32X4, x)
            }
        }
    }

    /// Stores the first `width` lanes of `x` at `addr + off`.
    fn narrow_store(&mut self, addr: Value, off: i32, width: u8, x: Value) {
        match width {
            4 => {
                self.b.ins().store(vector_flags(), x, addr, off);
            }
            2 => {
                let x = self.b.ins().bitcast(types::I64X2, vector_bitcast(), x);
                let x = self.b.ins().extractlane(x, 0);
                self.b.ins().store(vector_flags(), x, addr, off);
            }
            _ => {
                let x = self.b.ins().extractlane(x, 0);
                self.b.ins().store(vector_flags(), x, addr, off);
            }
        }
    }

    /// The address of lanes `var + vlane ..` of a unit-stride access, as a base value and
    /// a constant byte offset (in a straight-line body the variable is 0).
    fn vaddress(
        &mut self,
        var: VarId,
        buf: u32,
        index: &Idx,
    ) -> Result<(Value, i32), CodegenError> {
        let Some(p) = self.vptrs.get(&(buf, index.clone())).copied() else {
            return self.fail(format!("no row pointer for a unit-stride access of b{buf}"));
        };
        let off = 4 * self.vlane;
        if !self.vmoving {
            return Ok((p, off));
        }
        let i = self.b.use_var(self.vars[var.0 as usize]);
        let bytes = self.b.ins().ishl_imm_u(i, 2);
        Ok((self.b.ins().iadd(p, bytes), off))
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
                self.vload(var, buf.0, index)?
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
}

const LANES: i64 = 4;
const F32X4: types::Type = types::F32X4;
/// The longest constant loop run as straight-line vector code.
const MAX_UNROLLED: i64 = 32;

/// An accumulation nest ([`Lower::accumulation_nest`]): its innermost loop's variable
/// and constant extent, and the accumulators (buffer, index) it keeps in registers.
pub(super) struct Nest {
    lane: VarId,
    extent: i64,
    accs: Vec<(u32, Idx)>,
}

/// The (first lane, width) pieces of a straight-line vector loop over `extent` lanes:
/// fours, then a two and/or a one.
fn chunks(extent: i64) -> Vec<(i32, u8)> {
    let mut out = Vec::new();
    let mut lane = 0;
    for width in [4u8, 2, 1] {
        while extent - lane >= i64::from(width) {
            out.push((lane as i32, width));
            lane += i64::from(width);
        }
    }
    out
}

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
