//! The `cuda` executor: runs a step's kernel IR programs on an NVIDIA GPU from the PTX
//! the compiler rendered for them.
//!
//! Decisions:
//! - one CUDA module per step program (train, eval), loaded from PTX text by the driver
//!   (`cuModuleLoadData`, which JIT-compiles for the device), and one stream;
//! - every named state tensor lives in its own device allocation for the executor's
//!   life and is updated in place by the train program; the batch (`x`, `y`) and the
//!   results (`loss`, `output`) live in device buffers grown on demand; temporaries live
//!   in one device arena sized for the batch, at the offsets the memory planner chose;
//! - every kernel is a GPU kernel of the compiler's GPU schedule, launched on the grid
//!   and block size [`nnc_kernels::gpu::launch_dims`] evaluates for the batch (a grid
//!   with no blocks is skipped), with its buffers' device pointers in `Kernel::params`
//!   order followed by `n: i64`, the ABI the PTX renderer writes (shared memory is
//!   static in the PTX);
//! - launches go through the driver's raw `cuLaunchKernel` with pointers resolved once per
//!   step (cudarc's event tracking is switched off: everything runs on one stream, so
//!   launches, copies and frees are ordered).
//!
//! - a whole epoch ([`Executor::train_epoch`]) runs with the training split resident on
//!   the GPU (uploaded once, when it fits in free device memory with a margin): the host
//!   uploads only the epoch's shuffled row order; each step gathers its batch on the
//!   device ([`super::data`]), runs the train program and records its loss and output into
//!   epoch buffers, which the host reads once at the end. A full-size step's launches
//!   depend on nothing but device memory, so they are captured once as a CUDA graph and
//!   replayed (recaptured when a buffer moved); the last, smaller batch is launched
//!   directly. `NNC_CUDA_GRAPHS=0` launches every step directly (for diagnosis).
//!   Evaluation ([`Executor::eval_all`]) keeps the evaluated split resident the same way
//!   (its own slot), launching its steps directly. That path lives in [`resident`].
//!
//! Invariant: the host waits for the stream only when it reads results back (the loss and
//! output after each step or each epoch, state on request), so a step is one burst of
//! launches.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaGraph, CudaSlice, CudaStream, DevicePtr};
use nnc_kernels::gpu::launch_dims;
use nnc_kernels::ir::{BufferKind, Program};

use super::data::{data_blocks, DATA_KERNELS, DATA_PTX, DATA_THREADS};
use super::Device;
use crate::artifact::{
    binding, check_bindings, Binding, ModelInfo, StepProgram, INPUT, LABELS, LOSS, OUTPUT,
};
use crate::executor::{
    EpochRun, EvalOutput, ExecError, Executor, NonFiniteParam, StateKind, StateTensor, StepOutput,
    GRAD_EXTRA,
};
use crate::tensor::Tensor;

mod resident;

/// A step program with its PTX (every kernel an `.entry` named like the kernel).
pub struct GpuProgram {
    pub program: Program,
    pub ptx: String,
}

/// A CUDA module loaded from PTX, with the functions looked up in it; unloaded on drop.
struct LoadedModule {
    module: sys::CUmodule,
    functions: Vec<sys::CUfunction>,
    /// The context the module lives in (bound again to unload it).
    context: Arc<CudaContext>,
}

/// A program whose module is loaded on the device.
struct LoadedProgram {
    program: Program,
    module: LoadedModule,
}

/// Which resident split: the one trained on, the one evaluated.
const TRAIN: usize = 0;
const EVAL: usize = 1;

