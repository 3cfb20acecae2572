//! Benchmark of the implicit GEMM over windows (`cpu/windows.rs`, the convolutions' path)
//! on LeNet's convolutions at batch 128: conv1 forward (28×28×1, 5×5 pad 2, 6 filters),
//! conv2 forward (14×14×6, 5×5 valid, 16 filters), both weight gradients (the transposed
//! view: the windows are the reduction) and conv2's input gradient (a transposed
//! convolution over the 10×10×16 output gradient); and, for the packing of images with a
//! few channels, a 5×5 convolution of 32×32×3 images with 16 filters.
//!
//! Variants, each on one lane and on two (the runtime's [`Pool`], as a serial kernel's
//! product runs): `implicit`, `cpu/windows.rs` as the runtime calls it; `explicit`, the
//! whole `im2col` matrix packed into a preallocated buffer and multiplied with one
//! `sgemm` (`cpu/gemm.rs`; cut in halves by its `split` on two lanes, the packing cut in
//! halves too); `sgemm only`, the explicit variant's product alone (the speed of a plain
//! GEMM of the same shape). Then the implicit path on one lane with other knobs than
//! `TUNING`'s: block sizes, packing layouts, the partial products' layout. Every
//! variant's result is checked against the naive sum first.
//!
//! Prints, per case, the median time of one call and its GFLOP/s (`2·m·n·k`, the padding's
//! zeros included). Rounds during which other processes took more than 10% of the CPUs are
//! run again (as `gemm_bench` does). Run with
//!
//! ```text
//! cargo run --release -p nnc-runtime --example conv_bench [-- --quick] [--no-check]
//!     [--only <case name part>] [--variant <variant label part>]
//! ```

// The runtime's `cpu/gemm.rs` and `cpu/windows.rs` (with its `windows/` submodules),
// compiled into the benchmark from their own directory, with `pool` standing for
// `cpu/pool.rs`, which `windows.rs` names as `super::pool`.
#[path = "../src/cpu"]
mod cpu {
    pub mod gemm;
    pub mod pool {
        pub use nnc_runtime::cpu::Pool;
    }
    #[allow(dead_code)]
    pub mod windows;
}
use cpu::{gemm, windows};

use gemm::Sgemm;
use nnc_kernels::abi::WindowsGemm;
use nnc_runtime::cpu::Pool;
use std::hint::black_box;
use std::time::{Duration, Instant};
use windows::{Tuning, TUNING};

/// One convolution product: the windows geometry, `C (m×n) = A·B` with A the view (its
/// transpose when `transposed`), B and C contiguous row-major.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    samples: i64,
    image: [i64; 3],
    grid: [i64; 2],
    taps: [i64; 2],
    tap: i64,
    pad: i64,
    n: i64,
    transposed: bool,
}

impl Shape {
    fn cols(&self) -> i64 {
        self.taps[0] * self.taps[1] * self.image[2]
    }

    fn windows(&self) -> i64 {
        self.samples * self.grid[0] * self.grid[1]
    }

    /// (m, n, k).
    fn mnk(&self) -> (i64, i64, i64) {
        if self.transposed {
            (self.cols(), self.n, self.windows())
        } else {
            (self.windows(), self.n, self.cols())
        }
    }
}

/// LeNet's convolution products at batch `bs`, and the VGG benchmark's first two layers.
fn shapes(bs: i64) -> Vec<Shape> {
    let s = |name, image, grid, taps, tap, pad, n, transposed| Shape {
        name,
        samples: bs,
        image,
        grid,
        taps,
        tap,
        pad,
        n,
        transposed,
    };
    vec![
        s("conv1 fwd", [28, 28, 1], [28, 28], [5, 5], 1, 2, 6, false),
        s("conv2 fwd", [14, 14, 6], [10, 10], [5, 5], 1, 0, 16, false),
        s("conv1 wgrad", [28, 28, 1], [28, 28], [5, 5], 1, 2, 6, true),
        s("conv2 wgrad", [14, 14, 6], [10, 10], [5, 5], 1, 0, 16, true),
        // dX (14×14×6) = windows of dY (10×10×16): step 1, tap −1, pad −0.
        s(
            "conv2 dgrad",
            [10, 10, 16],
            [14, 14],
            [5, 5],
            -1,
            0,
            6,
            false,
        ),
        // Not LeNet: a first layer over RGB images (CIFAR's 32×32×3, 5×5 pad 2, 16
        // filters), for the packing of a few channels.
        s("rgb fwd", [32, 32, 3], [32, 32], [5, 5], 1, 2, 16, false),
        // The VGG-style network of `bench/fashion_vgg.nn`: 3×3 pad 1 convolutions of
        // 28×28×1 and 28×28×32 images into 32 filters (forward and weight gradient).
        s("vgg1 fwd", [28, 28, 1], [28, 28], [3, 3], 1, 1, 32, false),
        s("vgg1 wgrad", [28, 28, 1], [28, 28], [3, 3], 1, 1, 32, true),
        s("vgg2 fwd", [28, 28, 32], [28, 28], [3, 3], 1, 1, 32, false),
        s("vgg2 wgrad", [28, 28, 32], [28, 28], [3, 3], 1, 1, 32, true),
    ]
}

