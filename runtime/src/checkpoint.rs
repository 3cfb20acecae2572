//! Files that hold trained state, both in the safetensors format so that PyTorch and the
//! Python `safetensors` package read them:
//! - `weights.safetensors`: the parameters only, under the model's names (`dense_0.w`),
//!   `f32`, row-major;
//! - a full checkpoint: parameters as `param/<name>`, optimizer state as `optim/<name>`,
//!   and in the header metadata the model hash, the step, the epoch, the position in the
//!   data order, the shuffling RNG state, the batch settings, the training loop's own
//!   running sums and history, and a checksum.
//!
//! Invariants: files are written atomically (a temporary file in the same folder, synced,
//! then renamed over the target), so a crash leaves the old file or the new one, never a
//! mix. A checkpoint is loaded completely and verified (format, checksum over every
//! tensor byte and metadata entry, model hash, names and shapes) before any of it is
//! handed to an executor, so a damaged or foreign checkpoint is refused, never
//! half-loaded.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::executor::{StateKind, StateTensor};
use crate::tensor::{format_shape, Tensor};
use crate::train::LR_STATE;

/// The value of the `nnc.format` metadata entry of a full checkpoint.
pub const CHECKPOINT_FORMAT: &str = "nnc-checkpoint/1";

/// A checkpoint or weights file that cannot be written or used.
#[derive(Debug)]
pub struct CheckpointError {
    pub path: PathBuf,
    pub message: String,
    pub help: Option<String>,
}

