//! The inference artifact of `nnc build FILE -o DIR`: the evaluation step compiled by
//! Cranelift and linked by the system `cc`, together with a small C runtime
//! (`capi/nnc_model.c`, the C API of `capi/nnc_model.h`), into `DIR/libnnc_model.so`,
//! which needs neither Rust nor nnc.
//!
//! What the runtime needs of the model is generated as C tables (`nnc_model_tables.h`):
//! each buffer's role (the samples, the zero labels the loss reads, a weight by name, the
//! loss, the output, or an arena temporary at its offset), each kernel's symbol, buffer
//! arguments and parallel extent (run whole: concurrency comes from concurrent calls),
//! the sizes, and the preprocessing recorded in training. The sources and the object are
//! built in a temporary folder; only the library stays in `DIR`, its exported symbols
//! limited to the C API by a version script.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nnc_kernels::ir::{BufferKind, Program as KernelProgram};
use nnc_kernels::manifest::Manifest;
use nnc_runtime::artifact::{INPUT, LABELS, LOSS, OUTPUT};
use nnc_runtime::data::Preprocess;

use super::{CompiledTrain, StepKind};
use crate::codegen::cpu::emit_object_of;

/// The C API's header, copied into the artifact.
pub const HEADER: &str = include_str!("capi/nnc_model.h");
const RUNTIME: &str = include_str!("capi/nnc_model.c");
/// The library's file name inside the artifact.
pub const LIBRARY: &str = "libnnc_model.so";

/// What building the library produced.
pub struct InferenceLibrary {
    pub path: PathBuf,
    /// The evaluation step's CPU program, as compiled into the library.
    pub eval: KernelProgram,
    /// Cranelift code generation and linking.
    pub codegen_time: Duration,
}

/// Compiles the evaluation step of `compiled` into `dir/libnnc_model.so` (and writes
/// `dir/nnc_model.h`), applying `preprocess` to samples inside.
pub fn build_inference_library(
    compiled: &CompiledTrain,
    preprocess: &Preprocess,
    dir: &Path,
) -> Result<InferenceLibrary, String> {
    let eval = compiled.cpu_program(StepKind::Eval)?;
    let start = Instant::now();
    let obj = emit_object_of(&[&eval]).map_err(|e| format!("cannot generate CPU code: {e}"))?;
    let manifest = Manifest::of(&eval).map_err(|e| e.to_string())?;
    let tables = tables(&manifest, preprocess)?;
    let build = tempdir()?;
    let write = |name: &str, bytes: &[u8]| {
        let path = build.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
    };
    write("kernels.o", &obj)?;
    write("nnc_model.h", HEADER.as_bytes())?;
    write("nnc_model.c", RUNTIME.as_bytes())?;
    write("nnc_model_tables.h", tables.as_bytes())?;
    write(
        "exports.map",
        b"{ global: nnc_model_load; nnc_last_error; nnc_input_size; nnc_output_size; nnc_predict; nnc_model_free; local: *; };\n",
    )?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let path = dir.join(LIBRARY);
    // `cc` runs in the build folder: give it the library's absolute path.
    let target = std::fs::canonicalize(dir)
        .map_err(|e| format!("cannot resolve `{}`: {e}", dir.display()))?
        .join(LIBRARY);
    let output = Command::new("cc")
        .current_dir(&build)
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-std=c99",
            "-D_POSIX_C_SOURCE=200809L",
        ])
        .args(["-Wl,--version-script=exports.map", "-o"])
        .arg(&target)
        .args(["nnc_model.c", "kernels.o", "-lm"])
        .output();
    let result = match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
            "cannot link the model library: the C compiler `cc` was not found\nhelp: install a C toolchain (e.g. `apt-get install gcc`)".to_string(),
        ),
        Err(e) => Err(format!("cannot run `cc`: {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "`cc` could not build the model library:\n{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        )),
        Ok(_) => Ok(()),
    };
    let _ = std::fs::remove_dir_all(&build);
    result?;
    let header = dir.join("nnc_model.h");
    std::fs::write(&header, HEADER)
        .map_err(|e| format!("cannot write `{}`: {e}", header.display()))?;
    Ok(InferenceLibrary {
        path,
        eval,
        codegen_time: start.elapsed(),
    })
}

fn tempdir() -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nnc-build-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    Ok(dir)
}

/// A C string literal.
fn c_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:03o}");
                }
            }
        }
    }
    out.push('"');
    out
}