/// Operands of one shape, and the scratch of the explicit variant.
struct Case {
    shape: Shape,
    image: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    im2col: Vec<f32>,
}

impl Case {
    fn new(shape: Shape, rng: &mut Rng) -> Case {
        let (m, n, k) = shape.mnk();
        let image_len = shape.samples * shape.image.iter().product::<i64>();
        let mut case = Case {
            shape,
            image: (0..image_len).map(|_| rng.next()).collect(),
            b: (0..k * n).map(|_| rng.next()).collect(),
            c: vec![0.0; (m * n) as usize],
            im2col: vec![0.0; (shape.windows() * shape.cols()) as usize],
        };
        // The `im2col` matrix for `SgemmOnly` (the explicit variants rewrite the same).
        let g = case.desc(1.0, 0.0);
        // SAFETY: the buffer holds all windows × taps.
        unsafe { windows::pack(&g, 0..shape.windows(), &mut case.im2col) };
        case
    }

    /// The descriptor of `C = alpha·A·B + beta·C` on this case's buffers.
    fn desc(&mut self, alpha: f32, beta: f32) -> WindowsGemm {
        let s = self.shape;
        let (m, n, k) = s.mnk();
        WindowsGemm {
            m,
            n,
            k,
            a: self.image.as_ptr(),
            image: s.image,
            grid: s.grid,
            taps: s.taps,
            step: [1, 1],
            tap: [s.tap; 2],
            pad: [s.pad; 2],
            div: [1, 1],
            first: 0,
            transposed: i64::from(s.transposed),
            b: self.b.as_ptr(),
            rsb: n,
            csb: 1,
            c: self.c.as_mut_ptr(),
            rsc: n,
            csc: 1,
            alpha,
            beta,
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

#[derive(Clone, Copy)]
enum Variant {
    Implicit1,
    Implicit2,
    Explicit1,
    Explicit2,
    /// The explicit path's `sgemm` alone, on one lane (`im2col` packed beforehand).
    SgemmOnly,
    /// The implicit path on one lane with other knobs.
    Tuned(&'static str, Tuning),
}

const fn tuned(label: &'static str, t: Tuning) -> Variant {
    Variant::Tuned(label, t)
}

const VARIANTS: [Variant; 17] = [
    Variant::Implicit1,
    Variant::Implicit2,
    Variant::Explicit1,
    Variant::Explicit2,
    Variant::SgemmOnly,
    tuned(
        "block 4K",
        Tuning {
            block_floats: 4 * 1024,
            ..TUNING
        },
    ),
    tuned(
        "block 8K",
        Tuning {
            block_floats: 8 * 1024,
            ..TUNING
        },
    ),
    tuned(
        "block 32K",
        Tuning {
            block_floats: 32 * 1024,
            ..TUNING
        },
    ),
    tuned(
        "block 64K",
        Tuning {
            block_floats: 64 * 1024,
            ..TUNING
        },
    ),
    tuned(
        "tap-major",
        Tuning {
            tap_major_max_c: i64::MAX,
            ..TUNING
        },
    ),
    tuned(
        "window-major",
        Tuning {
            tap_major_max_c: 0,
            ..TUNING
        },
    ),
    tuned(
        "window-major temp",
        Tuning {
            tap_major_max_c: 0,
            window_major_temp: true,
            ..TUNING
        },
    ),
    tuned(
        "col partial",
        Tuning {
            partial_col_major_max_n: i64::MAX,
            ..TUNING
        },
    ),
    tuned(
        "packed",
        Tuning {
            direct: false,
            ..TUNING
        },
    ),
    tuned(
        "gemm crate",
        Tuning {
            skinny_max_n: 0,
            ..TUNING
        },
    ),
    tuned(
        "tiles from 9",
        Tuning {
            tiles_transposed_min_n: 9,
            ..TUNING
        },
    ),
    tuned(
        "row partial",
        Tuning {
            partial_col_major_max_n: 0,
            ..TUNING
        },
    ),
];

impl Variant {
    fn label(self) -> String {
        match self {
            Variant::Implicit1 => "implicit 1t".into(),
            Variant::Implicit2 => "implicit 2t".into(),
            Variant::Explicit1 => "explicit 1t".into(),
            Variant::Explicit2 => "explicit 2t".into(),
            Variant::SgemmOnly => "sgemm only 1t".into(),
            Variant::Tuned(label, _) => format!("{label} 1t"),
        }
    }

    /// Runs `C = A·B` (`alpha`, `beta` as given) on `case` this way.
    fn run(self, pool: &Pool, case: &mut Case, alpha: f32, beta: f32) {
        let g = case.desc(alpha, beta);
        // SAFETY: the case's buffers hold the matrices its shape describes.
        unsafe {
            match self {
                Variant::Implicit1 => windows::run(black_box(&g), None),
                Variant::Implicit2 => windows::run(black_box(&g), Some(pool)),
                Variant::Explicit1 => explicit(&g, &mut case.im2col, None, false),
                Variant::Explicit2 => explicit(&g, &mut case.im2col, Some(pool), false),
                Variant::SgemmOnly => explicit(&g, &mut case.im2col, None, true),
                Variant::Tuned(_, t) => windows::run_tuned(black_box(&g), None, t),
            }
        }
    }
}

/// A raw pointer shared by the two lanes.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the lanes write disjoint parts of the buffer it points into.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method, so that closures capture the whole (`Sync`) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The explicit path: the whole `im2col` matrix packed into `im2col`, then one `sgemm`
/// (on both lanes of `pool` when given: the packing in halves, the product cut as the
/// runtime's `host_sgemm` cuts it).
///
/// # Safety
/// As for `windows::run`; `im2col` holds all windows × taps.
unsafe fn explicit(g: &WindowsGemm, im2col: &mut [f32], pool: Option<&Pool>, packed: bool) {
    let cols = g.taps[0] * g.taps[1] * g.image[2];
    let windows = if g.transposed == 0 { g.m } else { g.k };
    let out = SendPtr(im2col.as_mut_ptr());
    let desc = Desc(g);
    let pack = |rows: std::ops::Range<i64>| {
        let len = ((rows.end - rows.start) * cols) as usize;
        // SAFETY: each half writes its own windows' rows of the buffer.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(out.get().add((rows.start * cols) as usize), len)
        };
        // SAFETY: the caller's contract.
        unsafe { windows::pack(desc.get(), rows, dst) };
    };
    match pool {
        _ if packed => {}
        Some(pool) => pool.join(&|| pack(0..windows / 2), &|| pack(windows / 2..windows)),
        None => pack(0..windows),
    }
    let (rsa, csa) = if g.transposed == 0 {
        (cols as isize, 1)
    } else {
        (1, cols as isize)
    };
    let s = Sgemm {
        m: g.m as usize,
        n: g.n as usize,
        k: g.k as usize,
        alpha: g.alpha,
        a: im2col.as_ptr(),
        rsa,
        csa,
        b: g.b,
        rsb: g.rsb as isize,
        csb: g.csb as isize,
        beta: g.beta,
        c: g.c,
        rsc: g.rsc as isize,
        csc: g.csc as isize,
    };
    match (pool, gemm::split(s.m, s.n, s.k)) {
        (Some(pool), Some(cut)) => {
            let [lo, hi] = s.halves(cut);
            // SAFETY: the halves write disjoint blocks of C.
            pool.join(&|| unsafe { lo.run() }, &|| unsafe { hi.run() });
        }
        // SAFETY: as above.
        _ => unsafe { s.run() },
    }
}

/// A descriptor shared by the two lanes.
#[derive(Clone, Copy)]
struct Desc<'a>(&'a WindowsGemm);
// SAFETY: the lanes only read through it.
unsafe impl Sync for Desc<'_> {}

impl<'a> Desc<'a> {
    fn get(self) -> &'a WindowsGemm {
        self.0
    }
}

/// `C = alpha·A·B + beta·C` by the definition (`Windows::source`'s formula), in f64.
fn naive(case: &Case, c: &mut [f32], alpha: f32, beta: f32) {
    let s = case.shape;
    let (m, n, k) = s.mnk();
    let w = nnc_kernels::ir::Windows {
        image: s.image,
        grid: s.grid,
        taps: s.taps,
        step: [1, 1],
        tap: [s.tap; 2],
        pad: [s.pad; 2],
        div: [1, 1],
        first: nnc_kernels::ir::Idx::Const(0),
        transposed: s.transposed,
    };
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for l in 0..k {
                let src = if s.transposed {
                    w.source(l, i)
                } else {
                    w.source(i, l)
                };
                if let Some(src) = src {
                    acc += f64::from(case.image[src as usize])
                        * f64::from(case.b[(l * n + j) as usize]);
                }
            }
            let e = &mut c[(i * n + j) as usize];
            *e = (f64::from(alpha) * acc) as f32 + if beta == 0.0 { 0.0 } else { beta * *e };
        }
    }
}

