//! Range-aware simplification of the index arithmetic of kernels.
//!
//! Lowering composes index maps (reshape, transpose, im2col, pooling windows) by
//! substitution, so a convolution's gradient indexes its operands through chains like
//! `((a·14 + b)·24 + c)/24 % 14` and padding masks like `min(max(i + 1, 0), 1)`. This pass
//! rewrites every index expression of a kernel into a linear form `Σ kᵢ·atomᵢ + c` and
//! uses the ranges of the loop variables (`0 ≤ v < extent`) to cancel what it can:
//! - `(q·d + r) / d = q + r / d` and `(q·d + r) % d = r % d` (Euclidean, `d > 0`), exactly;
//! - `r / d = m` and `r % d = r − m·d` when the range of `r` lies within `[m·d, (m+1)·d)`;
//! - `min(a, b)` and `max(a, b)` when the ranges of `a` and `b` do not overlap.
//!
//! Expressions then fold: `float(c)` of a constant index is a constant, and a `select`
//! comparing two constants is its chosen arm. Every rewrite is an identity on integers
//! (and on the values the interpreter computes), so results are unchanged bit for bit.

use crate::ir::{Expr, Idx, Kernel, Stmt, VarId};

/// An inclusive integer range; `i64::MIN`/`i64::MAX` stand for unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range(i64, i64);

impl Range {
    const ALL: Range = Range(i64::MIN, i64::MAX);

    fn add(self, o: Range) -> Range {
        Range(sat_add(self.0, o.0), sat_add(self.1, o.1))
    }

    fn scale(self, k: i64) -> Range {
        let (a, b) = (sat_mul(self.0, k), sat_mul(self.1, k));
        Range(a.min(b), a.max(b))
    }
}

fn sat_add(a: i64, b: i64) -> i64 {
    if a == i64::MIN || b == i64::MIN {
        i64::MIN
    } else if a == i64::MAX || b == i64::MAX {
        i64::MAX
    } else {
        a.saturating_add(b)
    }
}

fn sat_mul(a: i64, k: i64) -> i64 {
    match (a, k) {
        (_, 0) => 0,
        (i64::MIN, k) if k > 0 => i64::MIN,
        (i64::MIN, _) => i64::MAX,
        (i64::MAX, k) if k > 0 => i64::MAX,
        (i64::MAX, _) => i64::MIN,
        _ => a.saturating_mul(k),
    }
}

/// `Σ coef·atom + constant`, atoms in order of first appearance.
#[derive(Clone, Debug, Default)]
struct Lin {
    terms: Vec<(Idx, i64)>,
    constant: i64,
}

impl Lin {
    fn constant(c: i64) -> Lin {
        Lin {
            terms: Vec::new(),
            constant: c,
        }
    }

    fn atom(a: Idx) -> Lin {
        match a {
            Idx::Const(c) => Lin::constant(c),
            a => Lin {
                terms: vec![(a, 1)],
                constant: 0,
            },
        }
    }

    fn as_const(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.constant)
    }

    fn add_scaled(mut self, o: Lin, k: i64) -> Lin {
        for (a, c) in o.terms {
            match self.terms.iter_mut().find(|(b, _)| *b == a) {
                Some((_, d)) => *d = d.wrapping_add(c.wrapping_mul(k)),
                None => self.terms.push((a, c.wrapping_mul(k))),
            }
        }
        self.terms.retain(|(_, c)| *c != 0);
        self.constant = self.constant.wrapping_add(o.constant.wrapping_mul(k));
        self
    }

    fn scale(self, k: i64) -> Lin {
        Lin::default().add_scaled(self, k)
    }

    fn to_idx(&self) -> Idx {
        let mut out = Idx::Const(0);
        for (a, c) in &self.terms {
            let term = match *c {
                1 => a.clone(),
                c => a.clone() * Idx::Const(c),
            };
            out = out + term;
        }
        out + Idx::Const(self.constant)
    }
}