/// `nnc_model_tables.h` for the evaluation step's `manifest`.
fn tables(manifest: &Manifest, p: &Preprocess) -> Result<String, String> {
    let find = |name: &str| manifest.buffers.iter().find(|b| b.name == name);
    let per_sample = |name: &str| find(name).map_or(0, |b| b.len.per_batch);
    let (input, output) = (per_sample(INPUT), per_sample(OUTPUT));
    if input == 0 || output == 0 {
        return Err("the evaluation step has no per-sample input or output".into());
    }
    let mut s = String::from(
        "/* Generated by nnc build: the model's buffers, kernels and preprocessing. */\n",
    );
    let _ = writeln!(s, "#define NUM_BUFFERS {}", manifest.buffers.len());
    let _ = writeln!(s, "#define NUM_KERNELS {}", manifest.kernels.len());
    let max_params = manifest
        .kernels
        .iter()
        .map(|k| k.params.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(s, "#define MAX_PARAMS {}", max_params.max(1));
    let _ = writeln!(s, "#define INPUT_SIZE {input}");
    let _ = writeln!(s, "#define OUTPUT_SIZE {output}");
    let _ = writeln!(s, "#define LABEL_SIZE {}", per_sample(LABELS).max(1));
    let _ = writeln!(s, "#define ARENA_PER_BATCH {}", manifest.arena.per_batch);
    let _ = writeln!(s, "#define ARENA_FIXED {}", manifest.arena.fixed);
    let _ = writeln!(s, "#define PRE_SCALE {:?}f", p.scale);
    match &p.standardize {
        Some(st) => {
            if st.mean.len() != input {
                return Err(format!(
                    "the recorded standardization has {} features, the input {input}",
                    st.mean.len()
                ));
            }
            let list = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(s, "#define PRE_STANDARDIZE 1");
            let _ = writeln!(
                s,
                "static const double PRE_MEAN[] = {{{}}};",
                list(&st.mean)
            );
            let _ = writeln!(s, "static const double PRE_STD[] = {{{}}};", list(&st.std));
        }
        None => {
            let _ = writeln!(s, "#define PRE_STANDARDIZE 0");
        }
    }
    for k in &manifest.kernels {
        let _ = writeln!(
            s,
            "extern void {}(const kernel_ctx *, float *const *, int64_t, int64_t, int64_t);",
            k.symbol
        );
    }
    s.push_str("static const buffer_decl BUFFERS[NUM_BUFFERS] = {\n");
    for b in &manifest.buffers {
        let (kind, off) = match b.kind {
            BufferKind::Temp { offset } => ("BUF_TEMP", offset),
            _ if b.name == INPUT => ("BUF_X", Default::default()),
            _ if b.name == LABELS => ("BUF_Y", Default::default()),
            _ if b.name == LOSS => ("BUF_LOSS", Default::default()),
            _ if b.name == OUTPUT => ("BUF_OUTPUT", Default::default()),
            BufferKind::Input | BufferKind::InOut if b.len.per_batch == 0 => {
                ("BUF_WEIGHT", Default::default())
            }
            _ => {
                return Err(format!(
                    "the evaluation step's buffer `{}` is not one the inference runtime binds",
                    b.name
                ))
            }
        };
        let off: nnc_kernels::ir::Size = off;
        let _ = writeln!(
            s,
            "    {{{}, {kind}, {}, {}, {}, {}}},",
            c_string(&b.name),
            b.len.per_batch,
            b.len.fixed,
            off.per_batch,
            off.fixed
        );
    }
    s.push_str("};\n");
    for (i, k) in manifest.kernels.iter().enumerate() {
        let params: Vec<String> = k.params.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(
            s,
            "static const int K{i}_PARAMS[] = {{{}}};",
            params.join(", ")
        );
    }
    s.push_str("static const kernel_entry KERNELS[NUM_KERNELS] = {\n");
    for (i, k) in manifest.kernels.iter().enumerate() {
        let (par, per, fixed) = match k.parallel {
            Some(e) => (1, e.per_batch, e.fixed),
            None => (0, 0, 0),
        };
        let _ = writeln!(
            s,
            "    {{(kernel_fn){}, {}, K{i}_PARAMS, {par}, {per}, {fixed}}},",
            k.symbol,
            k.params.len()
        );
    }
    s.push_str("};\n");
    Ok(s)
}
