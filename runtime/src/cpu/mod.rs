//! The `cpu` executor: runs a compiled artifact — `kernels.so` (native code emitted by the
//! compiler through cranelift) plus a manifest per program (`train.manifest`,
//! `eval.manifest`) — on host memory, with a two-lane thread pool for parallel loops.
//!
//! ABI (defined in `nnc_kernels::abi`): every kernel is
//! `extern "C" fn(ctx: *const KernelCtx, bufs: *const *mut f32, n: i64, start: i64, end: i64)`
//! where `bufs` holds the base pointers of the kernel's buffers in manifest order and
//! `start..end` is the part of its parallel loop to run. Matrix products call back into
//! the runtime through `KernelCtx::sgemm` (and implicit GEMMs over windows through
//! `KernelCtx::sgemm_windows`).
//!
//! Memory: named state (parameters, buffers, optimizer state, `step`) lives in one
//! `Vec<f32>` per name, updated in place by the train program (`inout` buffers); the batch
//! is copied into `x`/`y` buffers; temporaries live in one arena sized for the batch.

mod denormals;
mod gemm;
mod pool;
mod windows;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nnc_kernels::abi::KernelCtx;
use nnc_kernels::ir::BufferKind;
use nnc_kernels::manifest::Manifest;

use crate::executor::{
    EvalOutput, ExecError, Executor, KernelTime, NonFiniteParam, StateKind, StateTensor,
    StepOutput, GRAD_EXTRA,
};
use crate::tensor::Tensor;
pub use pool::Pool;

type KernelFn = unsafe extern "C" fn(*const KernelCtx, *const *mut f32, i64, i64, i64);

use crate::artifact::{binding, check_bindings, Binding, StepProgram};
pub use crate::artifact::{
    ModelInfo, APPLY_MANIFEST, EVAL_MANIFEST, GRAD_MANIFEST, INPUT, LABELS, LIBRARY_FILE, LOSS,
    OUTPUT, TRAIN_MANIFEST,
};

struct LoadedProgram {
    manifest: Manifest,
    kernels: Vec<KernelFn>,
}

/// The data-parallel halves of the training step and the one buffer of gradients they
/// hand over (each gradient at its offset, then [`GRAD_EXTRA`] spare slots).
struct Parallel {
    grad: LoadedProgram,
    apply: LoadedProgram,
    buffer: Vec<f32>,
    at: HashMap<String, usize>,
    /// The buffer's gradients in buckets, in the order the gradient step finishes them.
    buckets: Vec<Bucket>,
}

/// Consecutive gradients of the buffer reduced together, and the gradient-step kernel
/// after which all of them are written (`None`: no kernel writes them).
struct Bucket {
    offset: usize,
    len: usize,
    ready: Option<usize>,
}

/// Gradients are grouped into buckets of at least this many values (32 KiB), so that a
/// model with many small parameters does not start many tiny reductions.
const BUCKET_VALUES: usize = 1 << 13;

/// The buckets of the gradient step `grad` over the gradients `grads` (in buffer order):
/// from the last gradient back (backward passes finish the last layers first), runs of
/// consecutive gradients of at least [`BUCKET_VALUES`] values, each ready after the last
/// kernel that touches any of them; ordered by that kernel.
fn buckets(grad: &Manifest, grads: &[(String, Vec<usize>)]) -> Vec<Bucket> {
    let last_use = |name: &str| {
        let index = grad.buffers.iter().position(|b| b.name == name)?;
        grad.kernels.iter().rposition(|k| k.params.contains(&index))
    };
    let mut spans = Vec::with_capacity(grads.len());
    let mut offset = 0;
    for (name, shape) in grads {
        let len: usize = shape.iter().product();
        spans.push((offset, len, last_use(name)));
        offset += len;
    }
    let mut out: Vec<Bucket> = Vec::new();
    let mut open: Option<Bucket> = None;
    for &(offset, len, ready) in spans.iter().rev() {
        let b = open.get_or_insert(Bucket {
            offset: offset + len,
            len: 0,
            ready: None,
        });
        b.offset = offset;
        b.len += len;
        b.ready = match (b.ready, ready) {
            (Some(a), Some(c)) => Some(a.max(c)),
            (a, c) => a.or(c),
        };
        if b.len >= BUCKET_VALUES {
            out.extend(open.take());
        }
    }
    out.extend(open);
    out.sort_by_key(|b| b.ready.map_or(usize::MAX, |k| k));
    out
}

