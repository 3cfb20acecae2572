//! [`Collective`] over MPI (the system's Open MPI through the `mpi` crate): the processes
//! `mpirun -np N` (or `srun`) started, `MPI_COMM_WORLD` as the group.
//!
//! An all-reduce is non-blocking (`MPI_Iallreduce`) in buckets of at most
//! [`BUCKET`] values, all in flight together, and polled against a deadline: a rank that
//! died or hangs makes the others fail with an error after [`MpiCollective::timeout`]
//! instead of waiting forever (launchers such as `mpirun` usually end the job sooner,
//! naming the rank that died). Then the job is aborted (`MPI_Abort`), so no rank is left
//! behind in a collective.

use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use std::mem::MaybeUninit;

use mpi::ffi;
use mpi::raw::AsRaw;

use super::{Collective, CollectiveError, Pending};

/// The largest number of values one `MPI_Iallreduce` carries (16 MiB of `f32`).
pub const BUCKET: usize = 1 << 22;

/// MPI's world communicator, and the universe that keeps MPI initialised.
pub struct MpiCollective {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// How long a collective may wait for the other ranks.
    pub timeout: Duration,
    /// Each rank's process id and a hash of its host name, to say which rank died or
    /// stopped when a collective times out.
    peers: Vec<(u64, u64)>,
    _universe: Universe,
}

impl MpiCollective {
    /// Initialises MPI (once per process). `None` when MPI was already initialised.
    pub fn init(timeout: Duration) -> Option<MpiCollective> {
        let universe = mpi::initialize()?;
        let world = universe.world();
        let rank = usize::try_from(world.rank()).unwrap_or(0);
        let size = usize::try_from(world.size()).unwrap_or(1);
        let me = [u64::from(std::process::id()), host_hash()];
        let mut all = vec![0u64; 2 * size];
        world.all_gather_into(&me[..], &mut all[..]);
        let peers = all.chunks(2).map(|p| (p[0], p[1])).collect();
        Some(MpiCollective {
            world,
            rank,
            size,
            timeout,
            peers,
            _universe: universe,
        })
    }

    /// What can be seen of the other ranks on this machine: which exited, which are
    /// stopped (`/proc/<pid>/stat`).
    fn diagnose(&self) -> String {
        let here = host_hash();
        let mut found = Vec::new();
        for (r, &(pid, host)) in self.peers.iter().enumerate() {
            if r == self.rank || host != here {
                continue;
            }
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => found.push(format!("rank {r} (PID {pid}) has exited")),
                Ok(stat) => {
                    // The state follows the parenthesised command name.
                    let state = stat
                        .rsplit_once(')')
                        .and_then(|(_, s)| s.trim().chars().next());
                    match state {
                        Some('Z') | Some('X') => {
                            found.push(format!("rank {r} (PID {pid}) has exited"))
                        }
                        Some('T') | Some('t') => {
                            found.push(format!("rank {r} (PID {pid}) is stopped"))
                        }
                        _ => {}
                    }
                }
            }
        }
        if found.is_empty() {
            "a rank has died or hangs (on another machine, or busy; the launcher's message may name it)".into()
        } else {
            found.join(", ")
        }
    }

    /// Past the deadline: says what is known and ends the job.
    fn abort(&self) -> ! {
        eprintln!(
            "error: rank {} of {}: the all-reduce got no answer from every rank within {:.0} s: {}; aborting the job",
            self.rank,
            self.size,
            self.timeout.as_secs_f64(),
            self.diagnose()
        );
        self.world.abort(1)
    }

    /// Sums `data` over the ranks: one non-blocking reduction per bucket of at most
    /// [`BUCKET`] values, all in flight together, each waited for against the deadline.
    fn reduce<T: Copy + Equivalence>(&self, data: &mut [T]) -> Result<(), CollectiveError> {
        let mut pending = Vec::with_capacity(data.len().div_ceil(BUCKET));
        for chunk in data.chunks_mut(BUCKET) {
            // SAFETY: `data` stays borrowed, and untouched, until every reduction is
            // waited for below (a failed wait ends the job).
            pending.push(unsafe { self.start(chunk.as_mut_ptr(), chunk.len()) }?);
        }
        for op in pending {
            Box::new(op).wait()?;
        }
        Ok(())
    }

    /// Starts an `MPI_Iallreduce` summing the `len` values at `data` in place.
    ///
    /// # Safety
    /// `data..data + len` must stay allocated and untouched until the reduction completes.
    unsafe fn start<T: Copy + Equivalence>(
        &self,
        data: *mut T,
        len: usize,
    ) -> Result<MpiPending<'_, T>, CollectiveError> {
        let count = i32::try_from(len).map_err(|_| CollectiveError {
            message: format!("a bucket of {len} values is too large for MPI"),
        })?;
        // The values to send are copied first (no `MPI_IN_PLACE`, whose value differs
        // between MPI implementations).
        // SAFETY: the caller's contract.
        let send: Vec<T> = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: both buffers hold `count` values of `T`'s datatype; the request is
        // written by MPI.
        let rc = unsafe {
            ffi::MPI_Iallreduce(
                send.as_ptr().cast(),
                data.cast(),
                count,
                T::equivalent_datatype().as_raw(),
                ffi::RSMPI_SUM,
                self.world.as_raw(),
                request.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(CollectiveError {
                message: format!("rank {}: MPI_Iallreduce failed ({rc})", self.rank),
            });
        }
        Ok(MpiPending {
            // SAFETY: written by the successful call above.
            request: unsafe { request.assume_init() },
            _send: send,
            deadline: Instant::now() + self.timeout,
            owner: self,
            done: false,
        })
    }
}

