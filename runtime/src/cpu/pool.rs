//! A two-lane fork-join pool for kernels' parallel loops: the calling thread runs one part
//! of a range, one persistent worker thread runs the other. Hand-off is a generation
//! counter the worker spins on briefly before it parks, so the ~20 kernels of a training
//! step cost microseconds of synchronisation, not a thread spawn each. On a machine with
//! one CPU the pool has no worker and everything runs on the caller.
//!
//! Each job is *claimed* by exactly one thread: the worker when it wakes in time, or the
//! caller itself once its own part is done and the worker still has not started (it may
//! be descheduled on a busy machine). So a step never waits for a sleeping worker to be
//! scheduled; it only ever waits for a part that is already running.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Work for the worker: a type-erased closure pointer valid until the caller's `join`.
type Job = *const (dyn Fn() + Sync);

struct Shared {
    /// Incremented by the caller for each job; the worker runs a job when it sees a new one.
    posted: AtomicU64,
    /// Set to `posted`'s value by the worker when it has finished that job.
    done: AtomicU64,
    /// The last job taken, by the worker or by the caller (compare-and-swap from
    /// `ticket − 1` to `ticket` decides who runs it).
    claimed: AtomicU64,
    job: Mutex<Option<SendJob>>,
    stop: AtomicBool,
    /// How long the worker spins for the next job before parking.
    spin: Duration,
}

struct SendJob(Job);
// SAFETY: the pointee is `Sync` and outlives its use (see `Pool::join`).
unsafe impl Send for SendJob {}

/// A pool of the caller plus at most one worker thread.
pub struct Pool {
    shared: Arc<Shared>,
    worker: Option<(JoinHandle<()>, Thread)>,
}

impl Pool {
    /// A pool using up to `threads` threads in all (the caller included).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            job: Mutex::new(None),
            stop: AtomicBool::new(false),
            spin: Duration::from_micros(200),
        });
        let worker = (threads >= 2).then(|| {
            let s = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name("nnc-worker".into())
                .spawn(move || {
                    super::denormals::FlushToZero::forever();
                    worker_loop(&s)
                })
                .expect("spawning the worker thread");
            let t = handle.thread().clone();
            (handle, t)
        });
        Pool { shared, worker }
    }

    /// The number of threads that run parts of a range.
    pub fn lanes(&self) -> usize {
        1 + usize::from(self.worker.is_some())
    }

    /// Runs `a` on the caller and `b` on the worker, returning when both are done.
    pub fn join(&self, a: &(dyn Fn() + Sync), b: &(dyn Fn() + Sync)) {
        let Some((_, thread)) = &self.worker else {
            a();
            b();
            return;
        };
        // SAFETY: `b` outlives the job: we wait below until the worker reports it done.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Job>(b) };
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(SendJob(job));
        let ticket = self.shared.posted.fetch_add(1, Ordering::AcqRel) + 1;
        thread.unpark();
        a();
        let ours = self
            .shared
            .claimed
            .compare_exchange(ticket - 1, ticket, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ours {
            // The worker never started it: run it here and retract the posted pointer.
            *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
            b();
            return;
        }
        let mut spins = 0u32;
        while self.shared.done.load(Ordering::Acquire) < ticket {
            relax(&mut spins);
        }
    }
}

/// One step of a busy wait: mostly a CPU pause, and every 64th step a `yield`, so that a
/// waiting thread that shares its core with the one it waits for (a busy machine) lets it
/// run instead of burning the time slice.
fn relax(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if (*spins).is_multiple_of(64) {
        thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

fn worker_loop(s: &Shared) {
    let mut seen = 0u64;
    let mut spins = 0u32;
    loop {
        let started = Instant::now();
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            if s.posted.load(Ordering::Acquire) > seen {
                break;
            }
            if started.elapsed() < s.spin {
                relax(&mut spins);
            } else {
                thread::park_timeout(Duration::from_millis(50));
            }
        }
        seen += 1;
        let ours = s
            .claimed
            .compare_exchange(seen - 1, seen, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !ours {
            continue; // the caller ran it
        }
        let job = s.job.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(SendJob(f)) = job {
            // SAFETY: the poster keeps the closure alive until `done` reaches `seen`.
            unsafe { (*f)() };
        }
        s.done.store(seen, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some((handle, thread)) = self.worker.take() {
            thread.unpark();
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn both_halves_run_every_time() {
        let pool = Pool::new(2);
        let count = AtomicUsize::new(0);
        for _ in 0..10_000 {
            pool.join(
                &|| {
                    count.fetch_add(1, Ordering::Relaxed);
                },
                &|| {
                    count.fetch_add(1, Ordering::Relaxed);
                },
            );
        }
        assert_eq!(count.load(Ordering::Relaxed), 20_000);
    }

    #[test]
    fn a_single_lane_pool_runs_both_on_the_caller() {
        let pool = Pool::new(1);
        assert_eq!(pool.lanes(), 1);
        let count = AtomicUsize::new(0);
        pool.join(
            &|| {
                count.fetch_add(1, Ordering::Relaxed);
            },
            &|| {
                count.fetch_add(10, Ordering::Relaxed);
            },
        );
        assert_eq!(count.load(Ordering::Relaxed), 11);
    }
}
