//! Running NVIDIA's PTX assembler, `ptxas`, on generated PTX: the check CI runs on every
//! example, and the resource report of `nnc build --target cuda --emit ptx -v`
//! (registers, spills, stack and shared memory per kernel).
//!
//! `ptxas` is not part of the compiler: it comes from `$PTXAS`, else from the pip wheel
//! `nvidia-cuda-nvcc-cu12` that `.ci/run` installs into the cache folder, else from `PATH`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{GpuArch, PtxError};

/// The pip wheel's folder under the cache folder, as `.ci/run` installs it.
const WHEEL: &str = "nvidia-cuda-nvcc-cu12-12.9.86/nvidia/cuda_nvcc/bin/ptxas";

/// Where `ptxas` is, if anywhere (see the module doc).
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(p) = cache.map(|c| c.join(WHEEL)).filter(|p| p.exists()) {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("ptxas"))
            .find(|p| p.is_file())
    })
}

/// What `ptxas -v` reports for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub stack_bytes: u64,
    pub spill_store_bytes: u64,
    pub spill_load_bytes: u64,
    pub shared_bytes: u64,
}

/// Assembles `ptx` for `arch` with `ptxas -v` (the machine code is discarded) and returns
/// each kernel's resources; an error carries ptxas's own message when it rejects the PTX.
pub fn assemble(ptxas: &Path, ptx: &str, arch: GpuArch) -> Result<Vec<KernelResources>, PtxError> {
    let dir = std::env::temp_dir().join(format!(
        "nnc-ptxas-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| PtxError(format!("cannot create `{}`: {e}", dir.display())))?;
    let file = dir.join("kernels.ptx");
    let result = std::fs::write(&file, ptx)
        .map_err(|e| PtxError(format!("cannot write `{}`: {e}", file.display())))
        .and_then(|()| {
            Command::new(ptxas)
                .arg(format!("-arch={}", arch.name()))
                .arg("-v")
                .arg(&file)
                .arg("-o")
                .arg(dir.join("kernels.cubin"))
                .output()
                .map_err(|e| PtxError(format!("cannot run `{}`: {e}", ptxas.display())))
        });
    let _ = std::fs::remove_dir_all(&dir);
    let out = result?;
    let report = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(PtxError(format!(
            "ptxas rejected the PTX for {}:\n{report}",
            arch.name()
        )));
    }
    Ok(parse_report(&report))
}

/// The kernels of a `ptxas -v` report, in the order ptxas compiled them.
pub fn parse_report(report: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            kernels.push(KernelResources {
                name,
                ..KernelResources::default()
            });
            continue;
        }
        let Some(k) = kernels.last_mut() else {
            continue;
        };
        for part in line.split([',', ':']) {
            let words: Vec<&str> = part.split_whitespace().collect();
            let value = words.first().and_then(|w| w.parse::<u64>().ok());
            match (value, &words[..]) {
                (Some(v), [_, "bytes", "stack", "frame"]) => k.stack_bytes = v,
                (Some(v), [_, "bytes", "spill", "stores"]) => k.spill_store_bytes = v,
                (Some(v), [_, "bytes", "spill", "loads"]) => k.spill_load_bytes = v,
                (Some(v), [_, "bytes", "smem"]) => k.shared_bytes = v,
                _ => {}
            }
            if let ["Used", n, "registers"] = &words[..] {
                k.registers = n.parse().unwrap_or(0);
            }
        }
    }
    kernels
}

/// The report as `//` comment lines (valid PTX comments), one kernel per line.
pub fn report_text(arch: GpuArch, kernels: &[KernelResources]) -> String {
    let mut out = format!(
        "// ptxas -v ({}): kernel, registers, stack, spill stores, spill loads, shared memory (bytes)\n",
        arch.name()
    );
    for k in kernels {
        out.push_str(&format!(
            "// {} {} {} {} {} {}\n",
            k.name,
            k.registers,
            k.stack_bytes,
            k.spill_store_bytes,
            k.spill_load_bytes,
            k.shared_bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_gives_each_kernel_its_resources() {
        let report = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'k0_matmul' for 'sm_80'\n\
            ptxas info    : Function properties for k0_matmul\n\
            \x20   8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n\
            ptxas info    : Used 40 registers, 1024 bytes smem, 380 bytes cmem[0]\n\
            ptxas info    : Compiling entry function 'k1_add' for 'sm_80'\n\
            ptxas info    : Function properties for k1_add\n\
            \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 10 registers, 364 bytes cmem[0]\n";
        let ks = parse_report(report);
        assert_eq!(
            ks,
            vec![
                KernelResources {
                    name: "k0_matmul".into(),
                    registers: 40,
                    stack_bytes: 8,
                    spill_store_bytes: 12,
                    spill_load_bytes: 16,
                    shared_bytes: 1024,
                },
                KernelResources {
                    name: "k1_add".into(),
                    registers: 10,
                    ..KernelResources::default()
                },
            ]
        );
        let text = report_text(GpuArch::Sm80, &ks);
        assert!(text.lines().all(|l| l.starts_with("// ")));
        assert!(text.contains("// k0_matmul 40 8 12 16 1024\n"));
    }
}
