//! Benchmark of the host sgemm candidates on the GEMMs of one training step of an MLP
//! 784-256-128-10 (forward, backward data, backward weights, with their real transposed
//! strides), at batch 128 and 32.
//!
//! Variants: `matrixmultiply` single-threaded (the runtime's sgemm before `cpu/gemm.rs`),
//! the `gemm` crate single-threaded and with its own rayon threading (`Rayon(2)`), each
//! single-threaded crate cut in two halves run on the runtime's two-lane [`Pool`], and
//! `auto`: `cpu/gemm.rs` as the runtime uses it (its `sgemm`, cut only where its `split`
//! says so). Every variant's result is checked against `matrixmultiply` first.
//!
//! Prints, per shape, the median time of one call and its GFLOP/s, then per step the sum
//! of those medians and the median of whole steps (the 8 GEMMs back to back). Rounds during
//! which other processes took more than 10% of the CPUs are run again, as such a neighbour
//! makes the two-lane variants wait on a descheduled lane. Run with
//!
//! ```text
//! cargo run --release -p nnc-runtime --example gemm_bench [--no-default-features] [-- --quick]
//! ```
//!
//! The default feature `gemm-avx512` compiles the `gemm` crate's AVX-512 micro-kernels
//! (`x86-v4`); without it `gemm` has only its AVX2/FMA ones. (`matrixmultiply` picks its
//! AVX-512 kernels at run time either way.)

#[path = "../src/cpu/gemm.rs"]
mod host_gemm;

use host_gemm::{Sgemm, Split};
use nnc_runtime::cpu::Pool;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One GEMM of the training step: C (m×n, row-major, contiguous) = A·B with A and B read
/// through the given (row, column) strides.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    a_strides: (isize, isize),
    b_strides: (isize, isize),
}

/// The 8 GEMMs of one step of 784-256-128-10 at batch `bs`.
fn step_shapes(bs: usize) -> Vec<Shape> {
    let row = |cols: usize| (cols as isize, 1);
    let col = |rows: usize| (1, rows as isize);
    let s = |name, m, n, k, a_strides, b_strides| Shape {
        name,
        m,
        n,
        k,
        a_strides,
        b_strides,
    };
    vec![
        s("fwd1  X·W1", bs, 256, 784, row(784), row(256)),
        s("fwd2  H1·W2", bs, 128, 256, row(256), row(128)),
        s("fwd3  H2·W3", bs, 10, 128, row(128), row(10)),
        s("bwdd3 dY·W3ᵀ", bs, 128, 10, row(10), col(10)),
        s("bwdd2 dH2·W2ᵀ", bs, 256, 128, row(128), col(128)),
        s("bwdw1 Xᵀ·dH1", 784, 256, bs, col(784), row(256)),
        s("bwdw2 H1ᵀ·dH2", 256, 128, bs, col(256), row(128)),
        s("bwdw3 H2ᵀ·dY", 128, 10, bs, col(128), row(10)),
    ]
}

/// Operands of one shape; the GEMM reads `a` and `b` and writes `c`.
struct Case {
    shape: Shape,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Case {
    fn new(shape: Shape, rng: &mut Rng) -> Case {
        let (m, n, k) = (shape.m, shape.n, shape.k);
        Case {
            shape,
            a: (0..m * k).map(|_| rng.next()).collect(),
            b: (0..k * n).map(|_| rng.next()).collect(),
            c: vec![0.0; m * n],
        }
    }

    /// The call `C = alpha·A·B + beta·C` on this case's buffers.
    fn gemm(&mut self, alpha: f32, beta: f32) -> Sgemm {
        let s = self.shape;
        Sgemm {
            m: s.m,
            n: s.n,
            k: s.k,
            alpha,
            a: self.a.as_ptr(),
            rsa: s.a_strides.0,
            csa: s.a_strides.1,
            b: self.b.as_ptr(),
            rsb: s.b_strides.0,
            csb: s.b_strides.1,
            beta,
            c: self.c.as_mut_ptr(),
            rsc: s.n as isize,
            csc: 1,
        }
    }
}

/// A small xorshift generator of values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `matrixmultiply::sgemm` on the calling thread.
///
/// # Safety
/// As for `host_gemm::Sgemm::run`.
unsafe fn mm(g: &Sgemm) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        matrixmultiply::sgemm(
            g.m, g.k, g.n, g.alpha, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, g.beta, g.c, g.rsc, g.csc,
        );
    }
}

