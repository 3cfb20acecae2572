//! Test helpers: a small softmax-regression executor with hand-written gradients and SGD
//! with momentum (so there is optimizer state to checkpoint), a linear-regression
//! executor, and temporary folders.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use nnc_runtime::executor::{EpochRun, EvalOutput, StepOutput};
use nnc_runtime::{ExecError, Executor, StateKind, StateTensor, Tensor};

/// A fresh, empty folder under the system temp dir, unique per test, removed on drop.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(name: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nnc-runtime-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// `p = softmax(x W + b)`, cross-entropy loss, SGD with momentum.
pub struct Softmax {
    pub inputs: usize,
    pub classes: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub vw: Vec<f32>,
    pub vb: Vec<f32>,
    pub lr: f32,
    pub momentum: f32,
    /// Batch sizes of every training step, in order.
    pub seen: Vec<usize>,
    /// After this many steps, set `w[0]` to NaN (to test detection).
    pub poison_after: Option<usize>,
    pub steps: usize,
    pub hash: String,
}

impl Softmax {
    pub fn new(inputs: usize, classes: usize, lr: f32) -> Softmax {
        // A fixed, asymmetric start so that training is not trivially symmetric.
        let w = (0..inputs * classes)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.01)
            .collect();
        Softmax {
            inputs,
            classes,
            w,
            b: vec![0.0; classes],
            vw: vec![0.0; inputs * classes],
            vb: vec![0.0; classes],
            lr,
            momentum: 0.9,
            seen: Vec::new(),
            poison_after: None,
            steps: 0,
            hash: "softmax-test".into(),
        }
    }

    fn forward(&self, x: &Tensor) -> Vec<f32> {
        let b = x.rows();
        let (d, k) = (self.inputs, self.classes);
        let mut p = vec![0.0f32; b * k];
        for i in 0..b {
            let row = &x.data[i * d..(i + 1) * d];
            let logits: Vec<f32> = (0..k)
                .map(|c| self.b[c] + (0..d).map(|j| row[j] * self.w[j * k + c]).sum::<f32>())
                .collect();
            let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = logits.iter().map(|l| (l - m).exp()).collect();
            let s: f32 = e.iter().sum();
            for c in 0..k {
                p[i * k + c] = e[c] / s;
            }
        }
        p
    }

    fn loss(&self, p: &[f32], y: &Tensor) -> f32 {
        let k = self.classes;
        let n = y.rows();
        (0..n)
            .map(|i| -(p[i * k + y.data[i] as usize].max(1e-30)).ln())
            .sum::<f32>()
            / n as f32
    }
}

impl Executor for Softmax {
    fn backend(&self) -> &str {
        "test"
    }
    fn model_hash(&self) -> String {
        self.hash.clone()
    }
    fn input_shape(&self) -> Vec<usize> {
        vec![self.inputs]
    }
    fn output_shape(&self) -> Vec<usize> {
        vec![self.classes]
    }
    fn state(&self) -> Result<Vec<StateTensor>, ExecError> {
        let (d, k) = (self.inputs, self.classes);
        let t = |name: &str, kind, shape: Vec<usize>, data: &Vec<f32>| StateTensor {
            name: name.into(),
            kind,
            tensor: Tensor::new(shape, data.clone()).unwrap(),
        };
        Ok(vec![
            t("dense_0.w", StateKind::Param, vec![d, k], &self.w),
            t("dense_0.b", StateKind::Param, vec![k], &self.b),
            t(
                "dense_0.w.velocity",
                StateKind::Optimizer,
                vec![d, k],
                &self.vw,
            ),
            t(
                "dense_0.b.velocity",
                StateKind::Optimizer,
                vec![k],
                &self.vb,
            ),
        ])
    }
    fn set_state(&mut self, state: &[StateTensor]) -> Result<(), ExecError> {
        self.w = state[0].tensor.data.clone();
        self.b = state[1].tensor.data.clone();
        self.vw = state[2].tensor.data.clone();
        self.vb = state[3].tensor.data.clone();
        Ok(())
    }
    fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput, ExecError> {
        let (d, k, n) = (self.inputs, self.classes, x.rows());
        self.seen.push(n);
        let p = self.forward(x);
        let loss = self.loss(&p, y);
        let mut gw = vec![0.0f32; d * k];
        let mut gb = vec![0.0f32; k];
        for i in 0..n {
            for c in 0..k {
                let delta =
                    (p[i * k + c] - if y.data[i] as usize == c { 1.0 } else { 0.0 }) / n as f32;
                gb[c] += delta;
                for j in 0..d {
                    gw[j * k + c] += x.data[i * d + j] * delta;
                }
            }
        }
        for (i, g) in gw.iter().enumerate() {
            self.vw[i] = self.momentum * self.vw[i] + g;
            self.w[i] -= self.lr * self.vw[i];
        }
        for (i, g) in gb.iter().enumerate() {
            self.vb[i] = self.momentum * self.vb[i] + g;
            self.b[i] -= self.lr * self.vb[i];
        }
        self.steps += 1;
        if self.poison_after == Some(self.steps) {
            self.w[3] = f32::NAN;
        }
        Ok(StepOutput {
            loss,
            output: Some(Tensor::new(vec![n, k], p).unwrap()),
        })
    }
    fn eval_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<EvalOutput, ExecError> {
        let p = self.forward(x);
        let loss = self.loss(&p, y);
        Ok(EvalOutput {
            loss,
            output: Tensor::new(vec![x.rows(), self.classes], p).unwrap(),
        })
    }
}

