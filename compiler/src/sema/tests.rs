//! Tests of semantic analysis through `check_source`: the programs of the language
//! reference check with the right shapes and parameter names, and each error class gives
//! its code at the right span.

use std::path::{Path, PathBuf};

use crate::diag::{Code, Diagnostic};
use crate::sema::typed::*;

// The language reference's programs, one copy each in `tests/programs/` (the syntax
// golden test prints them too).
const MNIST: &str = include_str!("../../../tests/programs/language_mnist.nn");
const LINE: &str = include_str!("../../../tests/programs/language_line.nn");
const RESIDUAL: &str = include_str!("../../../tests/programs/language_residual.nn");
const LENET: &str = include_str!("../../../tests/programs/language_lenet.nn");

fn check(src: &str) -> Result<Program, Vec<Diagnostic>> {
    crate::check_source(src, Path::new("/project/examples"))
}

fn ok(src: &str) -> Program {
    match check(src) {
        Ok(p) => p,
        Err(diags) => panic!("expected no errors, got {diags:#?}"),
    }
}

fn errs(src: &str) -> Vec<Diagnostic> {
    match check(src) {
        Ok(_) => panic!("expected errors, program checked"),
        Err(diags) => diags,
    }
}

/// The only diagnostic of `src`, asserting its code and the text under its primary label.
fn one_err(src: &str, code: Code, at: &str) -> Diagnostic {
    let diags = errs(src);
    assert_eq!(diags.len(), 1, "expected one diagnostic, got {diags:#?}");
    let d = diags.into_iter().next().unwrap();
    assert_eq!(d.code, code, "{d:#?}");
    let span = d.primary_span().unwrap();
    // Parsed expression spans can run into the whitespace after them (a syntax-stage
    // matter); the label's text is what matters here.
    assert_eq!(
        src[span.start as usize..span.end as usize].trim_end(),
        at,
        "{d:#?}"
    );
    d
}

fn model_src(body: &str) -> String {
    format!("model M {{\n{body}\n}}\n")
}

fn param_names(m: &TypedModel) -> Vec<(&str, Vec<usize>)> {
    m.params
        .iter()
        .map(|p| (p.name.as_str(), p.shape.dims.clone()))
        .collect()
}

fn output_shape(m: &TypedModel) -> &Shape {
    &m.nodes[m.output.0 as usize].shape
}

#[test]
fn mnist_reference_program_checks_with_shapes_params_and_settings() {
    let p = ok(MNIST);
    let m = &p.models[0];
    assert_eq!(m.inputs[0].shape, Shape::batched(vec![28, 28]));
    assert_eq!(
        param_names(m),
        vec![
            ("dense_0.w", vec![784, 128]),
            ("dense_0.b", vec![128]),
            ("dense_1.w", vec![128, 64]),
            ("dense_1.b", vec![64]),
            ("dense_2.w", vec![64, 10]),
            ("dense_2.b", vec![10]),
        ]
    );
    assert_eq!(m.params[0].init, Init::He);
    assert_eq!(m.params[1].init, Init::Zeros);
    assert_eq!(output_shape(m), &Shape::batched(vec![10]));
    assert!(matches!(
        m.nodes[m.output.0 as usize].op,
        TOp::Softmax { axis: 0 }
    ));

    let t = &p.trains[0];
    assert_eq!(t.model, 0);
    assert_eq!(
        t.data,
        DataSpec::Idx {
            dir: PathBuf::from("/project/examples/data/mnist-10k"),
            scale: 1.0 / 255.0
        }
    );
    assert_eq!(t.loss, Loss::CrossEntropy);
    assert_eq!(
        t.optimizer,
        Optimizer::Sgd {
            lr: 0.05,
            momentum: 0.9,
            nesterov: false
        }
    );
    assert_eq!((t.batch, t.epochs, t.seed, t.shuffle), (64, 5, 7, true));
    assert_eq!(
        t.metrics,
        vec![Metric::Accuracy, Metric::Precision, Metric::Recall]
    );
}

#[test]
fn nodes_are_topologically_ordered() {
    for src in [MNIST, LINE, RESIDUAL, LENET] {
        for m in ok(src).models {
            for (i, n) in m.nodes.iter().enumerate() {
                assert!(n.operands.iter().all(|o| (o.0 as usize) < i), "{}", m.name);
            }
        }
    }
}

