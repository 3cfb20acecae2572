//! Argument checking against the op registry, and the constant evaluator.
//!
//! A call is checked in two steps: [`bind`] matches positional and named arguments (and a
//! piped input) to the op's parameters, reporting order, unknown, duplicate, surplus and
//! missing arguments; [`eval_args`] then turns each bound expression into a typed
//! [`ArgValue`] (tensors through a callback supplied by the model checker, everything else
//! through [`eval_number`] and friends), applying registry defaults. Each failing step
//! pushes its diagnostics and returns `None`; nothing here panics on user input.

use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::sema::registry::{
    self, ArgDefault, InitKind, OpId, OpKind, OpSpec, ParamSpec, ParamType, Range,
};
use crate::sema::typed::{Init, TNodeId};
use crate::syntax::ast::{Arg, BinOp, Expr, ExprKind, Span};

/// Where a bound parameter's value comes from.
#[derive(Clone, Copy, Debug)]
pub enum Slot<'e> {
    /// The value piped in with `|>`, already evaluated (`None` when it failed).
    Piped(Option<TNodeId>, Span),
    Expr(&'e Expr),
}

impl Slot<'_> {
    pub fn span(&self) -> Span {
        match self {
            Slot::Piped(_, s) => *s,
            Slot::Expr(e) => e.span,
        }
    }
}

/// The arguments of one call matched to its parameters: `slots[i]` holds what was given
/// for `op.params[i]` (empty when absent, several only for `Tensors`).
pub struct Bound<'e> {
    pub op: &'static OpSpec,
    pub slots: Vec<Vec<Slot<'e>>>,
    pub call_span: Span,
}

/// A checked argument value.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    /// `None`: the tensor expression failed and was already reported.
    Tensor(Option<TNodeId>),
    Tensors(Vec<Option<TNodeId>>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<usize>),
    Init(Init),
}

/// Checked arguments of one call, in parameter order, with the span of each given value
/// (the call's span for defaults).
#[derive(Clone, Debug)]
pub struct Args {
    pub values: Vec<(&'static str, ArgValue, Span)>,
}

impl Args {
    pub fn get(&self, name: &str) -> Option<&ArgValue> {
        self.values.iter().find(|v| v.0 == name).map(|v| &v.1)
    }

    pub fn span(&self, name: &str) -> Option<Span> {
        self.values.iter().find(|v| v.0 == name).map(|v| v.2)
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(ArgValue::Int(i)) => *i,
            _ => 0,
        }
    }

    /// An integer parameter whose registry minimum is at least 1.
    pub fn count(&self, name: &str) -> usize {
        usize::try_from(self.int(name)).unwrap_or(0)
    }

    pub fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Some(ArgValue::Float(x)) => *x,
            _ => 0.0,
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Some(ArgValue::Bool(true)))
    }

    pub fn str(&self, name: &str) -> &str {
        match self.get(name) {
            Some(ArgValue::Str(s)) => s,
            _ => "",
        }
    }

    /// A [`ParamType::Pair`] argument as `[rows, columns]` (one number stands for both).
    pub fn pair(&self, name: &str) -> [usize; 2] {
        match self.get(name) {
            Some(ArgValue::Int(i)) => [usize::try_from(*i).unwrap_or(0); 2],
            Some(ArgValue::Ints(v)) if v.len() == 2 => [v[0], v[1]],
            _ => [0, 0],
        }
    }

    pub fn ints(&self, name: &str) -> &[usize] {
        match self.get(name) {
            Some(ArgValue::Ints(v)) => v,
            _ => &[],
        }
    }

    pub fn init(&self, name: &str) -> Init {
        match self.get(name) {
            Some(ArgValue::Init(i)) => i.clone(),
            _ => Init::Zeros,
        }
    }

    /// Every tensor operand in order (`Tensor` and `Tensors` parameters); `None` when any
    /// of them failed.
    pub fn tensors(&self) -> Option<Vec<TNodeId>> {
        let mut out = Vec::new();
        for (_, v, _) in &self.values {
            match v {
                ArgValue::Tensor(t) => out.push((*t)?),
                ArgValue::Tensors(ts) => {
                    for t in ts {
                        out.push((*t)?);
                    }
                }
                _ => {}
            }
        }
        Some(out)
    }
}

