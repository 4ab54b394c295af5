//! The attempt loop: one snapshot load, pick a member, check out a connection, send; retry on
//! another member when that is safe (connect failures, a connection that died before the request
//! was written, bodiless idempotent requests). Never falls back to the other pool.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request};
use http_body::Body as _;
use hyper::body::{Bytes, Frame, Incoming};
use tracing::Instrument;

use super::headers::{self, X_REQUEST_ID};
use super::settings::Settings;
use crate::config::PoolName;
use crate::core::balance::{self, Tried};
use crate::core::{Endpoint, InFlight, Member, Publisher};
use crate::http::error::ProxyError;
use crate::http::upstream::{
    BodyLimits, BodyVerdict, ConnPool, Cutoff, Guarded, Sender, UpstreamBody,
};
use crate::telemetry::metrics::{Lv, Metrics};

/// A request whose connection died before it was written is retried at most this often.
const MAX_STALE_RETRIES: usize = 4;

/// Where an admitted request goes and how large its body may be.
pub struct Target {
    pub pool: PoolName,
    pub max_body: u64,
    pub body_min_rate: u64,
}

/// Sends an admitted request to a member of the target pool, retrying on another when safe.
pub async fn send(
    publisher: &Publisher,
    metrics: &Metrics,
    req: Request<Incoming>,
    to: Target,
    settings: &Settings,
    request_id: &HeaderValue,
) -> Result<Upstreamed, ProxyError> {
    let pool_name = to.pool.as_str();
    // Owned, not a guard: it is held across awaits until the response head arrives.
    let snapshot = publisher.load_full();
    let pool = snapshot.pool(to.pool);
    if pool.is_empty() {
        return Err(ProxyError::EmptyPool { pool: pool_name });
    }
    let pool_label = [
        ("service", publisher.service_label().clone()),
        ("pool", Lv::S(pool_name)),
    ];
    // Counts a failure against an instance; true when it ejected the instance.
    let record_failure = |up: &Endpoint| {
        let ejected = up
            .health
            .record_failure(settings.eject_after, settings.eject_for);
        if ejected {
            metrics.ejections.get_or_create(&pool_label).inc();
        }
        ejected
    };
    // A replay needs another member to go to (the same one is never tried twice).
    let may_retry = settings.max_attempts > 1 && pool.members.len() > 1;
    let (mut pending, template, verdict) = prepare(req, &to, settings, may_retry);
    let start = pool.next_start();
    let mut tried = Tried::default();
    let mut attempts = 0;
    let mut stale = 0;
    let mut failures: Vec<String> = Vec::new();
    while attempts < settings.max_attempts {
        let Some(i) = balance::pick(pool, start, &tried) else {
            break;
        };
        let member = &pool.members[i];
        let up = &member.endpoint;
        if !failures.is_empty() {
            metrics.retries.get_or_create(&pool_label).inc();
        }
        attempts += 1;
        tried.insert(i);
        let span = tracing::debug_span!("upstream", addr = %up.address);
        let checkout = ConnPool::of(up).checkout(&up.address, settings.limits);
        let mut sender = match checkout.instrument(span.clone()).await {
            Ok((sender, _reused)) => sender,
            Err(e) => {
                metrics.connect_errors.get_or_create(&pool_label).inc();
                if record_failure(up) {
                    tracing::warn!(target: "zerodown::health", upstream = %up.address, cooldown_ms = settings.eject_for.as_millis() as u64, "instance ejected after consecutive failures");
                }
                tracing::debug!(upstream = %up.address, error = %e, "connect failed, trying another instance");
                failures.push(format!("{} ({e})", up.address));
                continue;
            }
        };
        let replay = || {
            template
                .clone()
                .map(|p| Request::from_parts(p, UpstreamBody::Empty))
        };
        let Some(req) = pending.take().or_else(replay) else {
            break;
        };
        let in_flight = up.begin();
        let sent = tokio::time::timeout(
            settings.response_timeout,
            sender.try_send_request(with_host(req, &up.address)),
        );
        match sent.instrument(span).await {
            Err(_) => {
                return Err(ProxyError::Timeout {
                    upstream: up.address.clone(),
                    after_ms: settings.response_timeout.as_millis(),
                })
            }
            Ok(Ok(resp)) => {
                let answer = Answer {
                    resp,
                    member,
                    in_flight,
                    sender,
                };
                return accept(answer, settings, request_id).await.inspect_err(|_| {
                    record_failure(up);
                });
            }
            Ok(Err(mut e)) => {
                if let Some(req) = e.take_message() {
                    // The connection died before the request was written: not the instance's fault.
                    pending = Some(req);
                    if stale < MAX_STALE_RETRIES {
                        stale += 1;
                        attempts -= 1;
                        tried.remove(i);
                    }
                    continue;
                }
                let error = e.into_error();
                // The client's body broke a limit: its fault, not the instance's.
                if let Some(cut) = verdict.as_ref().and_then(|v| v.get()) {
                    return Err(client_fault(cut));
                }
                record_failure(up);
                failures.push(format!("{} ({error})", up.address));
                if template.is_none() {
                    break;
                }
            }
        }
    }
    Err(ProxyError::AllFailed {
        tried: if failures.is_empty() {
            "none".into()
        } else {
            failures.join(", ")
        },
    })
}

