//! A stable text form of kernel IR for `nnc build --emit kernels` and snapshot tests.
//! Buffers print as `b<id>`, loop variables as `i<id>`, locals as `acc<id>`; a program
//! starts with its buffer table.

use std::fmt::Write;

use crate::ir::{BufferKind, Expr, Gemm, Idx, Kernel, MatRef, Program, Stmt};

/// Prints a whole program.
pub fn print_program(p: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "program {}  # {} kernels, arena {} floats",
        p.name,
        p.kernels.len(),
        p.arena
    );
    for (i, b) in p.buffers.iter().enumerate() {
        let kind = match b.kind {
            BufferKind::Input => "input".to_string(),
            BufferKind::InOut => "inout".to_string(),
            BufferKind::Output => "output".to_string(),
            BufferKind::Temp { offset } => format!("temp @{offset}"),
        };
        let _ = writeln!(out, "  b{i}: {kind} [{}] {:?}", b.len, b.name);
    }
    for k in &p.kernels {
        out.push_str(&print_kernel(k));
    }
    out
}

/// Prints one kernel.
pub fn print_kernel(k: &Kernel) -> String {
    let mut out = String::new();
    let params: Vec<String> = k.params.iter().map(|b| format!("b{}", b.0)).collect();
    if !k.note.is_empty() {
        let _ = writeln!(out, "# {}", k.note);
    }
    match &k.gpu {
        None => {
            let _ = writeln!(out, "kernel {}({}) {{", k.name, params.join(", "));
        }
        Some(g) => {
            let grid: Vec<String> = g.grid.iter().map(idx).collect();
            let _ = writeln!(
                out,
                "gpu kernel {}({}) grid=({}) threads={} {{",
                k.name,
                params.join(", "),
                grid.join(", "),
                g.threads
            );
            for (i, d) in g.shared.iter().enumerate() {
                let _ = writeln!(out, "  shared s{i}[{}] \"{}\"", d.len, d.name);
            }
        }
    }
    for s in &k.body {
        stmt(&mut out, s, 1);
    }
    out.push_str("}\n");
    out
}

fn stmt(out: &mut String, s: &Stmt, depth: usize) {
    let pad = "  ".repeat(depth);
    let line = match s {
        Stmt::Loop {
            var,
            extent,
            parallel,
            ..
        } => {
            let kw = if *parallel { "parallel for" } else { "for" };
            format!("{kw} i{} in 0..{} {{", var.0, idx(extent))
        }
        Stmt::Store { buf, index, value } => {
            format!("b{}[{}] = {}", buf.0, idx(index), expr(value))
        }
        Stmt::Assign { local, value } => format!("acc{} = {}", local.0, expr(value)),
        Stmt::Gemm(g) => gemm(g),
        Stmt::If { conds, .. } => {
            let conds: Vec<String> = conds
                .iter()
                .map(|c| format!("{} {} {}", idx(&c.a), c.op.name(), idx(&c.b)))
                .collect();
            format!("if {} {{", conds.join(" && "))
        }
        Stmt::SharedStore { buf, index, value } => {
            format!("s{}[{}] = {}", buf.0, idx(index), expr(value))
        }
        Stmt::Barrier => "barrier".to_string(),
    };
    let _ = writeln!(out, "{pad}{line}");
    if let Some(body) = s.body() {
        for s in body {
            stmt(out, s, depth + 1);
        }
        let _ = writeln!(out, "{pad}}}");
    }
}