/// The compiled executor.
pub struct CpuExecutor {
    // Field order matters: the functions point into `_library`, which drops last.
    train: LoadedProgram,
    eval: LoadedProgram,
    parallel: Option<Parallel>,
    info: ModelInfo,
    state: HashMap<String, Vec<f32>>,
    batch_bufs: HashMap<&'static str, Vec<f32>>,
    arena: Vec<f32>,
    pool: Pool,
    ctx: KernelCtx,
    /// Per train kernel: calls and seconds, while profiling.
    profile: Option<Vec<(u64, f64)>>,
    _library: libloading::Library,
}

fn load_program(
    lib: &libloading::Library,
    dir: &Path,
    file: &str,
) -> Result<LoadedProgram, ExecError> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ExecError::new(format!("cannot read `{}`: {e}", path.display())))?;
    let manifest =
        Manifest::parse(&text).map_err(|e| ExecError::new(format!("`{}`: {e}", path.display())))?;
    let mut kernels = Vec::new();
    for k in &manifest.kernels {
        // SAFETY: the symbol was emitted by the compiler with exactly this signature.
        let f: libloading::Symbol<KernelFn> =
            unsafe { lib.get(k.symbol.as_bytes()) }.map_err(|e| {
                ExecError::new(format!(
                    "`{}` lacks kernel `{}`: {e}",
                    dir.join(LIBRARY_FILE).display(),
                    k.symbol
                ))
            })?;
        kernels.push(*f);
    }
    Ok(LoadedProgram { manifest, kernels })
}

impl CpuExecutor {
    /// Loads the artifact in `dir` with `threads` threads (1 or 2 are used).
    pub fn load(dir: &Path, info: ModelInfo, threads: usize) -> Result<CpuExecutor, ExecError> {
        let lib_path = dir.join(LIBRARY_FILE);
        // SAFETY: loading our own artifact; its initialisers are cranelift code with none.
        let library = unsafe { libloading::Library::new(&lib_path) }
            .map_err(|e| ExecError::new(format!("cannot load `{}`: {e}", lib_path.display())))?;
        let train = load_program(&library, dir, TRAIN_MANIFEST)?;
        let eval = load_program(&library, dir, EVAL_MANIFEST)?;
        let parallel = if dir.join(GRAD_MANIFEST).is_file() {
            let grad = load_program(&library, dir, GRAD_MANIFEST)?;
            let apply = load_program(&library, dir, APPLY_MANIFEST)?;
            for prog in [&grad, &apply] {
                check_bindings(&prog.manifest.buffers, &info)?;
            }
            let (at, len) = info.grad_layout();
            let buckets = buckets(&grad.manifest, &info.grads);
            Some(Parallel {
                grad,
                apply,
                buffer: vec![0.0; len + GRAD_EXTRA],
                at,
                buckets,
            })
        } else {
            None
        };
        let state = info
            .state
            .iter()
            .map(|(n, _, t)| (n.clone(), t.data.clone()))
            .collect();
        for prog in [&train, &eval] {
            check_bindings(&prog.manifest.buffers, &info)?;
        }
        Ok(CpuExecutor {
            train,
            eval,
            parallel,
            info,
            state,
            batch_bufs: HashMap::new(),
            arena: Vec::new(),
            pool: Pool::new(threads.clamp(1, 2)),
            ctx: kernel_ctx(),
            profile: None,
            _library: library,
        })
    }

