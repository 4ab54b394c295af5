//! Request handling: recording, faults, routing, ACLs and blocking. Endpoint bodies live in
//! `endpoints.rs`; this file owns what every request goes through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::endpoints;
use super::faults::{FaultBody, Plan};
use super::params::{decode, ApiError, Blocking, Query};
use super::server::ResetRequested;
use super::shared::{lock, RecordedRequest, Shared, TokenPolicy};
use super::state::Store;

/// Consistency and index of a read answer, rendered as `X-Consul-*` headers.
pub(crate) struct Meta {
    pub index: u64,
    pub consistency: &'static str,
    pub filtered: bool,
    /// `X-Cache` of an agent-cached read (`?cached`): `HIT` or `MISS`, with `Age: 0` (the
    /// background refresh keeps it current).
    pub cache: Option<&'static str>,
}

/// An answer before faults are applied to its headers and body.
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
    pub meta: Option<Meta>,
}

impl Reply {
    pub fn json(value: &serde_json::Value, meta: Option<Meta>) -> Self {
        Reply {
            status: 200,
            content_type: Some("application/json"),
            body: Bytes::from(value.to_string()),
            meta,
        }
    }

    pub fn error(e: ApiError) -> Self {
        Reply {
            status: e.status,
            content_type: Some("text/plain; charset=utf-8"),
            body: Bytes::from(e.body),
            meta: None,
        }
    }

    pub fn empty() -> Self {
        Reply {
            status: 200,
            content_type: None,
            body: Bytes::new(),
            meta: None,
        }
    }

    fn into_response(self, plan: &Plan) -> Response<FaultBody> {
        let (body, announced) = FaultBody::new(self.body, plan.body);
        let mut resp = Response::new(body);
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        };
        if let Some(ct) = self.content_type {
            set("content-type", ct.to_string());
        }
        if let Some(len) = announced {
            set("content-length", len.to_string());
        }
        if let Some(m) = self.meta {
            let index = if plan.index_zero { 0 } else { m.index.max(1) };
            set("x-consul-index", index.to_string());
            if plan.no_leader_headers {
                set("x-consul-query-backend", "streaming".into());
            } else {
                set(
                    "x-consul-knownleader",
                    (!plan.known_leader_false).to_string(),
                );
                set(
                    "x-consul-lastcontact",
                    plan.last_contact.unwrap_or(0).to_string(),
                );
                set("x-consul-query-backend", "blocking-query".into());
            }
            let consistency = if plan.stale { "stale" } else { m.consistency };
            set("x-consul-effective-consistency", consistency.into());
            if m.filtered {
                set("x-consul-results-filtered-by-acls", "true".into());
            }
            if let Some(hit) = m.cache {
                set("x-cache", hit.into());
                set("age", "0".into());
            }
        }
        resp
    }
}

/// The token a request carries: `?token`, then `X-Consul-Token`, then `Authorization: Bearer`.
fn token_of(q: &Query, headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|a| a.strip_prefix("Bearer "));
    let candidates = [q.get("token"), header("x-consul-token"), bearer];
    candidates
        .into_iter()
        .flatten()
        .find(|t| !t.is_empty())
        .map(|t| t.trim().to_string())
}

/// Entry point for every request on every connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    reset: Arc<AtomicBool>,
) -> Result<Response<FaultBody>, ResetRequested> {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let q = Query::parse(&raw_query);
    let token = token_of(&q, req.headers());
    shared.log.push(RecordedRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query: raw_query,
        headers: req.headers().clone(),
        token: token.clone(),
        at: Instant::now(),
    });
    if path.starts_with("/v1/health/service/") {
        shared.count_health();
    }
    let plan = lock(&shared.faults).take(&path);
    if plan.reset {
        reset.store(true, Ordering::Relaxed);
        return Err(ResetRequested);
    }
    if let Some(d) = plan.delay {
        tokio::time::sleep(d).await;
    }
    let reply = match plan.status {
        Some((code, text)) => Reply::error(ApiError::new(code, text)),
        None => {
            let ctx = Ctx {
                shared: &shared,
                query: &q,
                token: token.as_deref(),
                plan: &plan,
            };
            route(&ctx, req, &path).await.unwrap_or_else(Reply::error)
        }
    };
    Ok(reply.into_response(&plan))
}

/// What endpoints need besides the request itself.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Shared,
    pub query: &'a Query,
    pub token: Option<&'a str>,
    pub plan: &'a Plan,
}

impl Ctx<'_> {
    /// The caller's policy, or 403 `ACL not found`.
    pub fn policy(&self) -> Result<TokenPolicy, ApiError> {
        lock(&self.shared.acl).policy(self.token)
    }

    /// The kit's blocking query, cut short when a snapshot restore abandons the store
    /// (its epoch moves) or an `IndexZero` fault is due.
    pub async fn block<T>(&self, b: Blocking, read: impl Fn(&Store) -> (u64, T)) -> (u64, T) {
        let mut first_epoch = None;
        let index_zero = self.plan.index_zero;
        let cut_short = |s: &Store| *first_epoch.get_or_insert(s.epoch) != s.epoch || index_zero;
        self.shared.core.block(b, cut_short, read).await
    }
}

fn not_allowed(method: &Method) -> ApiError {
    ApiError::new(405, format!("method {method} not allowed"))
}

async fn route(ctx: &Ctx<'_>, req: Request<Incoming>, path: &str) -> Result<Reply, ApiError> {
    let method = req.method().clone();
    let is = |m: Method| method == m;
    if let Some(name) = path.strip_prefix("/v1/health/service/") {
        return match is(Method::GET) {
            true => endpoints::service(ctx, &decode(name, false), false).await,
            false => Err(not_allowed(&method)),
        };
    }
    if let Some(name) = path.strip_prefix("/v1/catalog/service/") {
        return match is(Method::GET) {
            true => endpoints::service(ctx, &decode(name, false), true).await,
            false => Err(not_allowed(&method)),
        };
    }
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        let key = decode(key, false);
        return match method {
            Method::GET => endpoints::kv_get(ctx, &key).await,
            Method::PUT | Method::POST => endpoints::kv_put(ctx, &key, req.into_body()).await,
            Method::DELETE => endpoints::kv_delete(ctx, &key),
            _ => Err(not_allowed(&method)),
        };
    }
    if path == "/v1/agent/service/register" {
        return match is(Method::PUT) {
            true => endpoints::register(ctx, req.into_body()).await,
            false => Err(not_allowed(&method)),
        };
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        return match is(Method::PUT) {
            true => endpoints::deregister(ctx, &decode(id, false)),
            false => Err(not_allowed(&method)),
        };
    }
    if path == "/v1/status/leader" && is(Method::GET) {
        return Ok(Reply::json(&serde_json::json!("127.0.0.1:8300"), None));
    }
    Err(ApiError::new(404, "404 page not found"))
}