/// `gemm::gemm` with the given threading.
///
/// # Safety
/// As for `host_gemm::Sgemm::run`.
unsafe fn gemm_crate(g: &Sgemm, par: gemm::Parallelism) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        gemm::gemm(
            g.m,
            g.n,
            g.k,
            g.c,
            g.csc,
            g.rsc,
            g.beta != 0.0,
            g.a,
            g.csa,
            g.rsa,
            g.b,
            g.csb,
            g.rsb,
            g.beta,
            g.alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// `cpu/gemm.rs`'s `sgemm` (the `gemm` crate, single-threaded).
///
/// # Safety
/// As for `host_gemm::Sgemm::run`.
unsafe fn host(g: &Sgemm) {
    // SAFETY: forwarded from this function's contract.
    unsafe { g.run() }
}

/// The cut of the always-split variants: rows when there are at least 32, else columns.
fn forced_split(m: usize, n: usize) -> Split {
    if m >= 2 * host_gemm::SPLIT_ALIGN {
        Split::M(host_gemm::cut(m))
    } else {
        Split::N(n / 2)
    }
}

/// Runs `g` as two halves, one on each lane of `pool`, each with `f`.
fn on_two_lanes(pool: &Pool, g: &Sgemm, s: Split, f: unsafe fn(&Sgemm)) {
    let [lo, hi] = g.halves(s);
    // SAFETY: `g` is one of the benchmark's cases, valid for the call; the halves write
    // disjoint blocks of C.
    pool.join(&|| unsafe { f(&lo) }, &|| unsafe { f(&hi) });
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Mm,
    Gemm,
    GemmRayon2,
    MmSplit2,
    GemmSplit2,
    Auto,
}

const VARIANTS: [Variant; 6] = [
    Variant::Mm,
    Variant::Gemm,
    Variant::GemmRayon2,
    Variant::MmSplit2,
    Variant::GemmSplit2,
    Variant::Auto,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Mm => "mm 1t",
            Variant::Gemm => "gemm 1t",
            Variant::GemmRayon2 => "gemm rayon2",
            Variant::MmSplit2 => "mm split2",
            Variant::GemmSplit2 => "gemm split2",
            Variant::Auto => "auto",
        }
    }

    /// Runs `g` this way.
    fn run(self, pool: &Pool, g: &Sgemm) {
        // SAFETY: `g` is one of the benchmark's cases, valid for the call.
        unsafe {
            match self {
                Variant::Mm => mm(g),
                Variant::Gemm => gemm_crate(g, gemm::Parallelism::None),
                Variant::GemmRayon2 => gemm_crate(g, gemm::Parallelism::Rayon(2)),
                Variant::MmSplit2 => on_two_lanes(pool, g, forced_split(g.m, g.n), mm),
                Variant::GemmSplit2 => on_two_lanes(pool, g, forced_split(g.m, g.n), host),
                Variant::Auto => match host_gemm::split(g.m, g.n, g.k) {
                    Some(s) => on_two_lanes(pool, g, s, host),
                    None => host(g),
                },
            }
        }
    }
}

/// Checks every variant against `matrixmultiply` on `case`, for `C = A·B` and for
/// `C = 0.5·A·B + 0.25·C`: the largest difference must be within 1e-4 of the largest
/// magnitude of the reference.
fn check(pool: &Pool, case: &mut Case, rng: &mut Rng) {
    let c0: Vec<f32> = (0..case.c.len()).map(|_| rng.next()).collect();
    for (alpha, beta) in [(1.0, 0.0), (0.5, 0.25)] {
        case.c.copy_from_slice(&c0);
        // SAFETY: the case's buffers hold the matrices its shape describes.
        unsafe { mm(&case.gemm(alpha, beta)) };
        let want = case.c.clone();
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for v in VARIANTS {
            case.c.copy_from_slice(&c0);
            if beta == 0.0 {
                case.c.fill(f32::NAN); // beta = 0 must not read C.
            }
            let g = case.gemm(alpha, beta);
            v.run(pool, &g);
            let err = want
                .iter()
                .zip(&case.c)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                err <= 1e-4 * scale,
                "{} on {} (alpha {alpha}, beta {beta}): max |diff| {err} vs max |C| {scale}",
                v.label(),
                case.shape.name
            );
        }
    }
}

/// The median of `samples` (sorted in place).
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Rounds in which other processes took more than this share of the CPUs are run again:
/// on 2 CPUs, one busy neighbour makes the two-lane variants wait for a descheduled lane.
const MAX_OTHERS: f64 = 0.10;

/// Counts of rounds run again because the machine was busy, and kept busy all the same.
#[derive(Default)]
struct Busy {
    rerun: usize,
    kept: usize,
}

/// Median time of `f`, sampled in `rounds` rounds of `reps` calls each per variant, the
/// variants interleaved round by round so that drift in the machine's speed hits all alike.
/// A round during which other processes took more than [`MAX_OTHERS`] of the CPUs is
/// discarded and run again (up to 10 times the rounds in all).
fn time_variants(
    rounds: usize,
    reps: usize,
    busy: &mut Busy,
    mut f: impl FnMut(Variant),
) -> Vec<Duration> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds * reps); VARIANTS.len()];
    let (mut kept, mut tries) = (0, 0);
    while kept < rounds {
        let from = Snapshot::now();
        let mut round = vec![Vec::with_capacity(reps); VARIANTS.len()];
        for (i, &v) in VARIANTS.iter().enumerate() {
            // Let the threads of the variant before (rayon's, the pool's worker) go to
            // sleep: spinning, they would steal one of the two CPUs from this one.
            std::thread::sleep(Duration::from_millis(5));
            for _ in 0..reps.div_ceil(10) {
                f(v); // warm-up: caches, the pool's worker, rayon's threads
            }
            for _ in 0..reps {
                let t = Instant::now();
                f(v);
                round[i].push(t.elapsed());
            }
        }
        tries += 1;
        let others = from.others_share().unwrap_or(0.0);
        if others > MAX_OTHERS && tries < 10 * rounds {
            busy.rerun += 1;
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        busy.kept += usize::from(others > MAX_OTHERS);
        for (all, r) in samples.iter_mut().zip(round) {
            all.extend(r);
        }
        kept += 1;
    }
    samples.iter_mut().map(|s| median(s)).collect()
}

