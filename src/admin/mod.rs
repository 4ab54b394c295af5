//! The admin listener (loopback by default, never the public port): `/live`, `/ready` and `/status`.
//! `/status` is a stable JSON document that the operator commands read; fields are only added.
//! Its shape is [`status::StatusDoc`].

pub mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::status::{HoldDoc, InstanceDoc, PoolDoc, Pools, SourceInfoDoc, StatusDoc, SwapDoc};
use crate::core::{Pool, Service, Services, Snapshot};
use crate::hsms::Hsms;
use crate::http::upstream::ConnPool;
use crate::telemetry::metrics::Metrics;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub services: Arc<Services>,
    pub metrics: Arc<Metrics>,
    started: Instant,
    /// Bearer token `/status`, `/consul-status` and `/metrics` require, when set.
    token: Option<Arc<str>>,
    hsms: Option<Arc<Hsms>>,
    generation: u64,
}

impl AdminState {
    pub fn new(
        services: Arc<Services>,
        metrics: Arc<Metrics>,
        token: Option<String>,
    ) -> AdminState {
        AdminState {
            services,
            metrics,
            started: Instant::now(),
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            hsms: None,
            generation: 1,
        }
    }

    /// The process generation `/status` reports (1, plus one per upgrade).
    pub fn with_generation(mut self, generation: u64) -> AdminState {
        self.generation = generation;
        self
    }

    /// Adds the HSMS front-end's sessions and pools to `/status`.
    pub fn with_hsms(mut self, hsms: Option<Arc<Hsms>>) -> AdminState {
        self.hsms = hsms;
        self
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(want) = &self.token else { return true };
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared without an early exit, so timing does not reveal a matching prefix.
        got.len() == want.len()
            && got
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    let path = req.uri().path();
    let sensitive = matches!(path, "/status" | "/consul-status" | "/metrics");
    if sensitive && !state.authorized(req) {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "unauthorized: send Authorization: Bearer <token from server.admin_token_file>\n"
                .into(),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let asked = query_service(req);
    let service = match state.services.get(asked.as_deref()) {
        Some(s) => s,
        None => {
            let names = state.services.names().join(", ");
            let asked = asked.unwrap_or_default();
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("no service named {asked:?}: the services are {names}\n").into_bytes(),
            );
        }
    };
    match path {
        "/live" => reply(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" => match not_ready_any(state, asked.is_some().then_some(&service)) {
            None => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                why.into_bytes(),
            ),
        },
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render().into_bytes(),
        ),
        "/consul-status" => {
            let body = serde_json::to_vec_pretty(&consul_status(&service)).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body)
        }
        "/status" => {
            let body = serde_json::to_vec_pretty(&status(state, &service)).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /status, /metrics, /consul-status, /live or /ready\n".into(),
        ),
    }
}

/// `?service=NAME` (percent-encoding is not needed: service names hold no reserved character).
fn query_service(req: &Request<Incoming>) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("service="))
        .map(str::to_string)
}

/// Why `/ready` answers 503, for one service or (`None`) the first of all that is not ready;
/// with several services the reason names the service.
fn not_ready_any(state: &AdminState, one: Option<&Arc<Service>>) -> Option<String> {
    let all = state.services.all();
    let several = all.len() > 1;
    let list: Vec<&Arc<Service>> = match one {
        Some(s) => vec![s],
        None => all.iter().collect(),
    };
    list.into_iter().find_map(|s| {
        let snap = s.publisher.load();
        if is_ready(&snap) {
            return None;
        }
        let why = not_ready(&snap);
        Some(if several {
            format!("service {:?}: {why}", s.name())
        } else {
            why
        })
    })
}

/// Ready once the active pool has a member that is not ejected: before that every proxied
/// request would be a 503, and with every member ejected after failures a 502.
pub fn is_ready(s: &Snapshot) -> bool {
    s.active
        .members
        .iter()
        .any(|m| m.endpoint.health.ejected_for().is_none())
}

/// Why `/ready` answers 503: nothing loaded yet, or an empty active pool beside a loaded standby.
fn not_ready(s: &Snapshot) -> String {
    if !s.active.is_empty() {
        return format!(
            "not ready: every active instance ({} of {}) is ejected after consecutive failures: requests get 502 until one recovers\n",
            s.active.members.len(),
            s.active.version.as_deref().unwrap_or("several versions")
        );
    }
    let standby = &s.standby;
    if standby.is_empty() {
        return "not ready: no instance loaded yet (nothing is tagged active or standby)\n".into();
    }
    format!(
        "not ready: the active pool is empty (no instance is tagged active); the standby pool has {} instance(s) of {}\n",
        standby.members.len(),
        standby.version.as_deref().unwrap_or("several versions")
    )
}

