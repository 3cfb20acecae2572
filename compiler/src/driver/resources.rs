//! The memory a model needs at a batch size, checked before anything is allocated: a
//! model that cannot fit gets an error with the numbers, its largest tensors and a hint,
//! not an abort in the allocator half-way through compiling or training.
//!
//! The estimate is a lower bound of what training holds at once: the parameters, their
//! gradients and optimizer state, the batch, and every forward value of one batch (kept
//! for the backward pass) with its gradient. Evaluation holds the parameters, the batch
//! and the forward values. The limit is `--max-memory`, or else the machine's physical
//! memory (`MemTotal` in `/proc/meminfo`). All arithmetic is checked: a count that
//! overflows 64 bits is the same error, never a wrap.

use crate::diag::{Code, Diagnostic};
use crate::sema::typed::{TOp, TypedModel, TypedTrain};
use crate::syntax::ast::Span;

use super::DriverError;

/// What a run needs, in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub params: u128,
    /// Gradients and optimizer state (training only).
    pub optimizer: u128,
    /// The batch and the values computed from it.
    pub activations: u128,
    /// The largest tensors: a description, bytes, where in the source.
    pub largest: Vec<(String, u128, Span)>,
}

impl Estimate {
    pub fn total(&self) -> u128 {
        self.params + self.optimizer + self.activations
    }
}

/// The estimate for `batch` samples; `train` for a training run (gradients, optimizer
/// state), `None` for evaluation.
pub fn estimate(model: &TypedModel, train: Option<&TypedTrain>, batch: usize) -> Estimate {
    let f32_bytes = |elems: u128| elems.saturating_mul(4);
    let elems = |dims: &[usize]| {
        dims.iter()
            .fold(1u128, |acc, &d| acc.saturating_mul(d as u128))
    };
    let mut tensors: Vec<(String, u128, Span)> = Vec::new();
    let mut params = 0u128;
    for p in &model.params {
        let b = f32_bytes(elems(&p.shape.dims));
        params = params.saturating_add(b);
        tensors.push((
            format!("parameter `{}` {}", p.name, dims_text(&p.shape.dims, false)),
            b,
            p.span,
        ));
    }
    for b in &model.buffers {
        params = params.saturating_add(f32_bytes(elems(&b.shape.dims)));
    }
    // Per parameter: its gradient and one tensor per optimizer slot.
    let optimizer = match train {
        Some(t) => {
            let copies = 1 + crate::optim::state_names(&t.optimizer).len() as u128;
            params.saturating_mul(copies)
        }
        None => 0,
    };
    let batch = batch as u128;
    let mut activations = 0u128;
    for node in &model.nodes {
        if matches!(node.op, TOp::Param(_) | TOp::Const(_)) {
            continue;
        }
        let per_sample = elems(&node.shape.dims);
        let n = if node.shape.batched {
            per_sample.saturating_mul(batch)
        } else {
            per_sample
        };
        let b = f32_bytes(n);
        activations = activations.saturating_add(b);
        let what = if matches!(node.op, TOp::Input(_)) {
            "input"
        } else {
            "value"
        };
        tensors.push((
            format!("{what} {}", dims_text(&node.shape.dims, node.shape.batched)),
            b,
            node.span,
        ));
    }
    if train.is_some() {
        // Each forward value has a gradient in the backward pass.
        activations = activations.saturating_mul(2);
    }
    tensors.sort_by_key(|t| std::cmp::Reverse(t.1));
    tensors.truncate(3);
    Estimate {
        params,
        optimizer,
        activations,
        largest: tensors,
    }
}

fn dims_text(dims: &[usize], batched: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    if batched {
        parts.push("N".into());
    }
    parts.extend(dims.iter().map(usize::to_string));
    format!("[{}]", parts.join(", "))
}

/// Bytes in the unit that reads best (`1.5 GiB`).
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v >= 1024.0 {
        format!("{v:.3e} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a memory size: bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024;
/// `KiB`, `GB`, … are read the same way).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try `8G` or `512M`)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size unit `{other}` (use K, M, G or T)")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{text}` is not a usable memory size"));
    }
    Ok(bytes as u64)
}

/// The machine's physical memory, when the system says.
pub fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// An error unless the run fits in `limit` bytes (default: the machine's memory).
pub fn check(
    model: &TypedModel,
    train: Option<&TypedTrain>,
    batch: usize,
    limit: Option<u64>,
) -> Result<(), DriverError> {
    let (limit, what) = match limit {
        Some(l) => (l, "the `--max-memory` limit"),
        None => match machine_memory() {
            Some(m) => (m, "this machine's memory"),
            None => return Ok(()),
        },
    };
    let e = estimate(model, train, batch);
    if e.total() <= u128::from(limit) {
        return Ok(());
    }
    let run = if train.is_some() {
        "training"
    } else {
        "evaluating"
    };
    let mut d = Diagnostic::new(
        Code::MemoryLimit,
        format!(
            "{run} `{}` at batch {batch} needs at least {}, more than {what} ({})",
            model.name,
            human(e.total()),
            human(u128::from(limit))
        ),
    );
    for (desc, bytes, span) in &e.largest {
        d = d.label(*span, format!("{desc}: {}", human(*bytes)));
    }
    let note = format!(
        "parameters {}, gradients and optimizer state {}, the batch and its values {}",
        human(e.params),
        human(e.optimizer),
        human(e.activations)
    );
    d = d.note(note).help(if e.params > u128::from(limit) / 2 {
        "make the largest layers smaller: the parameters alone do not fit"
    } else {
        "lower `batch` (or `--batch`), or make the largest layers smaller; `--max-memory` sets the limit"
    });
    Err(d.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("1.5MiB").unwrap(), 3 << 19);
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn human_sizes_read_well() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