/// A point in time with the machine's and this process's CPU time then.
struct Snapshot {
    at: Instant,
    jiffies: Option<(u64, u64)>,
}

impl Snapshot {
    fn now() -> Snapshot {
        Snapshot {
            at: Instant::now(),
            jiffies: cpu_jiffies(),
        }
    }

    /// The share of all CPUs' time since this snapshot that other processes (and the
    /// hypervisor) took; `None` where /proc cannot tell.
    fn others_share(&self) -> Option<f64> {
        let (all0, own0) = self.jiffies?;
        let (all1, own1) = cpu_jiffies()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let others = (all1 - all0).saturating_sub(own1 - own0) as f64 / 100.0;
        Some(others / (self.at.elapsed().as_secs_f64() * cpus))
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, budget) = if quick {
        (3, Duration::from_millis(20))
    } else {
        (7, Duration::from_millis(60))
    };
    let pool = Pool::new(2);
    let start = Snapshot::now();
    let mut busy = Busy::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    println!(
        "gemm kernels: {}; {} rounds, ~{budget:?} per variant and round; lanes: {}",
        if cfg!(feature = "gemm-avx512") {
            "AVX-512 (x86-v4)"
        } else {
            "AVX2/FMA"
        },
        rounds,
        pool.lanes()
    );
    for bs in [128, 32] {
        let mut cases: Vec<Case> = step_shapes(bs)
            .into_iter()
            .map(|s| Case::new(s, &mut rng))
            .collect();
        for case in &mut cases {
            check(&pool, case, &mut rng);
        }
        println!("\n## batch {bs} (all variants match matrixmultiply within 1e-4)\n");
        print!("| GEMM | m×n×k |");
        for v in VARIANTS {
            print!(" {} µs (GF/s) |", v.label());
        }
        println!();
        println!("|---|---|{}", "---|".repeat(VARIANTS.len()));
        let mut sums = vec![Duration::ZERO; VARIANTS.len()];
        for case in &mut cases {
            let s = case.shape;
            let g = case.gemm(1.0, 0.0);
            // Size the repetitions so that one variant's round takes about `budget`.
            let t = Instant::now();
            Variant::Mm.run(&pool, &g);
            let reps = (budget.as_secs_f64() / t.elapsed().as_secs_f64().max(1e-7)) as usize;
            let reps = reps.clamp(20, 20_000);
            let meds = time_variants(rounds, reps, &mut busy, |v| v.run(&pool, black_box(&g)));
            let flops = 2.0 * (s.m * s.n * s.k) as f64;
            print!("| {} | {}×{}×{} |", s.name, s.m, s.n, s.k);
            for (i, d) in meds.iter().enumerate() {
                sums[i] += *d;
                let us = d.as_secs_f64() * 1e6;
                print!(" {us:.1} ({:.0}) |", flops / d.as_secs_f64() / 1e9);
            }
            println!();
        }
        print!("| **sum of medians** | |");
        for d in &sums {
            print!(" **{:.0}** |", d.as_secs_f64() * 1e6);
        }
        println!();
        // Whole steps: the 8 GEMMs back to back, as the training step issues them.
        let gs: Vec<Sgemm> = cases.iter_mut().map(|c| c.gemm(1.0, 0.0)).collect();
        let reps = (budget.as_secs_f64() / sums[0].as_secs_f64()) as usize;
        let steps = time_variants(rounds, reps.clamp(20, 5_000), &mut busy, |v| {
            for g in &gs {
                v.run(&pool, black_box(g));
            }
        });
        print!("| **whole step, median** | |");
        for d in &steps {
            print!(" **{:.0}** |", d.as_secs_f64() * 1e6);
        }
        println!();
    }
    println!(
        "\nCPU time taken by other processes (and the hypervisor) meanwhile: {:.0}%; rounds run \
         again for it: {}; kept though busy: {}",
        100.0 * start.others_share().unwrap_or(f64::NAN),
        busy.rerun,
        busy.kept
    );
}

/// Busy CPU time of the whole machine and of this process, in clock ticks (Linux only).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let all = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum();
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime: fields 14 and 15, the 12th and 13th after the command name.
    let own = after_comm.get(11)?.parse::<u64>().ok()? + after_comm.get(12)?.parse::<u64>().ok()?;
    Some((all, own))
}