/// `y = x w + b` with one output, mean squared error, plain SGD; training steps return
/// no outputs (so only test metrics exist).
pub struct Linear {
    pub w: Vec<f32>,
    pub b: f32,
    pub lr: f32,
}

impl Executor for Linear {
    fn backend(&self) -> &str {
        "test"
    }
    fn model_hash(&self) -> String {
        "linear-test".into()
    }
    fn input_shape(&self) -> Vec<usize> {
        vec![self.w.len()]
    }
    fn output_shape(&self) -> Vec<usize> {
        vec![1]
    }
    fn state(&self) -> Result<Vec<StateTensor>, ExecError> {
        Ok(vec![
            StateTensor {
                name: "w".into(),
                kind: StateKind::Param,
                tensor: Tensor::new(vec![self.w.len(), 1], self.w.clone()).unwrap(),
            },
            StateTensor {
                name: "b".into(),
                kind: StateKind::Param,
                tensor: Tensor::new(vec![1], vec![self.b]).unwrap(),
            },
        ])
    }
    fn set_state(&mut self, state: &[StateTensor]) -> Result<(), ExecError> {
        self.w = state[0].tensor.data.clone();
        self.b = state[1].tensor.data[0];
        Ok(())
    }
    fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput, ExecError> {
        let out = self.eval_batch(x, y)?;
        let (n, d) = (x.rows(), self.w.len());
        for i in 0..n {
            let e = 2.0 * (out.output.data[i] - y.data[i]) / n as f32;
            for j in 0..d {
                self.w[j] -= self.lr * e * x.data[i * d + j];
            }
            self.b -= self.lr * e;
        }
        Ok(StepOutput {
            loss: out.loss,
            output: None,
        })
    }
    fn eval_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<EvalOutput, ExecError> {
        let (n, d) = (x.rows(), self.w.len());
        let o: Vec<f32> = (0..n)
            .map(|i| self.b + (0..d).map(|j| x.data[i * d + j] * self.w[j]).sum::<f32>())
            .collect();
        let loss = o
            .iter()
            .zip(&y.data)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / n as f32;
        Ok(EvalOutput {
            loss,
            output: Tensor::new(vec![n, 1], o).unwrap(),
        })
    }
}

/// An executor that runs whole epochs and evaluations itself
/// ([`Executor::train_epoch`], [`Executor::eval_all`]), the way a GPU backend with the
/// data resident does, by stepping `inner` over the batches and handing back every loss
/// and output at the end; `epochs` and `evals` count the calls.
pub struct EpochWise<E> {
    pub inner: E,
    pub epochs: usize,
    pub evals: usize,
}

impl<E: Executor> Executor for EpochWise<E> {
    fn backend(&self) -> &str {
        "test-epochs"
    }
    fn model_hash(&self) -> String {
        self.inner.model_hash()
    }
    fn input_shape(&self) -> Vec<usize> {
        self.inner.input_shape()
    }
    fn output_shape(&self) -> Vec<usize> {
        self.inner.output_shape()
    }
    fn state(&self) -> Result<Vec<StateTensor>, ExecError> {
        self.inner.state()
    }
    fn set_state(&mut self, state: &[StateTensor]) -> Result<(), ExecError> {
        self.inner.set_state(state)
    }
    fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput, ExecError> {
        self.inner.train_step(x, y)
    }
    fn eval_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<EvalOutput, ExecError> {
        self.inner.eval_batch(x, y)
    }
    fn train_epoch(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        order: &[usize],
        batch: usize,
    ) -> Option<Result<EpochRun, ExecError>> {
        self.epochs += 1;
        let mut losses = Vec::new();
        let mut outputs = Vec::new();
        let mut rows = 0;
        for idx in order.chunks(batch) {
            let out = match self
                .inner
                .train_step(&x.gather_rows(idx), &y.gather_rows(idx))
            {
                Ok(out) => out,
                Err(e) => return Some(Err(e)),
            };
            losses.push(out.loss);
            if let Some(o) = out.output {
                outputs.extend(o.data);
                rows += idx.len();
            }
        }
        let mut shape = vec![rows];
        shape.extend(self.inner.output_shape());
        let outputs = (rows == order.len()).then(|| Tensor::new(shape, outputs).unwrap());
        Some(Ok(EpochRun { losses, outputs }))
    }
    fn eval_all(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        batch: usize,
    ) -> Option<Result<EpochRun, ExecError>> {
        self.evals += 1;
        let order: Vec<usize> = (0..x.rows()).collect();
        let (mut losses, mut outputs) = (Vec::new(), Vec::new());
        for idx in order.chunks(batch) {
            match self
                .inner
                .eval_batch(&x.gather_rows(idx), &y.gather_rows(idx))
            {
                Ok(out) => {
                    losses.push(out.loss);
                    outputs.extend(out.output.data);
                }
                Err(e) => return Some(Err(e)),
            }
        }
        let mut shape = vec![order.len()];
        shape.extend(self.inner.output_shape());
        let outputs = Some(Tensor::new(shape, outputs).unwrap());
        Some(Ok(EpochRun { losses, outputs }))
    }
}