fn signature_help(op: &OpSpec) -> String {
    format!("the signature is `{}`", op.signature())
}

/// Matches arguments to parameters. `piped` is the input of `x |> op(..)`; it comes before
/// every written argument.
pub fn bind<'e>(
    op: &'static OpSpec,
    piped: Option<(Option<TNodeId>, Span)>,
    args: &'e [Arg],
    call_span: Span,
    diags: &mut Vec<Diagnostic>,
) -> Option<Bound<'e>> {
    let before = diags.len();
    let mut slots: Vec<Vec<Slot<'e>>> = vec![Vec::new(); op.params.len()];
    let mut given_at: Vec<Option<Span>> = vec![None; op.params.len()];

    let mut positional: Vec<Slot<'e>> = Vec::new();
    if let Some((v, span)) = piped {
        positional.push(Slot::Piped(v, span));
    }
    let mut first_named: Option<&Arg> = None;
    for arg in args {
        match (&arg.name, first_named) {
            (None, Some(named)) => {
                diags.push(
                    Diagnostic::new(Code::ArgumentOrder, "positional argument after a named one")
                        .label(arg.span, "positional argument")
                        .label(named.span, "named argument given before it")
                        .help("put positional arguments first, or name this one"),
                );
                // Bound anyway, so that its parameter is not reported missing as well.
                positional.push(Slot::Expr(&arg.value));
            }
            (None, None) => positional.push(Slot::Expr(&arg.value)),
            (Some(_), None) => first_named = Some(arg),
            (Some(_), Some(_)) => {}
        }
    }

    // Positional arguments fill parameters in order; `Tensors` takes them all.
    let mut next = 0;
    for (i, p) in op.params.iter().enumerate() {
        if next >= positional.len() {
            break;
        }
        if p.ty == ParamType::Tensors {
            slots[i] = positional[next..].to_vec();
            given_at[i] = Some(positional[next].span());
            next = positional.len();
        } else {
            slots[i].push(positional[next]);
            given_at[i] = Some(positional[next].span());
            next += 1;
        }
    }
    if next < positional.len() {
        let extra = positional[next].span();
        let piped_note = if piped.is_some() {
            " (the piped value is the first argument)"
        } else {
            ""
        };
        diags.push(
            Diagnostic::new(
                Code::ArgumentOrder,
                format!(
                    "`{}` takes at most {} positional argument{}, found {}{piped_note}",
                    op.name,
                    op.params.len(),
                    if op.params.len() == 1 { "" } else { "s" },
                    positional.len()
                ),
            )
            .label(extra, "unexpected argument")
            .help(signature_help(op)),
        );
    }

    for arg in args {
        let Some(name) = &arg.name else { continue };
        let Some(i) = op.params.iter().position(|p| p.name == name.name) else {
            let candidates: Vec<&str> = op.params.iter().map(|p| p.name).collect();
            let msg = if op.params.is_empty() {
                format!("`{}` takes no arguments", op.name)
            } else {
                format!("`{}` has no argument `{}`", op.name, name.name)
            };
            diags.push(
                Diagnostic::new(Code::UnknownArgument, msg)
                    .label(name.span, "unknown argument")
                    .help(
                        did_you_mean(&name.name, candidates).unwrap_or_else(|| signature_help(op)),
                    ),
            );
            continue;
        };
        if op.params[i].ty == ParamType::Tensors {
            diags.push(
                Diagnostic::new(
                    Code::UnknownArgument,
                    format!("the tensors of `{}` cannot be named", op.name),
                )
                .label(name.span, "named here")
                .help(signature_help(op)),
            );
            continue;
        }
        if let Some(first) = given_at[i] {
            diags.push(
                Diagnostic::new(
                    Code::ArgumentOrder,
                    format!("argument `{}` given twice", name.name),
                )
                .label(arg.span, "given again here")
                .label(first, "first given here"),
            );
            continue;
        }
        slots[i].push(Slot::Expr(&arg.value));
        given_at[i] = Some(arg.span);
    }

    for (i, p) in op.params.iter().enumerate() {
        let missing = match p.ty {
            ParamType::Tensors => slots[i].len() < 2,
            _ => slots[i].is_empty() && p.default == ArgDefault::Required,
        };
        if !missing {
            continue;
        }
        let d = match p.ty {
            ParamType::Tensor => Diagnostic::new(
                Code::MissingArgument,
                format!("`{}` is missing its input tensor", op.name),
            )
            .label(call_span, "no input")
            .help(format!("pipe a value into it: `x |> {}`", short_call(op))),
            ParamType::Tensors => Diagnostic::new(
                Code::MissingArgument,
                format!("`{}` needs at least two tensors", op.name),
            )
            .label(call_span, format!("{} given", slots[i].len()))
            .help(signature_help(op)),
            _ => Diagnostic::new(
                Code::MissingArgument,
                format!("missing argument `{}` of `{}`", p.name, op.name),
            )
            .label(call_span, format!("`{}` not given", p.name))
            .help(signature_help(op)),
        };
        diags.push(d);
    }

    (diags.len() == before).then_some(Bound {
        op,
        slots,
        call_span,
    })
}

