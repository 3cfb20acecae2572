//! The output folder of a run: owned by one run at a time, and never silently taken
//! over.
//!
//! - An advisory lock on `.nnc.lock` inside the folder, held for the whole run, keeps a
//!   second run out; the second one is told the holder's PID.
//! - A fresh run refuses a folder that already holds a run's results (weights, checkpoint,
//!   metrics) unless it was asked to overwrite them.
//! - Temporary files that an earlier run left behind (killed between writing a temporary
//!   file and renaming it) are removed once the lock is held: no other run can be
//!   writing them then.
//!
//! The lock file stays in the folder: removing it while unlocking would let a third run
//! lock the deleted file while a fourth locks a new one.

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::{TrainError, CHECKPOINT_FILE, METRICS_FILE, WEIGHTS_FILE};

/// The name of the lock file inside an output folder.
pub const LOCK_FILE: &str = ".nnc.lock";

/// Holds an output folder's lock until dropped.
#[derive(Debug)]
pub struct OutDirLock {
    file: fs::File,
    pub path: PathBuf,
}

impl Drop for OutDirLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Creates `dir` if needed and locks it for this run. `fresh`: the run does not resume
/// from this folder, so earlier results in it are an error unless `overwrite`.
pub fn claim(dir: &Path, fresh: bool, overwrite: bool) -> Result<OutDirLock, TrainError> {
    let io = |error: std::io::Error| TrainError::Io {
        path: dir.to_path_buf(),
        error,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(TrainError::Config(format!(
            "`{}` is a file, not a folder: it cannot hold the run's outputs\nhelp: name a folder with `--out`",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another nnc run".to_string()
            } else {
                format!("another nnc run (PID {holder})")
            };
            return Err(TrainError::Config(format!(
                "`{}` is in use by {who}\nhelp: wait for that run to finish, or write this one elsewhere with `--out`",
                dir.display()
            )));
        }
        Err(fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    remove_leftovers(dir);
    if fresh && !overwrite {
        let held = results_in(dir);
        if !held.is_empty() {
            return Err(TrainError::Config(format!(
                "`{}` already holds the results of a run ({})\nhelp: continue that run with `--resume {}`, replace it with `--overwrite`, or write this one elsewhere with `--out`",
                dir.display(),
                held.join(", "),
                dir.display()
            )));
        }
    }
    Ok(OutDirLock { file, path })
}

/// The results of a run that `dir` holds (weights, checkpoint, metrics log), by file name.
pub fn results_in(dir: &Path) -> Vec<&'static str> {
    [WEIGHTS_FILE, CHECKPOINT_FILE, METRICS_FILE]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect()
}

/// Removes `.<name>.tmp-<pid>` files (what an atomic write leaves when killed mid-way).
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let leftover = name.starts_with('.')
            && name
                .rsplit_once(".tmp-")
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if leftover && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nnc-outdir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_claim_names_the_holder() {
        let dir = scratch("lock");
        let held = claim(&dir, true, false).unwrap();
        let err = claim(&dir, true, false).unwrap_err().to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        drop(held);
        claim(&dir, true, false).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fresh_run_refuses_earlier_results_unless_overwriting() {
        let dir = scratch("fresh");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(METRICS_FILE), "{\"epoch\":1}\n").unwrap();
        let err = claim(&dir, true, false).unwrap_err().to_string();
        assert!(err.contains("already holds the results") && err.contains("--overwrite"));
        claim(&dir, true, true).unwrap();
        claim(&dir, false, false).unwrap();
        // Nothing was touched.
        assert_eq!(
            fs::read_to_string(dir.join(METRICS_FILE)).unwrap(),
            "{\"epoch\":1}\n"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn leftover_temporary_files_are_removed() {
        let dir = scratch("tmp");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(".checkpoint.safetensors.tmp-4242"), "x").unwrap();
        fs::write(dir.join("notes.tmp-1"), "keep").unwrap();
        let _lock = claim(&dir, true, false).unwrap();
        assert!(!dir.join(".checkpoint.safetensors.tmp-4242").exists());
        assert!(dir.join("notes.tmp-1").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
