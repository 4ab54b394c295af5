//! The request path: health answer, route, one snapshot load, pick, forward, retry when safe, and
//! map failures to 502/503/504. Never falls back from one pool to the other.

mod body;
pub mod headers;
mod request_id;
pub mod route;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::{Bytes, Frame, Incoming};

use crate::config::{Cidr, Config, Underscores};
use crate::core::balance::{self, Tried};
use crate::core::Publisher;
use crate::http::error::ProxyError;
use crate::http::upstream::{BodyVerdict, ConnLimits, ConnPool, Cutoff, Guarded, UpstreamBody};
use crate::telemetry::metrics::{Lv, Metrics};
pub use body::{LogFields, Outcome, ProxyBody};
use headers::{Peer, X_REQUEST_ID};
use route::RouteTable;

/// The parts of the config the request path reads, swapped whole on reload.
#[derive(Debug)]
pub struct Settings {
    pub routes: RouteTable,
    pub health_path: Option<String>,
    pub limits: ConnLimits,
    pub response_timeout: Duration,
    pub first_chunk_wait: Duration,
    pub max_attempts: usize,
    pub eject_after: u32,
    pub eject_for: Duration,
    pub access_log: bool,
    pub access_sample: f64,
    pub max_body_bytes: u64,
    pub body_idle_timeout: Duration,
    pub body_timeout: Duration,
    pub underscores: Underscores,
    pub trusted_proxies: Vec<Cidr>,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            routes: RouteTable::new(c.routes.clone()),
            health_path: c.server.health_path.clone(),
            limits: ConnLimits {
                connect_timeout: c.upstream.connect_timeout,
                idle_timeout: c.upstream.idle_timeout,
                max_idle: c.upstream.max_idle_per_instance,
                max_response_head: c.limits.max_upstream_header_bytes,
            },
            response_timeout: c.upstream.response_timeout,
            first_chunk_wait: c.upstream.first_chunk_wait,
            max_attempts: c.upstream.max_attempts,
            eject_after: c.upstream.eject_after,
            eject_for: c.upstream.eject_for,
            access_log: c.log.access_log,
            access_sample: c.log.access_sample,
            max_body_bytes: c.limits.max_body_bytes,
            body_idle_timeout: c.limits.body_idle_timeout,
            body_timeout: c.limits.body_timeout,
            underscores: c.limits.underscore_headers,
            trusted_proxies: c.limits.trusted_proxies.clone(),
        }
    }
}

/// Shared by every connection.
pub struct Proxy {
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    settings: ArcSwap<Settings>,
    ids: request_id::Generator,
}

/// A request whose connection died before it was written is retried at most this often.
const MAX_STALE_RETRIES: usize = 4;

impl Proxy {
    pub fn new(publisher: Arc<Publisher>, metrics: Arc<Metrics>, settings: Settings) -> Proxy {
        Proxy {
            publisher,
            metrics,
            settings: ArcSwap::from_pointee(settings),
            ids: request_id::Generator::new(),
        }
    }