    /// Runs one program for a batch of `n` with `x`, `y` bound; results stay in
    /// `batch_bufs` (`loss`, `output`) and in the state.
    fn run(&mut self, which: StepProgram, x: &Tensor, y: &Tensor) -> Result<(), ExecError> {
        self.run_with(which, x, y, &mut |_| Ok(()))
    }

    /// [`CpuExecutor::run`], calling `after(k)` once kernel `k` has finished.
    fn run_with(
        &mut self,
        which: StepProgram,
        x: &Tensor,
        y: &Tensor,
        after: &mut dyn FnMut(usize) -> Result<(), ExecError>,
    ) -> Result<(), ExecError> {
        let n = x.shape.first().copied().unwrap_or(0);
        let _ftz = denormals::FlushToZero::enable();
        let train = which == StepProgram::Train;
        let no_parallel = crate::executor::not_parallel;
        let (prog, mut grads) = match which {
            StepProgram::Train => (&self.train, None),
            StepProgram::Eval => (&self.eval, None),
            StepProgram::Grad | StepProgram::Apply => {
                let p = self.parallel.as_mut().ok_or_else(no_parallel)?;
                let prog = if which == StepProgram::Grad {
                    &p.grad
                } else {
                    &p.apply
                };
                (prog, Some((&mut p.buffer, &p.at)))
            }
        };
        let arena_len = prog.manifest.arena.resolve(n);
        if self.arena.len() < arena_len {
            grow(&mut self.arena, arena_len, "the temporaries' arena", n)?;
        }
        let mut ptrs: Vec<*mut f32> = Vec::with_capacity(prog.manifest.buffers.len());
        for b in &prog.manifest.buffers {
            let need = b.len.resolve(n);
            let ptr = match binding(b, n) {
                Binding::Arena(at) => {
                    if at + need > self.arena.len() {
                        return Err(ExecError::new(format!(
                            "temporary `{}` overruns the arena",
                            b.name
                        )));
                    }
                    // SAFETY: in bounds, checked above.
                    unsafe { self.arena.as_mut_ptr().add(at) }
                }
                // The batch is bound in place: kernels never write `input` buffers.
                Binding::Batch(name @ (INPUT | LABELS)) if b.kind == BufferKind::Input => {
                    let data = if name == INPUT { &x.data } else { &y.data };
                    if data.len() < need {
                        return Err(ExecError::new(format!(
                            "`{name}` holds {} values, the step needs {need}",
                            data.len()
                        )));
                    }
                    data.as_ptr().cast_mut()
                }
                Binding::Batch(name) => {
                    let v = self.batch_bufs.entry(name).or_default();
                    if v.len() < need {
                        if matches!(b.kind, BufferKind::Input) {
                            return Err(ExecError::new(format!(
                                "`{name}` holds {} values, the step needs {need}",
                                v.len()
                            )));
                        }
                        grow(v, need, name, n)?;
                    }
                    v.as_mut_ptr()
                }
                Binding::State(name)
                    if grads.as_ref().is_some_and(|(_, at)| at.contains_key(name)) =>
                {
                    let (buffer, at) = grads.as_mut().ok_or_else(no_parallel)?;
                    let offset = at[name];
                    if offset + need > buffer.len() {
                        return Err(ExecError::new(format!(
                            "gradient `{name}` overruns the gradient buffer"
                        )));
                    }
                    // SAFETY: in bounds, checked above.
                    unsafe { buffer.as_mut_ptr().add(offset) }
                }
                Binding::State(name) => {
                    let v = self
                        .state
                        .get_mut(name)
                        .ok_or_else(|| ExecError::new(format!("no state tensor `{name}`")))?;
                    if v.len() < need {
                        return Err(ExecError::new(format!(
                            "state `{name}` holds {} values, the step needs {need}",
                            v.len()
                        )));
                    }
                    v.as_mut_ptr()
                }
            };
            ptrs.push(ptr);
        }
        let ctx = CtxPtr(&self.ctx);
        let mut profile = self.profile.as_mut().filter(|_| train);
        for (i, (entry, f)) in prog.manifest.kernels.iter().zip(&prog.kernels).enumerate() {
            let started = profile.is_some().then(std::time::Instant::now);
            let args: Vec<*mut f32> = entry.params.iter().map(|&i| ptrs[i]).collect();
            let args = SendPtrs(args);
            let n64 = n as i64;
            let call = |start: i64, end: i64| {
                // SAFETY: the arguments point at buffers at least as long as the manifest
                // declares for this batch size, and parts of a parallel loop write
                // disjoint elements (a kernel IR invariant).
                unsafe { f(ctx.get(), args.get(), n64, start, end) }
            };
            let extent = entry.parallel.map_or(0, |e| e.resolve(n)) as i64;
            if extent >= 2 && self.pool.lanes() > 1 {
                let mid = extent / 2;
                self.pool.join(&|| call(0, mid), &|| call(mid, extent));
            } else {
                SERIAL_POOL.with(|p| p.set(&self.pool));
                call(0, extent);
                SERIAL_POOL.with(|p| p.set(std::ptr::null()));
            }
            if let (Some(p), Some(t)) = (profile.as_deref_mut(), started) {
                if let Some(slot) = p.get_mut(i) {
                    slot.0 += 1;
                    slot.1 += t.elapsed().as_secs_f64();
                }
            }
            after(i)?;
        }
        Ok(())
    }

