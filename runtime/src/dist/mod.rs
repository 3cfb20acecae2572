//! Data-parallel training across processes: the collective operations the training loop
//! needs ([`Collective`]) and their implementations: MPI on CPU clusters (feature `mpi`),
//! NCCL on GPUs (feature `nccl`), and [`ThreadGroup`], ranks as threads of one process,
//! which tests use to run the distributed schedule without a launcher.
//!
//! The schedule itself lives in the training loop and is the same for every
//! implementation: each rank takes its shard of every global batch, computes the
//! gradient of its shard's mean loss, scales it by its share of the batch, and one
//! all-reduce over the executor's single gradient buffer sums the shares (the gradient of
//! the global batch's mean loss); every rank then applies the same update to the same
//! parameters, so they stay identical without being exchanged.

use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;

/// A collective operation that failed: a rank died or hangs, or the transport broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectiveError {
    pub message: String,
}

impl fmt::Display for CollectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CollectiveError {}

/// Why summing gradients failed: the executor or the collective operation.
#[derive(Debug)]
pub enum ReduceError {
    Exec(crate::executor::ExecError),
    Collective(CollectiveError),
}

/// The operations data-parallel training uses; every rank calls them in the same order.
pub trait Collective {
    /// The transport, for messages (`mpi`, `nccl`, `threads`).
    fn name(&self) -> &str;
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Sums `data` elementwise over all ranks, in place; every rank gets the sum.
    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError>;
    /// The same for 64-bit values (metric sums and counts, exact up to 2^53).
    fn all_reduce_sum_f64(&self, data: &mut [f64]) -> Result<(), CollectiveError>;

    /// Whether [`Collective::start_all_reduce`] starts reductions that complete while
    /// the caller computes.
    fn overlaps(&self) -> bool {
        false
    }

    /// Starts summing the `len` values at `data` over the ranks, in place, and returns
    /// without waiting (to overlap the reduction with computation); `None` when the
    /// collective has no such operation, and the caller reduces once it is done.
    ///
    /// # Safety
    /// `data..data + len` must stay allocated, and be neither read nor written by anyone
    /// else, until the returned operation has completed.
    unsafe fn start_all_reduce(
        &self,
        _data: *mut f32,
        _len: usize,
    ) -> Option<Result<Box<dyn Pending + '_>, CollectiveError>> {
        None
    }

    /// The collective's operations on GPU memory, when it has them (NCCL).
    #[cfg(feature = "cuda")]
    fn device(&self) -> Option<&dyn DeviceCollective> {
        None
    }
}

/// Collective operations on GPU memory, on the caller's stream.
#[cfg(feature = "cuda")]
pub trait DeviceCollective {
    /// The GPU this rank uses (its ordinal on the node).
    fn ordinal(&self) -> usize;
    /// Replaces `buf` on every rank with the sum over ranks of `weight · buf` (each
    /// rank's own weight), enqueued on `stream`.
    fn all_reduce_weighted(
        &self,
        buf: &mut cudarc::driver::CudaSlice<f32>,
        stream: &Arc<cudarc::driver::CudaStream>,
        weight: f32,
    ) -> Result<(), CollectiveError>;
}

/// A reduction in flight ([`Collective::start_all_reduce`]).
pub trait Pending {
    /// Lets the transport progress; whether the reduction is complete.
    fn test(&mut self) -> Result<bool, CollectiveError>;
    /// Waits until the reduction is complete (or the collective's deadline passes).
    fn wait(self: Box<Self>) -> Result<(), CollectiveError>;
}

/// A shared handle on a [`Collective`] (the training configuration holds one; it stays
/// on the thread that joined the group).
#[derive(Clone)]
pub struct Distributed(pub Rc<dyn Collective>);

impl fmt::Debug for Distributed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Distributed({}, rank {} of {})",
            self.0.name(),
            self.0.rank(),
            self.0.size()
        )
    }
}

impl PartialEq for Distributed {
    /// The same handle.
    fn eq(&self, other: &Distributed) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// The rows `lo..hi` of a global batch of `len` rows that `rank` of `size` trains: as
/// equal as can be, lower ranks taking one more when it does not divide.
pub fn shard(len: usize, rank: usize, size: usize) -> (usize, usize) {
    let base = len / size;
    let extra = len % size;
    let lo = rank * base + rank.min(extra);
    let hi = lo + base + usize::from(rank < extra);
    (lo, hi)
}

/// Ranks as threads of one process: `ThreadGroup::new(n)` gives the `n` handles, one per
/// thread. The sums are taken in rank order, so every rank gets bit-identical results.
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
    timeout: Duration,
}