/// `dense(units)` for help texts: the signature without the tensor input.
fn short_call(op: &OpSpec) -> String {
    let parts: Vec<&str> = op
        .settings()
        .filter(|p| p.default == ArgDefault::Required)
        .map(|p| p.name)
        .collect();
    if parts.is_empty() {
        op.name.to_string()
    } else {
        format!("{}({})", op.name, parts.join(", "))
    }
}

/// Turns bound slots into typed values. Tensor expressions go through `tensor`, which
/// reports its own errors and returns `None` for a failed value (a poisoned value is not
/// an error of the call). Returns `None` when a non-tensor argument is invalid.
pub fn eval_args(
    bound: &Bound<'_>,
    tensor: &mut dyn FnMut(&Expr) -> Option<TNodeId>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Args> {
    let op = bound.op;
    let mut values: Vec<(&'static str, ArgValue, Span)> = Vec::new();
    let mut ok = true;
    for (p, slots) in op.params.iter().zip(&bound.slots) {
        let mut eval_tensor = |s: &Slot<'_>| match s {
            Slot::Piped(v, _) => *v,
            Slot::Expr(e) => tensor(e),
        };
        let value = match (p.ty, slots.as_slice()) {
            (ParamType::Tensors, given) => {
                let vs = given.iter().map(&mut eval_tensor).collect();
                Some((ArgValue::Tensors(vs), bound.call_span))
            }
            (ParamType::Tensor, [s]) => Some((ArgValue::Tensor(eval_tensor(s)), s.span())),
            (_, [Slot::Expr(e)]) => eval_const_arg(op, p, e, diags).map(|v| (v, e.span)),
            (_, [Slot::Piped(_, span)]) => {
                diags.push(
                    Diagnostic::new(
                        Code::NotATensor,
                        format!(
                            "`{}` expects {} as `{}`, not a tensor",
                            op.name, p.ty, p.name
                        ),
                    )
                    .label(*span, "tensor piped in here"),
                );
                None
            }
            _ => default_value(p, &values).map(|v| (v, bound.call_span)),
        };
        match value {
            Some((v, span)) => values.push((p.name, v, span)),
            None => ok = false,
        }
    }
    ok.then_some(Args { values })
}

fn default_value(p: &ParamSpec, earlier: &[(&'static str, ArgValue, Span)]) -> Option<ArgValue> {
    Some(match p.default {
        ArgDefault::Required => return None,
        ArgDefault::Int(i) => ArgValue::Int(i),
        ArgDefault::Float(x) => ArgValue::Float(x),
        ArgDefault::Bool(b) => ArgValue::Bool(b),
        ArgDefault::Str(s) => ArgValue::Str(s.to_string()),
        ArgDefault::Init(name) => {
            ArgValue::Init(init_of(registry::lookup(name, OpKind::Initializer)?, None)?)
        }
        ArgDefault::SameAs(other) => earlier.iter().find(|v| v.0 == other)?.1.clone(),
    })
}

/// What an expression is, for "found ..." labels.
pub fn describe(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number { text, .. } => format!("`{text}`"),
        ExprKind::Str(s) => format!("\"{s}\""),
        ExprKind::Bool(b) => format!("`{b}`"),
        ExprKind::List(_) => "a list".into(),
        ExprKind::Name(id) => format!("`{}`", id.name),
        ExprKind::Call { callee, .. } => format!("a call of `{}`", callee.name),
        ExprKind::Neg(_) | ExprKind::Binary { .. } => "an expression".into(),
        ExprKind::Pipe { .. } => "a pipeline".into(),
        ExprKind::Paren(inner) => describe(inner),
    }
}

fn invalid(op: &OpSpec, p: &ParamSpec, span: Span, found: impl Into<String>) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidArgument,
        format!("`{}` of `{}` must be {}", p.name, op.name, p.ty),
    )
    .label(span, found)
}

