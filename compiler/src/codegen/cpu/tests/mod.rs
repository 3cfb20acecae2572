//! CPU backend tests: kernel programs (hand-built here, or the shared
//! `nnc_kernels::samples`) are compiled, linked with `cc`, loaded with `libloading`, run
//! on buffers and compared with `nnc_kernels::interp::run`. This module holds the harness
//! and the builders the tests share; `programs` checks kernel shapes and errors, `math`
//! the transcendental functions, `vector` the vectorised loops, `windows` the products
//! over windows (convolutions).
//!
//! Tolerances: everything except transcendentals and GEMM is IEEE-exact and compared bit
//! for bit (NaN equals NaN). `exp`/`log`/`tanh`/`pow` are compared with the f64 result
//! rounded to f32 and must be within 1 ulp; kernels using them (softmax) within a relative
//! 1e-6 of the interpreter. GEMM accumulates in f32 in the runtime's GEMM and in f64 in
//! the interpreter: relative 1e-5 of the largest magnitude.

mod math;
mod programs;
mod vector;
mod windows;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use libloading::{Library, Symbol};
use nnc_kernels::abi::KernelCtx;
use nnc_kernels::build::*;
use nnc_kernels::interp;
use nnc_kernels::ir::*;

use super::{emit_object, link_shared_object};

type KernelFn = unsafe extern "C" fn(*const KernelCtx, *const *mut f32, i64, i64, i64);

/// The runtime's services (its GEMM), as the executor passes them.
static CTX: KernelCtx = nnc_runtime::cpu::kernel_ctx();

/// A linked and loaded kernel library in its own temporary directory.
struct Artifact {
    dir: PathBuf,
    lib: Option<Library>,
}