/// A split resident on the device for whole epochs (or evaluations), and their buffers.
struct Resident {
    /// `(address, length, sampled content hash)` of the host tensors uploaded, to know
    /// the split is the same (a new split at a freed one's address differs in content).
    key: [(usize, usize, u64); 2],
    x: CudaSlice<f32>,
    y: CudaSlice<f32>,
    /// The epoch's row order (`u32`), the step counter, each step's loss, every output.
    order: CudaSlice<u32>,
    cursor: CudaSlice<u64>,
    losses: CudaSlice<f32>,
    outputs: CudaSlice<f32>,
    /// A full-size step captured as a graph, with the launch arguments it was captured
    /// with (a moved buffer means a new capture).
    graph: Option<(Vec<u64>, CudaGraph)>,
}

/// The data-parallel halves of the training step and the one device buffer of gradients
/// between them (each at its offset, then [`GRAD_EXTRA`] spare values).
struct DeviceParallel {
    grad: LoadedProgram,
    apply: LoadedProgram,
    grads: CudaSlice<f32>,
    at: HashMap<String, usize>,
}

/// The executor for `--target cuda`.
pub struct CudaExecutor {
    device: Device,
    stream: Arc<CudaStream>,
    train: LoadedProgram,
    eval: LoadedProgram,
    parallel: Option<DeviceParallel>,
    info: ModelInfo,
    state: HashMap<String, CudaSlice<f32>>,
    batch_bufs: HashMap<&'static str, CudaSlice<f32>>,
    arena: Option<CudaSlice<f32>>,
    /// `nnc_gather_rows`, `nnc_record_step`, `nnc_advance`.
    data: LoadedModule,
    /// The training split ([`TRAIN`]) and the evaluated split ([`EVAL`]) on the device.
    resident: [Option<Resident>; 2],
    /// Whether full-size steps of an epoch are replayed as a CUDA graph.
    graphs: bool,
    /// Whether the note that the split is not resident was printed.
    told_not_resident: bool,
}

fn driver_error(what: &str) -> impl Fn(result::DriverError) -> ExecError + '_ {
    move |e| ExecError::new(format!("{what}: {e}"))
}

fn driver_error_owned(what: String) -> impl Fn(result::DriverError) -> ExecError {
    move |e| ExecError::new(format!("{what}: {e}"))
}

/// `(address, length, hash of every 61st value and the last)` of a host tensor: cheap
/// enough per epoch, and different for a different split that reuses the address.
fn fingerprint(t: &Tensor) -> (usize, usize, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let last = t.data.last().into_iter();
    for v in t.data.iter().step_by(61).chain(last) {
        h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3);
    }
    (t.data.as_ptr() as usize, t.data.len(), h)
}

/// The device address of a slice of any element type.
fn device_address<T>(slice: &CudaSlice<T>, stream: &CudaStream) -> sys::CUdeviceptr {
    let (ptr, _sync) = slice.device_ptr(stream);
    ptr
}

/// Loads `ptx` (named `what` in errors) and looks up `names`.
fn load_module(
    device: &Device,
    what: &str,
    ptx: &str,
    names: &[&str],
) -> Result<LoadedModule, ExecError> {
    let ptx = CString::new(ptx).map_err(|_| ExecError::new("the PTX text contains a NUL"))?;
    device
        .context
        .bind_to_thread()
        .map_err(driver_error("cannot use the GPU"))?;
    // SAFETY: `ptx` is a NUL-terminated PTX text that outlives the call.
    let module = unsafe { result::module::load_data(ptx.as_ptr().cast::<c_void>()) }.map_err(
        driver_error(&format!("the GPU driver rejected the PTX of `{what}`")),
    )?;
    let mut loaded = LoadedModule {
        module,
        functions: Vec::with_capacity(names.len()),
        context: Arc::clone(&device.context),
    };
    for name in names {
        let c = CString::new(*name)
            .map_err(|_| ExecError::new(format!("kernel name `{name}` contains a NUL")))?;
        // SAFETY: the module was just loaded and is unloaded only when `loaded` drops.
        let f = unsafe { result::module::get_function(module, c) }.map_err(driver_error(
            &format!("the PTX of `{what}` lacks kernel `{name}`"),
        ))?;
        loaded.functions.push(f);
    }
    Ok(loaded)
}