    /// Runs a training program (the fused step or the gradient half) on a batch: its
    /// loss and output.
    fn step(
        &mut self,
        which: StepProgram,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<StepOutput, ExecError> {
        let n = x.shape.first().copied().unwrap_or(0);
        self.run(which, x, y)?;
        let (loss, output) = self.take_results(n);
        Ok(StepOutput {
            loss,
            output: Some(output),
        })
    }

    fn take_results(&mut self, n: usize) -> (f32, Tensor) {
        let loss = self
            .batch_bufs
            .get(LOSS)
            .and_then(|v| v.first().copied())
            .unwrap_or(f32::NAN);
        let per = self.info.output_shape.iter().product::<usize>();
        let mut shape = vec![n];
        shape.extend_from_slice(&self.info.output_shape);
        let data = self
            .batch_bufs
            .get(OUTPUT)
            .map(|v| v[..(n * per).min(v.len())].to_vec())
            .unwrap_or_default();
        (loss, Tensor { shape, data })
    }
}

thread_local! {
    /// The pool while a kernel without a parallel loop runs on this thread: its matrix
    /// products may use the second lane then (see [`host_sgemm`]).
    static SERIAL_POOL: std::cell::Cell<*const Pool> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// The runtime's GEMM for kernels: the `gemm` crate, single-threaded (see [`gemm`] for the
/// measurements behind the choice). Inside a kernel's parallel loop each lane already has
/// a core; in a serial kernel a product big enough to pay for it is cut in two halves run
/// on both lanes ([`gemm::split`]), so threads never oversubscribe the cores.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn host_sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    let g = gemm::Sgemm {
        m,
        n,
        k,
        alpha,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        beta,
        c,
        rsc,
        csc,
    };
    if m == 0 || n == 0 {
        return; // an empty part of a product split between the lanes
    }
    let pool = SERIAL_POOL.with(|p| p.get());
    // SAFETY: a non-null pointer was set by `CpuExecutor::run` around this kernel call
    // and the pool outlives it.
    match (unsafe { pool.as_ref() }, gemm::split(m, n, k)) {
        (Some(pool), Some(cut)) if pool.lanes() > 1 => {
            let [lo, hi] = g.halves(cut);
            // SAFETY: the kernel passes pointers and strides describing matrices inside
            // its buffers, as the kernel IR's `Gemm` declares them; the halves write
            // disjoint blocks of C.
            pool.join(&|| unsafe { lo.run() }, &|| unsafe { hi.run() });
        }
        // SAFETY: as above.
        _ => unsafe { g.run() },
    }
}

