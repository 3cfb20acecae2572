//! PTX backend tests without a GPU: every sample kernel program and the train and eval
//! steps that lowering produces for every example and `tests/golden/{ir,models}` program
//! translate for every architecture, every kernel is a launchable `.entry`, no forbidden
//! intrinsic or libcall survives, `ptxas` assembles the result (when installed; its `-v`
//! register report is printed; missing under CI, a failure), random numbers equal the
//! interpreter's bit for bit (checked through LLVM's constant folding), and small
//! kernels' PTX is pinned by snapshots.

use std::path::{Path, PathBuf};
use std::process::Command;

use nnc_kernels::build::{decl, kernel, program};
use nnc_kernels::ir::{rand_uniform, BufId, BufferKind, Expr, Idx, Program, Size, Stmt};
use nnc_kernels::samples;

use super::{render_llvm_ir, render_program, GpuArch};

/// The GPU schedule of a CPU-shaped program.
fn schedule(p: &Program) -> Program {
    crate::lower::gpu::schedule(p).unwrap_or_else(|e| panic!("{}: {e}", p.name))
}

/// The PTX of a CPU-shaped program, through the GPU schedule.
fn ptx_of(p: &Program, arch: GpuArch) -> Result<String, super::PtxError> {
    render_program(&schedule(p), arch)
}

/// `ptxas` as [`super::ptxas::find_ptxas`] finds it. Without one the assembler checks are
/// skipped with `skipped: <reason>` on stderr, except under CI (`CI` set, as `.ci/run`
/// does after installing ptxas), where a missing ptxas fails the test.
pub(crate) fn ptxas() -> Option<PathBuf> {
    let found = super::ptxas::find_ptxas();
    if found.is_none() {
        let reason = "no ptxas: set PTXAS or install nvidia-cuda-nvcc-cu12 (see .ci/run)";
        assert!(std::env::var_os("CI").is_none(), "CI is set but {reason}");
        eprintln!("skipped: {reason}");
    }
    found
}