/// The `/status` document of one service.
pub fn status(state: &AdminState, service: &Service) -> StatusDoc {
    let snap = service.publisher.load_full();
    let names = state.services.names();
    // HSMS relays to the primary service.
    let primary = names.first().is_some_and(|n| n == service.name());
    // The Consul source only admits instances whose every check passes (`?passing`, rechecked).
    let health = match snap.source.as_ref().map(|s| s.kind) {
        Some("consul") => Some("passing"),
        _ => None,
    };
    StatusDoc {
        generation: snap.generation,
        hsms: state.hsms.as_ref().filter(|_| primary).map(|h| h.status()),
        pid: std::process::id(),
        pools: Pools {
            active: pool_doc(&snap.active, health),
            standby: pool_doc(&snap.standby, health),
        },
        process_generation: state.generation,
        ready: is_ready(&snap),
        service: service.name().to_string(),
        services: names,
        source: snap.source.as_ref().map(SourceInfoDoc::from),
        source_status: service.status.state().into(),
        swaps: service
            .publisher
            .history()
            .iter()
            .map(SwapDoc::from)
            .collect(),
        uptime_seconds: state.started.elapsed().as_secs(),
        zerodown_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The old nginx stack's `/consul-status`: what the source reports and what each pool renders to,
/// in the shape of an upstream block (one `server` line per instance).
pub fn consul_status(service: &Service) -> Value {
    let snap = service.publisher.load_full();
    let servers = |p: &Pool| -> Vec<String> {
        p.members
            .iter()
            .map(|m| format!("server {};", m.instance.address))
            .collect()
    };
    json!({
        "service": service.name(),
        "source": service.status.state(),
        "upstreams": {
            "active": servers(&snap.active),
            "standby": servers(&snap.standby),
        },
        "versions": {
            "active": snap.active.version,
            "standby": snap.standby.version,
        },
    })
}

fn pool_doc(p: &Pool, health: Option<&str>) -> PoolDoc {
    let instances = p
        .members
        .iter()
        .map(|m| InstanceDoc {
            address: m.instance.address.clone(),
            consul_health: health.map(str::to_string),
            ejected_for_ms: m
                .endpoint
                .health
                .ejected_for()
                .map(|d| d.as_millis() as u64),
            hsms: m.instance.hsms.clone(),
            id: m.instance.id.clone(),
            idle_connections: ConnPool::of(&m.endpoint).idle_connections() as u64,
            in_flight: m.endpoint.in_flight() as u64,
            tags: m.instance.tags.clone(),
            version: m.instance.version.clone(),
        })
        .collect();
    PoolDoc {
        hold: p.hold.as_ref().map(HoldDoc::from),
        instances,
        version: p.version.clone(),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Candidates, Instance, Publisher, SourceInfo};

    fn inst(id: &str, version: &str) -> Instance {
        Instance::for_tests(id, version)
    }

    #[test]
    fn not_ready_says_which_pool_is_missing() {
        let p = Publisher::new("hello-service", true, Arc::new(Metrics::new()));
        assert_eq!(
            not_ready(&p.load()),
            "not ready: no instance loaded yet (nothing is tagged active or standby)\n"
        );
        p.offer(Candidates {
            active: vec![],
            standby: vec![inst("a", "v2"), inst("bb", "v2")],
            source: SourceInfo {
                kind: "file",
                origin: "u.toml".into(),
                index: None,
            },
        });
        assert!(!is_ready(&p.load()));
        assert_eq!(
            not_ready(&p.load()),
            "not ready: the active pool is empty (no instance is tagged active); the standby pool has 2 instance(s) of v2\n"
        );
    }

    #[test]
    fn every_active_instance_ejected_is_not_ready() {
        let p = Publisher::new("hello-service", true, Arc::new(Metrics::new()));
        p.offer(Candidates {
            active: vec![inst("a", "v1")],
            standby: vec![],
            source: SourceInfo {
                kind: "file",
                origin: "u.toml".into(),
                index: None,
            },
        });
        assert!(is_ready(&p.load()));
        let snap = p.load();
        let health = &snap.active.members[0].endpoint.health;
        assert!(health.record_failure(1, std::time::Duration::from_secs(10)));
        assert!(!is_ready(&p.load()));
        assert_eq!(
            not_ready(&p.load()),
            "not ready: every active instance (1 of v1) is ejected after consecutive failures: requests get 502 until one recovers\n"
        );
    }
}