fn load_program(device: &Device, gp: GpuProgram) -> Result<LoadedProgram, ExecError> {
    gp.program
        .validate()
        .map_err(|e| ExecError::new(format!("invalid program `{}`: {e}", gp.program.name)))?;
    let names: Vec<&str> = gp.program.kernels.iter().map(|k| k.name.as_str()).collect();
    let module = load_module(device, &gp.program.name, &gp.ptx, &names)?;
    Ok(LoadedProgram {
        program: gp.program,
        module,
    })
}

/// Launches `f` on `(grid, threads)` with `args` (each a `u64`: a device address or a
/// number) on `stream`.
///
/// # Safety
/// `f` must take exactly `args.len()` 8-byte parameters, and every address among them
/// must stay valid until the kernel has run.
unsafe fn launch(
    f: sys::CUfunction,
    grid: [u32; 3],
    threads: u32,
    args: &mut [u64],
    stream: &CudaStream,
) -> Result<(), result::DriverError> {
    let mut params: Vec<*mut c_void> = args
        .iter_mut()
        .map(|a| (a as *mut u64).cast::<c_void>())
        .collect();
    // SAFETY: the caller's contract; `params` points at `args`, alive for the call.
    unsafe {
        result::launch_kernel(
            f,
            (grid[0], grid[1], grid[2]),
            (threads, 1, 1),
            0,
            stream.cu_stream(),
            &mut params,
        )
    }
}

/// `slice`'s device address.
fn address(slice: &CudaSlice<f32>, stream: &CudaStream) -> sys::CUdeviceptr {
    let (ptr, _sync) = slice.device_ptr(stream);
    ptr
}

impl CudaExecutor {
    /// Loads both programs on `device` and uploads the initial state of `info`.
    pub fn new(
        device: Device,
        train: GpuProgram,
        eval: GpuProgram,
        info: ModelInfo,
    ) -> Result<CudaExecutor, ExecError> {
        // A stream of our own: graphs cannot be captured on the legacy default stream.
        let stream = device
            .context
            .new_stream()
            .map_err(driver_error("cannot create a GPU stream"))?;
        let train = load_program(&device, train)?;
        let eval = load_program(&device, eval)?;
        let data = load_module(&device, "data kernels", DATA_PTX, &DATA_KERNELS)?;
        for prog in [&train, &eval] {
            check_bindings(&prog.program.buffers, &info)?;
        }
        let mut state = HashMap::new();
        for (name, _, t) in &info.state {
            let what = format!("cannot upload `{name}` to the GPU");
            let upload = driver_error(&what);
            // At least one element: the driver refuses empty allocations.
            let mut slice = stream
                .alloc_zeros::<f32>(t.data.len().max(1))
                .map_err(&upload)?;
            if !t.data.is_empty() {
                let mut view = slice.slice_mut(0..t.data.len());
                stream.memcpy_htod(&t.data, &mut view).map_err(&upload)?;
            }
            state.insert(name.clone(), slice);
        }
        Ok(CudaExecutor {
            device,
            stream,
            train,
            eval,
            parallel: None,
            info,
            state,
            batch_bufs: HashMap::new(),
            arena: None,
            data,
            resident: [None, None],
            graphs: std::env::var("NNC_CUDA_GRAPHS").map_or(true, |v| v != "0"),
            told_not_resident: false,
        })
    }

    /// Adds the data-parallel halves of the training step (gradients as the info lists
    /// them) and their gradient buffer.
    pub fn with_parallel(
        mut self,
        grad: GpuProgram,
        apply: GpuProgram,
    ) -> Result<CudaExecutor, ExecError> {
        let grad = load_program(&self.device, grad)?;
        let apply = load_program(&self.device, apply)?;
        for prog in [&grad, &apply] {
            check_bindings(&prog.program.buffers, &self.info)?;
        }
        let (at, len) = self.info.grad_layout();
        let grads = self
            .stream
            .alloc_zeros::<f32>(len + GRAD_EXTRA)
            .map_err(driver_error("cannot allocate the GPU gradient buffer"))?;
        self.parallel = Some(DeviceParallel {
            grad,
            apply,
            grads,
            at,
        });
        Ok(self)
    }

