//! The body sent upstream: the client's streaming body under a size limit, idle/total timeouts
//! and a minimum average rate after a grace period, or nothing (replayable on retry). When the client's body breaks a limit, the cut-off is recorded
//! in a [`BodyVerdict`] so the proxy answers 413/408 instead of blaming the upstream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why the client's body was cut off, shared between the body and the request handler.
#[derive(Debug, Default)]
pub struct BodyVerdict(AtomicU8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    TooLarge,
    TimedOut,
    /// The client's framing was invalid (e.g. a bad chunk size).
    Malformed,
    /// The client sent slower than the minimum rate after the grace period.
    TooSlow,
}

impl BodyVerdict {
    fn set(&self, c: Cutoff) {
        let v = match c {
            Cutoff::TooLarge => 1,
            Cutoff::TimedOut => 2,
            Cutoff::Malformed => 3,
            Cutoff::TooSlow => 4,
        };
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<Cutoff> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(Cutoff::TooLarge),
            2 => Some(Cutoff::TimedOut),
            3 => Some(Cutoff::Malformed),
            4 => Some(Cutoff::TooSlow),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("request body timed out")]
    TimedOut,
    #[error(transparent)]
    Client(#[from] hyper::Error),
}

/// The limits one request body is held to.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub idle: Duration,
    pub total: Duration,
    /// Bytes per second, on average since the body started, once `grace` has passed; 0: off.
    pub min_rate: u64,
    pub grace: Duration,
}

/// A client body with limits.
pub struct Guarded {
    inner: Incoming,
    remaining: u64,
    limits: BodyLimits,
    idle_timer: Pin<Box<Sleep>>,
    total_timer: Pin<Box<Sleep>>,
    /// Fires when the average rate would drop below the minimum if nothing more arrived.
    rate_timer: Option<Pin<Box<Sleep>>>,
    started: Instant,
    received: u64,
    verdict: Arc<BodyVerdict>,
}

impl Guarded {
    pub fn new(inner: Incoming, limits: BodyLimits, verdict: Arc<BodyVerdict>) -> Guarded {
        let started = Instant::now();
        Guarded {
            inner,
            remaining: limits.max_bytes,
            limits,
            idle_timer: Box::pin(tokio::time::sleep(limits.idle)),
            total_timer: Box::pin(tokio::time::sleep(limits.total)),
            rate_timer: (limits.min_rate > 0)
                .then(|| Box::pin(tokio::time::sleep_until(started + limits.grace))),
            started,
            received: 0,
            verdict,
        }
    }

    fn cut(&self, c: Cutoff) -> BodyError {
        self.verdict.set(c);
        match c {
            Cutoff::TooLarge => BodyError::TooLarge(self.limits.max_bytes),
            Cutoff::TimedOut | Cutoff::Malformed | Cutoff::TooSlow => BodyError::TimedOut,
        }
    }

    /// True when the body has fallen below the minimum rate; otherwise re-arms the rate timer
    /// for the moment it would, if nothing more arrived.
    fn too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.rate_timer.as_mut() else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64);
        let due = self.started + earned;
        if due <= Instant::now() {
            return true;
        }
        timer.as_mut().reset(due);
        // Registers the waker for the new deadline.
        let _ = timer.as_mut().poll(cx);
        false
    }
}

pub enum UpstreamBody {
    Stream(Box<Guarded>),
    Empty,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamBody::Stream(_) => f.write_str("UpstreamBody::Stream"),
            UpstreamBody::Empty => f.write_str("UpstreamBody::Empty"),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let g = match self.get_mut() {
            UpstreamBody::Empty => return Poll::Ready(None),
            UpstreamBody::Stream(g) => g,
        };
        if g.total_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(g.cut(Cutoff::TimedOut))));
        }
        if g.too_slow(cx) {
            return Poll::Ready(Some(Err(g.cut(Cutoff::TooSlow))));
        }
        match Pin::new(&mut g.inner).poll_frame(cx) {
            Poll::Pending => {
                if g.idle_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(g.cut(Cutoff::TimedOut))));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > g.remaining {
                        return Poll::Ready(Some(Err(g.cut(Cutoff::TooLarge))));
                    }
                    g.remaining -= n;
                    g.received += n;
                }
                let deadline = Instant::now() + g.limits.idle;
                g.idle_timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                g.verdict.set(Cutoff::Malformed);
                Poll::Ready(Some(Err(BodyError::Client(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Stream(g) => g.inner.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Stream(g) => g.inner.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}