impl Collective for MpiCollective {
    fn name(&self) -> &str {
        "mpi"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
        self.reduce(data)
    }

    fn all_reduce_sum_f64(&self, data: &mut [f64]) -> Result<(), CollectiveError> {
        self.reduce(data)
    }

    fn overlaps(&self) -> bool {
        true
    }

    unsafe fn start_all_reduce(
        &self,
        data: *mut f32,
        len: usize,
    ) -> Option<Result<Box<dyn Pending + '_>, CollectiveError>> {
        // SAFETY: the caller's contract.
        Some(unsafe { self.start(data, len) }.map(|op| Box::new(op) as Box<dyn Pending>))
    }
}

/// An `MPI_Iallreduce` in flight; its send buffer lives as long as it does.
struct MpiPending<'a, T> {
    request: ffi::MPI_Request,
    _send: Vec<T>,
    deadline: Instant,
    owner: &'a MpiCollective,
    done: bool,
}

impl<T> Pending for MpiPending<'_, T> {
    fn test(&mut self) -> Result<bool, CollectiveError> {
        if self.done {
            return Ok(true);
        }
        let mut flag = 0;
        // SAFETY: the request is live until MPI reports it complete (then it is set to
        // MPI_REQUEST_NULL and `done` keeps us from testing it again).
        let rc = unsafe { ffi::MPI_Test(&mut self.request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
        if rc != 0 {
            return Err(CollectiveError {
                message: format!("rank {}: MPI_Test failed ({rc})", self.owner.rank),
            });
        }
        self.done = flag != 0;
        Ok(self.done)
    }

    fn wait(mut self: Box<Self>) -> Result<(), CollectiveError> {
        let mut spins = 0u32;
        while !self.test()? {
            if Instant::now() > self.deadline {
                self.owner.abort();
            }
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        Ok(())
    }
}

impl<T> Drop for MpiPending<'_, T> {
    fn drop(&mut self) {
        // A request dropped in flight (an error elsewhere) must not outlive its buffers:
        // the job ends rather than let MPI write into freed memory.
        if !self.done && !matches!(self.test(), Ok(true)) {
            let start = Instant::now();
            while !matches!(self.test(), Ok(true)) {
                if start.elapsed() > self.owner.timeout {
                    self.owner.abort();
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// A hash of this machine's host name (to tell ranks on this machine from the others).
fn host_hash() -> u64 {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let mut h = crate::checkpoint::Fnv64::default();
    h.update(name.trim().as_bytes());
    h.finish()
}