    fn program(&self, which: StepProgram) -> Result<&LoadedProgram, ExecError> {
        let parallel = || {
            self.parallel.as_ref().ok_or_else(|| {
                ExecError::new("the executor was not built for data-parallel training")
            })
        };
        Ok(match which {
            StepProgram::Train => &self.train,
            StepProgram::Eval => &self.eval,
            StepProgram::Grad => &parallel()?.grad,
            StepProgram::Apply => &parallel()?.apply,
        })
    }

    /// A device buffer of at least `len` values for `key`, reallocated when too small.
    fn batch_buf(&mut self, key: &'static str, len: usize) -> Result<(), ExecError> {
        let fits = self.batch_bufs.get(key).is_some_and(|b| b.len() >= len);
        if !fits {
            let slice = self
                .stream
                .alloc_zeros::<f32>(len.max(1))
                .map_err(driver_error("cannot allocate GPU memory"))?;
            self.batch_bufs.insert(key, slice);
        }
        Ok(())
    }

    /// Runs one program for the batch `x`, `y`; results stay on the device.
    fn run(&mut self, which: StepProgram, x: &Tensor, y: &Tensor) -> Result<(), ExecError> {
        let n = x.shape.first().copied().unwrap_or(0);
        self.prepare(which, n, x.data.len(), y.data.len())?;
        // Upload the batch (what the program reads: a buffer another program left may be
        // too small).
        let prog = self.program(which)?;
        let declared: Vec<bool> = [INPUT, LABELS]
            .iter()
            .map(|key| prog.program.buffers.iter().any(|b| b.name == *key))
            .collect();
        for ((key, t), declared) in [(INPUT, x), (LABELS, y)].into_iter().zip(declared) {
            if !declared {
                continue;
            }
            if let Some(dst) = self.batch_bufs.get_mut(key) {
                let mut view = dst.slice_mut(0..t.data.len());
                self.stream
                    .memcpy_htod(&t.data, &mut view)
                    .map_err(driver_error("cannot copy the batch to the GPU"))?;
            }
        }
        let ptrs = self.bind(which, n, x.data.len(), y.data.len())?;
        self.launch_program(which, n, &ptrs)
    }

    /// Grows the arena and the batch buffers (`x_len`, `y_len` values of input and
    /// labels) for a batch of `n` rows of one program.
    fn prepare(
        &mut self,
        which: StepProgram,
        n: usize,
        x_len: usize,
        y_len: usize,
    ) -> Result<(), ExecError> {
        self.device
            .context
            .bind_to_thread()
            .map_err(driver_error("cannot use the GPU"))?;
        // What the program needs, without copying its declarations on every step.
        let (arena_len, needs) = {
            let prog = self.program(which)?;
            let find = |key: &str| prog.program.buffers.iter().find(|b| b.name == key);
            let needs: Vec<(&'static str, usize)> = [
                (INPUT, find(INPUT).map(|_| x_len)),
                (LABELS, find(LABELS).map(|_| y_len)),
                (LOSS, find(LOSS).map(|b| b.len.resolve(n))),
                (OUTPUT, find(OUTPUT).map(|b| b.len.resolve(n))),
            ]
            .into_iter()
            .filter_map(|(key, len)| Some((key, len?)))
            .collect();
            (prog.program.arena.resolve(n), needs)
        };
        if self.arena.as_ref().is_none_or(|a| a.len() < arena_len) {
            self.arena = None; // free the old arena before allocating the larger one
            self.arena = Some(
                self.stream
                    .alloc_zeros::<f32>(arena_len.max(1))
                    .map_err(driver_error("cannot allocate the GPU arena"))?,
            );
        }
        for (key, len) in needs {
            self.batch_buf(key, len)?;
        }
        Ok(())
    }