fn strip_parens(mut e: &Expr) -> &Expr {
    while let ExprKind::Paren(inner) = &e.kind {
        e = inner;
    }
    e
}

/// Checks one non-tensor argument against its parameter type.
pub fn eval_const_arg(
    op: &OpSpec,
    p: &ParamSpec,
    e: &Expr,
    diags: &mut Vec<Diagnostic>,
) -> Option<ArgValue> {
    let inner = strip_parens(e);
    let result = match p.ty {
        ParamType::Tensor | ParamType::Tensors => Err(invalid(op, p, e.span, "not a tensor")),
        ParamType::Int { min } => eval_int(e)
            .and_then(|i| {
                if i >= min {
                    Ok(ArgValue::Int(i))
                } else {
                    Err(invalid(op, p, e.span, format!("found {i}")))
                }
            })
            .map_err(|d| retitle(d, op, p)),
        ParamType::Float(range) => eval_number(e)
            .and_then(|x| check_range(op, p, range, x, e.span).map(ArgValue::Float))
            .map_err(|d| retitle(d, op, p)),
        ParamType::Bool => match &inner.kind {
            ExprKind::Bool(b) => Ok(ArgValue::Bool(*b)),
            _ => Err(invalid(op, p, e.span, format!("found {}", describe(e)))),
        },
        ParamType::Str(choices) => match &inner.kind {
            ExprKind::Str(s) if choices.is_empty() || choices.contains(&s.as_str()) => {
                Ok(ArgValue::Str(s.clone()))
            }
            ExprKind::Str(s) => Err(invalid(op, p, e.span, format!("found \"{s}\""))
                .maybe_help(did_you_mean(s, choices.iter().copied()))),
            _ => Err(invalid(op, p, e.span, format!("found {}", describe(e)))),
        },
        ParamType::Ints => match &inner.kind {
            ExprKind::List(items) if !items.is_empty() => {
                let mut dims = Vec::new();
                let mut err = None;
                for item in items {
                    match eval_int(item) {
                        Ok(i) if i >= 1 => dims.push(usize::try_from(i).unwrap_or(usize::MAX)),
                        Ok(i) => {
                            err = Some(invalid(op, p, item.span, format!("found {i}")));
                            break;
                        }
                        Err(d) => {
                            err = Some(retitle(d, op, p));
                            break;
                        }
                    }
                }
                err.map_or(Ok(ArgValue::Ints(dims)), Err)
            }
            _ => Err(
                invalid(op, p, e.span, format!("found {}", describe(e))).help(format!(
                    "write the dimensions as a list: `{} = [2, 3]`",
                    p.name
                )),
            ),
        },
        ParamType::Pair { min } => match &inner.kind {
            ExprKind::List(items) if items.len() == 2 => {
                let mut pair = Vec::new();
                let mut err = None;
                for item in items {
                    match eval_int(item) {
                        Ok(i) if i >= min => pair.push(usize::try_from(i).unwrap_or(usize::MAX)),
                        Ok(i) => {
                            err = Some(invalid(op, p, item.span, format!("found {i}")));
                            break;
                        }
                        Err(d) => {
                            err = Some(retitle(d, op, p));
                            break;
                        }
                    }
                }
                err.map_or(Ok(ArgValue::Ints(pair)), Err)
            }
            ExprKind::List(items) => {
                Err(
                    invalid(op, p, e.span, format!("found a list of {}", items.len())).help(
                        format!(
                "give one number for both axes or two for [rows, columns]: `{} = [3, 5]`",
                p.name
            ),
                    ),
                )
            }
            _ => eval_int(e)
                .and_then(|i| {
                    if i >= min {
                        Ok(ArgValue::Int(i))
                    } else {
                        Err(invalid(op, p, e.span, format!("found {i}")))
                    }
                })
                .map_err(|d| retitle(d, op, p)),
        },
        ParamType::Init => return eval_init(e, diags).map(ArgValue::Init),
        ParamType::Split => match &inner.kind {
            ExprKind::Str(s) if !s.is_empty() => Ok(ArgValue::Str(s.clone())),
            _ => eval_number(e)
                .and_then(|x| {
                    check_range(op, p, Range::OPEN_FRACTION, x, e.span).map(ArgValue::Float)
                })
                .map_err(|d| retitle(d, op, p)),
        },
    };
    match result {
        Ok(v) => Some(v),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

/// Gives a constant-evaluation error the parameter's context in its message.
fn retitle(mut d: Diagnostic, op: &OpSpec, p: &ParamSpec) -> Diagnostic {
    if d.code == Code::InvalidArgument && !d.message.starts_with('`') {
        d.message = format!("`{}` of `{}` must be {}", p.name, op.name, p.ty);
    }
    d
}

fn check_range(
    op: &OpSpec,
    p: &ParamSpec,
    range: Range,
    x: f64,
    span: Span,
) -> Result<f64, Diagnostic> {
    if range.contains(x) {
        Ok(x)
    } else {
        Err(invalid(op, p, span, format!("found {x}")))
    }
}

/// Evaluates a constant numeric expression: numbers, `-`, `+ - * /`, parentheses.
pub fn eval_number(e: &Expr) -> Result<f64, Diagnostic> {
    let value = match &e.kind {
        ExprKind::Number { value, .. } => *value,
        ExprKind::Paren(inner) => eval_number(inner)?,
        ExprKind::Neg(inner) => -eval_number(inner)?,
        ExprKind::Binary { op, lhs, rhs } => {
            let (a, b) = (eval_number(lhs)?, eval_number(rhs)?);
            match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div if b == 0.0 => {
                    return Err(Diagnostic::new(
                        Code::InvalidArgument,
                        "division by zero in a constant",
                    )
                    .label(rhs.span, "this is zero"))
                }
                BinOp::Div => a / b,
                BinOp::MatMul => {
                    return Err(Diagnostic::new(
                        Code::InvalidArgument,
                        "`@` needs tensors, not numbers",
                    )
                    .label(e.span, "numbers on both sides"))
                }
            }
        }
        _ => {
            return Err(Diagnostic::new(Code::InvalidArgument, "expected a number")
                .label(e.span, format!("found {}", describe(e))))
        }
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(
            Diagnostic::new(Code::InvalidArgument, "constant is too large")
                .label(e.span, "not a finite number"),
        )
    }
}

/// Whether `e` is a constant numeric expression (no names, calls, strings or lists).
pub fn is_numeric_constant(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Number { .. } => true,
        ExprKind::Paren(inner) | ExprKind::Neg(inner) => is_numeric_constant(inner),
        ExprKind::Binary { op, lhs, rhs } => {
            *op != BinOp::MatMul && is_numeric_constant(lhs) && is_numeric_constant(rhs)
        }
        _ => false,
    }
}

