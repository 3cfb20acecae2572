//! Shared helpers for nnc's end-to-end and golden tests: where the workspace's programs
//! are, and the text of pipeline stages for a file.

use std::path::{Path, PathBuf};

use nnc::pipeline::emit::Stage;

/// The workspace root (the folder holding `examples/` and `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every `examples/*.nn`, sorted.
pub fn example_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("examples"))
        .expect("examples folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    v.sort();
    v
}

/// The text of `stages` for the program in `path`, as `nnc build --emit` prints them.
pub fn stages_of(path: &Path, stages: &[Stage]) -> String {
    let src = std::fs::read(path).expect("program file is readable");
    let base = path.parent().expect("program files live in a folder");
    let (file, program) = nnc::pipeline::front_end(&src, base)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    nnc::pipeline::emit::emit(&file, &program, stages, &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}