    /// Every buffer's device address for a batch of `n` rows of one program, after
    /// [`CudaExecutor::prepare`] (`x_len`, `y_len`: the values of input and labels the
    /// step reads).
    fn bind(
        &self,
        which: StepProgram,
        n: usize,
        x_len: usize,
        y_len: usize,
    ) -> Result<Vec<u64>, ExecError> {
        let prog = self.program(which)?;
        let grads = self
            .parallel
            .as_ref()
            .filter(|_| matches!(which, StepProgram::Grad | StepProgram::Apply));
        let buffers = &prog.program.buffers;
        let arena = self
            .arena
            .as_ref()
            .ok_or_else(|| ExecError::new("the GPU arena is not allocated"))?;
        let arena_base = address(arena, &self.stream);
        let mut ptrs: Vec<u64> = Vec::with_capacity(buffers.len());
        for b in buffers {
            let need = b.len.resolve(n);
            let (base, have) = match binding(b, n) {
                Binding::Arena(at) => {
                    if at + need > arena.len() {
                        return Err(ExecError::new(format!(
                            "temporary `{}` overruns the arena",
                            b.name
                        )));
                    }
                    (arena_base + 4 * at as u64, need)
                }
                Binding::Batch(key) => {
                    let s = self.batch_bufs.get(key).ok_or_else(|| {
                        ExecError::new(format!("`{key}` was not given to the step"))
                    })?;
                    // The batch buffers only grow: what counts for `x` and `y` is what this
                    // step put there.
                    let have = match key {
                        INPUT => x_len,
                        LABELS => y_len,
                        _ => s.len(),
                    };
                    (address(s, &self.stream), have)
                }
                Binding::State(name) if grads.is_some_and(|p| p.at.contains_key(name)) => {
                    let p = grads.ok_or_else(|| ExecError::new("no gradient buffer"))?;
                    let offset = p.at[name];
                    (
                        address(&p.grads, &self.stream) + 4 * offset as u64,
                        p.grads.len().saturating_sub(offset),
                    )
                }
                Binding::State(name) => {
                    let s = self
                        .state
                        .get(name)
                        .ok_or_else(|| ExecError::new(format!("no state tensor `{name}`")))?;
                    (address(s, &self.stream), s.len())
                }
            };
            if have < need {
                return Err(ExecError::new(format!(
                    "`{}` holds {have} values, the step needs {need}",
                    b.name
                )));
            }
            ptrs.push(base);
        }
        Ok(ptrs)
    }

    /// Launches every kernel of one program for a batch of `n` rows, with the buffer
    /// addresses [`CudaExecutor::bind`] resolved.
    fn launch_program(&self, which: StepProgram, n: usize, ptrs: &[u64]) -> Result<(), ExecError> {
        let prog = self.program(which)?;
        for (k, &f) in prog.program.kernels.iter().zip(&prog.module.functions) {
            let (grid, threads) = launch_dims(k, n).map_err(ExecError::new)?;
            if grid.contains(&0) {
                continue; // nothing to do for this batch
            }
            let mut args: Vec<u64> = k.params.iter().map(|b| ptrs[b.0 as usize]).collect();
            args.push(n as u64);
            // SAFETY: `f` belongs to the module loaded for this program; its parameters are
            // one global pointer per buffer in `params` order and an i64 (the renderer's
            // ABI), and every pointer addresses a live allocation at least as long as the
            // program declares for batch `n` (checked by `bind`).
            unsafe { launch(f, grid, threads, &mut args, &self.stream) }
                .map_err(driver_error(&format!("launching kernel `{}`", k.name)))?;
        }
        Ok(())
    }

