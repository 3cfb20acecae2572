//! Elementwise ops: unary functions, binary arithmetic and comparisons (NumPy
//! broadcasting), and `select`. Comparisons yield 1.0 / 0.0 and have no gradient.
//!
//! Gradient conventions at kinks: `abs` uses `sign(x)` (0 at 0); `max(a, b)` sends the
//! gradient to `a` where `a > b` and to `b` otherwise, so `relu = max(x, 0)` has
//! gradient 0 at 0.

use super::broadcast_strides;
use crate::ir::graph::{broadcast_shapes, Graph, NodeId, Shape};
use crate::ir::tensor::Tensor;
use crate::ir::{ir_bail, IrResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    Sign,
    Tanh,
    Sigmoid,
    /// The identity with a zero gradient (`detach`).
    StopGrad,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 9] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Abs,
        UnaryOp::Sign,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::StopGrad,
    ];

    /// The printed name.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Sign => "sign",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::StopGrad => "stop_grad",
        }
    }

    pub fn from_name(name: &str) -> Option<UnaryOp> {
        UnaryOp::ALL.into_iter().find(|u| u.name() == name)
    }

    /// The reference scalar function (evaluated in f64, rounded once).
    pub fn apply(self, x: f32) -> f32 {
        let d = x as f64;
        let r = match self {
            UnaryOp::Neg => -d,
            UnaryOp::Exp => d.exp(),
            UnaryOp::Log => d.ln(),
            UnaryOp::Sqrt => d.sqrt(),
            UnaryOp::Abs => d.abs(),
            UnaryOp::Sign => {
                if d > 0.0 {
                    1.0
                } else if d < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            UnaryOp::Tanh => d.tanh(),
            UnaryOp::Sigmoid => {
                if d >= 0.0 {
                    1.0 / (1.0 + (-d).exp())
                } else {
                    let e = d.exp();
                    e / (1.0 + e)
                }
            }
            UnaryOp::StopGrad => d,
        };
        r as f32
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    /// `a > b` as 1.0 / 0.0.
    Gt,
    Ge,
    Eq,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 8] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Eq,
    ];

    /// The printed name.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::Eq => "eq",
        }
    }

    pub fn from_name(name: &str) -> Option<BinaryOp> {
        BinaryOp::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn apply(self, a: f32, b: f32) -> f32 {
        let flag = |c: bool| if c { 1.0 } else { 0.0 };
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => {
                if a > b || b.is_nan() {
                    a
                } else {
                    b
                }
            }
            BinaryOp::Gt => flag(a > b),
            BinaryOp::Ge => flag(a >= b),
            BinaryOp::Eq => flag(a == b),
        }
    }
}

/// Shape rule of binary ops and `select`: all operands broadcast together.
pub fn shape(args: &[&Shape]) -> IrResult<Shape> {
    let mut out = args[0].clone();
    for a in &args[1..] {
        out = broadcast_shapes(&out, a)?;
    }
    Ok(out)
}

pub fn eval_unary(op: UnaryOp, x: &Tensor) -> Tensor {
    Tensor {
        shape: x.shape.clone(),
        data: x.data.iter().map(|&v| op.apply(v)).collect(),
    }
}

pub fn eval_binary(op: BinaryOp, a: &Tensor, b: &Tensor, out: &[usize]) -> Tensor {
    map_broadcast([a, b], out, |[x, y]| op.apply(x, y))
}

pub fn eval_select(c: &Tensor, a: &Tensor, b: &Tensor, out: &[usize]) -> Tensor {
    map_broadcast([c, a, b], out, |[c, x, y]| if c != 0.0 { x } else { y })
}