/// The variable ranges in scope: `(var, range)`, innermost last; and the block size
/// of a GPU kernel (the thread index is below it), 0 for a CPU kernel.
struct Scope(Vec<(VarId, Range)>, i64);

impl Scope {
    fn var(&self, v: VarId) -> Range {
        self.0
            .iter()
            .rev()
            .find(|(w, _)| *w == v)
            .map_or(Range::ALL, |(_, r)| *r)
    }

    fn range(&self, i: &Idx) -> Range {
        match i {
            Idx::Const(c) => Range(*c, *c),
            Idx::Var(v) => self.var(*v),
            Idx::N | Idx::Block(_) => Range(0, i64::MAX),
            Idx::Thread if self.1 > 0 => Range(0, self.1 - 1),
            Idx::Thread => Range::ALL,
            Idx::Add(a, b) => self.range(a).add(self.range(b)),
            Idx::Sub(a, b) => self.range(a).add(self.range(b).scale(-1)),
            Idx::Mul(a, b) => match (&**a, &**b) {
                (x, Idx::Const(k)) | (Idx::Const(k), x) => self.range(x).scale(*k),
                _ => {
                    let (x, y) = (self.range(a), self.range(b));
                    if x.0 >= 0 && y.0 >= 0 {
                        Range(sat_mul(x.0, y.0), sat_mul(x.1, y.1.max(0)))
                    } else {
                        Range::ALL
                    }
                }
            },
            Idx::Div(a, d) => {
                let r = self.range(a);
                Range(div_bound(r.0, *d), div_bound(r.1, *d))
            }
            Idx::Rem(a, d) => {
                let r = self.range(a);
                if r.0 >= 0 && r.1 < *d {
                    r
                } else {
                    Range(0, d - 1)
                }
            }
            Idx::Min(a, b) => {
                let (x, y) = (self.range(a), self.range(b));
                Range(x.0.min(y.0), x.1.min(y.1))
            }
            Idx::Max(a, b) => {
                let (x, y) = (self.range(a), self.range(b));
                Range(x.0.max(y.0), x.1.max(y.1))
            }
        }
    }

    fn lin(&self, i: &Idx) -> Lin {
        match i {
            Idx::Const(c) => Lin::constant(*c),
            Idx::Var(_) | Idx::N | Idx::Thread | Idx::Block(_) => Lin::atom(i.clone()),
            Idx::Add(a, b) => self.lin(a).add_scaled(self.lin(b), 1),
            Idx::Sub(a, b) => self.lin(a).add_scaled(self.lin(b), -1),
            Idx::Mul(a, b) => {
                let (x, y) = (self.lin(a), self.lin(b));
                match (x.as_const(), y.as_const()) {
                    (Some(k), _) => y.scale(k),
                    (_, Some(k)) => x.scale(k),
                    _ => Lin::atom(Idx::Mul(Box::new(x.to_idx()), Box::new(y.to_idx()))),
                }
            }
            Idx::Div(a, d) if *d > 0 => {
                let (whole, rest) = self.split(self.lin(a), *d);
                let rest_idx = rest.to_idx();
                let r = self.range(&rest_idx);
                let q = if r.0 != i64::MIN
                    && r.1 != i64::MAX
                    && div_bound(r.0, *d) == div_bound(r.1, *d)
                {
                    Lin::constant(div_bound(r.0, *d))
                } else {
                    Lin::atom(Idx::Div(Box::new(rest_idx), *d))
                };
                whole.add_scaled(q, 1)
            }
            Idx::Rem(a, d) if *d > 0 => {
                let (_, rest) = self.split(self.lin(a), *d);
                let rest_idx = rest.to_idx();
                let r = self.range(&rest_idx);
                if r.0 != i64::MIN && r.1 != i64::MAX && div_bound(r.0, *d) == div_bound(r.1, *d) {
                    rest.add_scaled(Lin::constant(div_bound(r.0, *d) * d), -1)
                } else {
                    Lin::atom(Idx::Rem(Box::new(rest_idx), *d))
                }
            }
            Idx::Div(a, d) => Lin::atom(Idx::Div(Box::new(self.simplify(a)), *d)),
            Idx::Rem(a, d) => Lin::atom(Idx::Rem(Box::new(self.simplify(a)), *d)),
            Idx::Min(a, b) | Idx::Max(a, b) => {
                let (x, y) = (self.simplify(a), self.simplify(b));
                let (rx, ry) = (self.range(&x), self.range(&y));
                let is_min = matches!(i, Idx::Min(..));
                // x ≤ y everywhere: min is x, max is y (and the other way round).
                if rx.1 <= ry.0 && rx.1 != i64::MAX {
                    self.lin(if is_min { &x } else { &y })
                } else if ry.1 <= rx.0 && ry.1 != i64::MAX {
                    self.lin(if is_min { &y } else { &x })
                } else if is_min {
                    Lin::atom(Idx::Min(Box::new(x), Box::new(y)))
                } else {
                    Lin::atom(Idx::Max(Box::new(x), Box::new(y)))
                }
            }
        }
    }