struct Shared {
    size: usize,
    state: Mutex<Round>,
    turn: Condvar,
}

#[derive(Default)]
struct Round {
    /// Each rank's contribution to the round in progress.
    parts: Vec<Option<Vec<f64>>>,
    /// The finished sum of the last round and how many ranks still have to take it.
    result: Option<(Vec<f64>, usize)>,
}

impl ThreadGroup {
    /// One handle per rank; a rank that waits longer than `timeout` for the others fails.
    pub fn new(size: usize, timeout: Duration) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            size,
            state: Mutex::new(Round {
                parts: vec![None; size],
                result: None,
            }),
            turn: Condvar::new(),
        });
        (0..size)
            .map(|rank| ThreadGroup {
                rank,
                shared: shared.clone(),
                timeout,
            })
            .collect()
    }

    fn reduce(&self, data: &[f64]) -> Result<Vec<f64>, CollectiveError> {
        let s = &self.shared;
        let lost = |what: &str| CollectiveError {
            message: format!(
                "rank {}: no {what} from every rank within {:.0} s: a rank has died or hangs",
                self.rank,
                self.timeout.as_secs_f64()
            ),
        };
        fn poisoned<E>(_: E) -> CollectiveError {
            CollectiveError {
                message: "a rank panicked".into(),
            }
        }
        let mut st = s.state.lock().map_err(poisoned)?;
        // Wait until the previous round's result has been taken by everyone.
        while st.result.is_some() {
            let (g, t) = s.turn.wait_timeout(st, self.timeout).map_err(poisoned)?;
            st = g;
            if t.timed_out() && st.result.is_some() {
                return Err(lost("turn"));
            }
        }
        st.parts[self.rank] = Some(data.to_vec());
        if st.parts.iter().all(Option::is_some) {
            let mut sum = vec![0.0; data.len()];
            for part in st.parts.iter_mut() {
                let part = part.take().unwrap_or_default();
                if part.len() != sum.len() {
                    return Err(CollectiveError {
                        message: "ranks reduced buffers of different lengths".into(),
                    });
                }
                for (a, b) in sum.iter_mut().zip(part) {
                    *a += b;
                }
            }
            st.result = Some((sum, s.size));
            s.turn.notify_all();
        }
        loop {
            // Parts are all taken once the sum is there; each rank takes it once.
            if let Some((sum, left)) = st.result.as_mut() {
                let out = sum.clone();
                *left -= 1;
                if *left == 0 {
                    st.result = None;
                    s.turn.notify_all();
                }
                return Ok(out);
            }
            let (g, t) = s.turn.wait_timeout(st, self.timeout).map_err(poisoned)?;
            st = g;
            if t.timed_out() && st.result.is_none() {
                return Err(lost("all-reduce"));
            }
        }
    }
}

impl Collective for ThreadGroup {
    fn name(&self) -> &str {
        "threads"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
        let wide: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
        let sum = self.reduce(&wide)?;
        for (d, s) in data.iter_mut().zip(sum) {
            *d = s as f32;
        }
        Ok(())
    }

    fn all_reduce_sum_f64(&self, data: &mut [f64]) -> Result<(), CollectiveError> {
        let sum = self.reduce(data)?;
        data.copy_from_slice(&sum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        for len in 0..20 {
            for size in 1..5 {
                let mut next = 0;
                for r in 0..size {
                    let (lo, hi) = shard(len, r, size);
                    assert_eq!(lo, next);
                    assert!(hi - lo <= len.div_ceil(size));
                    next = hi;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn a_thread_group_sums_in_rank_order_round_after_round() {
        let group = ThreadGroup::new(3, Duration::from_secs(10));
        let handles: Vec<_> = group
            .into_iter()
            .map(|g| {
                std::thread::spawn(move || {
                    let mut outs = Vec::new();
                    for round in 0..50 {
                        let mut v = vec![g.rank() as f32 + round as f32, 1.0];
                        g.all_reduce_sum(&mut v).unwrap();
                        outs.push(v);
                    }
                    outs
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for round in 0..50 {
            let expect = vec![3.0 + 3.0 * round as f32, 3.0];
            for r in &results {
                assert_eq!(r[round], expect);
            }
        }
    }

    #[test]
    fn a_missing_rank_is_a_timeout_not_a_hang() {
        let mut group = ThreadGroup::new(2, Duration::from_millis(200));
        let _absent = group.pop();
        let mut v = vec![1.0f32];
        let err = group[0].all_reduce_sum(&mut v).unwrap_err();
        assert!(err.message.contains("a rank has died or hangs"), "{err}");
    }
}