/// The services the runtime gives kernels (`host_sgemm`), for running compiled kernels
/// outside an executor (the compiler's CPU backend tests).
pub const fn kernel_ctx() -> KernelCtx {
    KernelCtx {
        sgemm: host_sgemm,
        sgemm_windows: host_sgemm_windows,
    }
}

/// The runtime's implicit GEMM over windows for kernels (see [`windows`]): on both lanes
/// in a serial kernel when big enough, as [`host_sgemm`].
unsafe extern "C" fn host_sgemm_windows(g: *const nnc_kernels::abi::WindowsGemm) {
    let pool = SERIAL_POOL.with(|p| p.get());
    // SAFETY: the kernel passes a descriptor on its stack, filled from a `Gemm` whose
    // buffers and geometry the program's validation checked; a non-null pool pointer was
    // set by `CpuExecutor::run` around this kernel call and the pool outlives it.
    unsafe { windows::run(&*g, pool.as_ref()) }
}

#[derive(Clone, Copy)]
struct CtxPtr(*const KernelCtx);
// SAFETY: `KernelCtx` holds only function pointers and is never written while kernels run.
unsafe impl Sync for CtxPtr {}
unsafe impl Send for CtxPtr {}

impl CtxPtr {
    /// A method, so that closures capture the whole (`Sync`) wrapper.
    fn get(self) -> *const KernelCtx {
        self.0
    }
}

impl SendPtrs {
    fn get(&self) -> *const *mut f32 {
        self.0.as_ptr()
    }
}

/// Raw pointers shared by the two lanes of one kernel call.
struct SendPtrs(Vec<*mut f32>);
// SAFETY: the lanes write disjoint elements; the caller waits for both before moving on.
unsafe impl Sync for SendPtrs {}

impl Executor for CpuExecutor {
    fn backend(&self) -> &str {
        "cpu"
    }

    fn model_hash(&self) -> String {
        self.info.hash.clone()
    }

    fn input_shape(&self) -> Vec<usize> {
        self.info.input_shape.clone()
    }

    fn output_shape(&self) -> Vec<usize> {
        self.info.output_shape.clone()
    }

    fn state(&self) -> Result<Vec<StateTensor>, ExecError> {
        Ok(self
            .info
            .state
            .iter()
            .map(|(name, kind, init)| StateTensor {
                name: name.clone(),
                kind: *kind,
                tensor: Tensor {
                    shape: init.shape.clone(),
                    data: self.state[name].clone(),
                },
            })
            .collect())
    }

    fn set_state(&mut self, state: &[StateTensor]) -> Result<(), ExecError> {
        for s in state {
            let slot = self
                .state
                .get_mut(&s.name)
                .ok_or_else(|| ExecError::new(format!("unknown state tensor `{}`", s.name)))?;
            if slot.len() != s.tensor.data.len() {
                return Err(ExecError::new(format!(
                    "state `{}` has the wrong size",
                    s.name
                )));
            }
            slot.copy_from_slice(&s.tensor.data);
        }
        Ok(())
    }

    fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![(0, 0.0); self.train.kernels.len()]);
    }

    fn kernel_profile(&self) -> Vec<KernelTime> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        self.train
            .manifest
            .kernels
            .iter()
            .zip(p)
            .map(|(k, &(calls, seconds))| KernelTime {
                name: k.symbol.clone(),
                calls,
                seconds,
            })
            .collect()
    }

    /// Scans the parameters in place (the default would copy all state every step).
    fn first_non_finite_param(&self) -> Result<Option<NonFiniteParam>, ExecError> {
        for (name, kind, _) in &self.info.state {
            if *kind != StateKind::Param {
                continue;
            }
            let data = &self.state[name];
            // Large tensors are scanned by both lanes, half each (a scan runs at memory
            // speed, ~20 GB/s per core here: the MLP's 0.9 MB of weights cost ~45 µs a
            // step on one core).
            let bad = if data.len() >= 1 << 16 && self.pool.lanes() > 1 {
                let (lo, hi) = data.split_at(data.len() / 2);
                let flags = [AtomicBool::new(false), AtomicBool::new(false)];
                let scan = |part: &[f32], flag: &AtomicBool| {
                    flag.store(crate::tensor::any_non_finite(part), Ordering::Relaxed)
                };
                self.pool
                    .join(&|| scan(lo, &flags[0]), &|| scan(hi, &flags[1]));
                flags.iter().any(|f| f.load(Ordering::Relaxed))
            } else {
                crate::tensor::any_non_finite(data)
            };
            if !bad {
                continue;
            }
            if let Some((index, value)) = crate::tensor::first_non_finite(data) {
                return Ok(Some(NonFiniteParam {
                    name: name.clone(),
                    index,
                    value,
                }));
            }
        }
        Ok(None)
    }

    fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput, ExecError> {
        self.step(StepProgram::Train, x, y)
    }

    fn buffer_names(&self) -> Vec<String> {
        self.info.buffers.clone()
    }

    fn grad_step(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput, ExecError> {
        self.step(StepProgram::Grad, x, y)
    }

    fn gradients(&mut self) -> Option<&mut [f32]> {
        self.parallel.as_mut().map(|p| p.buffer.as_mut_slice())
    }

    fn grad_step_overlapped(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        dist: &dyn crate::dist::Collective,
        share: f32,
    ) -> Option<Result<(StepOutput, f64), crate::dist::ReduceError>> {
        use crate::dist::{Pending, ReduceError};
        let p = self.parallel.as_mut()?;
        // Only a collective that can start a reduction and return overlaps
        // (`NNC_OVERLAP=0` turns it off, to measure what it brings).
        if p.buckets.is_empty() || !dist.overlaps() || !overlap_enabled() {
            return None;
        }
        let base = p.buffer.as_mut_ptr();
        // Taken for the step (its kernels run on `self`) and put back after it.
        let buckets = std::mem::take(&mut p.buckets);
        let n = x.shape.first().copied().unwrap_or(0);
        if n == 0 {
            // No rows for this rank: gradients of zero, reduced in the same buckets and
            // order as the other ranks'.
            p.buffer.fill(0.0);
        }
        // SAFETY: a bucket is started once no kernel after its `ready` one touches it;
        // the buffer outlives the reductions, which complete before this function returns.
        let start = |b: &Bucket| unsafe { start_bucket(dist, base, b.offset, b.len, share) };
        let mut pending: Vec<Box<dyn Pending + '_>> = Vec::with_capacity(buckets.len());
        let mut next = 0;
        let mut failure = None;
        let ran = if n == 0 {
            Ok(())
        } else {
            self.run_with(StepProgram::Grad, x, y, &mut |k| {
                while next < buckets.len() && buckets[next].ready.is_some_and(|r| r <= k) {
                    match start(&buckets[next]) {
                        Ok(op) => pending.push(op),
                        Err(e) => {
                            failure = Some(e);
                            return Err(ExecError::new("cannot start a gradient reduction"));
                        }
                    }
                    next += 1;
                }
                // Let the transport progress the reductions in flight.
                for op in pending.iter_mut() {
                    let _ = op.test();
                }
                Ok(())
            })
        };
        let mut result = ran.map_err(|e| match failure.take() {
            Some(c) => ReduceError::Collective(c),
            None => ReduceError::Exec(e),
        });
        let waiting = std::time::Instant::now();
        if result.is_ok() {
            // The buckets no kernel writes, and those the last kernels finished.
            for b in &buckets[next..] {
                match start(b) {
                    Ok(op) => pending.push(op),
                    Err(e) => {
                        result = Err(ReduceError::Collective(e));
                        break;
                    }
                }
            }
        }
        // Every reduction completes (or the job is aborted) before the buffer is used.
        for op in pending {
            if let Err(e) = op.wait() {
                if result.is_ok() {
                    result = Err(ReduceError::Collective(e));
                }
            }
        }
        if let Some(p) = self.parallel.as_mut() {
            p.buckets = buckets;
        }
        let waited = waiting.elapsed().as_secs_f64();
        Some(result.map(|()| {
            if n == 0 {
                let none = StepOutput {
                    loss: 0.0,
                    output: None,
                };
                return (none, waited);
            }
            let (loss, output) = self.take_results(n);
            let out = StepOutput {
                loss,
                output: Some(output),
            };
            (out, waited)
        }))
    }

    fn apply_gradients(&mut self) -> Result<(), ExecError> {
        let none = Tensor::default();
        self.run(StepProgram::Apply, &none, &none)
    }

    fn eval_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<EvalOutput, ExecError> {
        let n = x.shape.first().copied().unwrap_or(0);
        self.run(StepProgram::Eval, x, y)?;
        let (loss, output) = self.take_results(n);
        Ok(EvalOutput { loss, output })
    }
}