    /// `l` as `(whole, rest)` with `l = d·whole + rest`: the terms whose coefficients `d`
    /// divides, and the constant's multiple of `d`, go to `whole`.
    fn split(&self, l: Lin, d: i64) -> (Lin, Lin) {
        let mut whole = Lin::constant(l.constant.div_euclid(d));
        let mut rest = Lin::constant(l.constant.rem_euclid(d));
        for (a, c) in l.terms {
            if c % d == 0 {
                whole.terms.push((a, c / d));
            } else {
                rest.terms.push((a, c));
            }
        }
        (whole, rest)
    }

    fn simplify(&self, i: &Idx) -> Idx {
        self.lin(i).to_idx()
    }
}

fn div_bound(x: i64, d: i64) -> i64 {
    match x {
        i64::MIN | i64::MAX => x,
        x => x.div_euclid(d),
    }
}

/// Simplifies every index expression of `k` (see the module doc).
pub fn simplify_kernel(k: &mut Kernel) {
    let threads = k.gpu.as_ref().map_or(0, |g| i64::from(g.threads));
    let mut scope = Scope(Vec::new(), threads);
    for s in &mut k.body {
        stmt(s, &mut scope);
    }
}

/// Simplifies `s` in place: its own indices and values, then its body, with a loop's
/// variable in scope (ranging over `0..extent`) inside it.
fn stmt(s: &mut Stmt, scope: &mut Scope) {
    let value =
        |v: &mut Expr, scope: &Scope| *v = expr(std::mem::replace(v, Expr::Const(0.0)), scope);
    let bound = match s {
        Stmt::Loop { var, extent, .. } => {
            *extent = scope.simplify(extent);
            let hi = scope.range(extent).1;
            scope
                .0
                .push((*var, Range(0, if hi == i64::MAX { hi } else { hi - 1 })));
            true
        }
        Stmt::Store {
            index, value: v, ..
        }
        | Stmt::SharedStore {
            index, value: v, ..
        } => {
            *index = scope.simplify(index);
            value(v, scope);
            false
        }
        Stmt::Assign { value: v, .. } => {
            value(v, scope);
            false
        }
        Stmt::Gemm(g) => {
            *g = g.map_indices(&|i| scope.simplify(i));
            false
        }
        Stmt::If { conds, .. } => {
            for c in conds.iter_mut() {
                *c = c.map(|i| scope.simplify(i));
            }
            false
        }
        Stmt::Barrier => false,
    };
    for s in s.body_mut().into_iter().flatten() {
        stmt(s, scope);
    }
    if bound {
        scope.0.pop();
    }
}

