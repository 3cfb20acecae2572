//! The graph arena: nodes in a `Vec` indexed by [`NodeId`], in topological order (every
//! operand id is smaller than its user's id), with shapes in a side table.
//!
//! Pure nodes are hash-consed on insertion: pushing an op with the same attributes and
//! operands as an existing node returns the existing id, so common subexpressions are
//! shared for free. Inputs are the only impure nodes; their names are unique.
//!
//! Every op is inserted through [`Graph::push`], which runs the op's shape rule, so a
//! graph built through this API always satisfies `verify::verify`.

use std::collections::HashMap;
use std::fmt;

use super::op::Op;
use super::ops::elementwise::{BinaryOp, UnaryOp};
use super::ops::reduce::ReduceOp;
use super::{ir_bail, IrError, IrResult};

/// Handle of a node; printed as `%<index>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One dimension: the symbolic batch size `N` or a known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    N,
    K(usize),
}

impl Dim {
    /// The concrete size for a given batch.
    pub fn resolve(self, batch: usize) -> usize {
        match self {
            Dim::N => batch,
            Dim::K(k) => k,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::N => f.write_str("N"),
            Dim::K(k) => write!(f, "{k}"),
        }
    }
}

/// A full shape (the batch dimension, when present, is an explicit `Dim::N`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    pub fn fixed(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::K(d)).collect())
    }

    /// `[N, dims..]`.
    pub fn batched(dims: &[usize]) -> Shape {
        let mut v = vec![Dim::N];
        v.extend(dims.iter().map(|&d| Dim::K(d)));
        Shape(v)
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    pub fn resolve(&self, batch: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.resolve(batch)).collect()
    }

    /// Number of `N` dims and the product of the known dims: two shapes hold the same
    /// number of elements for every batch size exactly when these agree. `None` when the
    /// product overflows.
    pub fn volume(&self) -> Option<(usize, usize)> {
        let n = self.0.iter().filter(|d| **d == Dim::N).count();
        let mut k: usize = 1;
        for d in &self.0 {
            if let Dim::K(x) = d {
                k = k.checked_mul(*x)?;
            }
        }
        Some((n, k))
    }

    pub fn has_batch(&self) -> bool {
        self.0.contains(&Dim::N)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// NumPy broadcasting of two shapes (`N` broadcasts with 1 and with `N` only).
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> IrResult<Shape> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        let d = match (da, db) {
            (x, y) if x == y => x,
            (Dim::K(1), y) => y,
            (x, Dim::K(1)) => x,
            _ => ir_bail!("shapes {a} and {b} do not broadcast"),
        };
        out.push(d);
    }
    Ok(Shape(out))
}

/// The dim `k` places from the right, or 1 past the shape's rank.
fn dim_from_right(s: &Shape, k: usize) -> Dim {
    if k < s.rank() {
        s.0[s.rank() - 1 - k]
    } else {
        Dim::K(1)
    }
}

/// A node: an op and its operands.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub args: Vec<NodeId>,
}