#[test]
fn line_regression_checks_with_matmul_of_a_rank_one_input() {
    let p = ok(LINE);
    let m = &p.models[0];
    assert_eq!(param_names(m), vec![("w", vec![1, 1]), ("b", vec![1])]);
    assert_eq!(output_shape(m), &Shape::batched(vec![1]));
    let t = &p.trains[0];
    assert_eq!(
        t.data,
        DataSpec::Csv {
            path: PathBuf::from("/project/examples/data/line.csv"),
            target: "y".into(),
            standardize: false,
            test: TestSplit::Fraction(0.2),
        }
    );
    assert_eq!((t.loss, t.batch, t.epochs, t.seed), (Loss::Mse, 32, 200, 0));
    assert_eq!(t.metrics, vec![Metric::Mae, Metric::Mse]);
}

#[test]
fn residual_graph_counts_dense_layers_in_source_order() {
    let p = ok(RESIDUAL);
    let m = &p.models[0];
    let names: Vec<&str> = m.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dense_0.w",
            "dense_0.b",
            "dense_1.w",
            "dense_1.b",
            "dense_2.w",
            "dense_2.b"
        ]
    );
    assert_eq!(m.params[4].shape.dims, vec![64, 10]);
    assert_eq!(output_shape(m), &Shape::batched(vec![10]));
    assert!(p.trains.is_empty());
}

#[test]
fn lenet_convolutions_and_pools_infer_shapes() {
    let p = ok(LENET);
    let m = &p.models[0];
    assert_eq!(
        param_names(m),
        vec![
            ("conv2d_0.w", vec![5, 5, 1, 6]),
            ("conv2d_0.b", vec![6]),
            ("conv2d_1.w", vec![5, 5, 6, 16]),
            ("conv2d_1.b", vec![16]),
            ("dense_0.w", vec![400, 120]),
            ("dense_0.b", vec![120]),
            ("dense_1.w", vec![120, 84]),
            ("dense_1.b", vec![84]),
            ("dense_2.w", vec![84, 10]),
            ("dense_2.b", vec![10]),
        ]
    );
    let shapes: Vec<String> = m.nodes.iter().map(|n| n.shape.to_string()).collect();
    for expected in [
        "[N, 28, 28, 6]",
        "[N, 14, 14, 6]",
        "[N, 10, 10, 16]",
        "[N, 5, 5, 16]",
        "[N, 400]",
    ] {
        assert!(
            shapes.iter().any(|s| s == expected),
            "{expected} not in {shapes:?}"
        );
    }
}

#[test]
fn nested_direct_calls_number_layers_in_source_order() {
    let p = ok(&model_src("input x: [4]\noutput y = dense(dense(x, 3), 2)"));
    let names: Vec<&str> = p.models[0].params.iter().map(|p| p.name.as_str()).collect();
    // The outer call comes first in the source, so it is dense_0 (its w is [3, 2]).
    assert_eq!(names, ["dense_1.w", "dense_1.b", "dense_0.w", "dense_0.b"]);
    assert_eq!(p.models[0].params[2].shape.dims, vec![3, 2]);
}

#[test]
fn batch_norm_creates_parameters_and_buffers() {
    let p = ok(&model_src(
        "input x: [8, 8, 3]\noutput y = x |> batch_norm(momentum = 0.9) |> flatten",
    ));
    let m = &p.models[0];
    assert_eq!(
        param_names(m),
        vec![
            ("batch_norm_0.gamma", vec![3]),
            ("batch_norm_0.beta", vec![3])
        ]
    );
    let bufs: Vec<(&str, f32)> = m
        .buffers
        .iter()
        .map(|b| (b.name.as_str(), b.fill))
        .collect();
    assert_eq!(
        bufs,
        vec![
            ("batch_norm_0.running_mean", 0.0),
            ("batch_norm_0.running_var", 1.0)
        ]
    );
    assert_eq!(m.params[0].init, Init::Ones);
}