    /// Copies `len` values of the batch buffer `key` back to the host.
    fn download(&self, key: &str, len: usize) -> Result<Vec<f32>, ExecError> {
        let Some(s) = self.batch_bufs.get(key) else {
            return Ok(Vec::new());
        };
        let len = len.min(s.len());
        let mut out = vec![0.0f32; len];
        self.stream
            .memcpy_dtoh(&s.slice(0..len), &mut out)
            .map_err(driver_error(&format!("cannot read `{key}` from the GPU")))?;
        Ok(out)
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
        let (loss, output) = self.take_results(n)?;
        Ok(StepOutput {
            loss,
            output: Some(output),
        })
    }

    fn take_results(&self, n: usize) -> Result<(f32, Tensor), ExecError> {
        let per = self.info.output_shape.iter().product::<usize>();
        let loss = self.download(LOSS, 1)?;
        let data = self.download(OUTPUT, n * per)?;
        // The copies may still be in flight: nothing is read before the stream is done.
        self.stream
            .synchronize()
            .map_err(driver_error("the GPU step failed"))?;
        let loss = loss.first().copied().unwrap_or(f32::NAN);
        let mut shape = vec![n];
        shape.extend_from_slice(&self.info.output_shape);
        Ok((loss, Tensor { shape, data }))
    }

    fn read_state(&self, name: &str) -> Result<Vec<f32>, ExecError> {
        let s = &self.state[name];
        // The logical length (an empty tensor has a one-element allocation).
        let len = self
            .info
            .state
            .iter()
            .find(|(n, ..)| n == name)
            .map_or(s.len(), |(_, _, t)| t.data.len());
        let mut out = vec![0.0f32; len];
        if len == 0 {
            return Ok(out);
        }
        self.stream
            .memcpy_dtoh(&s.slice(0..len), &mut out)
            .map_err(driver_error(&format!("cannot read `{name}` from the GPU")))?;
        self.stream
            .synchronize()
            .map_err(driver_error(&format!("cannot read `{name}` from the GPU")))?;
        Ok(out)
    }
}

impl Drop for LoadedModule {
    fn drop(&mut self) {
        // `cuModuleUnload` acts on the calling thread's current context.
        if self.context.bind_to_thread().is_ok() {
            // SAFETY: the module was loaded by `load_module`; the executor waited for its
            // kernels before dropping (`CudaExecutor::drop`). An error here (a lost
            // context) leaves nothing to free.
            let _ = unsafe { result::module::unload(self.module) };
        }
    }
}

impl Drop for CudaExecutor {
    fn drop(&mut self) {
        // Kernels still running (after a failed step) must finish before their modules
        // and buffers go.
        let _ = self.device.context.bind_to_thread();
        let _ = self.stream.synchronize();
        // Graphs refer to the modules' kernels: they go first (fields drop in order, the
        // modules before `resident`).
        self.resident = [None, None];
    }
}

impl Executor for CudaExecutor {
    fn backend(&self) -> &str {
        "cuda"
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
        self.info
            .state
            .iter()
            .map(|(name, kind, init)| {
                Ok(StateTensor {
                    name: name.clone(),
                    kind: *kind,
                    tensor: Tensor {
                        shape: init.shape.clone(),
                        data: self.read_state(name)?,
                    },
                })
            })
            .collect()
    }

    fn set_state(&mut self, state: &[StateTensor]) -> Result<(), ExecError> {
        for s in state {
            let slot = self
                .state
                .get_mut(&s.name)
                .ok_or_else(|| ExecError::new(format!("unknown state tensor `{}`", s.name)))?;
            let len = s.tensor.data.len();
            if slot.len() != len.max(1) {
                return Err(ExecError::new(format!(
                    "state `{}` has the wrong size",
                    s.name
                )));
            }
            if len == 0 {
                continue;
            }
            self.stream
                .memcpy_htod(&s.tensor.data, &mut slot.slice_mut(0..len))
                .map_err(driver_error(&format!(
                    "cannot copy `{}` to the GPU",
                    s.name
                )))?;
        }
        self.stream
            .synchronize()
            .map_err(driver_error("cannot copy state to the GPU"))
    }

