//! Checking one `model` block: name resolution, calls against the registry, parameter
//! creation and shape inference, producing a [`TypedModel`].
//!
//! Values are `Option<TNodeId>`: `None` marks a value whose error was already reported,
//! and anything computed from it is silently `None` too, so one mistake gives one
//! diagnostic. Nodes are appended only after their operands exist, which keeps
//! `TypedModel::nodes` in topological order. Layer parameters are named
//! `<kind>_<index>.<name>` with the index taken per kind when the call is reached, which
//! is source order for pipelines and nested calls alike. The shape rule of each call is
//! in `calls`.

mod calls;

use std::collections::HashMap;

use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::sema::args;
use crate::sema::registry;
use crate::sema::shapes;
use crate::sema::typed::*;
use crate::syntax::ast::{self, Arg, BinOp, Expr, ExprKind, Ident, ShapeLit, Span, StmtKind};

type Value = Option<TNodeId>;

/// Checks a model, pushing diagnostics; returns the typed model only when it has none.
pub fn check_model(model: &ast::Model, diags: &mut Vec<Diagnostic>) -> Option<TypedModel> {
    let mut c = ModelChecker {
        diags: Vec::new(),
        inputs: Vec::new(),
        params: Vec::new(),
        buffers: Vec::new(),
        nodes: Vec::new(),
        scope: Vec::new(),
        all_defs: Vec::new(),
        counters: HashMap::new(),
    };
    for stmt in &model.stmts {
        let name = match &stmt.kind {
            StmtKind::Input { name, .. }
            | StmtKind::Param { name, .. }
            | StmtKind::Let { name, .. } => Some(name),
            StmtKind::Output { name, .. } => name.as_ref(),
        };
        if let Some(n) = name {
            c.all_defs.push((n.name.clone(), n.span));
        }
    }

    let mut output: Option<(Value, Span)> = None;
    let mut output_name: Option<String> = None;
    for stmt in &model.stmts {
        match &stmt.kind {
            StmtKind::Input { name, shape } => {
                let v = c.shape_lit(shape).and_then(|dims| {
                    let index = c.inputs.len();
                    let shape = Shape::batched(dims);
                    c.inputs.push(TypedInput {
                        name: name.name.clone(),
                        shape: shape.clone(),
                        span: stmt.span,
                    });
                    c.push(TOp::Input(index), vec![], shape, name.span)
                });
                c.define(name, v);
            }
            StmtKind::Param { name, shape, init } => {
                let dims = c.shape_lit(shape);
                let init = match init {
                    Some(e) => {
                        let mut local = Vec::new();
                        let i = args::eval_init(e, &mut local);
                        c.diags.extend(local);
                        i
                    }
                    None if shape.dims.len() >= 2 => Some(Init::Glorot),
                    None => Some(Init::Zeros),
                };
                let v = match (dims, init) {
                    (Some(dims), Some(init)) => {
                        let id =
                            c.add_param(name.name.clone(), Shape::fixed(dims), init, stmt.span);
                        c.push(
                            TOp::Param(id),
                            vec![],
                            c.params[id.0 as usize].shape.clone(),
                            name.span,
                        )
                    }
                    _ => None,
                };
                c.define(name, v);
            }
            StmtKind::Let { name, value } => {
                let v = c.eval(value);
                c.define(name, v);
            }
            StmtKind::Output { name, value } => {
                let v = c.eval(value);
                if let Some(n) = name {
                    c.define(n, v);
                }
                match output {
                    None => {
                        output = Some((v, stmt.span));
                        output_name = name.as_ref().map(|n| n.name.clone());
                    }
                    Some((_, first)) => c.diags.push(
                        Diagnostic::new(
                            Code::ModelStructure,
                            format!("model `{}` has more than one `output`", model.name.name),
                        )
                        .label(stmt.span, "second output")
                        .label(first, "first output here")
                        .help("a model has exactly one output; bind other values with `let`"),
                    ),
                }
            }
        }
    }

    let has_input = model
        .stmts
        .iter()
        .any(|s| matches!(s.kind, StmtKind::Input { .. }));
    // "model `M` has no `input`" / "`output`".
    let lacks = |what: &str, label: &str, help: &str| {
        Diagnostic::new(
            Code::ModelStructure,
            format!("model `{}` has no `{what}`", model.name.name),
        )
        .label(model.name.span, label)
        .help(help)
    };
    if !has_input {
        let d = lacks(
            "input",
            "no input declared",
            "declare one, e.g. `input x: [784]`",
        );
        c.diags.push(d);
    }
    let out = match output {
        None => {
            let d = lacks(
                "output",
                "no output",
                "add one, e.g. `output y = x |> dense(10)`",
            );
            c.diags.push(d);
            None
        }
        Some((Some(id), span)) if has_input && !c.nodes[id.0 as usize].shape.batched => {
            c.diags.push(
                Diagnostic::new(
                    Code::ModelStructure,
                    "the output does not depend on any input",
                )
                .label(
                    span,
                    format!(
                        "shape {} has no batch dimension",
                        c.nodes[id.0 as usize].shape
                    ),
                )
                .help("compute the output from a model `input`"),
            );
            None
        }
        Some((v, _)) => v,
    };

    let ok = c.diags.is_empty();
    diags.append(&mut c.diags);
    let output = out.filter(|_| ok)?;
    Some(TypedModel {
        name: model.name.name.clone(),
        inputs: c.inputs,
        params: c.params,
        buffers: c.buffers,
        nodes: c.nodes,
        output,
        output_name,
        span: model.span,
    })
}