/// The request to send first, the head to replay it from when that is safe (bodiless and
/// idempotent, as nginx does) and possible (`may_retry`: copying the head costs ~1,400
/// instructions per request), and where a limit-breaking client body is recorded (none without
/// a body).
fn prepare(
    req: Request<Incoming>,
    to: &Target,
    settings: &Settings,
    may_retry: bool,
) -> (
    Option<Request<UpstreamBody>>,
    Option<http::request::Parts>,
    Option<Arc<BodyVerdict>>,
) {
    let (parts, body) = req.into_parts();
    let template =
        (may_retry && body.is_end_stream() && parts.method.is_idempotent()).then(|| parts.clone());
    let mut verdict = None;
    let upstream_body = if body.is_end_stream() {
        UpstreamBody::Empty
    } else {
        let v = verdict.insert(Arc::new(BodyVerdict::default()));
        let limits = BodyLimits {
            max_bytes: to.max_body,
            idle: settings.body_idle_timeout,
            total: settings.body_timeout,
            min_rate: to.body_min_rate,
            grace: settings.body_min_rate_grace,
        };
        UpstreamBody::Stream(Box::new(Guarded::new(body, limits, Arc::clone(v))))
    };
    (
        Some(Request::from_parts(parts, upstream_body)),
        template,
        verdict,
    )
}

/// A request without a Host (HTTP/1.0, HTTP/2 without authority) names the instance.
fn with_host(mut req: Request<UpstreamBody>, address: &str) -> Request<UpstreamBody> {
    if !req.headers().contains_key(header::HOST) {
        if let Ok(h) = HeaderValue::from_str(address) {
            req.headers_mut().insert(header::HOST, h);
        }
    }
    req
}

/// The error for a request whose own body broke a limit.
fn client_fault(cut: Cutoff) -> ProxyError {
    match cut {
        Cutoff::TooLarge => ProxyError::PayloadTooLarge,
        Cutoff::TimedOut | Cutoff::TooSlow => ProxyError::BodyTimeout,
        Cutoff::Malformed => ProxyError::BadRequest("invalid chunked body"),
    }
}

/// A response head from one member, before it is relayed.
struct Answer<'a> {
    resp: http::Response<Incoming>,
    member: &'a Member,
    in_flight: InFlight,
    sender: Sender,
}

/// Checks and rewrites a response head for the client; a malformed first chunk is a 502 (the
/// caller counts it against the instance).
async fn accept(
    a: Answer<'_>,
    settings: &Settings,
    request_id: &HeaderValue,
) -> Result<Upstreamed, ProxyError> {
    let up = &a.member.endpoint;
    let (mut rparts, mut rbody) = a.resp.into_parts();
    let mut first = None;
    // A chunked upstream answer's Content-Length is stale: hyper re-frames it.
    if rparts.headers.contains_key(header::TRANSFER_ENCODING) {
        rparts.headers.remove(header::CONTENT_LENGTH);
        first = first_frame(&mut rbody, settings.first_chunk_wait)
            .await
            .map_err(|e| ProxyError::BadUpstream {
                upstream: up.address.clone(),
                error: e.to_string(),
            })?;
    }
    up.health.record_success();
    headers::strip_hop_by_hop(&mut rparts.headers);
    rparts
        .headers
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    Ok(Upstreamed {
        parts: rparts,
        body: rbody,
        first,
        instance: Arc::clone(&a.member.instance),
        in_flight: a.in_flight,
        sender: a.sender,
    })
}

/// An upstream's answer: head, body, the instance that answered, its in-flight mark, and the
/// connection (pooled again when the body ends).
pub struct Upstreamed {
    pub parts: http::response::Parts,
    pub body: Incoming,
    /// The body's first frame, read before the head was relayed.
    pub first: Option<Frame<Bytes>>,
    pub instance: Arc<crate::core::Instance>,
    pub in_flight: InFlight,
    pub sender: Sender,
}

/// Waits up to `wait` for a chunked body's first frame: an upstream whose first chunk is
/// malformed gets a 502 while no head has been relayed yet. Slower bodies stream as they come.
async fn first_frame(
    body: &mut Incoming,
    wait: Duration,
) -> Result<Option<Frame<Bytes>>, hyper::Error> {
    if wait.is_zero() {
        return Ok(None);
    }
    let next = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx));
    match tokio::time::timeout(wait, next).await {
        Ok(Some(frame)) => frame.map(Some),
        Ok(None) | Err(_) => Ok(None),
    }
}
