//! The op registry: one declaration per layer, function, activation, loss, optimizer,
//! metric, initializer and data source of the language, and every training setting.
//! Argument checking (`sema::args`), the model and train checkers and `nnc doc` all read
//! it, so the documentation cannot drift from what the checker accepts.
//!
//! Each op has a typed identity ([`OpId`], wrapping one enum per kind); its declaration
//! ([`OpSpec`]: name, parameters, shape rule, documentation) is an exhaustive `match` on
//! that enum (`model_ops`, `training_ops`), and this module builds the lookup table from
//! them. Checkers dispatch on the identity, never on the name.
//!
//! Invariants: `(kind, name)` pairs are unique; within an op, parameter names are unique;
//! tensor parameters (`Tensor`, `Tensors`) come first; a `ArgDefault::SameAs` names an earlier
//! parameter of the same op. A name may appear under two kinds (`mse` is a loss and a
//! metric); lookups always say which kind they want.

/// Declares a fieldless op-identity enum and its `ALL`, in declaration order (the order
/// `nnc doc` lists them), from one list of variants, so no variant can be left out of it.
macro_rules! listed_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$(stringify!($variant)),*].len()] = [$($name::$variant),*];
        }
    };
}

mod model_ops;
mod spec;
mod training_ops;

use std::fmt::Write as _;
use std::sync::LazyLock;

pub use model_ops::{Activation, Function, Layer};
pub use spec::{
    format_number, ArgDefault, Created, OpId, OpKind, OpSpec, ParamSpec, ParamType, Range,
    SettingSpec,
};
pub use training_ops::{ControlKind, DataKind, InitKind, OptimizerKind, Setting};

/// Every declaration, in the order of [`OpId::all`].
static OPS: LazyLock<Vec<OpSpec>> = LazyLock::new(|| OpId::all().map(OpId::spec).collect());

/// Every training setting, in the order of [`Setting::ALL`].
static SETTINGS: LazyLock<Vec<SettingSpec>> =
    LazyLock::new(|| Setting::ALL.into_iter().map(Setting::spec).collect());

/// Every op, grouped by kind in the order `nnc doc` lists them.
pub fn ops() -> &'static [OpSpec] {
    &OPS
}

/// The op named `name` of kind `kind`.
pub fn lookup(name: &str, kind: OpKind) -> Option<&'static OpSpec> {
    OPS.iter().find(|op| op.kind() == kind && op.name == name)
}

/// The op named `name` usable in a model (layer, function or activation).
pub fn lookup_in_model(name: &str) -> Option<&'static OpSpec> {
    OPS.iter()
        .find(|op| op.kind().in_model() && op.name == name)
}

/// Every op named `name`, of any kind.
pub fn find(name: &str) -> impl Iterator<Item = &'static OpSpec> + '_ {
    OPS.iter().filter(move |op| op.name == name)
}

/// The names of ops of the kinds for which `keep` holds.
pub fn names_where(keep: impl Fn(OpKind) -> bool) -> Vec<&'static str> {
    OPS.iter()
        .filter(|op| keep(op.kind()))
        .map(|op| op.name)
        .collect()
}

pub fn settings() -> &'static [SettingSpec] {
    &SETTINGS
}