impl Drop for Artifact {
    fn drop(&mut self) {
        drop(self.lib.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn build(p: &Program) -> Artifact {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let obj = emit_object(p).expect("emit object");
    let dir = std::env::temp_dir().join(format!(
        "nnc-cpu-test-{}-{}-{}",
        std::process::id(),
        p.name,
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let so = link_shared_object(&obj, &dir).expect("link");
    // SAFETY: the library holds only our kernels, which have no initialisers.
    let lib = unsafe { Library::new(&so) }.expect("load kernels.so");
    Artifact {
        dir,
        lib: Some(lib),
    }
}

impl Artifact {
    fn run_kernel(
        &self,
        p: &Program,
        k: usize,
        bufs: &mut [Vec<f32>],
        n: usize,
        range: (i64, i64),
    ) {
        let kernel = &p.kernels[k];
        let lib = self.lib.as_ref().expect("library loaded");
        // SAFETY: every kernel is exported with the `KernelFn` signature.
        let f: Symbol<KernelFn> = unsafe { lib.get(kernel.name.as_bytes()) }.expect("symbol");
        let all: Vec<*mut f32> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let ptrs: Vec<*mut f32> = kernel.params.iter().map(|b| all[b.0 as usize]).collect();
        // SAFETY: buffers are sized for `n` (checked by the interpreter run of each test).
        unsafe { f(&CTX, ptrs.as_ptr(), n as i64, range.0, range.1) };
    }

    fn run(&self, p: &Program, bufs: &mut [Vec<f32>], n: usize) {
        for k in 0..p.kernels.len() {
            self.run_kernel(p, k, bufs, n, (0, i64::MAX));
        }
    }
}

/// Runs `p` with the interpreter and compiled; returns (interpreted, compiled) buffers.
fn both(p: &Program, bufs: Vec<Vec<f32>>, n: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut want = bufs.clone();
    interp::run(p, &mut want, n).expect("interpreter");
    let mut got = bufs;
    build(p).run(p, &mut got, n);
    (want, got)
}

fn assert_bitwise(want: &[Vec<f32>], got: &[Vec<f32>]) {
    for (b, (w, g)) in want.iter().zip(got).enumerate() {
        for (i, (x, y)) in w.iter().zip(g).enumerate() {
            let same = x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) || x == y;
            assert!(same, "b{b}[{i}]: interpreter {x:e}, compiled {y:e}");
        }
    }
}

fn assert_relative(want: &[Vec<f32>], got: &[Vec<f32>], tol: f32) {
    for (b, (w, g)) in want.iter().zip(got).enumerate() {
        let scale = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (i, (x, y)) in w.iter().zip(g).enumerate() {
            let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= tol * scale;
            assert!(
                ok,
                "b{b}[{i}]: interpreter {x:e}, compiled {y:e} (scale {scale:e})"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Builders shared by the tests.

/// Fixed-size buffer declarations `(name, length, kind)`, in id order.
fn fixed(bufs: &[(&str, usize, BufferKind)]) -> Vec<BufferDecl> {
    bufs.iter()
        .map(|&(name, len, kind)| decl(name, Size::fixed(len), kind))
        .collect()
}

/// Kernel `name` over `params`: `for i0 in 0..len { body }` (`parallel` or not), with
/// `locals` locals.
fn loop_kernel(
    name: &str,
    params: Vec<BufId>,
    len: impl Into<Idx>,
    parallel: bool,
    locals: u32,
    body: Vec<Stmt>,
) -> Kernel {
    kernel(
        name,
        params,
        vec![for_(VarId(0), len, parallel, body)],
        1,
        locals,
    )
}

/// A program `name` of one [`loop_kernel`] of the same name over every buffer of `bufs`
/// (see [`fixed`]), without locals.
fn one_loop(
    name: &str,
    bufs: &[(&str, usize, BufferKind)],
    len: usize,
    parallel: bool,
    body: Vec<Stmt>,
) -> Program {
    let params = (0..bufs.len() as u32).map(BufId).collect();
    program(
        name,
        fixed(bufs),
        vec![loop_kernel(name, params, len, parallel, 0, body)],
    )
}

/// `out[i] = f(x[i])` over `len` elements, for one unary op, in a parallel loop.
fn map_unary(op: UnOp, len: usize) -> Program {
    let (x, out, i) = (BufId(0), BufId(1), VarId(0));
    let bufs = [
        ("x", len, BufferKind::Input),
        ("out", len, BufferKind::Output),
    ];
    let body = vec![store(out, i.into(), unary(op, load(x, i.into())))];
    one_loop(op.name(), &bufs, len, true, body)
}

/// `out[i] = e(x[i], y[i])` for each expression, one kernel each (parallel loops and
/// serial ones in turn), over `len` elements.
fn map_binary_kernels(exprs: Vec<Expr>, len: usize) -> Program {
    let (x, y, out, i) = (BufId(0), BufId(1), BufId(2), VarId(0));
    let bufs = fixed(&[
        ("x", len, BufferKind::Input),
        ("y", len, BufferKind::Input),
        ("out", len * exprs.len(), BufferKind::Output),
    ]);
    let kernels = exprs
        .into_iter()
        .enumerate()
        .map(|(k, e)| {
            let at = Idx::from(i) + (k * len) as i64;
            let body = vec![store(out, at, e)];
            loop_kernel(&format!("v{k}"), vec![x, y, out], len, k % 2 == 0, 0, body)
        })
        .collect();
    program("vec", bufs, kernels)
}

/// Operand pairs for binary operators: signed zeros, NaN and infinity on either side, a
/// denormal, equal values and inexact quotients (11 of them: two vector iterations and a
/// scalar remainder of 3).
fn operands() -> [Vec<f32>; 2] {
    [
        vec![
            1.5,
            -2.25,
            0.0,
            -0.0,
            f32::NAN,
            3.0,
            1e-40,
            -7.5,
            f32::INFINITY,
            0.3,
            -9.0,
        ],
        vec![
            0.7,
            4.0,
            -0.0,
            0.0,
            1.0,
            f32::NAN,
            2.0,
            -7.5,
            1.0,
            1.0 / 3.0,
            f32::NAN,
        ],
    ]
}

/// Deterministic pseudo-random f32 in `[lo, hi)` (xorshift64*), `len` of them.
fn random(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            z ^= z >> 12;
            z ^= z << 25;
            z ^= z >> 27;
            let u = (z.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}