fn expr(e: Expr, scope: &Scope) -> Expr {
    let b = |x: Expr| Box::new(expr(x, scope));
    match e {
        Expr::Const(_) | Expr::Local(_) | Expr::ShuffleXor { .. } => e,
        Expr::Load { buf, index } => Expr::Load {
            buf,
            index: scope.simplify(&index),
        },
        Expr::SharedLoad { buf, index } => Expr::SharedLoad {
            buf,
            index: scope.simplify(&index),
        },
        Expr::FromIdx(i) => match scope.simplify(&i) {
            Idx::Const(c) => Expr::Const(c as f32),
            i => Expr::FromIdx(i),
        },
        Expr::Unary(op, a) => Expr::Unary(op, b(*a)),
        Expr::Binary(op, x, y) => Expr::Binary(op, b(*x), b(*y)),
        Expr::Fma(x, y, z) => Expr::Fma(b(*x), b(*y), b(*z)),
        Expr::Select {
            op,
            a,
            b: c,
            then,
            otherwise,
        } => {
            let (a, c) = (expr(*a, scope), expr(*c, scope));
            if let (Expr::Const(x), Expr::Const(y)) = (&a, &c) {
                // Only the chosen arm is ever evaluated, so dropping the other is exact.
                let taken = op.apply(*x, *y);
                return expr(if taken { *then } else { *otherwise }, scope);
            }
            Expr::Select {
                op,
                a: Box::new(a),
                b: Box::new(c),
                then: b(*then),
                otherwise: b(*otherwise),
            }
        }
        Expr::Rand {
            seed,
            key,
            step,
            counter,
        } => Expr::Rand {
            seed,
            key,
            step: b(*step),
            counter: scope.simplify(&counter),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::VarId;

    fn scope(vars: &[(u32, i64)]) -> Scope {
        Scope(
            vars.iter()
                .map(|&(v, n)| (VarId(v), Range(0, n - 1)))
                .collect(),
            0,
        )
    }

    fn eval(i: &Idx, vals: &[i64]) -> i64 {
        crate::gpu::eval_idx(&subst(i, vals), 7).expect("no loop variables left")
    }

    fn subst(i: &Idx, vals: &[i64]) -> Idx {
        i.map_vars(&|v| Idx::Const(vals[v.0 as usize]))
    }

    #[test]
    fn reshape_chains_cancel() {
        // ((a·14 + b)·24 + c)/24 % 14 with b < 14, c < 24 is b.
        let (a, b, c) = (Idx::Var(VarId(0)), Idx::Var(VarId(1)), Idx::Var(VarId(2)));
        let e = (((a.clone() * 14 + b.clone()) * 24 + c.clone()).div(24)).rem(14);
        let sc = scope(&[(0, 5), (1, 14), (2, 24)]);
        assert_eq!(sc.simplify(&e), b);
        let q = ((a * 14 + b.clone()) * 24 + c.clone()).div(24 * 14);
        assert_eq!(sc.simplify(&q), Idx::Var(VarId(0)));
        // Padding masks with no padding reached are constants.
        let mask = Idx::Min(
            Box::new(Idx::Max(Box::new(b + 1), Box::new(Idx::Const(0)))),
            Box::new(Idx::Const(1)),
        );
        assert_eq!(sc.simplify(&mask), Idx::Const(1));
        let _ = c;
    }

    #[test]
    fn simplified_indices_have_the_same_values() {
        let v = |n| Idx::Var(VarId(n));
        let exprs = [
            ((v(0) * 14 + v(1)) * 24 + v(2) + -3).div(24).rem(14),
            ((v(0) * 3 + v(1) + -2).rem(5) * 7 + v(2)).div(7),
            Idx::Min(
                Box::new(Idx::Max(
                    Box::new(v(1) + v(2) + -2),
                    Box::new(Idx::Const(0)),
                )),
                Box::new(Idx::Const(13)),
            ),
            (v(0) * 6 + v(2)).div(4) * 4 + (v(0) * 6 + v(2)).rem(4),
            (v(1) * v(2) + 5).div(3),
        ];
        let sc = scope(&[(0, 4), (1, 14), (2, 24)]);
        for e in &exprs {
            let s = sc.simplify(e);
            for a in 0..4 {
                for b in 0..14 {
                    for c in 0..24 {
                        assert_eq!(eval(e, &[a, b, c]), eval(&s, &[a, b, c]), "{e:?} vs {s:?}");
                    }
                }
            }
        }
    }
}
