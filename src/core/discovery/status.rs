//! What the running source last did: answers, errors, staleness. Read by `/status`; written by the
//! source. Also decides when a repeated error is worth another log line (no log storms).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Repeats of the same error are logged at most this often.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceState {
    pub kind: &'static str,
    pub origin: String,
    pub last_index: Option<u64>,
    /// Unix milliseconds of the last good answer.
    pub last_success_ms: Option<u64>,
    /// Unix milliseconds since when the source has been failing (the pools are then stale).
    pub stale_since_ms: Option<u64>,
    pub errors_total: u64,
    pub consecutive_errors: u64,
    pub last_error: Option<String>,
    /// Watches restarted by the watchdog.
    pub watch_restarts: u64,
    /// What the last good answer means for the pools, when it needs saying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Default)]
pub struct SourceStatus {
    inner: Mutex<(SourceState, Option<(String, Instant)>)>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SourceStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, (SourceState, Option<(String, Instant)>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new source took over (start or reload).
    pub fn reset(&self, kind: &'static str, origin: String) {
        *self.lock() = (
            SourceState {
                kind,
                origin,
                ..SourceState::default()
            },
            None,
        );
    }

    /// A good answer; returns how many errors preceded it (non-zero: log a recovery).
    pub fn ok(&self, index: Option<u64>) -> u64 {
        let mut g = self.lock();
        let s = &mut g.0;
        if index.is_some() {
            s.last_index = index;
        }
        s.last_success_ms = Some(unix_ms(SystemTime::now()));
        s.stale_since_ms = None;
        let before = std::mem::take(&mut s.consecutive_errors);
        g.1 = None;
        before
    }

    /// A failure; returns true when it should be logged (new message, or a while since the last).
    pub fn error(&self, message: &str) -> bool {
        let mut g = self.lock();
        let s = &mut g.0;
        s.errors_total += 1;
        s.consecutive_errors += 1;
        s.last_error = Some(message.to_string());
        s.stale_since_ms
            .get_or_insert_with(|| unix_ms(SystemTime::now()));
        let log = match &g.1 {
            Some((last, at)) => last != message || at.elapsed() >= REPEAT_LOG_EVERY,
            None => true,
        };
        if log {
            g.1 = Some((message.to_string(), Instant::now()));
        }
        log
    }

    /// Sets (or clears) the note; true when it changed.
    pub fn set_note(&self, note: Option<String>) -> bool {
        let mut g = self.lock();
        let changed = g.0.note != note;
        g.0.note = note;
        changed
    }

    pub fn restarted(&self) {
        self.lock().0.watch_restarts += 1;
    }

    pub fn state(&self) -> SourceState {
        self.lock().0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_errors_are_logged_once_until_they_change() {
        let s = SourceStatus::default();
        assert!(s.error("refused"));
        assert!(!s.error("refused"));
        assert!(s.error("timeout"));
        let st = s.state();
        assert_eq!((st.errors_total, st.consecutive_errors), (3, 3));
        assert!(st.stale_since_ms.is_some());
        assert_eq!(s.ok(Some(9)), 3);
        let st = s.state();
        assert_eq!(
            (st.consecutive_errors, st.last_index, st.stale_since_ms),
            (0, Some(9), None)
        );
        assert!(s.error("refused"), "a new failure run logs again");
    }
}