struct ModelChecker {
    diags: Vec<Diagnostic>,
    inputs: Vec<TypedInput>,
    params: Vec<TypedParam>,
    buffers: Vec<TypedBuffer>,
    nodes: Vec<TNode>,
    /// Names defined so far: name, value, span of the defining identifier.
    scope: Vec<(String, Value, Span)>,
    /// Every name the model defines, to tell "used before definition" from "undefined".
    all_defs: Vec<(String, Span)>,
    /// Next index per layer kind.
    counters: HashMap<&'static str, usize>,
}

impl ModelChecker {
    fn shape_of(&self, id: TNodeId) -> &Shape {
        &self.nodes[id.0 as usize].shape
    }

    /// Appends a node after checking its element count.
    fn push(&mut self, op: TOp, operands: Vec<TNodeId>, shape: Shape, span: Span) -> Value {
        if let Err(d) = shapes::check_size(&shape, span) {
            self.diags.push(d);
            return None;
        }
        let id = TNodeId(u32::try_from(self.nodes.len()).ok()?);
        self.nodes.push(TNode {
            op,
            operands,
            shape,
            span,
        });
        Some(id)
    }

    fn add_param(&mut self, name: String, shape: Shape, init: Init, span: Span) -> ParamId {
        let id = ParamId(self.params.len() as u32);
        self.params.push(TypedParam {
            name,
            shape,
            init,
            span,
        });
        id
    }

    fn define(&mut self, name: &Ident, v: Value) {
        if let Some((_, _, first)) = self.scope.iter().find(|s| s.0 == name.name) {
            self.diags.push(
                Diagnostic::new(Code::Rebound, format!("`{}` is defined twice", name.name))
                    .label(name.span, "defined again here")
                    .label(*first, "first defined here")
                    .help("names are never rebound; pick a new name"),
            );
            return;
        }
        self.scope.push((name.name.clone(), v, name.span));
    }

    /// Checks a literal shape: no zero dims, element count within limits.
    fn shape_lit(&mut self, shape: &ShapeLit) -> Option<Vec<usize>> {
        let mut ok = true;
        for d in &shape.dims {
            if d.value == 0 {
                ok = false;
                self.diags.push(
                    Diagnostic::new(Code::EmptyShape, "shape with a zero dimension")
                        .label(d.span, "this dimension is 0")
                        .help("every dimension must be at least 1"),
                );
            }
        }
        if !ok {
            return None;
        }
        let dims: Option<Vec<usize>> = shape
            .dims
            .iter()
            .map(|d| usize::try_from(d.value).ok())
            .collect();
        match dims {
            Some(dims) if shapes::checked_elems(&dims).is_some() => Some(dims),
            _ => {
                self.diags.push(
                    Diagnostic::new(Code::ShapeOverflow, "shape with too many elements")
                        .label(shape.span, "element count overflows")
                        .help(format!(
                            "a tensor may hold at most {} elements per sample",
                            shapes::MAX_ELEMS
                        )),
                );
                None
            }
        }
    }

    fn lookup(&mut self, id: &Ident) -> Value {
        if let Some((_, v, _)) = self.scope.iter().find(|s| s.0 == id.name) {
            return *v;
        }
        let d = if let Some((_, def)) = self.all_defs.iter().find(|s| s.0 == id.name) {
            Diagnostic::new(
                Code::UndefinedName,
                format!("`{}` is used before it is defined", id.name),
            )
            .label(id.span, "used here")
            .label(*def, "defined here")
            .help("names must be defined before their first use")
        } else if let Some(op) = registry::lookup_in_model(&id.name) {
            Diagnostic::new(
                Code::NotATensor,
                format!("`{}` is {}, not a tensor", id.name, op.kind().a_noun()),
            )
            .label(id.span, "used as a value")
            .help(format!(
                "apply it to a tensor: `x |> {0}` or `{0}(x)`",
                id.name
            ))
        } else {
            let names: Vec<&str> = self.scope.iter().map(|s| s.0.as_str()).collect();
            Diagnostic::new(Code::UndefinedName, format!("undefined name `{}`", id.name))
                .label(id.span, "not defined")
                .maybe_help(did_you_mean(&id.name, names))
        };
        self.diags.push(d);
        None
    }

    fn not_a_tensor(&mut self, e: &Expr) -> Value {
        self.diags.push(
            Diagnostic::new(Code::NotATensor, "expected a tensor")
                .label(e.span, format!("found {}", args::describe(e))),
        );
        None
    }