#[test]
fn tensor_functions_infer_shapes_and_normalise_axes() {
    let src = model_src(
        "input a: [2, 3]\n\
         input b: [2, 5]\n\
         let c = concat(a, b)\n\
         let d = a |> concat(b, a, axis = 1) |> reshape([2 * 11]) |> reshape([11, 2])\n\
         let e = transpose(d) |> sum(axis = 0)\n\
         let f = mean(exp(log(sqrt(abs(square(c))))))\n\
         let g = max(c, axis = -2) |> leaky_relu(alpha = 0.2) |> softmax(axis = 0)\n\
         output y = e * 2 - -1 + sum(f) |> sigmoid |> tanh |> gelu |> softplus",
    );
    let p = ok(&src);
    let m = &p.models[0];
    let by_op = |want: fn(&TOp) -> bool| {
        m.nodes
            .iter()
            .find(|n| want(&n.op))
            .map(|n| n.shape.to_string())
    };
    assert_eq!(
        by_op(|o| matches!(o, TOp::Concat { axis: 1 })).as_deref(),
        Some("[N, 2, 8]")
    );
    assert_eq!(
        by_op(|o| matches!(o, TOp::Transpose)).as_deref(),
        Some("[N, 2, 11]")
    );
    assert_eq!(
        by_op(|o| matches!(
            o,
            TOp::Reduce {
                func: ReduceFn::Sum,
                axis: 0
            }
        ))
        .as_deref(),
        Some("[N, 11]")
    );
    assert_eq!(
        by_op(|o| matches!(
            o,
            TOp::Reduce {
                func: ReduceFn::Max,
                axis: 0
            }
        ))
        .as_deref(),
        Some("[N, 8]")
    );
    assert!(m
        .nodes
        .iter()
        .any(|n| n.op == TOp::Const(-1.0) || n.op == TOp::Const(1.0)));
    assert_eq!(output_shape(m), &Shape::batched(vec![11]));
}

#[test]
fn constant_expressions_are_folded_in_arguments_and_tensors() {
    let p = ok(&model_src("input x: [4]\nparam s: [1] = 1 / 4\noutput y = x * (2 * 3) |> dropout(rate = 1 / 2) |> dense(2 + 1, init = normal(std = 0.1 / 2))"));
    let m = &p.models[0];
    assert_eq!(m.params[0].init, Init::Constant(0.25));
    assert_eq!(m.params[1].init, Init::Normal { std: 0.05 });
    assert!(m.nodes.iter().any(|n| n.op == TOp::Const(6.0)));
    assert!(m.nodes.iter().any(|n| n.op == TOp::Dropout { rate: 0.5 }));
    assert_eq!(output_shape(m), &Shape::batched(vec![3]));
}

#[test]
fn param_without_initializer_defaults_by_rank() {
    let p = ok(&model_src(
        "input x: [2]\nparam w: [2, 2]\nparam b: [2]\noutput y = x @ w + b",
    ));
    assert_eq!(p.models[0].params[0].init, Init::Glorot);
    assert_eq!(p.models[0].params[1].init, Init::Zeros);
}

#[test]
fn several_models_and_trains_in_one_file() {
    // The line model without its own train block: one block per model (E0410).
    let line = &LINE[..LINE.find("train Line").unwrap()];
    let src = format!("{line}\n{MNIST}\ntrain Line {{ data = csv(\"a.csv\", target = \"t\", standardize = true) loss = mae optimizer = adamw(0.01) shuffle = false }}");
    let p = ok(&src);
    assert_eq!(p.models.len(), 2);
    assert_eq!(p.trains.len(), 2);
    assert_eq!(p.trains[0].model, 1);
    assert_eq!(p.trains[1].model, 0);
    assert!(!p.trains[1].shuffle);
    assert!(
        matches!(p.trains[1].optimizer, Optimizer::AdamW { lr, weight_decay, .. } if lr == 0.01 && weight_decay == 0.01)
    );
}

// Names.

