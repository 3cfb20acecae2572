//! Checking one `train` block: the model it names, its settings (against the registry's
//! setting table and ops), and the fit between loss, metrics and the model's output.
//!
//! Data paths are resolved against the file's folder but never opened; checks that need
//! the data (sample shapes) happen when the data is loaded. A train block whose model
//! failed its own checks still has its settings checked, but no shape-dependent checks.

use std::path::{Path, PathBuf};

use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::sema::args::{self, ArgValue, Args};
use crate::sema::registry::{
    self, ControlKind, DataKind, OpId, OpKind, OptimizerKind, Setting, SettingSpec,
};
use crate::sema::typed::*;
use crate::syntax::ast::{self, Expr, ExprKind, Span};

/// A model of the file as a train block sees it: its name and, when it checked cleanly,
/// its typed form and index in [`Program::models`].
pub struct ModelRef<'a> {
    pub name: &'a str,
    pub typed: Option<(usize, &'a TypedModel)>,
}

/// Checks a train block, pushing diagnostics; returns it only when it has none.
pub fn check_train(
    train: &ast::Train,
    models: &[ModelRef<'_>],
    base_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<TypedTrain> {
    let before = diags.len();
    let model = models.iter().find(|m| m.name == train.model.name);
    if model.is_none() {
        let names: Vec<&str> = models.iter().map(|m| m.name).collect();
        diags.push(
            Diagnostic::new(
                Code::UnknownModel,
                format!("no model named `{}`", train.model.name),
            )
            .label(train.model.span, "not a model of this file")
            .help(
                did_you_mean(&train.model.name, names.iter().copied()).unwrap_or_else(|| {
                    if names.is_empty() {
                        format!("define it: `model {} {{ .. }}`", train.model.name)
                    } else {
                        format!("models in this file: {}", names.join(", "))
                    }
                }),
            ),
        );
    }

    let mut seen: Vec<(&str, Span)> = Vec::new();
    let mut s = Settings::default();
    for setting in &train.settings {
        let name = setting.name.name.as_str();
        let Some(spec) = registry::setting(name) else {
            let names = registry::settings().iter().map(|s| s.name);
            let help = if name == "lr" || name == "learning_rate" {
                Some(
                    "the learning rate is an optimizer argument: `optimizer = sgd(lr = 0.01)`"
                        .to_string(),
                )
            } else {
                did_you_mean(name, names)
            };
            diags.push(
                Diagnostic::new(
                    Code::UnknownSetting,
                    format!("unknown training setting `{name}`"),
                )
                .label(setting.name.span, "unknown setting")
                .maybe_help(help),
            );
            continue;
        };
        // The parsed setting span may run into the following whitespace.
        let span = setting.name.span.to(setting.value.span);
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            diags.push(
                Diagnostic::new(
                    Code::DuplicateSetting,
                    format!("training setting `{name}` given twice"),
                )
                .label(setting.span, "given again here")
                .label(*first, "first given here"),
            );
            continue;
        }
        seen.push((name, span));
        s.check(spec, &setting.value, base_dir, diags);
    }

    for required in [Setting::Data, Setting::Loss, Setting::Optimizer] {
        let SettingSpec {
            name: required,
            example,
            ..
        } = required.spec();
        if !seen.iter().any(|(n, _)| *n == required) {
            diags.push(
                Diagnostic::new(
                    Code::MissingSetting,
                    format!("`train {}` has no `{required}`", train.model.name),
                )
                .label(train.model.span, format!("`{required}` is required"))
                .help(format!("add a line such as `{example}`")),
            );
        }
    }

    if let (Some((index, typed)), Some((loss, loss_span))) = (model.and_then(|m| m.typed), s.loss) {
        check_fit(train, typed, loss, loss_span, &s.metrics, diags);
        if typed.params.is_empty() {
            diags.push(nothing_to_train(train, typed));
        } else {
            check_freeze(train, typed, &s.freeze, diags);
        }
        let validation = s.validation.is_some() || s.validation_source.is_some();
        if let Some((stop, span)) = &s.early_stopping {
            check_monitor(
                "early_stopping",
                &stop.monitor,
                *span,
                validation,
                &s.metrics,
                diags,
            );
        }
        if let Some((Schedule::Plateau { monitor, .. }, span)) = &s.schedule {
            check_monitor("plateau", monitor, *span, validation, &s.metrics, diags);
        }
        Some(index)
            .filter(|_| diags.len() == before)
            .and_then(|model| {
                let (data, data_span) = s.data?;
                Some(TypedTrain {
                    model,
                    data,
                    loss,
                    optimizer: decoupled(s.optimizer.clone()?, s.weight_decay),
                    batch: s.batch,
                    epochs: s.epochs,
                    metrics: s.metrics.iter().map(|m| m.0).collect(),
                    seed: s.seed,
                    shuffle: s.shuffle,
                    span: train.span,
                    name_span: train.model.span,
                    data_span,
                    init: s.init.clone(),
                    freeze: s.freeze.iter().map(|f| f.0.clone()).collect(),
                    validation: s.validation,
                    validation_source: s.validation_source.clone(),
                    early_stopping: s.early_stopping.clone().map(|e| e.0),
                    checkpoint_every: s.checkpoint_every,
                    label_smoothing: s.label_smoothing,
                    clip_norm: s.clip_norm,
                    clip_value: s.clip_value,
                    schedule: s.schedule.clone().map_or(Schedule::Constant, |x| x.0),
                    weight_decay: match s.optimizer {
                        Some(Optimizer::AdamW { .. }) => 0.0,
                        _ => s.weight_decay.unwrap_or(0.0),
                    },
                })
            })
    } else {
        None
    }
}

/// Settings read so far; invalid ones stay at their defaults (their error is reported).
struct Settings {
    data: Option<(DataSpec, Span)>,
    loss: Option<(Loss, Span)>,
    optimizer: Option<Optimizer>,
    batch: usize,
    epochs: usize,
    metrics: Vec<(Metric, Span)>,
    seed: u64,
    shuffle: bool,
    init: Option<PathBuf>,
    freeze: Vec<(String, Span)>,
    validation: Option<f64>,
    validation_source: Option<DataSpec>,
    /// With the span of the `monitor` argument (or of the call).
    early_stopping: Option<(EarlyStopping, Span)>,
    checkpoint_every: Option<usize>,
    label_smoothing: f64,
    clip_norm: Option<f64>,
    clip_value: Option<f64>,
    weight_decay: Option<f64>,
    /// With the span of its monitor (plateau) or value.
    schedule: Option<(Schedule, Span)>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            data: None,
            loss: None,
            optimizer: None,
            batch: 32,
            epochs: 1,
            metrics: Vec::new(),
            seed: 0,
            shuffle: true,
            init: None,
            freeze: Vec::new(),
            validation: None,
            validation_source: None,
            early_stopping: None,
            checkpoint_every: None,
            label_smoothing: 0.0,
            clip_norm: None,
            clip_value: None,
            weight_decay: None,
            schedule: None,
        }
    }
}