/// The machine's single-precision GEMM peak as the runtime reaches it, in GFLOP/s: the
/// best of a few 512×512×512 products, each cut in two halves run on the pool's lanes
/// (as a serial kernel's large product is). What `nnc bench --profile` measures each
/// kernel's GFLOP/s against. Takes about 0.1 s.
pub fn gemm_peak_gflops(threads: usize) -> f64 {
    const S: usize = 512;
    let a = vec![1.0f32; S * S];
    let b = vec![0.5f32; S * S];
    let mut c = vec![0.0f32; S * S];
    let pool = Pool::new(threads.clamp(1, 2));
    let g = gemm::Sgemm {
        m: S,
        n: S,
        k: S,
        alpha: 1.0,
        a: a.as_ptr(),
        rsa: S as isize,
        csa: 1,
        b: b.as_ptr(),
        rsb: S as isize,
        csb: 1,
        beta: 0.0,
        c: c.as_mut_ptr(),
        rsc: S as isize,
        csc: 1,
    };
    let [lo, hi] = g.halves(gemm::Split::M(S / 2));
    let mut best = f64::INFINITY;
    for _ in 0..6 {
        let t = std::time::Instant::now();
        // SAFETY: the three matrices are live S×S allocations; the halves write disjoint
        // rows of C and only read A and B.
        pool.join(&|| unsafe { lo.run() }, &|| unsafe { hi.run() });
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    2.0 * (S * S * S) as f64 / best / 1e9
}

/// Whether data-parallel steps overlap reductions with the backward pass (`NNC_OVERLAP=0`
/// turns it off).
fn overlap_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NNC_OVERLAP").map_or(true, |v| v != "0"))
}

/// Scales the `len` gradients at `offset` of the buffer at `base` by `share` and starts
/// their reduction.
///
/// # Safety
/// The range must lie in a live buffer that nothing else touches until the returned
/// reduction completes.
unsafe fn start_bucket<'d>(
    dist: &'d dyn crate::dist::Collective,
    base: *mut f32,
    offset: usize,
    len: usize,
    share: f32,
) -> Result<Box<dyn crate::dist::Pending + 'd>, crate::dist::CollectiveError> {
    // SAFETY: the caller's contract.
    let values = unsafe { std::slice::from_raw_parts_mut(base.add(offset), len) };
    for v in values.iter_mut() {
        *v *= share;
    }
    // SAFETY: the caller's contract.
    unsafe { dist.start_all_reduce(values.as_mut_ptr(), len) }.unwrap_or_else(|| {
        Err(crate::dist::CollectiveError {
            message: "the collective cannot start a reduction".into(),
        })
    })
}

/// Grows `v` to `len` zeros, or says how much memory could not be had (an error, not an
/// abort in the allocator).
fn grow(v: &mut Vec<f32>, len: usize, what: &str, batch: usize) -> Result<(), ExecError> {
    v.try_reserve_exact(len.saturating_sub(v.len()))
        .map_err(|_| {
            ExecError::new(format!(
                "cannot allocate {:.1} MiB for {what} at batch {batch}: out of memory (lower the batch size)",
                len as f64 * 4.0 / (1 << 20) as f64
            ))
        })?;
    v.resize(len, 0.0);
    Ok(())
}
