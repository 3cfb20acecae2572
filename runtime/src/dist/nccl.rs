//! [`Collective`] over NCCL (feature `nccl`): one process per GPU, started by the
//! cluster's launcher (`mpirun`, `srun`, `torchrun`-style environments), gradients
//! reduced where they are, in GPU memory.
//!
//! - Rank, group size and the GPU on the node come from the launcher's environment
//!   (`OMPI_COMM_WORLD_*`, `PMI_*`, `SLURM_*`, or `RANK`/`WORLD_SIZE`/`LOCAL_RANK`).
//! - Rank 0 creates NCCL's unique id and writes it (atomically) into a rendezvous file
//!   the other ranks wait for: `$NNC_RENDEZVOUS/nccl-<job>.id`, the folder defaulting to
//!   the system's temporary folder (fine on one node; on several, point it at a shared
//!   folder), `<job>` from the launcher (`PMIX_NAMESPACE`, `SLURM_JOB_ID`…).
//! - A weighted reduction is one `ncclAllReduce` with a pre-multiplied sum
//!   (`ncclRedOpCreatePreMulSum`), so each rank's share of the batch weighs its gradients
//!   without a separate pass.
//! - Every operation is waited for against a deadline; past it the communicator is
//!   aborted (`ncclCommAbort`) and the error says a rank died or hangs.
//!
//! NCCL and the CUDA driver are loaded at run time: this builds without them, and a
//! machine without them gets an error, not a crash.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtrMut};
use cudarc::nccl::{result, sys};

use super::{Collective, CollectiveError, DeviceCollective};

/// The NCCL communicator of this process and the stream its host-side reductions use.
pub struct NcclCollective {
    comm: sys::ncclComm_t,
    rank: usize,
    size: usize,
    ordinal: usize,
    stream: Arc<CudaStream>,
    timeout: Duration,
}

fn error(what: impl std::fmt::Display) -> CollectiveError {
    CollectiveError {
        message: what.to_string(),
    }
}

/// The first of the environment variables `names` that holds a number.
fn env_number(names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok()?.trim().parse().ok())
}

