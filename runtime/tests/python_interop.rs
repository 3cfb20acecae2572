//! `weights.safetensors` and full checkpoints are readable by the Python `safetensors`
//! package. Skipped, with the reason printed, where python3 with safetensors and numpy
//! is not installed.

mod common;

use std::process::Command;

use common::temp_dir;
use nnc_runtime::checkpoint::{write_weights, Checkpoint};
use nnc_runtime::{StateKind, StateTensor, Tensor};

fn python_with_safetensors() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import safetensors.numpy, numpy"])
        .output()
        .map_err(|e| format!("python3 is not available: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 lacks safetensors or numpy: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn python_safetensors_reads_weights_and_checkpoints() {
    if let Err(reason) = python_with_safetensors() {
        println!("skipped: {reason} (pip install safetensors numpy)");
        return;
    }
    let dir = temp_dir("python");
    let state = vec![
        StateTensor {
            name: "dense_0.w".into(),
            kind: StateKind::Param,
            tensor: Tensor::new(vec![2, 3], vec![0.5, -1.0, 2.25, 3.0, 1e-8, -7.5]).unwrap(),
        },
        StateTensor {
            name: "dense_0.b".into(),
            kind: StateKind::Param,
            tensor: Tensor::new(vec![3], vec![0.1, 0.2, 0.3]).unwrap(),
        },
        StateTensor {
            name: "dense_0.w.m".into(),
            kind: StateKind::Optimizer,
            tensor: Tensor::zeros(vec![2, 3]),
        },
    ];
    let weights = dir.join("weights.safetensors");
    write_weights(&weights, &state, &[]).unwrap();
    let ckpt = dir.join("checkpoint.safetensors");
    Checkpoint {
        model_hash: "h".into(),
        state,
        step: 3,
        epoch: 1,
        position: 0,
        rng: [1, 2, 3, 4],
        batch: 2,
        seed: 0,
        shuffle: true,
        progress: serde_json::json!({"history": []}),
    }
    .save(&ckpt)
    .unwrap();
    let script = r#"
import sys, numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open
w = load_file(sys.argv[1])
assert sorted(w) == ["dense_0.b", "dense_0.w"], sorted(w)
assert w["dense_0.w"].dtype == np.float32 and w["dense_0.w"].shape == (2, 3)
assert (w["dense_0.w"] == np.array([[0.5, -1.0, 2.25], [3.0, 1e-8, -7.5]], dtype=np.float32)).all()
c = load_file(sys.argv[2])
assert sorted(c) == ["optim/dense_0.w.m", "param/dense_0.b", "param/dense_0.w"], sorted(c)
with safe_open(sys.argv[2], framework="numpy") as f:
    meta = f.metadata()
assert meta["nnc.format"] == "nnc-checkpoint/1" and meta["nnc.step"] == "3", meta
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&weights)
        .arg(&ckpt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
