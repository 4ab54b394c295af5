//! One blocking query, repeated forever by Consul's blocking-query rules (`docs/consul.md`): echo
//! the index, reset it when it goes backwards, never send below 1 after the first answer,
//! rate-limit with a token bucket (burst 2), back off with jitter after errors, and bound every
//! call by `wait + wait/16 + 10s`.

use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::client::{ConsulClient, ConsulError, Reply};

/// What happened to the index on an answer, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexEvent {
    Normal,
    /// The answer carried index 0 (a Consul bug that would turn the loop into a busy loop).
    Zero,
    /// The index went backwards (snapshot restore, KV tombstone reaping, upgrade).
    Backwards {
        from: u64,
        to: u64,
    },
}

/// The index to send next, given the one sent and the one received.
pub fn next_index(sent: u64, got: Option<u64>) -> (u64, IndexEvent) {
    match got {
        None | Some(0) => (1, IndexEvent::Zero),
        Some(g) if g < sent => (1, IndexEvent::Backwards { from: sent, to: g }),
        Some(g) => (g, IndexEvent::Normal),
    }
}

/// Token bucket with a burst of 2: under churn the loop slows to one call per `refill`.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    refill: Duration,
    last: Instant,
}

const BURST: f64 = 2.0;

impl TokenBucket {
    pub fn new(refill: Duration) -> TokenBucket {
        TokenBucket {
            tokens: BURST,
            refill,
            last: Instant::now(),
        }
    }

    /// Waits until a token is available and takes it.
    pub async fn take(&mut self) {
        loop {
            let now = Instant::now();
            let gained = now.duration_since(self.last).as_secs_f64() / self.refill.as_secs_f64();
            self.tokens = (self.tokens + gained).min(BURST);
            self.last = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let missing = (1.0 - self.tokens) * self.refill.as_secs_f64();
            tokio::time::sleep(Duration::from_secs_f64(missing)).await;
        }
    }
}