/// Checks every variant against the naive sum on `case`, for `C = A·B` and
/// `C = 0.5·A·B + 0.25·C`: within 1e-4 of the largest magnitude.
fn check(pool: &Pool, case: &mut Case, rng: &mut Rng) {
    let c0: Vec<f32> = (0..case.c.len()).map(|_| rng.next()).collect();
    for (alpha, beta) in [(1.0, 0.0), (0.5, 0.25)] {
        let mut want = c0.clone();
        naive(case, &mut want, alpha, beta);
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for v in VARIANTS {
            case.c.copy_from_slice(&c0);
            if beta == 0.0 {
                case.c.fill(f32::NAN); // beta = 0 must not read C.
            }
            v.run(pool, case, alpha, beta);
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

/// Rounds in which other processes took more than this share of the CPUs are run again.
const MAX_OTHERS: f64 = 0.10;

/// Median time of `f` per variant, sampled in `rounds` rounds of `reps` calls each, the
/// variants interleaved round by round; a round during which other processes took more
/// than [`MAX_OTHERS`] of the CPUs is run again (up to 10 times the rounds in all).
/// Returns the medians and the number of rounds run again.
fn time_variants(
    variants: &[Variant],
    rounds: usize,
    reps: usize,
    mut f: impl FnMut(Variant),
) -> (Vec<Duration>, usize) {
    let mut samples = vec![Vec::with_capacity(rounds * reps); variants.len()];
    let (mut kept, mut tries, mut rerun) = (0, 0, 0);
    while kept < rounds {
        let from = Snapshot::now();
        let mut round = vec![Vec::with_capacity(reps); variants.len()];
        for (i, &v) in variants.iter().enumerate() {
            // Let the pool's worker go to sleep after the variant before.
            std::thread::sleep(Duration::from_millis(5));
            f(v); // warm-up
            for _ in 0..reps {
                let t = Instant::now();
                f(v);
                round[i].push(t.elapsed());
            }
        }
        tries += 1;
        if from.others_share().unwrap_or(0.0) > MAX_OTHERS && tries < 10 * rounds {
            rerun += 1;
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        for (all, r) in samples.iter_mut().zip(round) {
            all.extend(r);
        }
        kept += 1;
    }
    (samples.iter_mut().map(|s| median(s)).collect(), rerun)
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

    /// The share of all CPUs' time since this snapshot that other processes took.
    fn others_share(&self) -> Option<f64> {
        let (all0, own0) = self.jiffies?;
        let (all1, own1) = cpu_jiffies()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let others = (all1 - all0).saturating_sub(own1 - own0) as f64 / 100.0;
        Some(others / (self.at.elapsed().as_secs_f64() * cpus))
    }
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only <text>`: the cases whose name contains `text`.
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let only = arg("--only");
    // `--variant <text>`: the variants whose label contains `text`.
    let variant = arg("--variant");
    let variants: Vec<Variant> = VARIANTS
        .into_iter()
        .filter(|v| v.label().contains(&variant))
        .collect();
    let (rounds, reps) = if quick { (3, 5) } else { (5, 10) };
    let pool = Pool::new(2);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    println!(
        "LeNet convolutions at batch 128; {rounds} rounds of {reps} calls per variant; lanes: {}",
        pool.lanes()
    );
    let mut cases: Vec<Case> = shapes(128)
        .into_iter()
        .filter(|s| s.name.contains(&only))
        .map(|s| Case::new(s, &mut rng))
        .collect();
    for case in cases
        .iter_mut()
        .filter(|_| !args.iter().any(|a| a == "--no-check"))
    {
        check(&pool, case, &mut rng);
    }
    println!("(every variant matches the naive sum within 1e-4)\n");
    print!("| case | m×n×k |");
    for v in &variants {
        print!(" {} µs (GF/s) |", v.label());
    }
    println!();
    println!("|---|---|{}", "---|".repeat(variants.len()));
    let mut rerun = 0;
    for case in &mut cases {
        let (m, n, k) = case.shape.mnk();
        let (meds, again) =
            time_variants(&variants, rounds, reps, |v| v.run(&pool, case, 1.0, 0.0));
        rerun += again;
        let flops = 2.0 * (m * n * k) as f64;
        print!("| {} | {m}×{n}×{k} |", case.shape.name);
        for d in &meds {
            let us = d.as_secs_f64() * 1e6;
            print!(" {us:.0} ({:.1}) |", flops / d.as_secs_f64() / 1e9);
        }
        println!();
    }
    println!("\nrounds run again because other processes were busy: {rerun}");
}