/// Applies `f` elementwise over operands broadcast to `out`.
pub fn map_broadcast<const K: usize>(
    ts: [&Tensor; K],
    out: &[usize],
    f: impl Fn([f32; K]) -> f32,
) -> Tensor {
    let total: usize = out.iter().product();
    let mut data = Vec::with_capacity(total);
    if ts.iter().all(|t| t.shape == out) {
        for i in 0..total {
            data.push(f(std::array::from_fn(|k| ts[k].data[i])));
        }
        return Tensor {
            shape: out.to_vec(),
            data,
        };
    }
    if out.is_empty() {
        data.push(f(std::array::from_fn(|k| ts[k].data[0])));
        return Tensor {
            shape: Vec::new(),
            data,
        };
    }
    let rank = out.len();
    let strides: [Vec<usize>; K] = std::array::from_fn(|k| broadcast_strides(&ts[k].shape, out));
    let inner = out[rank - 1];
    let outer = total / inner.max(1);
    let mut idx = vec![0usize; rank - 1];
    for _ in 0..outer {
        let base: [usize; K] =
            std::array::from_fn(|k| idx.iter().zip(&strides[k]).map(|(i, s)| i * s).sum());
        let step: [usize; K] = std::array::from_fn(|k| strides[k][rank - 1]);
        for j in 0..inner {
            data.push(f(std::array::from_fn(|k| {
                ts[k].data[base[k] + j * step[k]]
            })));
        }
        super::next_index(&mut idx, out);
    }
    Tensor {
        shape: out.to_vec(),
        data,
    }
}

pub fn grad_unary(
    op: UnaryOp,
    g: &mut Graph,
    y: NodeId,
    x: NodeId,
    dy: NodeId,
) -> IrResult<Vec<Option<NodeId>>> {
    let dx = match op {
        UnaryOp::Neg => g.unary(UnaryOp::Neg, dy)?,
        UnaryOp::Exp => g.mul(dy, y)?,
        UnaryOp::Log => g.div(dy, x)?,
        UnaryOp::Sqrt => {
            let two_y = g.scale(y, 2.0)?;
            g.div(dy, two_y)?
        }
        UnaryOp::Abs => {
            let s = g.unary(UnaryOp::Sign, x)?;
            g.mul(dy, s)?
        }
        UnaryOp::Tanh => {
            let y2 = g.mul(y, y)?;
            let one = g.constant(1.0);
            let d = g.sub(one, y2)?;
            g.mul(dy, d)?
        }
        UnaryOp::Sigmoid => {
            let one = g.constant(1.0);
            let omy = g.sub(one, y)?;
            let d = g.mul(y, omy)?;
            g.mul(dy, d)?
        }
        UnaryOp::Sign | UnaryOp::StopGrad => return Ok(vec![None]),
    };
    Ok(vec![Some(dx)])
}

pub fn grad_binary(
    op: BinaryOp,
    g: &mut Graph,
    a: NodeId,
    b: NodeId,
    dy: NodeId,
) -> IrResult<Vec<Option<NodeId>>> {
    let (da, db) = match op {
        BinaryOp::Add => (dy, dy),
        BinaryOp::Sub => (dy, g.unary(UnaryOp::Neg, dy)?),
        BinaryOp::Mul => (g.mul(dy, b)?, g.mul(dy, a)?),
        BinaryOp::Div => {
            let da = g.div(dy, b)?;
            let q = g.div(da, b)?;
            let qa = g.mul(q, a)?;
            (da, g.unary(UnaryOp::Neg, qa)?)
        }
        BinaryOp::Max => {
            let mask = g.binary(BinaryOp::Gt, a, b)?;
            let zero = g.constant(0.0);
            (g.select(mask, dy, zero)?, g.select(mask, zero, dy)?)
        }
        BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq => return Ok(vec![None, None]),
    };
    let sa = g.shape(a).clone();
    let sb = g.shape(b).clone();
    Ok(vec![Some(g.sum_to(da, &sa)?), Some(g.sum_to(db, &sb)?)])
}

pub fn grad_select(g: &mut Graph, args: &[NodeId], dy: NodeId) -> IrResult<Vec<Option<NodeId>>> {
    if args.len() != 3 {
        ir_bail!("`select` takes 3 operands");
    }
    let zero = g.constant(0.0);
    let da = g.select(args[0], dy, zero)?;
    let db = g.select(args[0], zero, dy)?;
    let sa = g.shape(args[1]).clone();
    let sb = g.shape(args[2]).clone();
    Ok(vec![
        None,
        Some(g.sum_to(da, &sa)?),
        Some(g.sum_to(db, &sb)?),
    ])
}