/// A dataflow graph with named inputs (the `Input` nodes) and named outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    nodes: Vec<Node>,
    /// Side table: the shape of every node.
    shapes: Vec<Shape>,
    outputs: Vec<(String, NodeId)>,
    dedup: HashMap<(Op, Vec<NodeId>), NodeId>,
    input_names: HashMap<String, NodeId>,
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        Graph {
            name: name.to_string(),
            ..Graph::default()
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn op(&self, id: NodeId) -> &Op {
        &self.nodes[id.index()].op
    }

    pub fn args(&self, id: NodeId) -> &[NodeId] {
        &self.nodes[id.index()].args
    }

    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.shapes[id.index()]
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    /// The input nodes, in id order.
    pub fn inputs(&self) -> Vec<(String, NodeId)> {
        self.ids()
            .filter_map(|id| match self.op(id) {
                Op::Input { name } => Some((name.clone(), id)),
                _ => None,
            })
            .collect()
    }

    pub fn input_id(&self, name: &str) -> Option<NodeId> {
        self.input_names.get(name).copied()
    }

    pub fn output_id(&self, name: &str) -> Option<NodeId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    /// Adds a named input of the given shape; names are unique.
    pub fn input(&mut self, name: &str, shape: Shape) -> IrResult<NodeId> {
        if self.input_names.contains_key(name) {
            ir_bail!("input `{name}` is defined twice");
        }
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Node {
            op: Op::Input {
                name: name.to_string(),
            },
            args: Vec::new(),
        });
        self.shapes.push(shape);
        self.input_names.insert(name.to_string(), id);
        Ok(id)
    }

    /// Inserts a pure op (shape-checked, hash-consed) and returns its id.
    pub fn push(&mut self, op: Op, args: &[NodeId]) -> IrResult<NodeId> {
        if let Op::Input { .. } = op {
            ir_bail!("inputs are added with `Graph::input`");
        }
        for a in args {
            if a.index() >= self.nodes.len() {
                ir_bail!("operand {a} does not exist");
            }
        }
        let key = (op, args.to_vec());
        if let Some(&id) = self.dedup.get(&key) {
            return Ok(id);
        }
        let arg_shapes: Vec<&Shape> = args.iter().map(|a| self.shape(*a)).collect();
        let shape = key.0.shape(&arg_shapes)?;
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Node {
            op: key.0.clone(),
            args: key.1.clone(),
        });
        self.shapes.push(shape);
        self.dedup.insert(key, id);
        Ok(id)
    }

    /// Names a value as an output; a name may be given once.
    pub fn set_output(&mut self, name: &str, id: NodeId) -> IrResult<()> {
        if self.outputs.iter().any(|(n, _)| n == name) {
            ir_bail!("output `{name}` is defined twice");
        }
        if id.index() >= self.nodes.len() {
            ir_bail!("output `{name}` refers to missing node {id}");
        }
        self.outputs.push((name.to_string(), id));
        Ok(())
    }

    /// A copy holding only the inputs and the nodes the outputs depend on, renumbered
    /// densely in the original order (dead-code elimination before printing).
    pub fn compact(&self) -> Graph {
        let mut live = vec![false; self.len()];
        for (_, id) in &self.outputs {
            live[id.index()] = true;
        }
        for i in (0..self.len()).rev() {
            if live[i] || matches!(self.nodes[i].op, Op::Input { .. }) {
                live[i] = true;
                for a in &self.nodes[i].args {
                    live[a.index()] = true;
                }
            }
        }
        let mut out = Graph::new(&self.name);
        let mut map = vec![NodeId(0); self.len()];
        for i in 0..self.len() {
            if !live[i] {
                continue;
            }
            let node = &self.nodes[i];
            let args: Vec<NodeId> = node.args.iter().map(|a| map[a.index()]).collect();
            map[i] = match &node.op {
                Op::Input { name } => out
                    .input(name, self.shapes[i].clone())
                    .expect("names were unique in the source graph"),
                op => out
                    .push(op.clone(), &args)
                    .expect("a node that was valid stays valid when copied"),
            };
        }
        for (name, id) in &self.outputs {
            out.outputs.push((name.clone(), map[id.index()]));
        }
        out
    }

    /// Used by the parser to restore a node with its printed id; fails on mismatch.
    pub(crate) fn expect_next(&self, id: u32) -> IrResult<()> {
        if id as usize != self.nodes.len() {
            ir_bail!("expected node %{}, found %{id}", self.nodes.len());
        }
        Ok(())
    }

    /// Breaks a graph on purpose, so tests can check that the verifier notices.
    #[cfg(test)]
    pub(crate) fn corrupt_for_test(
        &mut self,
        id: NodeId,
        shape: Option<Shape>,
        args: Option<Vec<NodeId>>,
    ) {
        if let Some(s) = shape {
            self.shapes[id.index()] = s;
        }
        if let Some(a) = args {
            self.nodes[id.index()].args = a;
        }
    }

    /// Raw parts, for the verifier.
    pub(crate) fn parts(&self) -> (&[Node], &[Shape]) {
        (&self.nodes, &self.shapes)
    }

    // ---- builder helpers (each goes through `push`) ----

    pub fn constant(&mut self, value: f32) -> NodeId {
        self.push(Op::Const(value.to_bits()), &[])
            .expect("a scalar constant always has a shape")
    }

    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> IrResult<NodeId> {
        self.push(Op::Unary(op), &[x])
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> IrResult<NodeId> {
        self.push(Op::Binary(op), &[a, b])
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> IrResult<NodeId> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn sub(&mut self, a: NodeId, b: NodeId) -> IrResult<NodeId> {
        self.binary(BinaryOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: NodeId, b: NodeId) -> IrResult<NodeId> {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn div(&mut self, a: NodeId, b: NodeId) -> IrResult<NodeId> {
        self.binary(BinaryOp::Div, a, b)
    }

    /// `x * c` for a scalar constant `c`.
    pub fn scale(&mut self, x: NodeId, c: f32) -> IrResult<NodeId> {
        let c = self.constant(c);
        self.mul(x, c)
    }

    pub fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> IrResult<NodeId> {
        self.push(Op::Select, &[cond, a, b])
    }

    /// Reduces `axes` (kept with size 1).
    pub fn reduce(&mut self, func: ReduceOp, x: NodeId, axes: &[usize]) -> IrResult<NodeId> {
        let mut axes = axes.to_vec();
        axes.sort_unstable();
        axes.dedup();
        if axes.is_empty() {
            return Ok(x);
        }
        self.push(Op::Reduce { func, axes }, &[x])
    }

    pub fn reshape(&mut self, x: NodeId, shape: Shape) -> IrResult<NodeId> {
        if *self.shape(x) == shape {
            return Ok(x);
        }
        self.push(Op::Reshape { shape }, &[x])
    }

    pub fn broadcast_to(&mut self, x: NodeId, shape: Shape) -> IrResult<NodeId> {
        if *self.shape(x) == shape {
            return Ok(x);
        }
        self.push(Op::Broadcast { shape }, &[x])
    }

    pub fn transpose(&mut self, x: NodeId, perm: Vec<usize>) -> IrResult<NodeId> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.push(Op::Transpose { perm }, &[x])
    }

    /// Swaps the last two dims.
    pub fn transpose_last2(&mut self, x: NodeId) -> IrResult<NodeId> {
        let r = self.shape(x).rank();
        if r < 2 {
            ir_bail!("cannot swap the last two dims of a rank-{r} value");
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.transpose(x, perm)
    }

    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> IrResult<NodeId> {
        self.push(Op::MatMul, &[a, b])
    }

    /// Sums a broadcast value back to `target` (the inverse of broadcasting `target` up to
    /// this value's shape): leading extra dims and dims where `target` has 1 are summed.
    pub fn sum_to(&mut self, x: NodeId, target: &Shape) -> IrResult<NodeId> {
        let shape = self.shape(x).clone();
        if shape == *target {
            return Ok(x);
        }
        if target.rank() > shape.rank() {
            ir_bail!("cannot sum {shape} down to {target}");
        }
        let extra = shape.rank() - target.rank();
        let mut axes: Vec<usize> = (0..extra).collect();
        for (i, d) in target.0.iter().enumerate() {
            let have = shape.0[extra + i];
            if *d == Dim::K(1) && have != Dim::K(1) {
                axes.push(extra + i);
            } else if *d != have {
                ir_bail!("cannot sum {shape} down to {target}");
            }
        }
        let r = self.reduce(ReduceOp::Sum, x, &axes)?;
        self.reshape(r, target.clone())
    }

    /// The runtime batch size as a scalar.
    pub fn batch_size(&mut self) -> NodeId {
        self.push(Op::BatchSize, &[])
            .expect("the batch size always has a shape")
    }
}

impl From<IrError> for String {
    fn from(e: IrError) -> String {
        e.message
    }
}