    pub fn reload(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    /// Serves one client request; every failure becomes a response, never an error.
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<ProxyBody> {
        let settings = self.settings.load();
        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if !v.is_empty() && v.len() <= 200 => v.clone(),
            _ => self.ids.next(),
        };
        let log = settings.access_log.then(|| LogFields {
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            peer: peer.addr.ip(),
            sample: settings.access_sample,
        });
        let mut outcome = Outcome::new(Arc::clone(&self.metrics), request_id.clone(), log);
        if settings.health_path.as_deref() == Some(req.uri().path()) {
            outcome.route = Lv::S("health");
            return text(StatusCode::OK, "healthy\n");
        }
        let pool_slot = &mut outcome.pool;
        let route_slot = &mut outcome.route;
        let result = self
            .forward(req, &settings, peer, &request_id, pool_slot, route_slot)
            .await;
        match result {
            Ok(u) => {
                outcome.status = u.parts.status;
                outcome.upstream = Some(u.instance);
                let streamed = body::Streamed {
                    body: u.body,
                    first: u.first,
                    outcome,
                    done: false,
                    in_flight: u.in_flight,
                    sender: Some(u.sender),
                    max_idle: settings.limits.max_idle,
                };
                Response::from_parts(u.parts, ProxyBody::Upstream(Box::new(streamed)))
            }
            Err(err) => {
                let status = err.status();
                let metrics = &self.metrics;
                let pool = [("pool", Lv::S(outcome.pool))];
                if let ProxyError::Timeout { .. } = &err {
                    metrics.timeouts.get_or_create(&pool).inc();
                }
                if status.is_server_error() {
                    tracing::warn!(
                        target: "zerodown::proxy",
                        request_id = request_id.to_str().unwrap_or(""),
                        status = status.as_u16(),
                        error = %err,
                        "request failed"
                    );
                }
                outcome.status = status;
                outcome.bytes = err.body().len() as u64;
                let mut resp = text(status, err.body());
                resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
                resp
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        settings: &Settings,
        peer: &Peer,
        request_id: &HeaderValue,
        pool_slot: &mut &'static str,
        route_slot: &mut Lv,
    ) -> Result<Upstreamed, ProxyError> {
        let (mut parts, body) = req.into_parts();
        // A tunnel would carry bytes past every check here, and hyper would hand the connection
        // over after a 2xx: refused before anything else.
        if parts.method == Method::CONNECT {
            return Err(ProxyError::Connect);
        }
        // Exactly one valid Host (or the authority of an absolute/h2 target), before any routing.
        let host = request_host(&parts)?;
        if !headers::underscores(&mut parts.headers, settings.underscores) {
            return Err(ProxyError::BadRequest(
                "header names with underscores are refused",
            ));
        }
        // hyper decodes only `chunked`; any other coding would reach the upstream undeclared.
        if let Some(coding) = other_transfer_coding(&parts.headers) {
            return Err(ProxyError::UnsupportedCoding(coding));
        }
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let matched = settings
            .routes
            .find(path_and_query)
            .ok_or(ProxyError::NoRoute)?;
        let pool_id = matched.pool;
        let pool_name = pool_id.as_str();
        *pool_slot = pool_name;
        *route_slot = Lv::A(Arc::clone(matched.prefix));
        // Origin form for HTTP/1.1 upstreams; rebuilt only when rewritten or absolute.
        let uri = if matches!(matched.path_and_query, std::borrow::Cow::Borrowed(_))
            && parts.uri.authority().is_none()
        {
            None
        } else {
            Some(
                Uri::try_from(matched.path_and_query.as_ref())
                    .map_err(|_| ProxyError::BadRequest("rewritten path is not a valid URI"))?,
            )
        };
        let max_body = matched.max_body_bytes.unwrap_or(settings.max_body_bytes);
        let declared = body.size_hint().exact().or_else(|| {
            parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        });
        if declared.is_some_and(|n| n > max_body) {
            return Err(ProxyError::PayloadTooLarge);
        }
        if let Some(uri) = uri {
            parts.uri = uri;
        }
        parts.version = Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers);
        // Re-framed upstream: hyper writes one Content-Length (known size) or chunked, never the
        // client's framing verbatim.
        parts.headers.remove(header::CONTENT_LENGTH);
        let trusted = settings
            .trusted_proxies
            .iter()
            .any(|c| c.contains(peer.addr.ip()));
        headers::set_forwarded(&mut parts.headers, peer, host.as_ref(), trusted);
        if let Some(h) = host {
            parts.headers.insert(header::HOST, h);
        }
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());

        // Owned, not a guard: it is held across awaits until the response head arrives.
        let snapshot = self.publisher.load_full();
        let pool = snapshot.pool(pool_id);
        if pool.is_empty() {
            return Err(ProxyError::EmptyPool { pool: pool_name });
        }
        let metrics = &self.metrics;
        let pool_label = [("pool", Lv::S(pool_name))];
        // Counts a failure against an instance; true when it ejected the instance.
        let record_failure = |up: &crate::core::Endpoint| {
            let ejected = up
                .health
                .record_failure(settings.eject_after, settings.eject_for);
            if ejected {
                metrics.ejections.get_or_create(&pool_label).inc();
            }
            ejected
        };
        // Bodiless idempotent requests can be replayed after a connection dies under them, as nginx does.
        let template = if body.is_end_stream() && parts.method.is_idempotent() {
            Some(parts.clone())
        } else {
            None
        };
        let verdict = Arc::new(BodyVerdict::default());
        let upstream_body = if body.is_end_stream() {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Stream(Box::new(Guarded::new(
                body,
                max_body,
                settings.body_idle_timeout,
                settings.body_timeout,
                Arc::clone(&verdict),
            )))
        };
        let mut pending = Some(Request::from_parts(parts, upstream_body));
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
            let mut sender = match ConnPool::of(up)
                .checkout(&up.address, settings.limits)
                .await
            {
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
            let Some(req) = pending.take().or_else(|| {
                template
                    .clone()
                    .map(|p| Request::from_parts(p, UpstreamBody::Empty))
            }) else {
                break;
            };
            let mut req = req;
            if !req.headers().contains_key(header::HOST) {
                if let Ok(h) = HeaderValue::from_str(&up.address) {
                    req.headers_mut().insert(header::HOST, h);
                }
            }
            let in_flight = up.begin();
            match tokio::time::timeout(settings.response_timeout, sender.try_send_request(req))
                .await
            {
                Err(_) => {
                    return Err(ProxyError::Timeout {
                        upstream: up.address.clone(),
                        after_ms: settings.response_timeout.as_millis(),
                    })
                }
                Ok(Ok(resp)) => {
                    let (mut rparts, mut rbody) = resp.into_parts();
                    let mut first = None;
                    // A chunked upstream answer's Content-Length is stale: hyper re-frames it.
                    if rparts.headers.contains_key(header::TRANSFER_ENCODING) {
                        rparts.headers.remove(header::CONTENT_LENGTH);
                        match first_frame(&mut rbody, settings.first_chunk_wait).await {
                            Ok(f) => first = f,
                            Err(e) => {
                                record_failure(up);
                                return Err(ProxyError::BadUpstream {
                                    upstream: up.address.clone(),
                                    error: e.to_string(),
                                });
                            }
                        }
                    }
                    up.health.record_success();
                    headers::strip_hop_by_hop(&mut rparts.headers);
                    rparts
                        .headers
                        .insert(X_REQUEST_ID.clone(), request_id.clone());
                    return Ok(Upstreamed {
                        parts: rparts,
                        body: rbody,
                        first,
                        instance: Arc::clone(&member.instance),
                        in_flight,
                        sender,
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
                    match verdict.get() {
                        Some(Cutoff::TooLarge) => return Err(ProxyError::PayloadTooLarge),
                        Some(Cutoff::TimedOut) => return Err(ProxyError::BodyTimeout),
                        Some(Cutoff::Malformed) => {
                            return Err(ProxyError::BadRequest("invalid chunked body"))
                        }
                        None => {}
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
}

/// An upstream's answer: head, body, the instance that answered, its in-flight mark, and the
/// connection (pooled again when the body ends).
struct Upstreamed {
    parts: http::response::Parts,
    body: Incoming,
    /// The body's first frame, read before the head was relayed.
    first: Option<Frame<Bytes>>,
    instance: Arc<crate::core::Instance>,
    in_flight: crate::core::InFlight,
    sender: crate::http::upstream::Sender,
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

/// The request's host: the target's authority (absolute form, HTTP/2), else its one valid `Host`
/// header; HTTP/1.1 requires one (RFC 9112 §3.2).
fn request_host(parts: &http::request::Parts) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(a) = parts.uri.authority() {
        return Ok(HeaderValue::from_str(a.as_str()).ok());
    }
    match first {
        Some(h) => {
            let valid = h
                .to_str()
                .ok()
                .filter(|s| !s.contains('@'))
                .and_then(|s| s.parse::<http::uri::Authority>().ok())
                .is_some_and(|a| {
                    // `Authority` does not check the port; a port must be digits.
                    let s = a.as_str();
                    let port = match s.rfind(']') {
                        Some(i) => s[i + 1..].strip_prefix(':'),
                        None => s.rsplit_once(':').map(|(_, p)| p),
                    };
                    port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                });
            if !valid {
                return Err(ProxyError::BadRequest("invalid Host header"));
            }
            Ok(Some(h.clone()))
        }
        None if parts.version == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        None => Ok(None),
    }
}

/// A transfer coding other than `chunked` in the request, if any.
fn other_transfer_coding(h: &http::HeaderMap) -> Option<String> {
    h.get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .find(|t| !t.is_empty() && t != "chunked")
}

/// A local plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
