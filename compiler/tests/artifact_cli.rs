//! `nnc build -o DIR`: the inference artifact of a trained model, used from C. The
//! example `examples/c/classify.c` is compiled against `DIR/nnc_model.h` and
//! `DIR/libnnc_model.so` and classifies the bundled MNIST test images (an IDX file and
//! PGM images) with the outputs `nnc predict` gives (within 1e-4) for `mnist_mlp.nn` and
//! `lenet.nn`; concurrent `nnc_predict` calls on one model agree with a single call bit
//! for bit; the library exports only the C API; load errors are reported by
//! `nnc_last_error`; weights of another model are refused by `nnc build`.

use std::path::{Path, PathBuf};
use std::process::Command;

use nnc_runtime::data::read_idx;

mod common;
use common::*;

/// Compiles C sources against the artifact in `art` into `exe`.
fn cc(sources: &[&Path], art: &Path, exe: &Path, extra: &[&str]) {
    let o = Command::new("cc")
        .args([
            "-O2",
            "-Wall",
            "-Werror",
            "-std=c99",
            "-D_POSIX_C_SOURCE=200809L",
        ])
        .args(sources)
        .arg("-I")
        .arg(art)
        .arg("-L")
        .arg(art)
        .arg("-lnnc_model")
        .arg(format!("-Wl,-rpath,{}", art.display()))
        .args(extra)
        .arg("-o")
        .arg(exe)
        .output()
        .expect("cc runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The bundled test images as an uncompressed IDX file and the first three as PGMs.
fn images(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let arr = read_idx(&root().join("examples/data/mnist-10k/t10k-images-idx3-ubyte.gz")).unwrap();
    let bytes: Vec<u8> = arr.data.iter().map(|v| *v as u8).collect();
    let mut idx = vec![0, 0, 8, 3];
    for d in &arr.dims {
        idx.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    idx.extend_from_slice(&bytes);
    let idx_path = dir.join("t10k-images");
    std::fs::write(&idx_path, idx).unwrap();
    let pgms = (0..3)
        .map(|i| {
            let p = dir.join(format!("digit{i}.pgm"));
            let mut pgm = b"P5\n# a test digit\n28 28\n255\n".to_vec();
            pgm.extend_from_slice(&bytes[i * 784..(i + 1) * 784]);
            std::fs::write(&p, pgm).unwrap();
            p
        })
        .collect();
    (idx_path, pgms)
}

/// Rows of numbers after the first `skip` fields of each CSV line.
fn numbers(text: &str, skip: usize) -> Vec<Vec<f32>> {
    text.lines()
        .map(|l| {
            l.split(',')
                .skip(skip)
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(r, q)| {
            assert_eq!(r.len(), q.len());
            r.iter().zip(q).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

/// Trains `example` for one epoch, builds its artifact, and checks the C example against
/// `nnc predict`.
fn check(example: &str) -> PathBuf {
    let dir = scratch("artifact", example);
    let file = s(&root().join("examples").join(example));
    let run = dir.join("run");
    ok(&nnc(&[
        "train",
        &file,
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &s(&run),
    ]));
    let weights = s(&run.join("weights.safetensors"));
    let art = dir.join("artifact");
    let out = ok(&nnc(&[
        "build",
        &file,
        "-o",
        &s(&art),
        "--weights",
        &weights,
    ]));
    for f in [
        "libnnc_model.so",
        "nnc_model.h",
        "weights.safetensors",
        "manifest.json",
    ] {
        assert!(art.join(f).is_file(), "{f} written: {out}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(art.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["trained_weights"], true);
    assert_eq!(manifest["classes"], 10);
    assert!(manifest["params_hash"]
        .as_str()
        .unwrap()
        .starts_with("fnv1a64:"));
    let (idx, pgms) = images(&dir);
    let exe = dir.join("classify");
    cc(&[&root().join("examples/c/classify.c")], &art, &exe, &[]);
    let mut args = vec![s(&art)];
    args.extend(pgms.iter().map(|p| s(p)));
    args.push(s(&idx));
    let o = Command::new(&exe).args(&args).output().unwrap();
    let c_out = ok(&o);
    let lines: Vec<&str> = c_out.lines().collect();
    assert_eq!(lines.len(), 3 + 2000);
    assert!(
        lines[0].starts_with(&format!("{},", s(&pgms[0]))),
        "{}",
        lines[0]
    );
    let predicted = ok(&nnc(&[
        "predict",
        &file,
        "--weights",
        &weights,
        "--input",
        &s(&idx),
    ]));
    let want = numbers(
        predicted
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
        2,
    );
    let got = numbers(&lines[3..].join("\n"), 1);
    let d = max_diff(&want, &got);
    assert!(
        d <= 1e-4,
        "{example}: C artifact vs nnc predict differ by {d}"
    );
    // The PGMs are the first three samples of the IDX file.
    assert_eq!(numbers(&lines[..3].join("\n"), 1), got[..3].to_vec());
    art
}

#[test]
fn the_c_example_classifies_digits_like_nnc_predict() {
    check("mnist_mlp.nn");
    let art = check("lenet.nn");
    // Only the C API is exported.
    if let Ok(o) = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(art.join("libnnc_model.so"))
        .output()
    {
        let text = String::from_utf8_lossy(&o.stdout);
        let exported: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" T "))
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert!(!exported.is_empty(), "{text}");
        assert!(
            exported.iter().all(|n| n.starts_with("nnc_")),
            "{exported:?}"
        );
    }
}

const THREADS_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "nnc_model.h"

#define N 300
#define THREADS 4
static nnc_model *model;
static float *x, *want;
static int64_t per, outs;

static void *run(void *arg) {
    float *y = malloc(sizeof(float) * N * outs);
    int *ok = arg;
    for (int r = 0; r < 5; r++) {
        *ok = nnc_predict(model, x, N, y) == 0 && memcmp(y, want, sizeof(float) * N * outs) == 0;
        if (!*ok) break;
    }
    free(y);
    return NULL;
}

int main(int argc, char **argv) {
    if (nnc_model_load("/nonexistent-nnc-artifact") != NULL || strstr(nnc_last_error(), "cannot read") == NULL) {
        printf("missing artifact not reported: %s\n", nnc_last_error());
        return 1;
    }
    model = nnc_model_load(argv[1]);
    if (!model) { printf("load: %s\n", nnc_last_error()); return 1; }
    per = nnc_input_size(model);
    outs = nnc_output_size(model);
    x = malloc(sizeof(float) * N * per);
    want = malloc(sizeof(float) * N * outs);
    for (int64_t i = 0; i < N * per; i++) x[i] = (float)((i * 7919) % 256);
    if (nnc_predict(model, x, N, want) != 0) { printf("predict: %s\n", nnc_last_error()); return 1; }
    if (nnc_predict(model, NULL, 3, want) == 0 || strlen(nnc_last_error()) == 0) {
        printf("NULL samples accepted\n");
        return 1;
    }
    pthread_t t[THREADS];
    int ok[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, run, &ok[i]);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) if (!ok[i]) { printf("thread %d differs\n", i); return 1; }
    printf("ok %lld %lld\n", (long long)per, (long long)outs);
    nnc_model_free(model);
    (void)argc;
    return 0;
}
"#;

#[test]
fn concurrent_predictions_agree_and_errors_are_reported() {
    let dir = scratch("artifact", "threads");
    let file = s(&root().join("examples/lenet.nn"));
    let art = dir.join("artifact");
    // No --weights: the seeded initial weights, with a warning.
    let o = nnc(&["build", &file, "-o", &s(&art)]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning: no `--weights`"));
    let src = dir.join("threads.c");
    std::fs::write(&src, THREADS_C).unwrap();
    let exe = dir.join("threads");
    cc(&[&src], &art, &exe, &["-lpthread"]);
    let out = ok(&Command::new(&exe).arg(&art).output().unwrap());
    assert_eq!(out.trim(), "ok 784 10");
    // A weights file that lost a tensor: the loader names it.
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let xor_run = dir.join("xor");
    ok(&nnc(&[
        "train",
        &s(&root().join("examples/xor.nn")),
        "--quiet",
        "--out",
        &s(&xor_run),
    ]));
    std::fs::copy(
        xor_run.join("weights.safetensors"),
        bad.join("weights.safetensors"),
    )
    .unwrap();
    let out = Command::new(&exe).arg(&bad).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("has no tensor `conv2d_0.w` of the model's shape"),
        "{text}"
    );
    // `nnc build` itself refuses weights of another model.
    let o = nnc(&[
        "build",
        &file,
        "-o",
        &s(&dir.join("refused")),
        "--weights",
        &s(&xor_run.join("weights.safetensors")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not fit model"));
}

/// `--target cuda` adds the evaluation step's PTX, which ptxas assembles (when `PTXAS`
/// names it; CI installs it) for sm_80.
#[cfg(feature = "cuda")]
#[test]
fn the_cuda_artifact_has_ptx_that_assembles() {
    let dir = scratch("artifact", "cuda");
    let art = dir.join("artifact");
    ok(&nnc(&[
        "build",
        &example("lenet.nn"),
        "-o",
        &s(&art),
        "--target",
        "cuda",
    ]));
    let ptx = art.join("eval.ptx");
    let text = std::fs::read_to_string(&ptx).expect("eval.ptx written");
    assert!(text.contains(".entry"), "PTX with kernels");
    let manifest = std::fs::read_to_string(art.join("manifest.json")).unwrap();
    assert!(manifest.contains("eval.ptx"), "{manifest}");
    match std::env::var("PTXAS") {
        Ok(ptxas) if Path::new(&ptxas).is_file() => {
            let o = Command::new(&ptxas)
                .args(["-arch=sm_80", "-o"])
                .arg(dir.join("eval.cubin"))
                .arg(&ptx)
                .output()
                .expect("ptxas runs");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        _ => println!("skipped ptxas: PTXAS does not name the assembler"),
    }
}