impl Settings {
    fn check(
        &mut self,
        setting: &SettingSpec,
        value: &Expr,
        base_dir: &Path,
        diags: &mut Vec<Diagnostic>,
    ) {
        let name = setting.name;
        match setting.id {
            Setting::Data => {
                if let Some((op, a)) = args::eval_op_value(value, OpKind::Data, diags) {
                    if let OpId::Data(kind) = op.id {
                        if let Some(d) = data_problem(kind, &a) {
                            diags.push(d);
                        } else {
                            self.data = Some((data_spec(kind, &a, base_dir), value.span));
                        }
                    }
                }
            }
            Setting::Loss => {
                if let Some((op, a)) = args::eval_op_value(value, OpKind::Loss, diags) {
                    if let OpId::Loss(loss) = op.id {
                        self.loss = Some((loss, value.span));
                        self.label_smoothing = a.float("label_smoothing");
                    }
                }
            }
            Setting::ClipNorm | Setting::ClipValue => match args::eval_number(value) {
                Ok(v) if v > 0.0 && v.is_finite() => {
                    if setting.id == Setting::ClipNorm {
                        self.clip_norm = Some(v);
                    } else {
                        self.clip_value = Some(v);
                    }
                }
                Ok(v) => diags.push(
                    Diagnostic::new(Code::NonPositive, format!("`{name}` must be a number > 0"))
                        .label(value.span, format!("found {v}"))
                        .maybe_help(
                            registry::setting(name).map(|s| format!("for example `{}`", s.example)),
                        ),
                ),
                Err(d) => diags.push(retitled(d, &format!("`{name}` must be a number > 0"))),
            },
            Setting::WeightDecay => match args::eval_number(value) {
                Ok(v) if v >= 0.0 && v.is_finite() => self.weight_decay = Some(v),
                Ok(v) => diags.push(
                    Diagnostic::new(Code::InvalidArgument, "`weight_decay` must be a number ≥ 0")
                        .label(value.span, format!("found {v}"))
                        .help("for example `weight_decay = 1e-4`"),
                ),
                Err(d) => diags.push(retitled(d, "`weight_decay` must be a number ≥ 0")),
            },
            Setting::Optimizer => {
                let mut local = Vec::new();
                if let Some((op, a)) = args::eval_op_value(value, OpKind::Optimizer, &mut local) {
                    if let OpId::Optimizer(kind) = op.id {
                        self.optimizer = Some(optimizer(kind, &a));
                    }
                }
                // A learning rate that is not positive has its own code, like `batch`.
                for d in &mut local {
                    if d.code == Code::InvalidArgument && d.message.starts_with("`lr` of") {
                        d.code = Code::NonPositive;
                    }
                }
                diags.append(&mut local);
            }
            Setting::Batch => {
                if let Some(n) = positive(name, value, diags) {
                    self.batch = n;
                }
            }
            Setting::Epochs => {
                if let Some(n) = positive(name, value, diags) {
                    self.epochs = n;
                }
            }
            Setting::Metrics => self.metrics = metrics(value, diags),
            Setting::Seed => match args::eval_int(value) {
                Ok(i) if i >= 0 => self.seed = i as u64,
                Ok(i) => diags.push(
                    Diagnostic::new(Code::InvalidArgument, "`seed` must be an integer ≥ 0")
                        .label(value.span, format!("found {i}")),
                ),
                Err(d) => diags.push(retitled(d, "`seed` must be an integer ≥ 0")),
            },
            Setting::Init => match &strip(value).kind {
                ExprKind::Str(p) if !p.is_empty() => self.init = Some(base_dir.join(p)),
                _ => diags.push(
                    Diagnostic::new(
                        Code::InvalidArgument,
                        "`init` must be the path of a weights file",
                    )
                    .label(value.span, format!("found {}", args::describe(value)))
                    .help("for example `init = \"runs/mnist/weights.safetensors\"`"),
                ),
            },
            Setting::Freeze => match &strip(value).kind {
                ExprKind::List(items) => {
                    for item in items {
                        match &strip(item).kind {
                            ExprKind::Str(p) if !p.is_empty() => {
                                self.freeze.push((p.clone(), item.span));
                            }
                            _ => diags.push(
                                Diagnostic::new(
                                    Code::InvalidArgument,
                                    "`freeze` lists parameter names as strings",
                                )
                                .label(item.span, format!("found {}", args::describe(item)))
                                .help("for example `freeze = [\"conv2d_0\", \"dense_0.w\"]`"),
                            ),
                        }
                    }
                }
                _ => diags.push(
                    Diagnostic::new(
                        Code::InvalidArgument,
                        "`freeze` must be a list of parameter names",
                    )
                    .label(value.span, format!("found {}", args::describe(value)))
                    .help("for example `freeze = [\"conv2d_0\", \"dense_0.w\"]`"),
                ),
            },
            Setting::Validation
                if matches!(strip(value).kind, ExprKind::Call { .. } | ExprKind::Name(_)) =>
            {
                if let Some((op, a)) = args::eval_op_value(value, OpKind::Data, diags) {
                    if let OpId::Data(kind) = op.id {
                        if let Some(d) = data_problem(kind, &a) {
                            diags.push(d);
                        } else {
                            self.validation_source = Some(data_spec(kind, &a, base_dir));
                        }
                    }
                }
            }
            Setting::Validation => match args::eval_number(value) {
                Ok(f) if f > 0.0 && f < 1.0 => self.validation = Some(f),
                Ok(f) => diags.push(
                    Diagnostic::new(
                        Code::InvalidArgument,
                        "`validation` must be a fraction between 0 and 1",
                    )
                    .label(value.span, format!("found {f}"))
                    .help("for example `validation = 0.1` holds out a tenth of the training split"),
                ),
                Err(d) => diags.push(retitled(
                    d,
                    "`validation` must be a fraction between 0 and 1",
                )),
            },
            Setting::EarlyStopping => {
                if let Some((op, a)) = args::eval_op_value(value, OpKind::Control, diags) {
                    if op.id != OpId::Control(ControlKind::EarlyStopping) {
                        diags.push(
                            Diagnostic::new(
                                Code::InvalidArgument,
                                format!("`early_stopping` takes `early_stopping(..)`, not `{}`", op.name),
                            )
                            .label(value.span, "not early stopping")
                            .help("for example `early_stopping = early_stopping(monitor = \"val_loss\", patience = 3)`"),
                        );
                    } else {
                        let monitor = a.str("monitor").to_string();
                        let maximize = match a.str("mode") {
                            "max" => true,
                            "min" => false,
                            _ => ["accuracy", "precision", "recall", "f1"]
                                .iter()
                                .any(|m| monitor.ends_with(m)),
                        };
                        let stop = EarlyStopping {
                            monitor,
                            patience: a.count("patience"),
                            min_delta: a.float("min_delta"),
                            maximize,
                            restore_best: a.bool("restore_best"),
                        };
                        self.early_stopping = Some((stop, a.span("monitor").unwrap_or(value.span)));
                    }
                }
            }
            Setting::Schedule => {
                if let Some((op, a)) = args::eval_op_value(value, OpKind::Control, diags) {
                    let span = a.span("monitor").unwrap_or(value.span);
                    let schedule = match op.id {
                        OpId::Control(ControlKind::Constant) => Some(Schedule::Constant),
                        OpId::Control(ControlKind::StepDecay) => Some(Schedule::Step {
                            every: a.count("every"),
                            gamma: a.float("gamma"),
                        }),
                        OpId::Control(ControlKind::Exponential) => Some(Schedule::Exponential {
                            gamma: a.float("gamma"),
                        }),
                        OpId::Control(ControlKind::Cosine) => Some(Schedule::Cosine {
                            min_lr: a.float("min_lr"),
                            warmup: a.float("warmup"),
                        }),
                        OpId::Control(ControlKind::Plateau) => {
                            let monitor = a.str("monitor").to_string();
                            let maximize = ["accuracy", "precision", "recall", "f1"]
                                .iter()
                                .any(|m| monitor.ends_with(m));
                            Some(Schedule::Plateau {
                                monitor,
                                patience: a.count("patience"),
                                factor: a.float("factor"),
                                min_lr: a.float("min_lr"),
                                maximize,
                            })
                        }
                        _ => {
                            diags.push(
                                Diagnostic::new(
                                    Code::InvalidArgument,
                                    format!("`{}` is not a learning-rate schedule", op.name),
                                )
                                .label(value.span, "not a schedule")
                                .help("schedules are `constant`, `step(..)`, `exponential(..)`, `cosine(..)` and `plateau(..)`"),
                            );
                            None
                        }
                    };
                    self.schedule = schedule.map(|x| (x, span));
                }
            }
            Setting::CheckpointEvery => {
                if let Some(n) = positive(name, value, diags) {
                    self.checkpoint_every = Some(n);
                }
            }
            Setting::Shuffle => match strip(value).kind {
                ExprKind::Bool(b) => self.shuffle = b,
                _ => diags.push(
                    Diagnostic::new(Code::InvalidArgument, "`shuffle` must be `true` or `false`")
                        .label(value.span, format!("found {}", args::describe(value))),
                ),
            },
        }
    }
}

