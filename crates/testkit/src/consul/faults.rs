//! Fault injection: rules that make the next N requests (or all, until cleared) misbehave
//! the way a real Consul or the network between does: error statuses, delays, stalled,
//! trickled or cut bodies, broken JSON, resets, index anomalies and leader headers.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::kit::Rules;
pub use crate::kit::Times;

/// Bytes per chunk sent by [`Fault::TrickleBody`].
pub const TRICKLE_CHUNK: usize = 16;

/// How long a broken body waits before failing, so the part already sent is flushed.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// One way for an answer to go wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and `text/plain` body instead of serving the request.
    Status(u16, &'static str),
    /// Hold the request this long before serving it, e.g. to exceed a client timeout.
    Delay(Duration),
    /// Send the status line and headers, then never the body.
    StallAfterHeaders,
    /// Send the body in [`TRICKLE_CHUNK`]-byte chunks, waiting this long before each.
    TrickleBody(Duration),
    /// Announce the full `Content-Length`, send half the body, then close the connection.
    CloseMidBody,
    /// A complete HTTP answer whose JSON body is cut in half.
    TruncatedJson,
    /// A complete HTTP answer whose body is not JSON (an HTML error page).
    InvalidJson,
    /// Close the connection with a TCP reset and no response at all.
    ResetConnection,
    /// Answer at once with `X-Consul-Index: 0` (a Consul bug clients must survive).
    IndexZero,
    /// Applied when injected: a snapshot restore to this smaller index. Parked queries
    /// return at once and later writes continue from there.
    IndexBackwards(u64),
    /// Every matching read first makes an idempotent write, so it returns at once with a
    /// new index and identical data.
    Churn,
    /// Applied when injected: every service and missing-key index moves forward with no
    /// data change, waking parked queries.
    SpuriousWakeup,
    /// Omit `X-Consul-KnownLeader` and `X-Consul-LastContact`, as the streaming backend does.
    NoLeaderHeaders,
    /// `X-Consul-KnownLeader: false`.
    KnownLeaderFalse,
    /// `X-Consul-LastContact` set to this many milliseconds.
    LastContact(u64),
    /// `X-Consul-Effective-Consistency: stale`, whatever was asked for.
    StaleConsistency,
}

impl Fault {
    pub const NO_LEADER: Fault = Fault::Status(500, "No cluster leader");
    pub const NO_SERVERS: Fault = Fault::Status(500, "No known Consul servers");
    pub const RATE_LIMITED: Fault = Fault::Status(429, "rate limit exceeded");
    pub const ACL_NOT_FOUND: Fault = Fault::Status(403, "ACL not found");
    pub const PERMISSION_DENIED: Fault = Fault::Status(403, "Permission denied");
}

/// How the body of one answer is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyFault {
    Stall,
    Trickle(Duration),
    CloseMid,
    Truncated,
    Invalid,
}

/// Everything that goes wrong with one request; the first rule of each kind wins.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    pub reset: bool,
    pub delay: Option<Duration>,
    pub status: Option<(u16, &'static str)>,
    pub body: Option<BodyFault>,
    pub index_zero: bool,
    pub churn: bool,
    pub no_leader_headers: bool,
    pub known_leader_false: bool,
    pub last_contact: Option<u64>,
    pub stale: bool,
}

impl Rules<Fault> {
    /// The plan for a request to `path`, consuming one use of each matching rule.
    pub fn take(&mut self, path: &str) -> Plan {
        let mut plan = Plan::default();
        for fault in self.consume(path, |_| true) {
            let body = |p: &mut Plan, b| {
                p.body.get_or_insert(b);
            };
            match fault {
                Fault::Status(code, text) => {
                    plan.status.get_or_insert((code, text));
                }
                Fault::Delay(d) => {
                    plan.delay.get_or_insert(d);
                }
                Fault::StallAfterHeaders => body(&mut plan, BodyFault::Stall),
                Fault::TrickleBody(d) => body(&mut plan, BodyFault::Trickle(d)),
                Fault::CloseMidBody => body(&mut plan, BodyFault::CloseMid),
                Fault::TruncatedJson => body(&mut plan, BodyFault::Truncated),
                Fault::InvalidJson => body(&mut plan, BodyFault::Invalid),
                Fault::ResetConnection => plan.reset = true,
                Fault::IndexZero => plan.index_zero = true,
                Fault::Churn => plan.churn = true,
                Fault::NoLeaderHeaders => plan.no_leader_headers = true,
                Fault::KnownLeaderFalse => plan.known_leader_false = true,
                Fault::LastContact(ms) => {
                    plan.last_contact.get_or_insert(ms);
                }
                Fault::StaleConsistency => plan.stale = true,
                Fault::IndexBackwards(_) | Fault::SpuriousWakeup => {}
            }
        }
        plan
    }
}

/// Response body that can stall, trickle or break off; otherwise a plain full body.
pub(crate) enum FaultBody {
    Full(Option<Bytes>),
    Stall,
    Trickle {
        rest: Bytes,
        every: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    },
    /// Sends `half`, pauses so hyper flushes it, then fails to abort the connection.
    CloseMid {
        half: Option<Bytes>,
        pause: Option<Pin<Box<Sleep>>>,
    },
}

impl FaultBody {
    /// Applies `fault` to `body`; returns the body and the `Content-Length` to announce
    /// when it differs from what the body will actually deliver.
    pub fn new(body: Bytes, fault: Option<BodyFault>) -> (Self, Option<usize>) {
        let len = body.len();
        match fault {
            None => (FaultBody::Full(Some(body)), None),
            Some(BodyFault::Truncated) => (FaultBody::Full(Some(body.slice(..len / 2))), None),
            Some(BodyFault::Invalid) => {
                let html =
                    Bytes::from_static(b"<html><body><h1>502 Bad Gateway</h1></body></html>");
                (FaultBody::Full(Some(html)), None)
            }
            Some(BodyFault::Stall) => (FaultBody::Stall, Some(len)),
            Some(BodyFault::Trickle(every)) => {
                let sleep = None;
                let rest = body;
                (FaultBody::Trickle { rest, every, sleep }, Some(len))
            }
            Some(BodyFault::CloseMid) => {
                let half = Some(body.slice(..len / 2));
                (FaultBody::CloseMid { half, pause: None }, Some(len))
            }
        }
    }
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            FaultBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            FaultBody::Stall => Poll::Pending,
            FaultBody::CloseMid { half, pause } => {
                if let Some(h) = half.take() {
                    return Poll::Ready(Some(Ok(Frame::data(h))));
                }
                let pause = pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(FLUSH_PAUSE)));
                ready!(pause.as_mut().poll(cx));
                Poll::Ready(Some(Err(std::io::Error::other("double: closing mid-body"))))
            }
            FaultBody::Trickle { rest, every, sleep } => {
                if rest.is_empty() {
                    return Poll::Ready(None);
                }
                let timer = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(*every)));
                ready!(timer.as_mut().poll(cx));
                *sleep = None;
                let chunk = rest.split_to(rest.len().min(TRICKLE_CHUNK));
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FaultBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            FaultBody::Trickle { rest, .. } => rest.is_empty(),
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FaultBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}
