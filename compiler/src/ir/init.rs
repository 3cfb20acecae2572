//! Parameter initializers, driven by the file's `seed` so that the same seed gives
//! bit-identical weights on every run and every machine.
//!
//! The generator is our own and fixed forever (its bits must never depend on a crate
//! version): each parameter gets a stream seeded with `mix64(seed ⊕ fnv1a(name))`, so a
//! parameter's values do not change when other parameters are added or reordered. The
//! stream is splitmix64; a uniform double takes the top 53 bits; a normal sample is one
//! Box–Muller transform of two uniforms (`sqrt(-2 ln u1) · cos(2π u2)`, `u1` in (0, 1]).
//! Values are computed in f64 and rounded to f32 once.
//!
//! Fan-in and fan-out come from the shape `[.., fan_in, fan_out]` times the receptive
//! field (the product of the leading dims): dense `[in, units]` has fan-in `in`, conv
//! `[k, k, c, f]` has fan-in `k·k·c` and fan-out `k·k·f`. A rank-1 shape `[n]` has both
//! equal to `n`; a scalar has both 1.

use super::ops::source::mix64;
use super::tensor::Tensor;
use crate::sema::typed::{Init, TypedModel};

/// The splitmix64 generator.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller, one sample per two uniforms).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]: the log is finite
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// FNV-1a over the bytes of a name.
pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `(fan_in, fan_out)` of a parameter shape (see the module doc).
pub fn fans(shape: &[usize]) -> (f64, f64) {
    match shape {
        [] => (1.0, 1.0),
        [n] => (*n as f64, *n as f64),
        [lead @ .., i, o] => {
            let rf: usize = lead.iter().product();
            ((rf * i) as f64, (rf * o) as f64)
        }
    }
}

/// The initial value of one parameter.
pub fn init_tensor(init: &Init, shape: &[usize], seed: u64, name: &str) -> Tensor {
    let n: usize = shape.iter().product();
    let mut rng = SplitMix64::new(mix64(seed ^ fnv1a(name)));
    let (fan_in, fan_out) = fans(shape);
    let mut sample = |f: &mut dyn FnMut(&mut SplitMix64) -> f64| -> Vec<f32> {
        (0..n).map(|_| f(&mut rng) as f32).collect()
    };
    let data = match init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Constant(c) => vec![*c as f32; n],
        Init::Normal { std } => sample(&mut |r| r.next_normal() * std),
        Init::Uniform { limit } => sample(&mut |r| (2.0 * r.next_f64() - 1.0) * limit),
        Init::Glorot => {
            let limit = (6.0 / (fan_in + fan_out)).sqrt();
            sample(&mut |r| (2.0 * r.next_f64() - 1.0) * limit)
        }
        Init::He => {
            let std = (2.0 / fan_in).sqrt();
            sample(&mut |r| r.next_normal() * std)
        }
    };
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

/// The initial values of all parameters of a model, in declaration order.
pub fn init_params(model: &TypedModel, seed: u64) -> Vec<(String, Tensor)> {
    model
        .params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                init_tensor(&p.init, &p.shape.dims, seed, &p.name),
            )
        })
        .collect()
}
