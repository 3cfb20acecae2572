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
//! Invariant: the host waits for the stream only when it reads results back (the loss and
//! output after each step, state on request), so a step is one burst of launches.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaSlice, CudaStream, DevicePtr};
use nnc_kernels::gpu::launch_dims;
use nnc_kernels::ir::Program;

use super::Device;
use crate::cpu::{binding, check_bindings, Binding, ModelInfo, INPUT, LABELS, LOSS, OUTPUT};
use crate::executor::{
    EvalOutput, ExecError, Executor, NonFiniteParam, StateKind, StateTensor, StepOutput,
};
use crate::tensor::Tensor;

/// A step program with its PTX (every kernel an `.entry` named like the kernel).
pub struct GpuProgram {
    pub program: Program,
    pub ptx: String,
}

/// A program whose module is loaded on the device.
struct LoadedProgram {
    program: Program,
    module: sys::CUmodule,
    functions: Vec<sys::CUfunction>,
    /// The context the module lives in (bound again to unload it).
    context: Arc<CudaContext>,
}

/// The executor for `--target cuda`.
pub struct CudaExecutor {
    device: Device,
    stream: Arc<CudaStream>,
    train: LoadedProgram,
    eval: LoadedProgram,
    info: ModelInfo,
    state: HashMap<String, CudaSlice<f32>>,
    batch_bufs: HashMap<&'static str, CudaSlice<f32>>,
    arena: Option<CudaSlice<f32>>,
}

fn driver_error(what: &str) -> impl Fn(result::DriverError) -> ExecError + '_ {
    move |e| ExecError::new(format!("{what}: {e}"))
}

fn load_program(device: &Device, gp: GpuProgram) -> Result<LoadedProgram, ExecError> {
    gp.program
        .validate()
        .map_err(|e| ExecError::new(format!("invalid program `{}`: {e}", gp.program.name)))?;
    let ptx = CString::new(gp.ptx).map_err(|_| ExecError::new("the PTX text contains a NUL"))?;
    device
        .context
        .bind_to_thread()
        .map_err(driver_error("cannot use the GPU"))?;
    // SAFETY: `ptx` is a NUL-terminated PTX text that outlives the call.
    let module = unsafe { result::module::load_data(ptx.as_ptr().cast::<c_void>()) }.map_err(
        driver_error(&format!(
            "the GPU driver rejected the PTX of `{}`",
            gp.program.name
        )),
    )?;
    let mut functions = Vec::with_capacity(gp.program.kernels.len());
    for k in &gp.program.kernels {
        let name = CString::new(k.name.clone())
            .map_err(|_| ExecError::new(format!("kernel name `{}` contains a NUL", k.name)))?;
        // SAFETY: `module` was just loaded and is unloaded only when the program drops.
        let f = unsafe { result::module::get_function(module, name) }.map_err(driver_error(
            &format!("the PTX of `{}` lacks kernel `{}`", gp.program.name, k.name),
        ))?;
        functions.push(f);
    }
    Ok(LoadedProgram {
        program: gp.program,
        module,
        functions,
        context: Arc::clone(&device.context),
    })
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
        let stream = device.context.default_stream();
        let train = load_program(&device, train)?;
        let eval = load_program(&device, eval)?;
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
            info,
            state,
            batch_bufs: HashMap::new(),
            arena: None,
        })
    }

    /// The GPU's name, as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.device.name
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
    fn run(&mut self, train: bool, x: &Tensor, y: &Tensor) -> Result<(), ExecError> {
        let n = x.shape.first().copied().unwrap_or(0);
        self.device
            .context
            .bind_to_thread()
            .map_err(driver_error("cannot use the GPU"))?;
        let (arena_len, buffers) = {
            let prog = if train { &self.train } else { &self.eval };
            (prog.program.arena.resolve(n), prog.program.buffers.clone())
        };
        if self.arena.as_ref().is_none_or(|a| a.len() < arena_len) {
            self.arena = None; // free the old arena before allocating the larger one
            self.arena = Some(
                self.stream
                    .alloc_zeros::<f32>(arena_len.max(1))
                    .map_err(driver_error("cannot allocate the GPU arena"))?,
            );
        }
        // Upload the batch.
        for (key, t) in [(INPUT, x), (LABELS, y)] {
            if buffers.iter().any(|b| b.name == key) {
                self.batch_buf(key, t.data.len())?;
                let dst = self.batch_bufs.get_mut(key).expect("allocated above");
                let mut view = dst.slice_mut(0..t.data.len());
                self.stream
                    .memcpy_htod(&t.data, &mut view)
                    .map_err(driver_error("cannot copy the batch to the GPU"))?;
            }
        }
        for key in [LOSS, OUTPUT] {
            if let Some(b) = buffers.iter().find(|b| b.name == key) {
                self.batch_buf(key, b.len.resolve(n))?;
            }
        }
        // Resolve every buffer's device address.
        let arena = self.arena.as_ref().expect("allocated above");
        let arena_base = address(arena, &self.stream);
        let mut ptrs: Vec<u64> = Vec::with_capacity(buffers.len());
        for b in &buffers {
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
                    // step uploaded.
                    let have = match key {
                        INPUT => x.data.len(),
                        LABELS => y.data.len(),
                        _ => s.len(),
                    };
                    (address(s, &self.stream), have)
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
        let prog = if train { &self.train } else { &self.eval };
        let n64 = n as i64;
        for (k, &f) in prog.program.kernels.iter().zip(&prog.functions) {
            let (grid, threads) = launch_dims(k, n).map_err(ExecError::new)?;
            if grid.contains(&0) {
                continue; // nothing to do for this batch
            }
            let mut args: Vec<u64> = k.params.iter().map(|b| ptrs[b.0 as usize]).collect();
            args.push(n64 as u64);
            let mut params: Vec<*mut c_void> = args
                .iter_mut()
                .map(|a| (a as *mut u64).cast::<c_void>())
                .collect();
            // SAFETY: `f` belongs to the module loaded for this program; its parameters are
            // one global pointer per buffer in `params` order and an i64 (the renderer's
            // ABI), and every pointer addresses a live allocation at least as long as the
            // program declares for batch `n` (checked above).
            unsafe {
                result::launch_kernel(
                    f,
                    (grid[0], grid[1], grid[2]),
                    (threads, 1, 1),
                    0,
                    self.stream.cu_stream(),
                    &mut params,
                )
            }
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

impl Drop for LoadedProgram {
    fn drop(&mut self) {
        // `cuModuleUnload` acts on the calling thread's current context.
        if self.context.bind_to_thread().is_ok() {
            // SAFETY: the module was loaded by `load_program`; the executor waited for its
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
        let n = x.shape.first().copied().unwrap_or(0);
        self.run(true, x, y)?;
        let (loss, output) = self.take_results(n)?;
        Ok(StepOutput {
            loss,
            output: Some(output),
        })
    }

    fn eval_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<EvalOutput, ExecError> {
        let n = x.shape.first().copied().unwrap_or(0);
        self.run(false, x, y)?;
        let (loss, output) = self.take_results(n)?;
        Ok(EvalOutput { loss, output })
    }
}
