//! The request path: health answer, route, one snapshot load, pick, forward, retry when safe, and
//! map failures to 502/503/504. Never falls back from one pool to the other.

mod admit;
mod attempt;
mod body;
pub mod headers;
mod request_id;
pub mod route;
mod settings;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::error::ProxyError;
use crate::telemetry::metrics::{Lv, Metrics};
pub use body::{LogFields, Outcome, ProxyBody};
use headers::{Peer, X_REQUEST_ID};
pub use settings::Settings;

/// Shared by every connection.
pub struct Proxy {
    pub metrics: Arc<Metrics>,
    settings: ArcSwap<Settings>,
    ids: request_id::Generator,
}

impl Proxy {
    pub fn new(metrics: Arc<Metrics>, settings: Settings) -> Proxy {
        Proxy {
            metrics,
            settings: ArcSwap::from_pointee(settings),
            ids: request_id::Generator::new(),
        }
    }

    /// How long a pooled upstream connection may stay idle (the live setting).
    pub fn idle_timeout(&self) -> std::time::Duration {
        self.settings.load().limits.idle_timeout
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
        let (mut parts, body) = req.into_parts();
        let result = match admit::route(&mut parts, &body, &settings) {
            Err(e) => Err(e),
            Ok((host, routed)) => {
                outcome.service = routed.service.publisher.service_label().clone();
                outcome.pool = routed.pool.as_str();
                outcome.route = routed.route.clone();
                admit::rewrite(&mut parts, host, routed.uri, &settings, peer, &request_id);
                let req = Request::from_parts(parts, body);
                let to = attempt::Target {
                    pool: routed.pool,
                    max_body: routed.max_body,
                    body_min_rate: routed.body_min_rate,
                };
                attempt::send(
                    &routed.service.publisher,
                    &self.metrics,
                    req,
                    to,
                    &settings,
                    &request_id,
                )
                .await
            }
        };
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
            Err(err) => self.refuse(err, outcome, request_id),
        }
    }

    /// The local answer for a request that could not be proxied, logged when it is the proxy's
    /// or an upstream's fault.
    fn refuse(
        &self,
        err: ProxyError,
        mut outcome: Outcome,
        request_id: HeaderValue,
    ) -> Response<ProxyBody> {
        let status = err.status();
        match &err {
            ProxyError::Timeout { .. } => {
                let pool = [
                    ("service", outcome.service.clone()),
                    ("pool", Lv::S(outcome.pool)),
                ];
                self.metrics.timeouts.get_or_create(&pool).inc();
            }
            // The client's fault, never the upstream's: its own counter and a warning.
            ProxyError::BodyTimeout => {
                let reason = [("reason", Lv::S("slow request body"))];
                self.metrics.requests_refused.get_or_create(&reason).inc();
                tracing::warn!(
                    target: "zerodown::proxy",
                    request_id = request_id.to_str().unwrap_or(""),
                    status = 408,
                    "the client sent its request body too slowly (below the minimum rate, idle, or past body_timeout)"
                );
            }
            _ => {}
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