fn strip(mut e: &Expr) -> &Expr {
    while let ExprKind::Paren(inner) = &e.kind {
        e = inner;
    }
    e
}

fn retitled(mut d: Diagnostic, message: &str) -> Diagnostic {
    d.message = message.to_string();
    d
}

/// The monitor of `early_stopping` names a value the loop computes: `val_loss` or
/// `train_loss`, or `val_`/`train_` and a metric of `metrics`; `val_..` needs `validation`.
fn check_monitor(
    who: &str,
    monitor: &str,
    span: Span,
    validation: bool,
    metrics: &[(Metric, Span)],
    diags: &mut Vec<Diagnostic>,
) {
    let m = monitor;
    let (split, what) = match m.split_once('_') {
        Some((split @ ("val" | "train"), what)) => (split, what),
        _ => {
            diags.push(
                Diagnostic::new(
                    Code::InvalidArgument,
                    format!("`{who}` cannot monitor `{m}`"),
                )
                .label(span, "unknown monitor")
                .help("monitor `val_loss`, `train_loss`, or `val_`/`train_` and a metric of `metrics` (`val_accuracy`)"),
            );
            return;
        }
    };
    if what != "loss" {
        let known: Vec<&str> = metrics.iter().map(|(x, _)| x.name()).collect();
        if !known.contains(&what) {
            let is_metric = Metric::ALL.iter().any(|x| x.name() == what);
            let help = if is_metric {
                format!(
                    "add `{what}` to `metrics`: the loop computes only the metrics listed there"
                )
            } else {
                let mut names = vec!["loss".to_string()];
                names.extend(known.iter().map(|k| k.to_string()));
                format!(
                    "the values to monitor are {}",
                    names
                        .iter()
                        .map(|n| format!("`{split}_{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            diags.push(
                Diagnostic::new(
                    Code::InvalidArgument,
                    format!("`{who}` monitors `{m}`, which is not computed"),
                )
                .label(span, format!("`{what}` is not among the metrics"))
                .help(help),
            );
            return;
        }
    }
    if split == "val" && !validation {
        diags.push(
            Diagnostic::new(
                Code::MissingSetting,
                format!("`{who}` monitors `{m}`, but there is no validation set"),
            )
            .label(span, "needs a validation set")
            .help("add `validation = 0.1` to hold out a tenth of the training split, or monitor `train_loss`"),
        );
    }
}

/// Every `freeze` entry covers a parameter of the model (else E0203 with the names), and
/// at least one parameter stays trainable.
fn check_freeze(
    train: &ast::Train,
    model: &TypedModel,
    freeze: &[(String, Span)],
    diags: &mut Vec<Diagnostic>,
) {
    if freeze.is_empty() {
        return;
    }
    let names: Vec<&str> = model.params.iter().map(|p| p.name.as_str()).collect();
    for (pattern, span) in freeze {
        if !names.iter().any(|n| freezes(pattern, n)) {
            let help = did_you_mean(pattern, names.iter().copied())
                .unwrap_or_else(|| format!("the parameters are {}", names.join(", ")));
            diags.push(
                Diagnostic::new(
                    Code::UnknownParameter,
                    format!(
                        "`freeze` names `{pattern}`, which is no parameter of `{}`",
                        model.name
                    ),
                )
                .label(*span, "no parameter has this name or prefix")
                .help(help),
            );
        }
    }
    if names
        .iter()
        .all(|n| freeze.iter().any(|(p, _)| freezes(p, n)))
    {
        diags.push(
            Diagnostic::new(
                Code::InvalidArgument,
                "`freeze` covers every parameter: nothing would train",
            )
            .label(freeze[0].1, "frozen here")
            .label(
                train.model.span,
                format!("`{}` has {} parameters", model.name, names.len()),
            )
            .help("leave at least one parameter (a final layer, say) out of `freeze`"),
        );
    }
}

/// AdamW with the block's `weight_decay`, when given, as its decoupled decay (other
/// optimizers get it as an L2 term on the gradient instead).
fn decoupled(opt: Optimizer, weight_decay: Option<f64>) -> Optimizer {
    match (opt, weight_decay) {
        (
            Optimizer::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                ..
            },
            Some(wd),
        ) => Optimizer::AdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay: wd,
        },
        (opt, _) => opt,
    }
}

/// `batch` and `epochs`: positive integers (E0405 when zero or negative).
fn positive(name: &str, value: &Expr, diags: &mut Vec<Diagnostic>) -> Option<usize> {
    match args::eval_int(value) {
        Ok(i) if i >= 1 => usize::try_from(i).ok(),
        Ok(i) => {
            diags.push(
                Diagnostic::new(
                    Code::NonPositive,
                    format!("`{name}` must be a positive integer"),
                )
                .label(value.span, format!("found {i}"))
                .maybe_help(
                    registry::setting(name).map(|s| format!("for example `{}`", s.example)),
                ),
            );
            None
        }
        Err(d) => {
            diags.push(retitled(d, &format!("`{name}` must be a positive integer")));
            None
        }
    }
}

fn metrics(value: &Expr, diags: &mut Vec<Diagnostic>) -> Vec<(Metric, Span)> {
    let ExprKind::List(items) = &strip(value).kind else {
        diags.push(
            Diagnostic::new(Code::InvalidArgument, "`metrics` must be a list of metrics")
                .label(value.span, format!("found {}", args::describe(value)))
                .help("write a list, e.g. `metrics = [accuracy]`"),
        );
        return Vec::new();
    };
    let mut out: Vec<(Metric, Span)> = Vec::new();
    for item in items {
        if let Some((op, _)) = args::eval_op_value(item, OpKind::Metric, diags) {
            if let OpId::Metric(m) = op.id {
                if let Some(&(_, first)) = out.iter().find(|(seen, _)| *seen == m) {
                    diags.push(
                        Diagnostic::new(
                            Code::DuplicateMetric,
                            format!("metric `{}` listed twice", m.name()),
                        )
                        .label(item.span, "listed again here")
                        .label(first, "first listed here")
                        .help("remove the second one; each metric is reported once per epoch"),
                    );
                    continue;
                }
                out.push((m, item.span));
            }
        }
    }
    out
}

/// The error of a `train` block whose model has no parameter: training would run the
/// data through a fixed function and change nothing.
fn nothing_to_train(train: &ast::Train, model: &TypedModel) -> Diagnostic {
    Diagnostic::new(
        Code::NothingToTrain,
        format!("model `{}` has no parameters to train", model.name),
    )
    .label(train.model.span, "trained here")
    .label(
        Span {
            start: model.span.start,
            end: model.span.start + "model".len() as u32,
        },
        "no layer or `param` with weights",
    )
    .help("add a layer with weights, such as `dense(units)`, or a `param`")
}

/// What the argument types alone do not catch: `channels` other than 1 or 3, and a
/// `test_x` without `test_y` (or the reverse).
fn data_problem(kind: DataKind, a: &Args) -> Option<Diagnostic> {
    let span = |name: &str| a.span(name);
    match kind {
        DataKind::Images if !matches!(a.int("channels"), 1 | 3) => Some(
            Diagnostic::new(
                Code::InvalidArgument,
                "`channels` of `images` must be 1 (grey) or 3 (RGB)",
            )
            .label(span("channels")?, format!("found {}", a.int("channels"))),
        ),
        DataKind::Npy if a.str("test_x").is_empty() != a.str("test_y").is_empty() => {
            let (given, missing) = if a.str("test_x").is_empty() {
                ("test_y", "test_x")
            } else {
                ("test_x", "test_y")
            };
            Some(
                Diagnostic::new(
                    Code::MissingSetting,
                    format!("`{given}` of `npy` needs `{missing}` too"),
                )
                .label(span(given)?, format!("`{given}` given here"))
                .help(format!(
                    "add `{missing} = \"….npy\"`, or drop `{given}` to split `x` with `test`"
                )),
            )
        }
        _ => None,
    }
}

fn data_spec(kind: DataKind, a: &Args, base_dir: &Path) -> DataSpec {
    match kind {
        DataKind::Idx => DataSpec::Idx {
            dir: base_dir.join(a.str("dir")),
            scale: a.float("scale"),
        },
        DataKind::Csv => DataSpec::Csv {
            path: base_dir.join(a.str("path")),
            target: a.str("target").to_string(),
            standardize: a.bool("standardize"),
            test: match a.get("test") {
                Some(ArgValue::Str(f)) => TestSplit::File(base_dir.join(f)),
                _ => TestSplit::Fraction(a.float("test")),
            },
        },
        DataKind::Images => DataSpec::Images {
            dir: base_dir.join(a.str("dir")),
            size: a.pair("size"),
            channels: usize::try_from(a.int("channels")).unwrap_or(1),
            scale: a.float("scale"),
            test: a.float("test"),
        },
        DataKind::Npy => DataSpec::Npy {
            x: base_dir.join(a.str("x")),
            y: base_dir.join(a.str("y")),
            test_xy: (!a.str("test_x").is_empty() || !a.str("test_y").is_empty()).then(|| {
                (
                    base_dir.join(a.str("test_x")),
                    base_dir.join(a.str("test_y")),
                )
            }),
            scale: a.float("scale"),
            test: a.float("test"),
        },
    }
}

fn optimizer(kind: OptimizerKind, a: &Args) -> Optimizer {
    let lr = a.float("lr");
    match kind {
        OptimizerKind::Sgd => Optimizer::Sgd {
            lr,
            momentum: a.float("momentum"),
            nesterov: a.bool("nesterov"),
        },
        OptimizerKind::RmsProp => Optimizer::RmsProp {
            lr,
            rho: a.float("rho"),
            eps: a.float("eps"),
        },
        OptimizerKind::Adam => Optimizer::Adam {
            lr,
            beta1: a.float("beta1"),
            beta2: a.float("beta2"),
            eps: a.float("eps"),
        },
        OptimizerKind::AdamW => Optimizer::AdamW {
            lr,
            beta1: a.float("beta1"),
            beta2: a.float("beta2"),
            eps: a.float("eps"),
            weight_decay: a.float("weight_decay"),
        },
    }
}

/// Checks the model against what training needs: one input, a loss that fits the output,
/// metrics that fit the loss.
fn check_fit(
    train: &ast::Train,
    model: &TypedModel,
    loss: Loss,
    loss_span: Span,
    metrics: &[(Metric, Span)],
    diags: &mut Vec<Diagnostic>,
) {
    if model.inputs.len() != 1 {
        diags.push(
            Diagnostic::new(
                Code::ModelStructure,
                format!(
                    "a trained model needs exactly one input; `{}` has {}",
                    model.name,
                    model.inputs.len()
                ),
            )
            .label(train.model.span, "trained here")
            .label(
                model.inputs.get(1).map_or(model.span, |i| i.span),
                "second input",
            ),
        );
    }
    let out = &model.nodes[model.output.0 as usize];
    if loss == Loss::CrossEntropy {
        match out.shape.dims.last() {
            Some(1) => diags.push(
                Diagnostic::new(
                    Code::LossOutputMismatch,
                    "`cross_entropy` on an output with one unit",
                )
                .label(loss_span, "needs one score per class")
                .label(out.span, format!("output has shape {}", out.shape))
                .help("use `binary_cross_entropy` for two classes with one output unit"),
            ),
            None => diags.push(
                Diagnostic::new(
                    Code::LossOutputMismatch,
                    "`cross_entropy` on a scalar output",
                )
                .label(loss_span, "needs one score per class")
                .label(out.span, format!("output has shape {}", out.shape))
                .help("end the model with `dense(classes) |> softmax`"),
            ),
            Some(_) => {}
        }
    }
    if loss == Loss::BinaryCrossEntropy && out.shape.elems() > 1 {
        diags.push(
            Diagnostic::new(
                Code::LossOutputMismatch,
                "`binary_cross_entropy` on an output with several units",
            )
            .label(loss_span, "needs one probability per sample")
            .label(out.span, format!("output has shape {}", out.shape))
            .help(
                "for one of several classes use `cross_entropy` after `softmax`; \
                 for two classes end with `dense(1) |> sigmoid`",
            ),
        );
    }
    let classification = matches!(loss, Loss::CrossEntropy | Loss::BinaryCrossEntropy);
    for &(m, span) in metrics {
        let fits = if m.is_classification() {
            classification
        } else {
            loss != Loss::CrossEntropy
        };
        if !fits {
            let help = if classification {
                "`cross_entropy` labels are class indices; use `accuracy`, `precision`, `recall` or `f1`"
            } else {
                "classification metrics need `cross_entropy` or `binary_cross_entropy`; use `mae` or `mse`"
            };
            diags.push(
                Diagnostic::new(Code::MetricLossMismatch, "metric does not fit the loss")
                    .label(span, "this metric")
                    .label(loss_span, "the loss")
                    .help(help),
            );
        }
    }
}
