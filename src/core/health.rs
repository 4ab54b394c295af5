//! Passive health: consecutive connect failures eject an instance for a cooldown; a success resets.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Per-address failure count and ejection deadline, updated lock-free from the request path.
#[derive(Debug, Default)]
pub struct Health {
    failures: AtomicU32,
    /// Milliseconds since [`epoch`]; 0 means not ejected.
    ejected_until: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    // Offset by one so a real deadline is never the "not ejected" value 0.
    epoch().elapsed().as_millis() as u64 + 1
}

impl Health {
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// How long the ejection still lasts, if any.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; returns true when this one ejects the instance.
    pub fn record_failure(&self, eject_after: u32, eject_for: Duration) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= eject_after && !self.is_ejected() {
            self.ejected_until
                .store(now_ms() + eject_for.as_millis() as u64, Ordering::Relaxed);
            // The next failure after the cooldown ejects again at once.
            self.failures
                .store(eject_after.saturating_sub(1), Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_and_success_resets() {
        let h = Health::default();
        assert!(!h.record_failure(3, Duration::from_secs(10)));
        assert!(!h.record_failure(3, Duration::from_secs(10)));
        h.record_success();
        assert!(!h.record_failure(3, Duration::from_secs(10)));
        assert!(!h.record_failure(3, Duration::from_secs(10)));
        assert!(h.record_failure(3, Duration::from_secs(10)));
        assert!(h.is_ejected());
        assert!(h.ejected_for().is_some());
        h.record_success();
        assert!(!h.is_ejected());
    }

    #[test]
    fn ejection_expires() {
        let h = Health::default();
        assert!(h.record_failure(1, Duration::ZERO));
        assert!(!h.is_ejected());
    }
}