/// Exponential backoff from 250 ms, doubling to `max`, with "equal jitter" (half fixed, half random)
/// so that many proxies recovering from one outage do not hit Consul in step.
#[derive(Debug)]
pub struct Backoff {
    pub failures: u32,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff { failures: 0, max }
    }

    pub fn delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.min(20) - 1;
        let d = Duration::from_millis(250)
            .saturating_mul(1u32 << exp)
            .min(self.max);
        d / 2 + d.mul_f64(fastrand::f64() / 2.0)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Between error retries the watch probes Consul every `PROBE_MIN..PROBE_MAX` (uniformly
/// jittered) with `GET /v1/status/leader`, the cheapest call that proves a leader is back, and
/// reads again as soon as one is: recovery shows within `PROBE_MAX` plus one read, however long
/// the outage and however grown the backoff. The fleet arithmetic is in the README.
pub const PROBE_MIN: Duration = Duration::from_millis(400);
pub const PROBE_MAX: Duration = Duration::from_millis(800);

/// Waits `delay` (the backoff) after a failure, returning early when a probe finds Consul
/// answering with a leader. Only worth it for [`ConsulError::is_unavailable`] errors: a refusal
/// (ACL, bad request) is not fixed by Consul coming back.
pub async fn wait_for_recovery(client: &ConsulClient, delay: Duration, probe_timeout: Duration) {
    let end = Instant::now() + delay;
    loop {
        let jitter = PROBE_MIN + (PROBE_MAX - PROBE_MIN).mul_f64(fastrand::f64());
        let next = (Instant::now() + jitter).min(end);
        tokio::time::sleep_until(next).await;
        if next >= end {
            return;
        }
        if let Ok(Ok(r)) = tokio::time::timeout(
            probe_timeout,
            client.get("/v1/status/leader", probe_timeout),
        )
        .await
        {
            let leader = String::from_utf8_lossy(&r.body);
            if r.status == StatusCode::OK && leader.trim().trim_matches('"').contains(':') {
                return;
            }
        }
    }
}

/// A repeating blocking query on one endpoint.
pub struct Watch {
    /// Path and fixed query, e.g. `/v1/health/service/web?passing&dc=dc1`.
    base: String,
    /// What is watched, for error messages ("service web", "key zerodown/web/active").
    pub what: String,
    wait: Duration,
    timeout: Duration,
    pub index: u64,
    bucket: TokenBucket,
    pub backoff: Backoff,
    /// A 404 is an answer here (a missing KV key), not an error.
    missing_ok: bool,
}

impl Watch {
    pub fn new(
        base: String,
        what: String,
        wait: Duration,
        timeout: Duration,
        min_interval: Duration,
        retry_max: Duration,
        missing_ok: bool,
    ) -> Watch {
        Watch {
            base,
            what,
            wait,
            timeout,
            index: 0,
            bucket: TokenBucket::new(min_interval),
            backoff: Backoff::new(retry_max),
            missing_ok,
        }
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        if self.index == 0 {
            self.base.clone()
        } else {
            format!(
                "{}{sep}index={}&wait={}ms",
                self.base,
                self.index,
                self.wait.as_millis()
            )
        }
    }

    /// The next answer. On an error the index is dropped, so the first call after recovery reads
    /// the current state without blocking; the caller sleeps [`Watch::failed`] before retrying.
    pub async fn poll(
        &mut self,
        client: &ConsulClient,
    ) -> Result<(Reply, IndexEvent), ConsulError> {
        self.bucket.take().await;
        let reply = client.get(&self.url(), self.timeout).await?;
        let ok = reply.status == StatusCode::OK
            || (self.missing_ok && reply.status == StatusCode::NOT_FOUND);
        if !ok {
            return Err(ConsulError::from_status(
                reply.status,
                &reply.body,
                &self.what,
            ));
        }
        let (next, event) = next_index(self.index, reply.index);
        self.index = next;
        Ok((reply, event))
    }

    /// Records a failure; returns how long to wait before the next call.
    pub fn failed(&mut self) -> Duration {
        self.index = 0;
        self.backoff.delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, Some(10)), (10, IndexEvent::Normal));
        assert_eq!(next_index(10, Some(10)), (10, IndexEvent::Normal));
        assert_eq!(next_index(10, Some(12)), (12, IndexEvent::Normal));
        assert_eq!(next_index(10, Some(0)), (1, IndexEvent::Zero));
        assert_eq!(next_index(10, None), (1, IndexEvent::Zero));
        assert_eq!(
            next_index(100, Some(7)),
            (1, IndexEvent::Backwards { from: 100, to: 7 })
        );
        // After a reset the next answer is taken as is.
        assert_eq!(next_index(1, Some(7)), (7, IndexEvent::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_allows_a_burst_of_two_then_one_per_interval() {
        let mut b = TokenBucket::new(Duration::from_secs(1));
        let t0 = Instant::now();
        b.take().await;
        b.take().await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        b.take().await;
        let e = t0.elapsed();
        assert!(
            e >= Duration::from_millis(999) && e <= Duration::from_millis(1001),
            "{e:?}"
        );
        b.take().await;
        let e = t0.elapsed();
        assert!(
            e >= Duration::from_millis(1999) && e <= Duration::from_millis(2001),
            "{e:?}"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(4));
        let bounds = [
            (125, 250),
            (250, 500),
            (500, 1000),
            (1000, 2000),
            (2000, 4000),
            (2000, 4000),
        ];
        for (lo, hi) in bounds {
            let d = b.delay().as_millis() as u64;
            assert!((lo..=hi).contains(&d), "{d} not in {lo}..={hi}");
        }
        b.reset();
        assert!(b.delay() <= Duration::from_millis(250));
    }

    #[test]
    fn url_echoes_the_index_and_wait_in_ms() {
        let mut w = Watch::new(
            "/v1/health/service/web?passing".into(),
            "service web".into(),
            Duration::from_secs(300),
            Duration::from_secs(1),
            Duration::from_millis(1),
            Duration::from_secs(1),
            false,
        );
        assert_eq!(w.url(), "/v1/health/service/web?passing");
        w.index = 42;
        assert_eq!(
            w.url(),
            "/v1/health/service/web?passing&index=42&wait=300000ms"
        );
        assert!(w.failed() > Duration::ZERO);
        assert_eq!(w.index, 0);
    }
}