pub fn setting(name: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The `nnc doc` index: every op grouped by kind with its summary, then the settings.
pub fn index() -> String {
    let mut out = String::new();
    for kind in OpKind::ALL {
        let _ = writeln!(out, "{}:", kind.heading());
        for op in OPS.iter().filter(|op| op.kind() == kind) {
            let sig = op.signature();
            if sig.chars().count() > 40 {
                let _ = writeln!(out, "  {sig}\n  {:<42} {}", "", op.summary);
            } else {
                let _ = writeln!(out, "  {sig:<42} {}", op.summary);
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "Training settings (`train MODEL {{ .. }}`):");
    for s in SETTINGS.iter() {
        let _ = writeln!(
            out,
            "  {:<42} {}",
            format!("{} = {}", s.name, s.values),
            s.summary
        );
    }
    let _ = writeln!(
        out,
        "\nRun `nnc doc NAME` for the full reference of one name."
    );
    out
}

/// The full reference of a name (all kinds it has, and the setting of that name), or
/// `None` when nothing is called `name`.
pub fn reference(name: &str) -> Option<String> {
    let mut parts: Vec<String> = find(name).map(|op| op.reference()).collect();
    if let Some(s) = setting(name) {
        parts.push(format!(
            "{} = {}  (training setting)\n\n{}\n\ndefault: {}\nexample: {}\n",
            s.name, s.values, s.summary, s.default, s.example
        ));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("\n"))
    }
}

/// Every documented name (ops and settings), for suggestions.
pub fn all_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = OPS.iter().map(|op| op.name).collect();
    names.extend(SETTINGS.iter().map(|s| s.name));
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_kind_and_params_unique_per_op() {
        for (i, a) in OPS.iter().enumerate() {
            for b in &OPS[i + 1..] {
                assert!(
                    !(a.kind() == b.kind() && a.name == b.name),
                    "duplicate {}",
                    a.name
                );
            }
            for (j, p) in a.params.iter().enumerate() {
                assert!(
                    a.params[j + 1..].iter().all(|q| q.name != p.name),
                    "{}.{}",
                    a.name,
                    p.name
                );
            }
        }
    }

    #[test]
    fn tensor_params_come_first_and_same_as_defaults_point_backwards() {
        for op in OPS.iter() {
            let first_setting = op
                .params
                .iter()
                .position(|p| !matches!(p.ty, ParamType::Tensor | ParamType::Tensors));
            if let Some(k) = first_setting {
                assert!(
                    op.params[k..]
                        .iter()
                        .all(|p| !matches!(p.ty, ParamType::Tensor | ParamType::Tensors)),
                    "{}",
                    op.name
                );
            }
            for (j, p) in op.params.iter().enumerate() {
                if let ArgDefault::SameAs(other) = p.default {
                    assert!(
                        op.params[..j].iter().any(|q| q.name == other),
                        "{}.{}",
                        op.name,
                        p.name
                    );
                }
            }
            assert_eq!(
                op.kind().in_model(),
                !op.shape_rule.is_empty(),
                "{}",
                op.name
            );
        }
    }

    #[test]
    fn signatures_match_the_language_reference() {
        let cases = [
            ("dense", OpKind::Layer, "dense(x, units, init = he)"),
            (
                "conv2d",
                OpKind::Layer,
                "conv2d(x, filters, kernel = 3, stride = 1, padding = \"same\", init = he, dilation = 1, groups = 1)",
            ),
            (
                "max_pool",
                OpKind::Layer,
                "max_pool(x, size = 2, stride = size)",
            ),
            ("concat", OpKind::Function, "concat(a, b, .., axis = -1)"),
            ("mse", OpKind::Loss, "mse"),
            (
                "sgd",
                OpKind::Optimizer,
                "sgd(lr, momentum = 0, nesterov = false)",
            ),
        ];
        for (name, kind, want) in cases {
            let got = lookup(name, kind).map(|o| o.signature());
            assert_eq!(got.as_deref(), Some(want), "{name}");
        }
    }

    #[test]
    fn every_id_declares_itself_and_is_found_by_its_name() {
        for id in OpId::all() {
            let spec = id.spec();
            assert_eq!(spec.id, id, "{}", spec.name);
            assert_eq!(lookup(spec.name, id.kind()).map(|o| o.id), Some(id));
        }
        assert_eq!(OpId::all().count(), OPS.len());
        for id in Setting::ALL {
            let spec = id.spec();
            assert_eq!(spec.id, id, "{}", spec.name);
            assert_eq!(setting(spec.name).map(|s| s.id), Some(id));
        }
    }

    #[test]
    fn reference_of_a_name_with_two_kinds_shows_both() {
        let text = reference("mse").unwrap_or_default();
        assert!(
            text.contains("(loss)") && text.contains("(metric)"),
            "{text}"
        );
        assert!(reference("densee").is_none());
    }

    #[test]
    fn index_lists_every_op_and_setting() {
        let text = index();
        for op in OPS.iter() {
            assert!(text.contains(op.name), "{}", op.name);
        }
        for s in SETTINGS.iter() {
            assert!(text.contains(s.name), "{}", s.name);
        }
    }

    #[test]
    fn range_membership_and_wording() {
        assert!(Range::FRACTION.contains(0.0) && !Range::FRACTION.contains(1.0));
        assert!(!Range::POSITIVE.contains(0.0) && !Range::POSITIVE.contains(f64::NAN));
        assert_eq!(Range::FRACTION.to_string(), "a number in [0, 1)");
        assert_eq!(Range::POSITIVE.to_string(), "a number > 0");
    }
}