#[test]
fn unknown_layer_suggests_the_closest_name() {
    let d = one_err(
        &model_src("input x: [4]\noutput y = x |> dens(10)"),
        Code::UnknownFunction,
        "dens",
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `dense`?"));
}

#[test]
fn loss_called_in_a_model_is_an_unknown_function() {
    one_err(
        &model_src("input x: [4]\noutput y = mse(x)"),
        Code::UnknownFunction,
        "mse",
    );
}

#[test]
fn undefined_name_suggests_names_in_scope() {
    let d = one_err(
        &model_src("input image: [4]\noutput y = imgae |> relu"),
        Code::UndefinedName,
        "imgae",
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `image`?"));
}

#[test]
fn name_used_before_its_definition_points_at_both() {
    let d = one_err(
        &model_src("input x: [4]\nlet a = h + x\nlet h = x\noutput y = a"),
        Code::UndefinedName,
        "h",
    );
    assert_eq!(d.labels.len(), 2);
}

#[test]
fn rebinding_a_name_points_at_the_first_definition() {
    let src = model_src("input x: [4]\nlet x = relu(x)\noutput y = x");
    let d = one_err(&src, Code::Rebound, "x");
    let second = d.labels[1].span;
    assert_eq!(&src[second.start as usize..second.end as usize], "x");
    assert!(second.start < d.labels[0].span.start);
}

#[test]
fn bare_activation_outside_a_pipe_is_not_a_tensor() {
    one_err(
        &model_src("input x: [4]\noutput y = relu + x"),
        Code::NotATensor,
        "relu",
    );
}

#[test]
fn train_of_an_unknown_model_suggests_a_model_name() {
    let src = format!("{RESIDUAL}\ntrain Residul {{ data = idx(\"d\") loss = cross_entropy optimizer = adam(lr = 0.001) }}");
    let d = one_err(&src, Code::UnknownModel, "Residul");
    assert_eq!(d.help.as_deref(), Some("did you mean `Residual`?"));
}

#[test]
fn duplicate_model_names_are_reported() {
    let src = format!("{RESIDUAL}{RESIDUAL}");
    one_err(&src, Code::DuplicateItem, "Residual");
}

#[test]
fn model_structure_needs_one_output_and_an_input() {
    let d = one_err(
        "model M {\n param w: [2] = ones\n output z = w\n}",
        Code::ModelStructure,
        "M",
    );
    assert!(d.message.contains("no `input`"));
    let diags = errs("model M {\n input x: [2]\n}");
    assert_eq!(diags[0].code, Code::ModelStructure);
    assert!(diags[0].message.contains("no `output`"));
    one_err(
        &model_src("input x: [2]\noutput a = x\noutput b = x"),
        Code::ModelStructure,
        "output b = x",
    );
}

// Arguments.

#[test]
fn unknown_argument_suggests_a_parameter_name() {
    let d = one_err(
        &model_src("input x: [4]\noutput y = x |> dense(10, int = he)"),
        Code::UnknownArgument,
        "int",
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `init`?"));
}

#[test]
fn missing_required_argument_shows_the_signature() {
    let d = one_err(
        &model_src("input x: [4]\noutput y = x |> dropout()"),
        Code::MissingArgument,
        "dropout()",
    );
    assert_eq!(
        d.help.as_deref(),
        Some("the signature is `dropout(x, rate)`")
    );
    let src = format!(
        "{RESIDUAL}\ntrain Residual {{ data = idx(\"d\") loss = cross_entropy optimizer = sgd }}"
    );
    one_err(&src, Code::MissingArgument, "sgd");
}

#[test]
fn repeated_surplus_and_misordered_arguments_are_e0206() {
    one_err(
        &model_src("input x: [4]\noutput y = x |> dense(10, units = 10)"),
        Code::ArgumentOrder,
        "units = 10",
    );
    one_err(
        &model_src("input x: [4]\noutput y = x |> dense(10, he, 3)"),
        Code::ArgumentOrder,
        "3",
    );
    one_err(
        &model_src("input x: [4, 4, 1]\noutput y = x |> conv2d(kernel = 3, 8) |> flatten"),
        Code::ArgumentOrder,
        "8",
    );
}

#[test]
fn arguments_of_the_wrong_type_or_range_are_e0207() {
    for (call, at) in [
        ("dense(0)", "0"),
        ("dense(1.5)", "1.5"),
        ("dense(\"ten\")", "\"ten\""),
        ("dropout(rate = 1.5) |> dense(2)", "1.5"),
        ("dense(2, init = xavier)", "xavier"),
    ] {
        let src = model_src(&format!("input x: [4]\noutput y = x |> {call}"));
        let diags = errs(&src);
        assert_eq!(diags.len(), 1, "{call}: {diags:#?}");
        let code = if call.contains("xavier") {
            Code::UnknownFunction
        } else {
            Code::InvalidArgument
        };
        assert_eq!(diags[0].code, code, "{call}");
        let span = diags[0].primary_span().unwrap();
        assert_eq!(&src[span.start as usize..span.end as usize], at, "{call}");
    }
    let d = one_err(
        &model_src("input x: [4, 4, 1]\noutput y = x |> conv2d(2, padding = \"valdi\") |> flatten"),
        Code::InvalidArgument,
        "\"valdi\"",
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `valid`?"));
    one_err(
        &model_src("input x: [4, 4, 1]\noutput y = x |> conv2d(2, padding = \"full\") |> flatten"),
        Code::InvalidArgument,
        "\"full\"",
    );
}

// Shapes.

#[test]
fn dense_on_an_image_suggests_flatten() {
    let d = one_err(
        &model_src("input x: [28, 28, 1]\noutput y = x |> dense(10)"),
        Code::DenseRank,
        "dense(10)",
    );
    assert!(d.help.unwrap().contains("flatten"));
    assert!(d.message.contains("[N, 28, 28, 1]"));
}

#[test]
fn matmul_mismatch_shows_both_shapes() {
    let d = one_err(
        &model_src("input x: [3]\nparam w: [4, 5]\noutput y = x @ w"),
        Code::MatMulMismatch,
        "x",
    );
    assert!(
        d.message.contains("[N, 3]") && d.message.contains("[4, 5]"),
        "{}",
        d.message
    );
    assert_eq!(d.labels[1].text, "shape [4, 5]");
}

#[test]
fn broadcast_failure_shows_both_shapes() {
    let d = one_err(
        &model_src("input x: [3]\ninput z: [4]\noutput y = x + z"),
        Code::Broadcast,
        "x",
    );
    assert!(d.message.contains("[N, 3]") && d.message.contains("[N, 4]"));
}

#[test]
fn conv_groups_must_divide_channels_and_filters_e0310() {
    one_err(
        &model_src("input x: [4, 4, 3]\noutput y = x |> conv2d(4, groups = 2) |> flatten"),
        Code::Groups,
        "2",
    );
    ok(&model_src(
        "input x: [4, 4, 4]\noutput y = x |> conv2d(6, kernel = [1, 3], groups = 2) |> flatten",
    ));
}

#[test]
fn windows_larger_than_their_input_are_e0304() {
    one_err(
        &model_src("input x: [1, 1, 3]\noutput y = x |> max_pool(2) |> flatten"),
        Code::PoolTooLarge,
        "max_pool(2)",
    );
    one_err(&model_src("input x: [4, 4, 3]\noutput y = x |> conv2d(2, kernel = 5, padding = \"valid\") |> flatten"), Code::PoolTooLarge, "conv2d(2, kernel = 5, padding = \"valid\")");
    // A dilated span too large to be meant is an error whatever the padding.
    one_err(
        &model_src("input x: [4, 4, 3]\noutput y = x |> conv2d(2, dilation = 4611686018427387904) |> flatten"),
        Code::PoolTooLarge,
        "conv2d(2, dilation = 4611686018427387904)",
    );
    // "same" padding accepts a kernel larger than the image.
    ok(&model_src(
        "input x: [4, 4, 3]\noutput y = x |> conv2d(2, kernel = 5) |> flatten",
    ));
}

#[test]
fn pooling_needs_an_image() {
    let d = one_err(
        &model_src("input x: [28, 28]\noutput y = x |> max_pool |> flatten"),
        Code::RankMismatch,
        "max_pool",
    );
    assert!(d.help.unwrap().contains("reshape([28, 28, 1])"));
}

#[test]
fn axis_out_of_range_is_e0305() {
    one_err(
        &model_src("input x: [3]\noutput y = x |> softmax(axis = 1)"),
        Code::InvalidAxis,
        "1",
    );
    one_err(
        &model_src("input x: [3, 2]\noutput y = sum(x, axis = -3)"),
        Code::InvalidAxis,
        "-3",
    );
}

#[test]
fn reshape_to_another_element_count_shows_both_counts() {
    let d = one_err(
        &model_src("input x: [28, 28]\noutput y = reshape(x, [10, 10])"),
        Code::ReshapeMismatch,
        "[10, 10]",
    );
    assert!(
        d.message.contains("784") && d.message.contains("100"),
        "{}",
        d.message
    );
}

#[test]
fn huge_and_zero_shapes_are_errors_not_panics() {
    one_err(
        &model_src("input x: [100000000000, 100000000000]\noutput y = x"),
        Code::ShapeOverflow,
        "[100000000000, 100000000000]",
    );
    one_err(
        &model_src("input x: [4]\noutput y = x |> dense(4611686018427387904)"),
        Code::ShapeOverflow,
        "dense(4611686018427387904)",
    );
    one_err(
        &model_src("input x: [4, 0]\noutput y = x"),
        Code::EmptyShape,
        "0",
    );
}

// Training.

#[test]
fn unknown_and_duplicate_settings() {
    let src = format!("{RESIDUAL}\ntrain Residual {{ data = idx(\"d\") loss = cross_entropy optimizer = adam(lr = 0.001) epoch = 3 }}");
    let d = one_err(&src, Code::UnknownSetting, "epoch");
    assert_eq!(d.help.as_deref(), Some("did you mean `epochs`?"));
    let src = format!("{RESIDUAL}\ntrain Residual {{ data = idx(\"d\") loss = cross_entropy loss = mse optimizer = adam(lr = 0.001) }}");
    one_err(&src, Code::DuplicateSetting, "loss = mse");
}

#[test]
fn missing_required_settings_point_at_the_train_name() {
    let src =
        format!("{RESIDUAL}\ntrain Residual {{ data = idx(\"d\") optimizer = adam(lr = 0.001) }}");
    let d = one_err(&src, Code::MissingSetting, "Residual");
    assert_eq!(
        d.help.as_deref(),
        Some("add a line such as `loss = cross_entropy`")
    );
    let diags = errs(&format!("{RESIDUAL}\ntrain Residual {{ }}"));
    assert_eq!(
        diags
            .iter()
            .filter(|d| d.code == Code::MissingSetting)
            .count(),
        3
    );
}

#[test]
fn cross_entropy_on_one_unit_suggests_binary_cross_entropy() {
    let src = "model B {\n input x: [4]\n output p = x |> dense(1) |> sigmoid\n}\ntrain B { data = csv(\"b.csv\", target = \"t\") loss = cross_entropy optimizer = sgd(lr = 0.1) }";
    let d = one_err(src, Code::LossOutputMismatch, "cross_entropy");
    assert!(d.help.unwrap().contains("binary_cross_entropy"));
    ok(&src.replace("loss = cross_entropy", "loss = binary_cross_entropy"));
}

#[test]
fn non_positive_batch_epochs_and_lr_are_e0405() {
    for (setting, at) in [("batch = 0", "0"), ("epochs = -1", "-1")] {
        let src = format!("{RESIDUAL}\ntrain Residual {{ data = idx(\"d\") loss = cross_entropy optimizer = adam(lr = 0.001) {setting} }}");
        one_err(&src, Code::NonPositive, at);
    }
    let src = format!("{RESIDUAL}\ntrain Residual {{ data = idx(\"d\") loss = cross_entropy optimizer = adam(lr = 0) }}");
    one_err(&src, Code::NonPositive, "0");
    let src = format!("{RESIDUAL}\ntrain Residual {{ data = idx(\"d\") loss = cross_entropy optimizer = adam(lr = 0.1) batch = 2.5 }}");
    one_err(&src, Code::InvalidArgument, "2.5");
}

#[test]
fn metrics_must_fit_the_loss() {
    let d = one_err(
        &LINE.replace("[mae, mse]", "[accuracy]"),
        Code::MetricLossMismatch,
        "accuracy",
    );
    assert!(d.help.unwrap().contains("mae"));
    one_err(
        &MNIST.replace("[accuracy, precision, recall]", "[accuracy, mse]"),
        Code::MetricLossMismatch,
        "mse",
    );
    one_err(
        &MNIST.replace("[accuracy, precision, recall]", "[acuracy]"),
        Code::UnknownFunction,
        "acuracy",
    );
}

#[test]
fn trained_model_needs_exactly_one_input() {
    let src = "model Two {\n input a: [2]\n input b: [2]\n output y = a + b |> dense(1)\n}\ntrain Two { data = csv(\"x.csv\", target = \"t\") loss = mse optimizer = sgd(lr = 0.1) }";
    one_err(src, Code::ModelStructure, "Two");
    // Checking alone accepts it: only training needs one input.
    ok(&src[..src.find("train").unwrap()]);
}

// Several errors.

#[test]
fn independent_errors_are_all_reported_in_source_order() {
    let src = "model A {\n input x: [4]\n let a = x |> dens(3)\n let b = x |> dropout(rate = 2)\n output y = x |> dense(0)\n}\n\
               model B {\n input x: [3]\n param w: [4, 2]\n output y = x @ w\n}\n\
               train C { loss = mse }";
    let codes: Vec<Code> = errs(src).iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        vec![
            Code::UnknownFunction,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::MatMulMismatch,
            Code::UnknownModel,
            Code::MissingSetting,
            Code::MissingSetting,
        ]
    );
}

#[test]
fn an_undefined_name_does_not_cascade() {
    let src = model_src("input x: [4]\nlet h = x + undefined_thing\nlet z = h |> dense(3) |> relu |> flatten\noutput y = z @ h");
    one_err(&src, Code::UndefinedName, "undefined_thing");
}

#[test]
fn file_without_train_block_is_valid() {
    assert!(ok(LENET).trains.is_empty());
}

/// A model `M` with `model_body`, trained by one block with `settings` added.
fn trained(model_body: &str, settings: &str) -> String {
    format!(
        "model M {{\n{model_body}\n}}\ntrain M {{\n    data = csv(\"d.csv\", target = \"y\")\n    \
         optimizer = sgd(lr = 0.1)\n{settings}\n}}\n"
    )
}

const CLASSIFIER: &str = "input x: [4]\noutput y = x |> dense(3) |> softmax";

#[test]
fn an_empty_or_comment_only_file_defines_no_model() {
    for src in ["", "   \n\n", "# just a comment\n# and another\n"] {
        let d = errs(src).remove(0);
        assert_eq!(d.code, Code::NoModel, "{src:?}: {d:#?}");
        assert!(d.help.as_deref().unwrap().contains("model M {"), "{d:#?}");
    }
}

#[test]
fn two_train_blocks_for_one_model_point_at_both() {
    let src = format!(
        "{}train M {{\n    data = csv(\"e.csv\", target = \"y\")\n    loss = cross_entropy\n    \
         optimizer = adam(lr = 0.1)\n}}\n",
        trained(CLASSIFIER, "    loss = cross_entropy")
    );
    let d = errs(&src).remove(0);
    assert_eq!(d.code, Code::DuplicateTrain, "{d:#?}");
    let texts: Vec<&str> = d
        .labels
        .iter()
        .map(|l| &src[l.span.start as usize..l.span.end as usize])
        .collect();
    assert_eq!(texts, ["train M", "train M"]);
    assert!(d.labels[0].span.start > d.labels[1].span.start);
    assert_eq!(d.labels[1].text, "first train block here");
}

#[test]
fn binary_cross_entropy_on_several_units_is_an_error_at_the_loss() {
    let src = trained(
        "input x: [4]\noutput y = x |> dense(2) |> sigmoid",
        "    loss = binary_cross_entropy",
    );
    let d = one_err(&src, Code::LossOutputMismatch, "binary_cross_entropy");
    let help = d.help.unwrap();
    assert!(
        help.contains("cross_entropy") && help.contains("sigmoid"),
        "{help}"
    );
    ok(&trained(
        "input x: [4]\noutput y = x |> dense(1) |> sigmoid",
        "    loss = binary_cross_entropy",
    ));
}

#[test]
fn a_model_without_parameters_has_nothing_to_train() {
    let src = trained(
        "input x: [4]\noutput y = x |> relu",
        "    loss = mse\n    freeze = [\"dense_0\"]",
    );
    let d = one_err(&src, Code::NothingToTrain, "M");
    assert!(d.help.is_some());
}

#[test]
fn a_metric_listed_twice_is_an_error_at_the_second() {
    let src = trained(
        CLASSIFIER,
        "    loss = cross_entropy\n    metrics = [accuracy, f1, accuracy]",
    );
    let d = one_err(&src, Code::DuplicateMetric, "accuracy");
    assert!(d.labels[0].span.start > d.labels[1].span.start, "{d:#?}");
    assert!(d.help.is_some());
}
