//! Gradient clipping, weight decay and label smoothing in the training step, on the
//! interpreter against the same quantities computed by hand from an unshaped step: SGD
//! with `lr = 1` makes each update `p − p'` the gradient the optimizer received.

use std::collections::HashMap;

use crate::ir::interp;
use crate::ir::tensor::Tensor;
use crate::ir::tests::models;
use crate::sema::typed::{Loss, Optimizer, TypedTrain};
use crate::step::build_step_graphs;

fn sgd() -> Optimizer {
    Optimizer::Sgd {
        lr: 1.0,
        momentum: 0.0,
        nesterov: false,
    }
}

/// Runs one training step of a 6-5-3 MLP on a fixed batch; returns the initial
/// parameters, the updates `p − p'` and the loss, by parameter name.
#[allow(clippy::type_complexity)]
fn step(
    train: &TypedTrain,
) -> (
    HashMap<String, Tensor>,
    HashMap<String, Vec<f32>>,
    f32,
    Vec<f32>,
) {
    let model = models::mlp(6, 5, 3);
    let sg = build_step_graphs(&model, train).unwrap();
    let mut inputs: HashMap<String, Tensor> = sg.initial_values(&model, 3).into_iter().collect();
    let x: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect();
    inputs.insert("x".into(), Tensor::new(vec![4, 6], x).unwrap());
    inputs.insert(
        "y".into(),
        Tensor::new(vec![4], vec![0.0, 2.0, 1.0, 2.0]).unwrap(),
    );
    let params = inputs.clone();
    let out = interp::run(&sg.train, &inputs, 4).unwrap();
    let mut updates = HashMap::new();
    for (name, _) in &sg.params {
        // The update keeps the parameter's shape (a scalar factor broadcast into a rank-1
        // gradient once made it [1, n]).
        assert_eq!(
            out[name].shape, params[name].shape,
            "shape of updated `{name}`"
        );
        let before = &params[name].data;
        let after = &out[name].data;
        updates.insert(
            name.clone(),
            before.iter().zip(after).map(|(b, a)| b - a).collect(),
        );
    }
    (
        params,
        updates,
        out["loss"].data[0],
        out["output"].data.clone(),
    )
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs()))
}

fn assert_all(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn clipping_and_decay_shape_the_gradient_the_optimizer_takes() {
    let plain = models::train_block(Loss::CrossEntropy, sgd());
    let (params, raw, _, _) = step(&plain);
    let norm: f32 = raw
        .values()
        .flat_map(|g| g.iter().map(|v| v * v))
        .sum::<f32>()
        .sqrt();
    assert!(norm > 0.05, "a gradient worth clipping: {norm}");

    let v = 0.01;
    let (_, clipped, _, _) = step(&TypedTrain {
        clip_value: Some(v as f64),
        ..plain.clone()
    });
    for (name, g) in &raw {
        let want: Vec<f32> = g.iter().map(|x| x.clamp(-v, v)).collect();
        assert_all(&clipped[name], &want, name);
    }

    let c = norm / 4.0;
    let (_, scaled, _, _) = step(&TypedTrain {
        clip_norm: Some(c as f64),
        ..plain.clone()
    });
    let factor = c / (norm + 1e-6);
    for (name, g) in &raw {
        let want: Vec<f32> = g.iter().map(|x| x * factor).collect();
        assert_all(&scaled[name], &want, name);
    }
    // A bound above the norm changes nothing.
    let (_, same, _, _) = step(&TypedTrain {
        clip_norm: Some((norm * 2.0) as f64),
        ..plain.clone()
    });
    for (name, g) in &raw {
        assert_all(&same[name], g, name);
    }

    let wd = 0.1;
    let (_, decayed, _, _) = step(&TypedTrain {
        weight_decay: wd as f64,
        ..plain.clone()
    });
    for (name, g) in &raw {
        let want: Vec<f32> = g
            .iter()
            .zip(&params[name].data)
            .map(|(x, p)| x + wd * p)
            .collect();
        assert_all(&decayed[name], &want, name);
    }
}

#[test]
fn label_smoothing_mixes_a_uniform_target_into_the_loss() {
    let plain = models::train_block(Loss::CrossEntropy, sgd());
    let (_, _, ce, probs) = step(&plain);
    // By hand from the model's probabilities: the true classes' and the uniform part.
    let labels = [0usize, 2, 1, 2];
    let true_part: f32 = -labels
        .iter()
        .enumerate()
        .map(|(i, &y)| probs[i * 3 + y].ln())
        .sum::<f32>()
        / 4.0;
    let uniform: f32 = -probs.iter().map(|p| p.ln()).sum::<f32>() / 12.0;
    assert!((ce - true_part).abs() < 1e-5, "{ce} vs {true_part}");
    let eps = 0.2f32;
    let (_, _, smoothed, _) = step(&TypedTrain {
        label_smoothing: eps as f64,
        ..plain.clone()
    });
    let want = (1.0 - eps) * true_part + eps * uniform;
    assert!(
        (smoothed - want).abs() < 1e-5,
        "smoothed {smoothed}, (1-ε)·{true_part} + ε·{uniform} = {want}"
    );
}
