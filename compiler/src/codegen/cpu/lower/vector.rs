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
    /// `for var in lo..hi { body }`, vectorised by 4 when [`vectorisable`] allows.
    pub(super) fn lower_loop(
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