fn gemm(g: &Gemm) -> String {
    let mut s = format!(
        "gemm m={} n={} k={} a={} b={} c={} alpha={:?} beta={:?}",
        idx(&g.m),
        idx(&g.n),
        idx(&g.k),
        mat(&g.a),
        mat(&g.b),
        mat(&g.c),
        g.alpha,
        g.beta
    );
    if let Some(w) = &g.windows {
        let pair = |v: [i64; 2]| format!("{}×{}", v[0], v[1]);
        let _ = write!(
            s,
            " a=windows{}(image={}×{}×{} grid={} taps={} step={} tap={} pad={} div={} first={})",
            if w.transposed { "ᵀ" } else { "" },
            w.image[0],
            w.image[1],
            w.image[2],
            pair(w.grid),
            pair(w.taps),
            pair(w.step),
            pair(w.tap),
            pair(w.pad),
            pair(w.div),
            idx(&w.first)
        );
    }
    if let Some((count, st)) = &g.batch {
        let _ = write!(
            s,
            " batch={} strides=({}, {}, {})",
            idx(count),
            idx(&st[0]),
            idx(&st[1]),
            idx(&st[2])
        );
    }
    s
}

fn mat(m: &MatRef) -> String {
    format!(
        "b{}[{}; {}, {}]",
        m.buf.0,
        idx(&m.offset),
        idx(&m.row_stride),
        idx(&m.col_stride)
    )
}

/// An index expression, parenthesised by precedence.
pub fn idx(i: &Idx) -> String {
    idx_prec(i, 0)
}

fn idx_prec(i: &Idx, parent: u8) -> String {
    let (text, prec) = match i {
        Idx::Const(c) => (c.to_string(), 3),
        Idx::Var(v) => (format!("i{}", v.0), 3),
        Idx::N => ("N".to_string(), 3),
        Idx::Add(a, b) => (format!("{} + {}", idx_prec(a, 1), idx_prec(b, 1)), 1),
        Idx::Sub(a, b) => (format!("{} - {}", idx_prec(a, 1), idx_prec(b, 2)), 1),
        Idx::Mul(a, b) => (format!("{}*{}", idx_prec(a, 2), idx_prec(b, 2)), 2),
        Idx::Div(a, c) => (format!("{}/{c}", idx_prec(a, 2)), 2),
        Idx::Rem(a, c) => (format!("{}%{c}", idx_prec(a, 2)), 2),
        Idx::Min(a, b) => (format!("min({}, {})", idx(a), idx(b)), 3),
        Idx::Max(a, b) => (format!("max({}, {})", idx(a), idx(b)), 3),
        Idx::Thread => ("thread".to_string(), 3),
        Idx::Block(a) => (
            format!("block.{}", ["x", "y", "z"][usize::from(*a).min(2)]),
            3,
        ),
    };
    if prec < parent {
        format!("({text})")
    } else {
        text
    }
}

/// A scalar expression.
pub fn expr(e: &Expr) -> String {
    match e {
        Expr::Const(c) => format!("{c:?}"),
        Expr::Load { buf, index } => format!("b{}[{}]", buf.0, idx(index)),
        Expr::Local(l) => format!("acc{}", l.0),
        Expr::Unary(op, a) => format!("{}({})", op.name(), expr(a)),
        Expr::Binary(op, a, b) if op.is_infix() => {
            format!("({} {} {})", expr(a), op.name(), expr(b))
        }
        Expr::Binary(op, a, b) => format!("{}({}, {})", op.name(), expr(a), expr(b)),
        Expr::Fma(a, b, c) => format!("fma({}, {}, {})", expr(a), expr(b), expr(c)),
        Expr::Select {
            op,
            a,
            b,
            then,
            otherwise,
        } => format!(
            "({} {} {} ? {} : {})",
            expr(a),
            op.name(),
            expr(b),
            expr(then),
            expr(otherwise)
        ),
        Expr::FromIdx(i) => format!("float({})", idx(i)),
        Expr::SharedLoad { buf, index } => format!("s{}[{}]", buf.0, idx(index)),
        Expr::ShuffleXor { local, lanes } => format!("shfl_xor(acc{}, {lanes})", local.0),
        Expr::Rand {
            seed,
            key,
            step,
            counter,
        } => format!(
            "rand(seed={seed}, key={key}, step={}, counter={})",
            expr(step),
            idx(counter)
        ),
    }
}