    fn eval(&mut self, e: &Expr) -> Value {
        if args::is_numeric_constant(e) {
            return match args::eval_number(e) {
                Ok(x) => self.push(TOp::Const(x), vec![], Shape::scalar(), e.span),
                Err(d) => {
                    self.diags.push(d);
                    None
                }
            };
        }
        match &e.kind {
            ExprKind::Number { .. } | ExprKind::Str(_) | ExprKind::Bool(_) | ExprKind::List(_) => {
                self.not_a_tensor(e)
            }
            ExprKind::Name(id) => self.lookup(id),
            ExprKind::Paren(inner) => self.eval(inner),
            ExprKind::Neg(inner) => {
                let x = self.eval(inner)?;
                let shape = self.shape_of(x).clone();
                self.push(TOp::Neg, vec![x], shape, e.span)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval(lhs);
                let b = self.eval(rhs);
                self.binary(*op, (a?, lhs.span), (b?, rhs.span), e.span)
            }
            ExprKind::Call { callee, args } => self.call(callee, None, args, e.span),
            ExprKind::Pipe { input, stage } => {
                let v = self.eval(input);
                match &stage.kind {
                    ExprKind::Name(id) => self.call(id, Some((v, input.span)), &[], stage.span),
                    ExprKind::Call { callee, args } => {
                        self.call(callee, Some((v, input.span)), args, stage.span)
                    }
                    _ => {
                        self.diags.push(
                            Diagnostic::new(
                                Code::NotATensor,
                                "a pipeline stage must be a layer or function",
                            )
                            .label(stage.span, format!("found {}", args::describe(stage))),
                        );
                        None
                    }
                }
            }
        }
    }

    fn binary(&mut self, op: BinOp, a: (TNodeId, Span), b: (TNodeId, Span), span: Span) -> Value {
        let sa = self.shape_of(a.0).clone();
        let sb = self.shape_of(b.0).clone();
        let result = match op {
            BinOp::MatMul => shapes::matmul(&sa, &sb).map(|s| (TOp::MatMul, s)).map_err(|why| {
                Diagnostic::new(Code::MatMulMismatch, format!("cannot multiply {sa} @ {sb}"))
                    .label(a.1, format!("shape {sa}"))
                    .label(b.1, format!("shape {sb}"))
                    .note(why)
                    .help("`@` needs `[.., m, n] @ [.., n, k]`: the last dim on the left must equal the second-to-last on the right")
            }),
            _ => {
                let f = match op {
                    BinOp::Add => BinaryFn::Add,
                    BinOp::Sub => BinaryFn::Sub,
                    BinOp::Mul => BinaryFn::Mul,
                    _ => BinaryFn::Div,
                };
                shapes::broadcast(&sa, &sb).map(|s| (TOp::Binary(f), s)).ok_or_else(|| {
                    Diagnostic::new(Code::Broadcast, format!("shapes {sa} and {sb} do not broadcast for `{}`", op.symbol()))
                        .label(a.1, format!("shape {sa}"))
                        .label(b.1, format!("shape {sb}"))
                        .help("aligned from the right, each pair of dims must be equal or one of them 1")
                })
            }
        };
        match result {
            Ok((top, shape)) => self.push(top, vec![a.0, b.0], shape, span),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    fn call(
        &mut self,
        callee: &Ident,
        piped: Option<(Value, Span)>,
        call_args: &[Arg],
        span: Span,
    ) -> Value {
        let Some(op) = registry::lookup_in_model(&callee.name) else {
            self.unknown_callee(callee);
            return None;
        };
        let index = (!op.creates.is_empty()).then(|| {
            let c = self.counters.entry(op.name).or_insert(0);
            *c += 1;
            *c - 1
        });
        let mut local = Vec::new();
        let bound = args::bind(op, piped, call_args, span, &mut local);
        let args = bound.and_then(|b| args::eval_args(&b, &mut |e| self.eval(e), &mut local));
        self.diags.append(&mut local);
        let args = args?;
        let operands = args.tensors()?;
        match self.apply(op, index.unwrap_or(0), &args, &operands, span) {
            Ok(v) => v,
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    fn unknown_callee(&mut self, callee: &Ident) {
        let d = if self.scope.iter().any(|s| s.0 == callee.name) {
            Diagnostic::new(
                Code::NotATensor,
                format!("`{}` is a tensor, not a function", callee.name),
            )
            .label(callee.span, "not callable")
            .help("combine tensors with operators such as `+` or `@`")
        } else if let Some(other) = registry::find(&callee.name).next() {
            Diagnostic::new(
                Code::UnknownFunction,
                format!(
                    "`{}` is {} and cannot be applied in a model",
                    callee.name,
                    other.kind().a_noun()
                ),
            )
            .label(callee.span, "not a layer or function")
            .help(format!(
                "{} belongs in a `train` block",
                other.kind().a_noun()
            ))
        } else {
            let names = registry::names_where(|k| k.in_model());
            Diagnostic::new(
                Code::UnknownFunction,
                format!("unknown layer or function `{}`", callee.name),
            )
            .label(callee.span, "unknown")
            .help(
                did_you_mean(&callee.name, names)
                    .unwrap_or_else(|| "run `nnc doc` to list layers and functions".into()),
            )
        };
        self.diags.push(d);
    }
}