impl CheckpointError {
    fn new(path: &Path, message: impl Into<String>) -> CheckpointError {
        CheckpointError {
            path: path.to_path_buf(),
            message: message.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> CheckpointError {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.path.display(), self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CheckpointError {}

/// Everything needed to continue a training run exactly where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// [`crate::Executor::model_hash`] of the model that wrote it.
    pub model_hash: String,
    /// Parameters and optimizer state, in the executor's order.
    pub state: Vec<StateTensor>,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Completed epochs.
    pub epoch: usize,
    /// Samples of epoch `epoch + 1` already trained (0 at an epoch boundary).
    pub position: usize,
    /// The shuffling RNG's state at the start of epoch `epoch + 1`, before its shuffle;
    /// with `position` it recreates the data order of that epoch.
    pub rng: [u64; 4],
    pub batch: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// The training loop's own record (running sums of a partial epoch, per-epoch
    /// history), opaque to this module.
    pub progress: serde_json::Value,
}

/// FNV-1a, 64 bit: a small, stable hash the runtime owns, so checksums never change with a
/// crate version.
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

fn f32_bytes(t: &Tensor) -> Vec<u8> {
    t.data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let io =
        |e: std::io::Error, what: &str| CheckpointError::new(path, format!("cannot {what}: {e}"));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| io(e, "create a temporary file"))?;
        f.write_all(bytes).map_err(|e| io(e, "write"))?;
        f.sync_all().map_err(|e| io(e, "sync"))?;
        fs::rename(&tmp, path).map_err(|e| io(e, "rename the temporary file into place"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serializes named tensors (and metadata) in the safetensors format, deterministically:
/// the header's metadata keys and tensors in sorted order (the `safetensors` crate writes
/// metadata in hash-map order, which differs from process to process), the header padded
/// with spaces to a multiple of 8 bytes, the data in header order.
fn serialize(
    path: &Path,
    tensors: &[(String, &Tensor)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, CheckpointError> {
    let mut sorted: Vec<&(String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    let meta: serde_json::Map<String, serde_json::Value> = metadata
        .into_iter()
        .collect::<std::collections::BTreeMap<String, String>>()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut offset = 0usize;
    for (name, t) in &sorted {
        if name == "__metadata__" || t.data.len() != t.shape.iter().product::<usize>() {
            return Err(CheckpointError::new(
                path,
                format!("tensor `{name}` cannot be stored"),
            ));
        }
        let end = offset + 4 * t.data.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    // Keys go in sorted: the order is the same whether or not serde_json preserves it.
    let mut text = serde_json::Value::Object(header).to_string();
    while !(8 + text.len()).is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    for (_, t) in &sorted {
        out.extend_from_slice(&f32_bytes(t));
    }
    Ok(out)
}

/// Writes the parameters among `state` to `path` (`weights.safetensors`), with `metadata`
/// (the model, its preprocessing and hashes: `nnc.*` entries) in the file's header.
pub fn write_weights(
    path: &Path,
    state: &[StateTensor],
    metadata: &[(String, String)],
) -> Result<(), CheckpointError> {
    let params: Vec<(String, &Tensor)> = state
        .iter()
        .filter(|s| s.kind == StateKind::Param)
        .map(|s| (s.name.clone(), &s.tensor))
        .collect();
    let mut meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    meta.extend(metadata.iter().cloned());
    let bytes = serialize(path, &params, meta)?;
    write_atomically(path, &bytes)
}

/// Reads every tensor of a safetensors file as `f32`, sorted by name.
pub fn read_weights(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    Ok(read_weights_with_metadata(path)?.0)
}

/// [`read_weights`] and the file's metadata (empty for a file written without any).
#[allow(clippy::type_complexity)]
pub fn read_weights_with_metadata(
    path: &Path,
) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>), CheckpointError> {
    let buffer = fs::read(path)
        .map_err(|e| CheckpointError::new(path, format!("cannot read the file: {e}")))?;
    parse(path, &buffer)
}

/// Parses a safetensors buffer into sorted `f32` tensors and its metadata.
#[allow(clippy::type_complexity)]
fn parse(
    path: &Path,
    buffer: &[u8],
) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>), CheckpointError> {
    let damaged = |e: String| {
        CheckpointError::new(
            path,
            format!("not a valid safetensors file (truncated or corrupted?): {e}"),
        )
    };
    let (_, meta) = SafeTensors::read_metadata(buffer).map_err(|e| damaged(e.to_string()))?;
    let st = SafeTensors::deserialize(buffer).map_err(|e| damaged(e.to_string()))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointError::new(
                path,
                format!(
                    "tensor `{name}` is {:?}, only F32 is supported",
                    view.dtype()
                ),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let tensor = Tensor::new(view.shape().to_vec(), data)
            .map_err(|e| damaged(format!("tensor `{name}`: {e}")))?;
        tensors.push((name, tensor));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tensors, meta.metadata().clone().unwrap_or_default()))
}

/// The checksum of a checkpoint's content: every metadata entry but the checksum, and
/// every tensor's name, shape and bytes, in sorted order.
fn checksum(tensors: &[(String, &Tensor)], metadata: &HashMap<String, String>) -> String {
    let mut h = Fnv64::default();
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != "nnc.checksum").collect();
    keys.sort();
    for k in keys {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(metadata[k].as_bytes());
        h.update(&[0]);
    }
    let mut sorted: Vec<&(String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in sorted {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(&(t.shape.len() as u64).to_le_bytes());
        for d in &t.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&f32_bytes(t));
    }
    format!("fnv1a64:{:016x}", h.finish())
}

fn stored_name(s: &StateTensor) -> String {
    match s.kind {
        StateKind::Param => format!("param/{}", s.name),
        StateKind::Optimizer => format!("optim/{}", s.name),
    }
}

impl Checkpoint {
    /// Writes the checkpoint atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let tensors: Vec<(String, &Tensor)> = self
            .state
            .iter()
            .map(|s| (stored_name(s), &s.tensor))
            .collect();
        let mut names: Vec<&String> = tensors.iter().map(|t| &t.0).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(CheckpointError::new(
                path,
                format!("two state tensors are named `{}`", w[0]),
            ));
        }
        let rng: Vec<String> = self.rng.iter().map(|r| format!("{r:016x}")).collect();
        let mut metadata = HashMap::from([
            ("nnc.format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("nnc.model_hash".to_string(), self.model_hash.clone()),
            ("nnc.step".to_string(), self.step.to_string()),
            ("nnc.epoch".to_string(), self.epoch.to_string()),
            ("nnc.position".to_string(), self.position.to_string()),
            ("nnc.rng".to_string(), rng.join(",")),
            ("nnc.batch".to_string(), self.batch.to_string()),
            ("nnc.seed".to_string(), self.seed.to_string()),
            ("nnc.shuffle".to_string(), self.shuffle.to_string()),
            ("nnc.progress".to_string(), self.progress.to_string()),
            (
                "nnc.order".to_string(),
                serde_json::Value::from(tensors.iter().map(|t| t.0.clone()).collect::<Vec<_>>())
                    .to_string(),
            ),
        ]);
        metadata.insert("nnc.checksum".to_string(), checksum(&tensors, &metadata));
        let bytes = serialize(path, &tensors, metadata)?;
        write_atomically(path, &bytes)
    }

    /// Reads and fully verifies a checkpoint (format, checksum); the model check happens
    /// in [`Checkpoint::state_for`].
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let buffer = fs::read(path)
            .map_err(|e| CheckpointError::new(path, format!("cannot read the checkpoint: {e}")))?;
        let (tensors, metadata) = parse(path, &buffer)?;
        match metadata.get("nnc.format") {
            Some(f) if f == CHECKPOINT_FORMAT => {}
            Some(f) => {
                return Err(CheckpointError::new(
                    path,
                    format!("unsupported checkpoint format `{f}`, expected `{CHECKPOINT_FORMAT}`"),
                ))
            }
            None => return Err(CheckpointError::new(
                path,
                "this safetensors file is not an nnc checkpoint (no `nnc.format` metadata)",
            )
            .help(
                "`weights.safetensors` holds weights only; resume from the full checkpoint file",
            )),
        }
        let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        let expected = checksum(&refs, &metadata);
        if metadata.get("nnc.checksum") != Some(&expected) {
            return Err(CheckpointError::new(
                path,
                "the checksum does not match the contents: the checkpoint is corrupted",
            )
            .help("resume from an older checkpoint or start training again"));
        }
        let bad = |key: &str| {
            CheckpointError::new(
                path,
                format!("metadata entry `{key}` is missing or malformed"),
            )
        };
        let get = |key: &str| metadata.get(key).ok_or_else(|| bad(key));
        let num = |key: &str| get(key)?.parse::<u64>().map_err(|_| bad(key));
        let rng_parts: Vec<u64> = get("nnc.rng")?
            .split(',')
            .map(|p| u64::from_str_radix(p, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad("nnc.rng"))?;
        let rng: [u64; 4] = rng_parts.try_into().map_err(|_| bad("nnc.rng"))?;
        let order: Vec<String> =
            serde_json::from_str(get("nnc.order")?).map_err(|_| bad("nnc.order"))?;
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut state = Vec::with_capacity(order.len());
        for stored in order {
            let tensor = by_name.remove(&stored).ok_or_else(|| bad("nnc.order"))?;
            let (kind, name) = if let Some(n) = stored.strip_prefix("param/") {
                (StateKind::Param, n)
            } else if let Some(n) = stored.strip_prefix("optim/") {
                (StateKind::Optimizer, n)
            } else {
                return Err(bad("nnc.order"));
            };
            state.push(StateTensor {
                name: name.to_string(),
                kind,
                tensor,
            });
        }
        if !by_name.is_empty() {
            return Err(bad("nnc.order"));
        }
        Ok(Checkpoint {
            model_hash: get("nnc.model_hash")?.clone(),
            state,
            step: num("nnc.step")?,
            epoch: num("nnc.epoch")? as usize,
            position: num("nnc.position")? as usize,
            rng,
            batch: num("nnc.batch")? as usize,
            seed: num("nnc.seed")?,
            shuffle: get("nnc.shuffle")?
                .parse()
                .map_err(|_| bad("nnc.shuffle"))?,
            progress: serde_json::from_str(get("nnc.progress")?)
                .map_err(|_| bad("nnc.progress"))?,
        })
    }

    /// The stored state arranged as `current` (an executor's state) has it, after checking
    /// the model hash and that every name, kind and shape agrees.
    pub fn state_for(
        &self,
        path: &Path,
        model_hash: &str,
        current: &[StateTensor],
    ) -> Result<Vec<StateTensor>, CheckpointError> {
        if self.model_hash != model_hash {
            return Err(CheckpointError::new(
                path,
                format!("this checkpoint belongs to another model (model hash `{}`, this model is `{model_hash}`)", self.model_hash),
            )
            .help("resume with the model file that wrote the checkpoint, or start a new run"));
        }
        // The scheduled rate is set by the loop before every step, not restored: a run may
        // gain or lose a schedule when it resumes.
        let carried = |s: &&StateTensor| !(s.kind == StateKind::Optimizer && s.name == LR_STATE);
        let mut out = Vec::with_capacity(current.len());
        for cur in current.iter().filter(carried) {
            let Some(stored) = self
                .state
                .iter()
                .find(|s| s.name == cur.name && s.kind == cur.kind)
            else {
                return Err(CheckpointError::new(
                    path,
                    format!("the checkpoint has no state tensor `{}`", cur.name),
                ));
            };
            if stored.tensor.shape != cur.tensor.shape {
                return Err(CheckpointError::new(
                    path,
                    format!(
                        "state tensor `{}` has shape {} in the checkpoint, the model has {}",
                        cur.name,
                        format_shape(&stored.tensor.shape),
                        format_shape(&cur.tensor.shape)
                    ),
                ));
            }
            out.push(stored.clone());
        }
        if let Some(extra) = self
            .state
            .iter()
            .filter(carried)
            .find(|s| !current.iter().any(|c| c.name == s.name && c.kind == s.kind))
        {
            return Err(CheckpointError::new(
                path,
                format!(
                    "the checkpoint has a state tensor `{}` the model does not have",
                    extra.name
                ),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            model_hash: "abc".into(),
            state: vec![
                StateTensor {
                    name: "dense_0.w".into(),
                    kind: StateKind::Param,
                    tensor: Tensor::new(vec![2, 2], vec![1.0, -2.0, 3.5, 0.25]).unwrap(),
                },
                StateTensor {
                    name: "dense_0.w.velocity".into(),
                    kind: StateKind::Optimizer,
                    tensor: Tensor::new(vec![2, 2], vec![0.1; 4]).unwrap(),
                },
                StateTensor {
                    name: "dense_0.b".into(),
                    kind: StateKind::Param,
                    tensor: Tensor::new(vec![2], vec![0.5, 0.0]).unwrap(),
                },
            ],
            step: 12,
            epoch: 1,
            position: 64,
            rng: [1, 2, 3, u64::MAX],
            batch: 32,
            seed: 7,
            shuffle: true,
            progress: serde_json::json!({"history": []}),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nnc-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_checkpoint_round_trips_exactly_in_the_executor_order() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("ckpt.safetensors");
        sample().save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), sample());
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary files left behind: {leftovers:?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_data_byte_fails_the_checksum() {
        let dir = temp_dir("flip");
        let path = dir.join("ckpt.safetensors");
        sample().save(&path).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let err = Checkpoint::load(&path).unwrap_err();
        assert!(err.message.contains("checksum does not match"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_checkpoint_is_refused() {
        let dir = temp_dir("trunc");
        let path = dir.join("ckpt.safetensors");
        sample().save(&path).unwrap();
        let bytes = fs::read(&path).unwrap();
        for cut in [0, 5, 8, 40, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).unwrap();
            let err = Checkpoint::load(&path).unwrap_err();
            assert!(
                err.message.contains("not a valid safetensors file"),
                "cut at {cut}: {err}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_checkpoint_of_another_model_is_refused() {
        let ck = sample();
        let err = ck
            .state_for(Path::new("c"), "other", &ck.state)
            .unwrap_err();
        assert!(err.message.contains("belongs to another model"), "{err}");
        let mut current = ck.state.clone();
        current[0].tensor = Tensor::zeros(vec![3, 2]);
        let err = ck.state_for(Path::new("c"), "abc", &current).unwrap_err();
        assert!(
            err.message
                .contains("has shape [2, 2] in the checkpoint, the model has [3, 2]"),
            "{err}"
        );
    }

    #[test]
    fn weights_hold_only_parameters_under_their_names() {
        let dir = temp_dir("weights");
        let path = dir.join("weights.safetensors");
        write_weights(&path, &sample().state, &[]).unwrap();
        let w = read_weights(&path).unwrap();
        let names: Vec<&str> = w.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["dense_0.b", "dense_0.w"]);
        assert_eq!(w[1].1.data, vec![1.0, -2.0, 3.5, 0.25]);
        let err = Checkpoint::load(&path).unwrap_err();
        assert!(err.message.contains("not an nnc checkpoint"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
