//! PTX backend tests without a GPU: every sample kernel program translates for every
//! architecture, every kernel is a launchable `.entry`, no forbidden intrinsic or libcall
//! survives, `ptxas` assembles the result (when installed; its `-v` register report is
//! printed), and small kernels' PTX is pinned by snapshots.

use std::path::PathBuf;
use std::process::Command;

use nnc_kernels::samples;

use super::{render_llvm_ir, render_program, GpuArch};

/// `ptxas` from `$PTXAS`, else the pip wheel's copy in the cache; `None` (with the
/// reason printed) when neither exists.
fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(home).join(".cache"));
    let p = cache.join("nvidia-cuda-nvcc-cu12-12.9.86/nvidia/cuda_nvcc/bin/ptxas");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping ptxas checks: set PTXAS or install nvidia-cuda-nvcc-cu12 (see .ci/run)"
        );
        None
    }
}

/// The names of the `.entry` functions of a PTX text.
fn entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| l.trim_start().strip_prefix(".visible .entry "))
        .map(|l| l.split('(').next().unwrap_or("").trim().to_string())
        .collect()
}

/// The total of the `N bytes spill stores` figures in a `ptxas -v` report.
fn spill_bytes(report: &str) -> u64 {
    report
        .split(',')
        .filter_map(|part| part.trim().strip_suffix("bytes spill stores"))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn spill_report_parsing_reads_every_kernel() {
    let report = "ptxas info    : 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
                  ptxas info    : 8 bytes stack frame, 10 bytes spill stores, 10 bytes spill loads";
    assert_eq!(spill_bytes(report), 10);
}

#[test]
fn every_kernel_of_every_sample_is_an_entry_for_each_arch() {
    for p in samples::all() {
        for arch in GpuArch::ALL {
            let ptx = render_program(&p, arch).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(ptx.contains(&format!(".target {}", arch.name())), "{ptx}");
            let names: Vec<String> = p.kernels.iter().map(|k| k.name.clone()).collect();
            assert_eq!(entries(&ptx), names, "{}:\n{ptx}", p.name);
            assert!(
                !ptx.contains(".func"),
                "{}: a helper function remains",
                p.name
            );
        }
    }
}

#[test]
fn transcendentals_use_hardware_approximations_not_libcalls() {
    let ptx = render_program(&samples::all_ops(), GpuArch::Sm80).unwrap();
    assert!(ptx.contains("ex2.approx.f32"), "{ptx}");
    assert!(ptx.contains("lg2.approx.f32"), "{ptx}");
    assert!(ptx.contains("fma.rn.f32"), "{ptx}");
    assert!(ptx.contains("div.rn.f32"), "{ptx}");
    assert!(ptx.contains("sqrt.rn.f32"), "{ptx}");
    assert!(!ptx.contains("call"), "{ptx}");
    let ir = render_llvm_ir(&samples::all_ops(), GpuArch::Sm80).unwrap();
    for forbidden in [
        "llvm.exp.",
        "llvm.exp2.",
        "llvm.log.",
        "llvm.tanh.",
        "llvm.pow.",
    ] {
        assert!(!ir.contains(forbidden), "`{forbidden}` in\n{ir}");
    }
}

#[test]
fn kernels_are_grid_stride_loops_over_the_global_thread_id() {
    let ptx = render_program(&samples::bias_relu(), GpuArch::Sm80).unwrap();
    for sreg in ["%ctaid.x", "%ntid.x", "%tid.x", "%nctaid.x"] {
        assert!(ptx.contains(sreg), "`{sreg}` missing:\n{ptx}");
    }
    // A serial kernel does not stride: it only checks for thread 0.
    let ptx = render_program(&samples::serial_step(), GpuArch::Sm80).unwrap();
    assert!(!ptx.contains("%nctaid.x"), "{ptx}");
}

#[test]
fn invalid_programs_and_names_are_errors_not_panics() {
    let mut p = samples::bias_relu();
    p.kernels[0].name = "k 0".into();
    let err = render_program(&p, GpuArch::Sm80).unwrap_err();
    assert!(err.0.contains("not a PTX identifier"), "{err}");
    let mut p = samples::bias_relu();
    p.kernels[0].params.pop();
    assert!(render_program(&p, GpuArch::Sm80).is_err());
}

#[test]
fn arch_names_round_trip() {
    for a in GpuArch::ALL {
        assert_eq!(GpuArch::parse(a.name()), Some(a));
    }
    assert_eq!(GpuArch::parse("sm_70"), None);
    assert_eq!(GpuArch::default(), GpuArch::Sm80);
}

/// ptxas assembles every sample for sm_80 and sm_90; `-v` reports registers, spills and
/// shared memory per kernel (printed; run with `--nocapture` to read them).
#[test]
fn ptxas_assembles_every_sample_for_sm80_and_sm90() {
    let Some(ptxas) = ptxas() else { return };
    let dir = std::env::temp_dir().join(format!("nnc-ptx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for p in samples::all() {
        for arch in GpuArch::ALL {
            let ptx = render_program(&p, arch).unwrap();
            let file = dir.join(format!("{}_{}.ptx", p.name, arch.name()));
            std::fs::write(&file, &ptx).unwrap();
            let out = Command::new(&ptxas)
                .arg(format!("-arch={}", arch.name()))
                .arg("-v")
                .arg(&file)
                .arg("-o")
                .arg("/dev/null")
                .output()
                .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", ptxas.display()));
            let report = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "ptxas rejected {} for {}:\n{report}\n{ptx}",
                p.name,
                arch.name()
            );
            for line in report.lines().filter(|l| l.contains("Used")) {
                eprintln!("{} {}: {}", p.name, arch.name(), line.trim());
            }
            assert_eq!(
                spill_bytes(&report),
                0,
                "{} spills for {}:\n{report}",
                p.name,
                arch.name()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ptx_of_small_kernels_is_stable() {
    insta::assert_snapshot!(
        "bias_relu_sm80",
        render_program(&samples::bias_relu(), GpuArch::Sm80).unwrap()
    );
    insta::assert_snapshot!(
        "gemm_batched_sm90",
        render_program(&samples::gemm_batched(), GpuArch::Sm90).unwrap()
    );
}