/// The names of the `.entry` functions of a PTX text.
pub(crate) fn entries(ptx: &str) -> Vec<String> {
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
    for p in samples::all().iter().map(schedule) {
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
    let ptx = ptx_of(&samples::all_ops(), GpuArch::Sm80).unwrap();
    assert!(ptx.contains("ex2.approx.f32"), "{ptx}");
    assert!(ptx.contains("lg2.approx.f32"), "{ptx}");
    assert!(ptx.contains("fma.rn.f32"), "{ptx}");
    assert!(ptx.contains("div.rn.f32"), "{ptx}");
    assert!(ptx.contains("sqrt.rn.f32"), "{ptx}");
    assert!(!ptx.contains("call"), "{ptx}");
    let ir = render_llvm_ir(&schedule(&samples::all_ops()), GpuArch::Sm80).unwrap();
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

/// The schedule's constructs reach the PTX: elementwise kernels index by
/// `ctaid.x·256 + tid.x`; a tiled product stages its operands in `.shared` tiles between
/// `bar.sync`s and accumulates with `fma.rn.f32`; a block reduction uses
/// `shfl.sync.bfly` and a shared slot per warp.
#[test]
fn gpu_constructs_become_special_registers_shared_memory_barriers_and_shuffles() {
    let ptx = ptx_of(&samples::bias_relu(), GpuArch::Sm80).unwrap();
    for needle in ["%ctaid.x", "%tid.x"] {
        assert!(ptx.contains(needle), "`{needle}` missing:\n{ptx}");
    }
    assert!(!ptx.contains("bar.sync"), "{ptx}");
    let ptx = ptx_of(&samples::gemm_batched(), GpuArch::Sm80).unwrap();
    for needle in [
        ".shared .align 16 .b8",
        "bar.sync",
        "fma.rn.f32",
        "%ctaid.z",
    ] {
        assert!(ptx.contains(needle), "`{needle}` missing:\n{ptx}");
    }
    let ptx = ptx_of(&samples::wide_row_sum(), GpuArch::Sm90).unwrap();
    for needle in ["shfl.sync.bfly.b32", "bar.sync", ".shared"] {
        assert!(ptx.contains(needle), "`{needle}` missing:\n{ptx}");
    }
    // A CPU-shaped program is refused: the schedule decides the launch, not the renderer.
    let err = render_program(&samples::bias_relu(), GpuArch::Sm80).unwrap_err();
    assert!(err.0.contains("GPU schedule was not applied"), "{err}");
}

#[test]
fn invalid_programs_and_names_are_errors_not_panics() {
    let mut p = samples::bias_relu();
    p.kernels[0].name = "k 0".into();
    let err = ptx_of(&p, GpuArch::Sm80).unwrap_err();
    assert!(err.0.contains("not a PTX identifier"), "{err}");
    let mut p = schedule(&samples::bias_relu());
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

/// Assembles `ptx` for `arch` with `ptxas -v` and checks that it is accepted without
/// spills; the register report is printed (run with `--nocapture` to read it).
pub(crate) fn assemble(ptxas: &Path, dir: &Path, label: &str, arch: GpuArch, ptx: &str) {
    let file = dir.join(format!("{}_{}.ptx", label.replace(' ', "_"), arch.name()));
    std::fs::write(&file, ptx).unwrap();
    let out = Command::new(ptxas)
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
        "ptxas rejected {label} for {}:\n{report}\n{ptx}",
        arch.name()
    );
    for line in report.lines().filter(|l| l.contains("Used")) {
        eprintln!("{label} {}: {}", arch.name(), line.trim());
    }
    assert_eq!(
        spill_bytes(&report),
        0,
        "{label} spills for {}:\n{report}",
        arch.name()
    );
}

/// A fresh folder for the PTX files of one test.
pub(crate) fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nnc-ptx-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// ptxas assembles every sample for sm_80 and sm_90; `-v` reports registers, spills and
/// shared memory per kernel (printed; run with `--nocapture` to read them).
#[test]
fn ptxas_assembles_every_sample_for_sm80_and_sm90() {
    let Some(ptxas) = ptxas() else { return };
    let dir = scratch("samples");
    for p in samples::all() {
        for arch in GpuArch::ALL {
            let ptx = ptx_of(&p, arch).unwrap();
            assemble(&ptxas, &dir, &p.name, arch, &ptx);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Implicit GEMMs (products over windows views of an image: convolutions' forward
/// passes, weight and input gradients, `lower::tests::windows_programs`) translate for
/// both architectures, and ptxas assembles them without spills.
#[test]
fn ptxas_assembles_windows_products_without_spills() {
    let ptxs: Vec<(String, GpuArch, String)> = crate::lower::tests::windows_programs()
        .iter()
        .flat_map(|p| {
            GpuArch::ALL.map(|arch| {
                let ptx = ptx_of(p, arch).unwrap_or_else(|e| panic!("{}: {e}", p.name));
                assert!(ptx.contains("bar.sync"), "{}: not tiled:\n{ptx}", p.name);
                (p.name.clone(), arch, ptx)
            })
        })
        .collect();
    let Some(ptxas) = ptxas() else { return };
    let dir = scratch("windows");
    for (name, arch, ptx) in &ptxs {
        assemble(&ptxas, &dir, name, *arch, ptx);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rand` in PTX is `rand_uniform` bit for bit: with constant step and counter, LLVM
/// folds the generated integer arithmetic (the same IR the GPU runs) into one float
/// constant per store, which must be the interpreter's value.
#[test]
fn rand_folds_to_the_interpreters_values() {
    let cases: [(u64, u64, f32, i64); 7] = [
        (0, 0, 0.0, 0),
        (7, 3, 1.0, 42),
        (7, 3, 2.0, 42),
        (u64::MAX, 9, 1000.0, 123_456),
        (42, 1, 3.75, 7),
        (5, 2, -2.0, 1),
        (1, 1, 1e30, i64::MAX),
    ];
    let out = BufId(0);
    let body = cases
        .iter()
        .enumerate()
        .map(|(i, &(seed, key, step, counter))| Stmt::Store {
            buf: out,
            index: Idx::Const(i as i64),
            value: Expr::Rand {
                seed,
                key,
                step: Box::new(Expr::Const(step)),
                counter: Idx::Const(counter),
            },
        })
        .collect();
    let p = program(
        "rand",
        vec![decl("out", Size::fixed(cases.len()), BufferKind::Output)],
        vec![kernel("k0", vec![out], body, 0, 0)],
    );
    let ir = render_llvm_ir(&schedule(&p), GpuArch::Sm80).unwrap();
    let stored: Vec<f32> = ir
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("store float "))
        .map(|l| {
            let c = l.split(',').next().unwrap().trim();
            match c.strip_prefix("0x") {
                // LLVM prints a float constant as the hex bits of the equal double.
                Some(hex) => f64::from_bits(u64::from_str_radix(hex, 16).unwrap()) as f32,
                None => c.parse::<f64>().unwrap() as f32,
            }
        })
        .collect();
    let want: Vec<f32> = cases
        .iter()
        .map(|&(seed, key, step, counter)| {
            rand_uniform(seed, key, step.max(0.0) as u64, counter as u64)
        })
        .collect();
    assert_eq!(stored, want, "{ir}");
    // The folding really happened on the generated arithmetic (not a value computed here).
    let mut p2 = p.clone();
    if let Stmt::Store {
        value: Expr::Rand { counter, .. },
        ..
    } = &mut p2.kernels[0].body[0]
    {
        *counter = Idx::N;
    }
    let ir2 = render_llvm_ir(&schedule(&p2), GpuArch::Sm80).unwrap();
    assert!(ir2.contains("mul i64"), "{ir2}");
}

#[test]
fn ptx_of_small_kernels_is_stable() {
    insta::assert_snapshot!(
        "bias_relu_sm80",
        ptx_of(&samples::bias_relu(), GpuArch::Sm80).unwrap()
    );
    insta::assert_snapshot!(
        "gemm_batched_sm90",
        ptx_of(&samples::gemm_batched(), GpuArch::Sm90).unwrap()
    );
    insta::assert_snapshot!(
        "wide_row_sum_sm80",
        ptx_of(&samples::wide_row_sum(), GpuArch::Sm80).unwrap()
    );
    insta::assert_snapshot!(
        "serial_step_sm80",
        ptx_of(&samples::serial_step(), GpuArch::Sm80).unwrap()
    );
}

/// The cuda executor's hand-written data kernels (gather rows by the epoch's order,
/// record each step's loss and output, advance the step counter) define the entries the
/// executor looks up, in order, and assemble for both architectures.
#[test]
fn the_executors_data_kernels_assemble_for_sm80_and_sm90() {
    use nnc_runtime::cuda::data::{DATA_KERNELS, DATA_PTX};
    assert_eq!(entries(DATA_PTX), DATA_KERNELS);
    let Some(ptxas) = ptxas() else { return };
    let dir = scratch("data");
    for arch in GpuArch::ALL {
        // The text targets sm_80; the driver JIT-compiles it for newer GPUs, which ptxas
        // checks by assembling the same instructions for sm_90.
        let header = match arch {
            GpuArch::Sm80 => ".version 7.0\n.target sm_80",
            GpuArch::Sm90 => ".version 7.8\n.target sm_90",
        };
        let ptx = DATA_PTX.replace(".version 7.0\n.target sm_80", header);
        assert!(ptx.contains(header));
        assemble(&ptxas, &dir, "data", arch, &ptx);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
