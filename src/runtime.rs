//! Thread-per-core: `server.threads` threads, each running its own current-thread tokio runtime.
//!
//! The caller's thread is worker 0 and also runs everything that is not the request path (the
//! sources, the admin API, HSMS, signals); [`Workers::start`] adds workers 1..N. Each worker
//! accepts on its own descriptor of the one listening socket (a `dup`, not an `SO_REUSEPORT`
//! group, so an upgrade and systemd's `LISTEN_FDS` still hand over one socket per address) and
//! serves the connections it accepted on its own thread: a request never changes thread, and the
//! upstream connections it uses are the worker's own ([`id`] picks the slot). What the workers
//! share is read-mostly: the one `ArcSwap` snapshot, settings, counters.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

thread_local! {
    static ID: Cell<usize> = const { Cell::new(0) };
}

/// The most workers any runtime in this process has started with (1 until one starts more).
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// This thread's worker number: 0 on any thread [`Workers`] did not start.
pub fn id() -> usize {
    ID.with(Cell::get)
}

/// How many per-worker slots a structure shared by the workers should hold.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// `server.threads` as a number of workers: 0 means one per core.
pub fn threads(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// One `T` per worker, each behind its own lock: on the request path a worker locks only its own,
/// so the lock is never contended; passes over the whole (eviction, totals) lock each in turn.
/// A poisoned slot is used as it is: what callers keep in one stays whole between their calls.
pub struct PerWorker<T> {
    slots: Box<[Mutex<T>]>,
}

impl<T: Default> Default for PerWorker<T> {
    fn default() -> Self {
        PerWorker {
            slots: (0..count()).map(|_| Mutex::default()).collect(),
        }
    }
}

impl<T> PerWorker<T> {
    /// This worker's slot.
    pub fn mine(&self) -> MutexGuard<'_, T> {
        lock(&self.slots[id() % self.slots.len()])
    }

    /// Every worker's slot, one after another.
    pub fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.slots.iter().map(lock)
    }

    /// How many workers it has a slot for (a bound shared out between them is divided by this).
    pub fn workers(&self) -> usize {
        self.slots.len()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A current-thread runtime, the kind every worker runs.
pub fn build() -> std::io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

/// Workers 1..N, each a thread blocked in its runtime until [`Workers::stop`].
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(std::thread::JoinHandle<()>, oneshot::Sender<()>)>,
}

impl Workers {
    /// Starts `total - 1` worker threads (the caller's thread is the first of `total`).
    pub fn start(total: usize) -> std::io::Result<Workers> {
        COUNT.fetch_max(total.max(1), Ordering::Relaxed);
        let mut w = Workers {
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for i in 1..total {
            let rt = build()?;
            w.handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("zerodown-w{i}"))
                .spawn(move || {
                    ID.with(|c| c.set(i));
                    // Tasks still running when told to stop (none after a drain) end with it.
                    let _ = rt.block_on(stopped);
                })?;
            w.threads.push((thread, stop));
        }
        Ok(w)
    }

    /// The runtimes of workers 1..N, to spawn each worker's share of a listener on.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Ends every worker thread and waits for it.
    pub fn stop(self) {
        for (thread, stop) in self.threads {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// Open connections per worker, so workers accepting from one queue share it evenly: the kernel
/// wakes every worker for a new connection, and the one already awake would take a whole burst
/// (measured: 61 of wrk's 64 connections on one of two workers). A worker more than [`SLACK`]
/// above the least loaded one hands what it accepts to that one.
pub struct Shares {
    open: Box<[AtomicUsize]>,
}

/// How many connections more than the least loaded worker one may hold and still keep what it
/// accepts.
const SLACK: usize = 1;

impl Shares {
    pub fn new(workers: usize) -> Shares {
        Shares {
            open: (0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The least loaded worker, when `worker` holds more than [`SLACK`] connections above it.
    pub fn better_than(&self, worker: usize) -> Option<usize> {
        let mine = self.slot(worker).load(Ordering::Relaxed);
        let (least, count) = self
            .open
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, n)| n)?;
        (mine > count + SLACK).then_some(least)
    }

    /// Counts a connection `worker` accepted until the guard drops.
    pub fn open(self: &std::sync::Arc<Self>, worker: usize) -> Held {
        self.slot(worker).fetch_add(1, Ordering::Relaxed);
        Held {
            shares: std::sync::Arc::clone(self),
            worker,
        }
    }

    fn slot(&self, worker: usize) -> &AtomicUsize {
        &self.open[worker % self.open.len()]
    }
}

/// One open connection in [`Shares`].
pub struct Held {
    shares: std::sync::Arc<Shares>,
    worker: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shares
            .slot(self.worker)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_worker_more_than_one_ahead_of_the_least_loaded_hands_over_to_it() {
        let s = Arc::new(Shares::new(3));
        let a = [s.open(0), s.open(0)];
        assert_eq!(s.better_than(0), Some(1), "2 open against 0 and 0");
        assert_eq!((s.better_than(1), s.better_than(2)), (None, None));
        let b = s.open(1);
        assert_eq!(
            s.better_than(0),
            Some(2),
            "the least loaded still holds none"
        );
        let c = s.open(2);
        assert_eq!(s.better_than(0), None, "2 against a least of 1");
        drop((b, c));
        assert_eq!(
            s.better_than(0),
            Some(1),
            "closed connections leave the counts"
        );
        drop(a);
        assert!((0..3).all(|w| s.better_than(w).is_none()));
    }

    #[test]
    fn one_worker_keeps_everything() {
        let s = Arc::new(Shares::new(1));
        let _held: Vec<Held> = (0..10).map(|_| s.open(0)).collect();
        assert_eq!(s.better_than(0), None);
    }
}
