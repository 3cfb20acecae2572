//! Shared helpers for nnc's end-to-end and golden tests.

use std::path::PathBuf;

/// The workspace root (the folder holding `examples/` and `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}
