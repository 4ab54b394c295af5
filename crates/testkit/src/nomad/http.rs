//! Request handling: recording, faults, tokens, routing and blocking. Endpoint bodies live
//! in `endpoints.rs`; this file owns what every request goes through.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::endpoints;
use super::params::{decode, ApiError, Blocking, Query};
use super::shared::{lock, NomadRequest, Shared};
use super::state::Store;

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// An answer: JSON or `text/plain`, with `X-Nomad-Index` when known, plus
/// `X-Nomad-KnownLeader`/`X-Nomad-LastContact` on reads.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub json: bool,
    pub index: Option<u64>,
    pub read: bool,
}

impl Reply {
    /// A read answer (query meta headers).
    pub fn read(value: &serde_json::Value, index: u64) -> Self {
        Reply {
            status: 200,
            body: Bytes::from(value.to_string()),
            json: true,
            index: Some(index),
            read: true,
        }
    }

    /// A write answer (`X-Nomad-Index` only).
    pub fn write(value: &serde_json::Value, index: u64) -> Self {
        Reply {
            read: false,
            ..Self::read(value, index)
        }
    }

    pub fn error(e: ApiError) -> Self {
        Reply {
            status: e.status,
            body: Bytes::from(e.body),
            json: false,
            index: None,
            read: false,
        }
    }

    /// An error from a blocking read, which Nomad still sends with the query meta.
    pub fn read_error(e: ApiError, index: u64) -> Self {
        Reply {
            index: Some(index),
            read: true,
            ..Self::error(e)
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        let ct = if self.json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        h.insert("content-type", HeaderValue::from_static(ct));
        if let Some(i) = self.index {
            h.insert("x-nomad-index", HeaderValue::from(i.max(1)));
        }
        if self.read {
            h.insert("x-nomad-knownleader", HeaderValue::from_static("true"));
            h.insert("x-nomad-lastcontact", HeaderValue::from_static("0"));
        }
        resp
    }
}

/// `X-Nomad-Token`, else `Authorization: Bearer` (Nomad has no `?token=`).
fn token_of(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|a| a.strip_prefix("Bearer "));
    let token = header("x-nomad-token").filter(|t| !t.is_empty()).or(bearer);
    token.map(|t| t.trim().to_string())
}

/// What endpoints need besides the path.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Arc<Shared>,
    pub query: &'a Query,
    pub token: Option<&'a str>,
    pub body: &'a Bytes,
    /// A forced `EnforceIndex` conflict is due on this request.
    pub conflict: bool,
    /// A plan must report this group's allocations as destructively updated.
    pub destructive: Option<&'static str>,
}

impl Ctx<'_> {
    pub fn allow(&self, write: bool) -> Result<(), ApiError> {
        lock(&self.shared.acl).check(self.token, write)
    }

    /// `?namespace=` other than `default` (or `*`) holds no jobs here.
    pub fn other_namespace(&self) -> bool {
        self.query
            .get("namespace")
            .is_some_and(|n| !n.is_empty() && n != "default" && n != "*")
    }

    /// The kit's blocking query (Nomad has no reason to answer early).
    pub async fn block<T>(&self, b: Blocking, read: impl Fn(&Store) -> (u64, T)) -> (u64, T) {
        self.shared.core.block(b, |_| false, read).await
    }
}

fn is_register(method: &Method, path: &str) -> bool {
    let write = method == Method::POST || method == Method::PUT;
    let job_path = path
        .strip_prefix("/v1/job/")
        .is_some_and(|rest| !rest.contains('/'));
    write && (path == "/v1/jobs" || job_path)
}

/// Entry point for every request on every connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Ok(
                Reply::error(ApiError::bad_request(format!("failed to read body: {e}")))
                    .into_response(),
            )
        }
    };
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let token = token_of(&parts.headers);
    shared.log.push(NomadRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        token: token.clone(),
        at: Instant::now(),
    });
    let plan = super::faults::take(
        &mut lock(&shared.faults),
        &path,
        is_register(&parts.method, &path),
    );
    if let Some(d) = plan.delay {
        tokio::time::sleep(d).await;
    }
    if let Some((code, text)) = plan.status {
        return Ok(Reply::error(ApiError::new(code, text)).into_response());
    }
    let query = Query::parse(&raw_query);
    let ctx = Ctx {
        shared: &shared,
        query: &query,
        token: token.as_deref(),
        body: &body,
        conflict: plan.conflict,
        destructive: plan.destructive,
    };
    let reply = route(&ctx, &parts.method, &path)
        .await
        .unwrap_or_else(Reply::error);
    Ok(reply.into_response())
}

fn invalid_method() -> ApiError {
    ApiError::new(405, "Invalid method")
}

async fn route(ctx: &Ctx<'_>, method: &Method, path: &str) -> Result<Reply, ApiError> {
    let get = method == Method::GET;
    let write = method == Method::POST || method == Method::PUT;
    if path == "/v1/jobs" {
        return match (get, write) {
            (true, _) => endpoints::list_jobs(ctx).await,
            (_, true) => endpoints::register(ctx, None),
            _ => Err(invalid_method()),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/job/") {
        let (id, sub) = match rest.rsplit_once('/') {
            Some((id, sub)) => (id, Some(sub)),
            None => (rest, None),
        };
        let id = decode(id, false);
        return match (sub, get, write) {
            (None, true, _) => endpoints::read_job(ctx, &id).await,
            (None, _, true) => endpoints::register(ctx, Some(&id)),
            (Some("plan"), _, true) => endpoints::plan(ctx, &id),
            (Some("versions"), true, _) => endpoints::versions(ctx, &id).await,
            (Some("allocations"), true, _) => endpoints::allocations(ctx, &id).await,
            (Some("deployments"), true, _) => endpoints::job_deployments(ctx, &id).await,
            (Some("deployment"), true, _) => endpoints::latest_deployment(ctx, &id).await,
            (Some("plan" | "versions" | "allocations" | "deployments" | "deployment"), _, _) => {
                Err(invalid_method())
            }
            _ => Err(ApiError::new(404, "404 page not found")),
        };
    }
    if let Some(id) = path.strip_prefix("/v1/deployment/promote/") {
        return match write {
            true => endpoints::promote(ctx, &decode(id, false)),
            false => Err(invalid_method()),
        };
    }
    if let Some(id) = path.strip_prefix("/v1/deployment/fail/") {
        return match write {
            true => endpoints::fail(ctx, &decode(id, false)),
            false => Err(invalid_method()),
        };
    }
    if let Some(id) = path.strip_prefix("/v1/deployment/") {
        return match get {
            true => endpoints::deployment(ctx, &decode(id, false)).await,
            false => Err(invalid_method()),
        };
    }
    if path == "/v1/status/leader" && get {
        return Ok(Reply::read(&serde_json::json!("127.0.0.1:4647"), 1));
    }
    Err(ApiError::new(404, "404 page not found"))
}