impl NcclCollective {
    /// Joins the group the launcher started: reads rank and size from the environment,
    /// exchanges NCCL's id through the rendezvous file and creates the communicator on
    /// this rank's GPU.
    pub fn init(timeout: Duration) -> Result<NcclCollective, CollectiveError> {
        let rank = env_number(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "RANK"])
            .ok_or_else(|| {
                error("no rank in the environment: start one process per GPU with the cluster's launcher (`mpirun -np N`, `srun`), or set RANK, WORLD_SIZE and LOCAL_RANK")
            })?;
        let size = env_number(&[
            "OMPI_COMM_WORLD_SIZE",
            "PMI_SIZE",
            "SLURM_NTASKS",
            "WORLD_SIZE",
        ])
        .ok_or_else(|| error("no group size in the environment (WORLD_SIZE)"))?;
        let ordinal = env_number(&[
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "MPI_LOCALRANKID",
            "SLURM_LOCALID",
            "LOCAL_RANK",
        ])
        .unwrap_or(rank);
        if rank >= size {
            return Err(error(format!(
                "rank {rank} is not below the group size {size}"
            )));
        }
        // SAFETY: only tries to load the libraries.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(error(
                "NCCL needs an NVIDIA GPU and its driver (libcuda.so was not found)",
            ));
        }
        if !unsafe { sys::is_culib_present() } {
            return Err(error("NCCL (libnccl.so) was not found on this machine"));
        }
        let context = CudaContext::new(ordinal)
            .map_err(|e| error(format!("cannot open GPU {ordinal}: {e}")))?;
        let stream = context
            .new_stream()
            .map_err(|e| error(format!("cannot create a stream on GPU {ordinal}: {e}")))?;
        let id = rendezvous(rank, timeout)?;
        let mut comm = MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL on success; `id` came from rank 0's
        // `ncclGetUniqueId`; the call blocks until every rank joined.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), size as i32, id, rank as i32)
                .map_err(|e| error(format!("rank {rank}: cannot join the NCCL group: {e:?}")))?;
            comm.assume_init()
        };
        Ok(NcclCollective {
            comm,
            rank,
            size,
            ordinal,
            stream,
            timeout,
        })
    }

    /// Waits for the work enqueued on `stream` until the deadline; past it, aborts the
    /// communicator.
    fn wait(&self, stream: &CudaStream, what: &str) -> Result<(), CollectiveError> {
        let event = stream
            .record_event(None)
            .map_err(|e| error(format!("rank {}: {what}: {e}", self.rank)))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match event.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(error(format!("rank {}: {what} failed: {e}", self.rank))),
            }
            if Instant::now() > deadline {
                // SAFETY: the communicator is ours; nothing uses it after the abort (the
                // run ends with this error).
                let _ = unsafe { result::comm_abort(self.comm) };
                return Err(error(format!(
                    "rank {} of {}: {what} got no answer from every rank within {:.0} s: a rank has died or hangs (the launcher's message names it)",
                    self.rank,
                    self.size,
                    self.timeout.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// An in-place sum of `buf` over the ranks on `stream`, with each rank's values
    /// multiplied by `weight` first when given.
    fn all_reduce<T>(
        &self,
        buf: &mut CudaSlice<T>,
        stream: &Arc<CudaStream>,
        datatype: sys::ncclDataType_t,
        weight: Option<f32>,
    ) -> Result<(), CollectiveError> {
        let rank = self.rank;
        let failed = |e: result::NcclError| error(format!("rank {rank}: all-reduce: {e:?}"));
        let count = buf.len();
        let (ptr, _record) = buf.device_ptr_mut(stream);
        // SAFETY: `ptr` addresses `count` values of `datatype` on this rank's GPU, alive
        // until the wait below; the stream belongs to the same context; the op is
        // destroyed after the collective that uses it is enqueued (NCCL allows that).
        unsafe {
            let mut scalar = weight.unwrap_or(1.0);
            let op = match weight {
                Some(_) => {
                    let mut op = MaybeUninit::uninit();
                    result::reduce_op_create_pre_mul_sum(
                        op.as_mut_ptr(),
                        (&mut scalar as *mut f32).cast::<c_void>(),
                        datatype,
                        sys::ncclScalarResidence_t::ncclScalarHostImmediate,
                        self.comm,
                    )
                    .map_err(failed)?;
                    Some(op.assume_init())
                }
                None => None,
            };
            result::all_reduce(
                ptr as *const c_void,
                ptr as *mut c_void,
                count,
                datatype,
                op.unwrap_or(sys::ncclRedOp_t::ncclSum),
                self.comm,
                stream.cu_stream() as sys::cudaStream_t,
            )
            .map_err(failed)?;
            if let Some(op) = op {
                result::reduce_op_destroy(op, self.comm).map_err(failed)?;
            }
        }
        self.wait(stream, "the all-reduce")
    }

    /// A host buffer summed over the ranks through GPU memory.
    fn host_reduce<T>(
        &self,
        data: &mut [T],
        datatype: sys::ncclDataType_t,
    ) -> Result<(), CollectiveError>
    where
        T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Default + Clone,
    {
        let rank = self.rank;
        let driver = |e: cudarc::driver::DriverError| error(format!("rank {rank}: {e}"));
        let mut buf = self
            .stream
            .alloc_zeros::<T>(data.len().max(1))
            .map_err(driver)?;
        if !data.is_empty() {
            self.stream
                .memcpy_htod(data, &mut buf.slice_mut(0..data.len()))
                .map_err(driver)?;
        }
        self.all_reduce(&mut buf, &self.stream, datatype, None)?;
        if !data.is_empty() {
            self.stream
                .memcpy_dtoh(&buf.slice(0..data.len()), data)
                .map_err(driver)?;
        }
        self.stream.synchronize().map_err(driver)
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        // SAFETY: the communicator is ours and no operation is in flight (each was waited
        // for, or the communicator was aborted, which also frees it in NCCL's contract
        // only for destroy: an aborted one is not destroyed again).
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}

/// NCCL's unique id of this job: created by rank 0 and written to the rendezvous file,
/// read from it by the others.
fn rendezvous(rank: usize, timeout: Duration) -> Result<sys::ncclUniqueId, CollectiveError> {
    let dir = std::env::var_os("NNC_RENDEZVOUS")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let job = ["PMIX_NAMESPACE", "OMPI_MCA_orte_ess_jobid", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"]
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .map(|j| {
            let step = std::env::var("SLURM_STEP_ID").unwrap_or_default();
            format!("{j}{step}")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        })
        .ok_or_else(|| {
            error("no job id in the environment to name the NCCL rendezvous file: set NNC_RENDEZVOUS to a fresh folder all ranks share")
        })?;
    let path = dir.join(format!("nccl-{job}.id"));
    if rank == 0 {
        let id = result::get_uniqueid().map_err(|e| error(format!("ncclGetUniqueId: {e:?}")))?;
        let bytes: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
        crate::checkpoint::write_atomically(&path, &bytes).map_err(error)?;
        return Ok(id);
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() == 128 {
                let mut internal = [0 as std::ffi::c_char; 128];
                for (d, b) in internal.iter_mut().zip(bytes) {
                    *d = b as std::ffi::c_char;
                }
                return Ok(sys::ncclUniqueId { internal });
            }
        }
        if Instant::now() > deadline {
            return Err(error(format!(
                "rank {rank}: rank 0 did not write `{}` within {:.0} s",
                path.display(),
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Collective for NcclCollective {
    fn name(&self) -> &str {
        "nccl"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
        self.host_reduce(data, sys::ncclDataType_t::ncclFloat32)
    }

    fn all_reduce_sum_f64(&self, data: &mut [f64]) -> Result<(), CollectiveError> {
        self.host_reduce(data, sys::ncclDataType_t::ncclFloat64)
    }

    fn device(&self) -> Option<&dyn DeviceCollective> {
        Some(self)
    }
}

impl DeviceCollective for NcclCollective {
    fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn all_reduce_weighted(
        &self,
        buf: &mut CudaSlice<f32>,
        stream: &Arc<CudaStream>,
        weight: f32,
    ) -> Result<(), CollectiveError> {
        self.all_reduce(buf, stream, sys::ncclDataType_t::ncclFloat32, Some(weight))
    }
}