/// Evaluates a constant integer expression (`2 * 3`, `-1`); the value must be whole and
/// fit in an `i64`.
pub fn eval_int(e: &Expr) -> Result<i64, Diagnostic> {
    let x = eval_number(e)?;
    // 2^63 is the first float above i64::MAX.
    if x.fract() != 0.0 || x.abs() >= 9.223_372_036_854_776e18 {
        return Err(
            Diagnostic::new(Code::InvalidArgument, "expected an integer")
                .label(e.span, format!("found {x}")),
        );
    }
    Ok(x as i64)
}

/// Resolves a value that names an op of `kind`: a bare name (`he`) or a call
/// (`normal(std = 0.1)`). Unknown names get E0201 with suggestions among that kind.
pub fn eval_op_value(
    e: &Expr,
    kind: OpKind,
    diags: &mut Vec<Diagnostic>,
) -> Option<(&'static OpSpec, Args)> {
    let inner = strip_parens(e);
    let (callee, args): (&crate::syntax::ast::Ident, &[Arg]) = match &inner.kind {
        ExprKind::Name(id) => (id, &[]),
        ExprKind::Call { callee, args } => (callee, args),
        _ => {
            let names = registry::names_where(|k| k == kind);
            diags.push(
                Diagnostic::new(Code::InvalidArgument, format!("expected {}", kind.a_noun()))
                    .label(e.span, format!("found {}", describe(e)))
                    .help(format!("one of: {}", names.join(", "))),
            );
            return None;
        }
    };
    let Some(op) = registry::lookup(&callee.name, kind) else {
        let names = registry::names_where(|k| k == kind);
        let other = registry::find(&callee.name).next();
        let msg = match other {
            Some(o) => format!(
                "`{}` is {}, not {}",
                callee.name,
                o.kind().a_noun(),
                kind.a_noun()
            ),
            None => format!(
                "unknown {} `{}`",
                &kind.a_noun()[kind.a_noun().find(' ').map_or(0, |i| i + 1)..],
                callee.name
            ),
        };
        diags.push(
            Diagnostic::new(Code::UnknownFunction, msg)
                .label(callee.span, format!("expected {}", kind.a_noun()))
                .help(
                    did_you_mean(&callee.name, names.iter().copied())
                        .unwrap_or_else(|| format!("one of: {}", names.join(", "))),
                ),
        );
        return None;
    };
    let bound = bind(op, None, args, inner.span, diags)?;
    let mut no_tensors = |_: &Expr| None;
    let args = eval_args(&bound, &mut no_tensors, diags)?;
    Some((op, args))
}

/// An initializer value: a number constant or an initializer name or call.
pub fn eval_init(e: &Expr, diags: &mut Vec<Diagnostic>) -> Option<Init> {
    if is_numeric_constant(e) {
        return match eval_number(e) {
            Ok(x) => Some(Init::Constant(x)),
            Err(d) => {
                diags.push(d);
                None
            }
        };
    }
    let (op, args) = eval_op_value(e, OpKind::Initializer, diags)?;
    init_of(op, Some(&args))
}

/// The [`Init`] for an initializer op; `args` default to the registry's defaults.
fn init_of(op: &OpSpec, args: Option<&Args>) -> Option<Init> {
    let OpId::Initializer(kind) = op.id else {
        return None;
    };
    let float = |p: &str, default: f64| args.map_or(default, |a| a.float(p));
    Some(match kind {
        InitKind::Zeros => Init::Zeros,
        InitKind::Ones => Init::Ones,
        InitKind::Normal => Init::Normal {
            std: float("std", 0.01),
        },
        InitKind::Uniform => Init::Uniform {
            limit: float("limit", 1.0),
        },
        InitKind::Glorot => Init::Glorot,
        InitKind::He => Init::He,
    })
}
