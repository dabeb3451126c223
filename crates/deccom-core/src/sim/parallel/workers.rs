//! The threads that run a parallel lane's parts after the first, one window at a time.
//!
//! A part moves to its thread for the window and back (handed over under a mutex); the
//! caller's thread runs the first part meanwhile, then waits for the others. Between windows a
//! worker spins a little (the next window usually follows within microseconds), then sleeps until
//! the caller posts the next one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use super::part::{Part, Shared};
use crate::sim::LaneNode;

/// Spins (`spin_loop` hints, about a millisecond) before a worker sleeps: the caller's
/// JavaScript between two windows (a node's events handled) usually takes less.
const WORKER_SPINS: u32 = 1 << 15;

/// Spins before the caller yields while it waits for the workers.
const SPINS: u32 = 1 << 12;

struct Job<N> {
    part: Part<N>,
    end: f64,
    deadline: f64,
    shared: Arc<Shared>,
}

struct Handoff<N> {
    job: Mutex<Option<Job<N>>>,
    done: Mutex<Option<Part<N>>>,
    /// Jobs posted and finished (a worker that failed finishes its job without a part).
    posted: AtomicU64,
    finished: AtomicU64,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The worker threads of one lane.
pub(crate) struct Workers<N> {
    threads: Vec<(Arc<Handoff<N>>, JoinHandle<()>)>,
}

impl<N: LaneNode + Send + 'static> Workers<N> {
    /// `n` threads.
    pub(crate) fn new(n: usize) -> Workers<N> {
        let threads = (0..n)
            .map(|i| {
                let h = Arc::new(Handoff { job: Mutex::new(None), done: Mutex::new(None), posted: AtomicU64::new(0), finished: AtomicU64::new(0), stop: AtomicBool::new(false) });
                let theirs = Arc::clone(&h);
                let t = thread::Builder::new().name(format!("deccom-sim-{}", i + 1)).spawn(move || work(&theirs)).expect("a thread for the simulator");
                (h, t)
            })
            .collect();
        Workers { threads }
    }

    /// Runs one window (see [`Part::window`]) on every part: `parts[0]` on this thread, each
    /// other on a worker. Returns once all ran.
    ///
    /// # Panics
    /// When a node panicked in a worker (its part is lost; the node's own panic was printed).
    pub(crate) fn window(&mut self, parts: &mut Vec<Part<N>>, end: f64, deadline: f64, shared: &Arc<Shared>) {
        let others: Vec<Part<N>> = parts.drain(1..).collect();
        let mut targets = Vec::with_capacity(others.len());
        for (part, (h, t)) in others.into_iter().zip(&self.threads) {
            *lock(&h.job) = Some(Job { part, end, deadline, shared: Arc::clone(shared) });
            targets.push(h.posted.fetch_add(1, Ordering::Release) + 1);
            t.thread().unpark();
        }
        parts[0].window(end, deadline, shared);
        for ((h, _), target) in self.threads.iter().zip(targets) {
            let mut spins = 0;
            while h.finished.load(Ordering::Acquire) != target {
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    thread::yield_now();
                }
            }
            let part = lock(&h.done).take().expect("a simulation worker failed");
            parts.push(part);
        }
    }
}

impl<N> Drop for Workers<N> {
    fn drop(&mut self) {
        for (h, t) in &self.threads {
            h.stop.store(true, Ordering::Release);
            t.thread().unpark();
        }
        for (_, t) in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn work<N: LaneNode>(h: &Handoff<N>) {
    let mut seen = 0;
    loop {
        let mut spins = 0;
        loop {
            if h.stop.load(Ordering::Acquire) {
                return;
            }
            if h.posted.load(Ordering::Acquire) != seen {
                break;
            }
            if spins < WORKER_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::park();
            }
        }
        seen = h.posted.load(Ordering::Acquire);
        let job = lock(&h.job).take();
        if let Some(Job { mut part, end, deadline, shared }) = job {
            let ran = catch_unwind(AssertUnwindSafe(|| part.window(end, deadline, &shared))).is_ok();
            drop(shared);
            if ran {
                *lock(&h.done) = Some(part);
            } else {
                // Its nodes belong to the caller's thread (they may hold its handles): never
                // dropped here.
                std::mem::forget(part);
            }
        }
        h.finished.store(seen, Ordering::Release);
    }
}
