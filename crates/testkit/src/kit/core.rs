//! The store, its change signal and the park loop of blocking queries.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use super::params::Blocking;
use super::{lock, Rng};

/// A double's store behind a `std::sync::Mutex` (never held across `.await`), with what
/// blocking queries and connections wait on. Lives in the double's shared state, next to
/// what only that double has.
pub(crate) struct Core<S> {
    store: Mutex<S>,
    /// Bumped after every write; parked queries (and other waiters) re-check when it moves.
    pub changed: watch::Sender<u64>,
    /// Number of blocking queries currently parked.
    parked: watch::Sender<usize>,
    /// Bumped to drop every open connection (outage, shutdown).
    pub conn_kill: watch::Sender<u64>,
    jitter: Mutex<Rng>,
}

impl<S> Core<S> {
    /// `jitter_seed` seeds the random extra wait of blocking queries.
    pub fn new(store: S, jitter_seed: u64) -> Self {
        Core {
            store: Mutex::new(store),
            changed: watch::channel(0).0,
            parked: watch::channel(0).0,
            conn_kill: watch::channel(0).0,
            jitter: Mutex::new(Rng::new(jitter_seed)),
        }
    }

    /// Runs a write on the store, then wakes waiters (outside the lock).
    pub fn write<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let r = f(&mut lock(&self.store));
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
        r
    }

    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&lock(&self.store))
    }

    /// Random extra wait of up to `wait / 16`, as Consul's and Nomad's blocking queries add
    /// (so that many clients with the same wait do not return in step).
    fn jitter(&self, wait: Duration) -> Duration {
        let max = u64::try_from((wait / 16).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(lock(&self.jitter).up_to(max))
    }

    /// The blocking-query rule: runs `read` at once, then again after every write, until
    /// its index passes `b.index` (index 0 never blocks), the wait plus jitter expires, or
    /// `cut_short` (asked under the same lock, before `read`) answers at once. A timeout
    /// returns the same index and data. While it waits the query counts as parked.
    pub async fn block<T>(
        &self,
        b: Blocking,
        mut cut_short: impl FnMut(&S) -> bool,
        read: impl Fn(&S) -> (u64, T),
    ) -> (u64, T) {
        let deadline = Instant::now() + b.wait + self.jitter(b.wait);
        let mut changes = self.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let (short, (index, data)) = self.read(|s| (cut_short(s), read(s)));
            if b.index == 0 || index > b.index || short || Instant::now() >= deadline {
                return (index, data);
            }
            let _parked = Parked::enter(&self.parked);
            tokio::select! {
                res = changes.changed() => {
                    if res.is_err() {
                        sleep_until(deadline).await;
                    }
                }
                _ = sleep_until(deadline) => {}
            }
        }
    }

    /// Blocking queries parked right now.
    pub fn parked(&self) -> usize {
        *self.parked.borrow()
    }

    /// Waits until at least `n` blocking queries are parked; `false` if `within` elapses.
    pub async fn wait_for_parked(&self, n: usize, within: Duration) -> bool {
        let mut rx = self.parked.subscribe();
        let reached = tokio::time::timeout(within, rx.wait_for(|p| *p >= n)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Drops every open connection (their serving tasks watch `conn_kill`).
    pub fn kill_connections(&self) {
        self.conn_kill.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// Decrements the parked count when a parked query wakes or is dropped.
struct Parked<'a>(&'a watch::Sender<usize>);

impl<'a> Parked<'a> {
    /// Counts one more parked query until the guard drops.
    fn enter(count: &'a watch::Sender<usize>) -> Parked<'a> {
        count.send_modify(|n| *n += 1);
        Parked(count)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn wait(index: u64, ms: u64) -> Blocking {
        let wait = Duration::from_millis(ms);
        Blocking { index, wait }
    }

    #[tokio::test]
    async fn block_answers_at_once_times_out_unchanged_or_wakes_past_the_index() {
        let core = Arc::new(Core::new(1u64, 7));
        let now = |s: &u64| (*s, "data");
        assert_eq!(
            core.block(wait(0, 60_000), |_| false, now).await,
            (1, "data")
        );
        assert_eq!(
            core.block(wait(1, 60_000), |_| true, now).await,
            (1, "data")
        );
        let start = Instant::now();
        assert_eq!(core.block(wait(1, 50), |_| false, now).await, (1, "data"));
        assert!(start.elapsed() >= Duration::from_millis(50));

        let parked = core.clone();
        let waiter =
            tokio::spawn(async move { parked.block(wait(1, 60_000), |_| false, now).await });
        assert!(core.wait_for_parked(1, Duration::from_secs(5)).await);
        core.write(|s| *s = 2);
        assert_eq!(waiter.await.expect("waiter"), (2, "data"));
        assert_eq!(core.parked(), 0);
    }
}