    /// Copies only the parameters back (the default copies all state).
    fn first_non_finite_param(&self) -> Result<Option<NonFiniteParam>, ExecError> {
        for (name, kind, _) in &self.info.state {
            if *kind != StateKind::Param {
                continue;
            }
            if let Some((index, value)) = crate::tensor::first_non_finite(&self.read_state(name)?) {
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

    /// On the device: the gradients never leave it. The spare values carry `extra`,
    /// divided by the weight the reduction multiplies everything with.
    fn reduce_gradients(
        &mut self,
        dist: &dyn crate::dist::Collective,
        share: f32,
        extra: [f32; GRAD_EXTRA],
    ) -> Result<[f32; GRAD_EXTRA], crate::dist::ReduceError> {
        use crate::dist::ReduceError;
        let device = dist.device().ok_or_else(|| {
            ReduceError::Exec(ExecError::new(format!(
                "`--target cuda` reduces gradients on the GPU: use `--distributed nccl`, not `{}`",
                dist.name()
            )))
        })?;
        let p = self
            .parallel
            .as_mut()
            .ok_or_else(|| ReduceError::Exec(crate::executor::not_parallel()))?;
        let g = p.grads.len() - GRAD_EXTRA;
        let failed = |what: &'static str| move |e| ReduceError::Exec(driver_error(what)(e));
        let weight = if share > 0.0 {
            share
        } else {
            // No rows: gradients of zero, and the spare values as they are.
            self.stream
                .memset_zeros(&mut p.grads)
                .map_err(failed("cannot clear the GPU gradients"))?;
            1.0
        };
        let tail: Vec<f32> = extra.iter().map(|v| v / weight).collect();
        self.stream
            .memcpy_htod(&tail, &mut p.grads.slice_mut(g..))
            .map_err(failed("cannot write to the GPU gradient buffer"))?;
        device
            .all_reduce_weighted(&mut p.grads, &self.stream, weight)
            .map_err(ReduceError::Collective)?;
        let mut out = [0.0f32; GRAD_EXTRA];
        self.stream
            .memcpy_dtoh(&p.grads.slice(g..), &mut out)
            .map_err(failed("cannot read the GPU gradient buffer"))?;
        self.stream
            .synchronize()
            .map_err(failed("the gradient reduction failed"))?;
        Ok(out)
    }

    fn apply_gradients(&mut self) -> Result<(), ExecError> {
        let none = Tensor::default();
        self.run(StepProgram::Apply, &none, &none)
    }

    fn eval_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<EvalOutput, ExecError> {
        let n = x.shape.first().copied().unwrap_or(0);
        self.run(StepProgram::Eval, x, y)?;
        let (loss, output) = self.take_results(n)?;
        Ok(EvalOutput { loss, output })
    }

    /// Whole epochs with the split resident on the GPU; `None` (with a note on stderr,
    /// once) when it does not fit, and the loop then steps batch by batch.
    fn train_epoch(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        order: &[usize],
        batch: usize,
    ) -> Option<Result<EpochRun, ExecError>> {
        match self.resident_epoch(TRAIN, x, y, order, batch) {
            Ok(Some(run)) => Some(Ok(run)),
            Ok(None) => {
                if !self.told_not_resident {
                    self.told_not_resident = true;
                    eprintln!(
                        "note: the training split does not fit in free GPU memory; \
                         uploading each batch instead"
                    );
                }
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// Evaluations with the split resident on the GPU (uploaded once), results read once.
    fn eval_all(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        batch: usize,
    ) -> Option<Result<EpochRun, ExecError>> {
        let order: Vec<usize> = (0..x.rows()).collect();
        self.resident_epoch(EVAL, x, y, &order, batch).transpose()
    }
}
