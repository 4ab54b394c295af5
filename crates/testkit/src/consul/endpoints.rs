//! The endpoints: health/catalog service reads, agent register/deregister and KV.
//! Parameters are validated first (400), then the token (403), then the store is read.

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::http::{Ctx, Meta, Reply};
use super::params::{blocking, consistency, ApiError};
use super::render::{self, DATACENTER};
use super::spec::CheckStatus;
use super::state::{Instance, Node, Store};

/// Largest KV value Consul accepts.
const MAX_KV_VALUE: usize = 512 * 1024;
/// Generous cap for registration bodies.
const MAX_REGISTER_BODY: usize = 1024 * 1024;

fn check_dc(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    match ctx.query.get("dc") {
        Some(dc) if !dc.is_empty() && dc != DATACENTER => {
            Err(ApiError::new(500, "No path to datacenter"))
        }
        _ => Ok(()),
    }
}

fn denied() -> ApiError {
    ApiError::new(403, "Permission denied")
}

async fn read_body(body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            413,
            format!("Request body too large, max size: {max} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!("failed to read body: {e}"))),
    }
}

/// `?passing`: every check of the entry, node checks included, must be `passing`.
fn all_passing(node: &Node, inst: &Instance) -> bool {
    node.serf.status == CheckStatus::Passing
        && node.maintenance.is_none()
        && inst.checks.iter().all(|c| c.status == CheckStatus::Passing)
}

/// `?tag=` (repeatable): all listed tags present, compared case-insensitively.
fn has_tags(inst: &Instance, wanted: &[String]) -> bool {
    wanted.iter().all(|w| {
        let mut tags = inst.spec.tags.iter();
        tags.any(|t| t.to_lowercase() == *w)
    })
}

/// `GET /v1/health/service/:name` (or `/v1/catalog/service/:name` when `catalog`).
pub(crate) async fn service(ctx: &Ctx<'_>, name: &str, catalog: bool) -> Result<Reply, ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("Missing service name"));
    }
    let passing = if catalog {
        false
    } else {
        ctx.query.flag("passing")?
    };
    let mut consistency = consistency(ctx.query)?;
    let b = blocking(ctx.query)?;
    // Agent caching (background refresh): the agent's own query to the servers is always stale.
    let cache = match (ctx.query.has("cached"), consistency) {
        (false, _) => None,
        (true, "consistent") => {
            return Err(ApiError::bad_request(
                "Cannot specify ?cached with ?consistent, conflicting semantics.",
            ))
        }
        // A first call fills the cache; blocking calls are answered from it as it refreshes.
        (true, _) => {
            consistency = "stale";
            Some(if b.index > 0 { "HIT" } else { "MISS" })
        }
    };
    check_dc(ctx)?;
    if ctx.query.has("filter") {
        return Err(ApiError::bad_request(
            "the Consul test double does not implement ?filter",
        ));
    }
    let policy = ctx.policy()?;
    if ctx.plan.churn {
        ctx.shared.core.write(|s| s.touch_service(name));
    }
    let (index, entries) = ctx
        .block(b, |s| (s.index_for_service(name), s.instances(name)))
        .await;
    let filtered = !policy.service_read && !entries.is_empty();
    let wanted: Vec<String> = ctx
        .query
        .all("tag")
        .iter()
        .map(|t| t.to_lowercase())
        .collect();
    let entries: Vec<(Node, Instance)> = entries
        .into_iter()
        .filter(|_| policy.service_read)
        .filter(|(n, i)| !passing || all_passing(n, i))
        .filter(|(_, i)| has_tags(i, &wanted))
        .collect();
    let lower = ctx
        .shared
        .lowercase_tagged
        .load(std::sync::atomic::Ordering::Relaxed);
    let json = match catalog {
        true => render::catalog(&entries, lower),
        false => render::health(&entries, lower),
    };
    let meta = Meta {
        index,
        consistency,
        filtered,
        cache,
    };
    Ok(Reply::json(&json, Some(meta)))
}

/// `GET /v1/kv/:key[?recurse][?raw]`, blocking with `?index`; 404 (with an index) if missing.
pub(crate) async fn kv_get(ctx: &Ctx<'_>, key: &str) -> Result<Reply, ApiError> {
    let consistency = consistency(ctx.query)?;
    let b = blocking(ctx.query)?;
    let (recurse, raw) = (ctx.query.flag("recurse")?, ctx.query.flag("raw")?);
    check_dc(ctx)?;
    if ctx.query.has("keys") {
        return Err(ApiError::bad_request(
            "the Consul test double does not implement ?keys",
        ));
    }
    if !ctx.policy()?.kv_read {
        return Err(denied());
    }
    if ctx.plan.churn {
        ctx.shared.core.write(|s| s.touch_key(key));
    }
    let (index, entries) = if recurse {
        ctx.block(b, |s| s.kv_list(key)).await
    } else {
        let one = |s: &Store| {
            let (i, e) = s.kv_get(key);
            (i, e.into_iter().collect::<Vec<_>>())
        };
        ctx.block(b, one).await
    };
    let meta = Meta {
        index,
        consistency,
        filtered: false,
        cache: None,
    };
    let mut reply = match (entries.first(), raw && !recurse) {
        (None, _) => Reply::empty(),
        (Some(e), true) => Reply {
            content_type: Some("text/plain; charset=utf-8"),
            body: Bytes::from(e.value.clone()),
            ..Reply::empty()
        },
        (Some(_), false) => Reply::json(&render::kv(&entries), None),
    };
    if entries.is_empty() {
        reply.status = 404;
    }
    reply.meta = Some(meta);
    Ok(reply)
}

/// `PUT /v1/kv/:key[?cas=N][&flags=F]`: replies `true`, or `false` on a failed check-and-set.
pub(crate) async fn kv_put(ctx: &Ctx<'_>, key: &str, body: Incoming) -> Result<Reply, ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request("Missing key name"));
    }
    let (cas, flags) = (
        ctx.query.uint("cas")?,
        ctx.query.uint("flags")?.unwrap_or(0),
    );
    if ctx.query.has("acquire") || ctx.query.has("release") {
        return Err(ApiError::bad_request(
            "the Consul test double does not implement sessions",
        ));
    }
    check_dc(ctx)?;
    if !ctx.policy()?.kv_write {
        return Err(denied());
    }
    let value = read_body(body, MAX_KV_VALUE).await?;
    let ok = ctx
        .shared
        .core
        .write(|s| s.kv_put(key, value.to_vec(), flags, cas));
    Ok(Reply::json(&serde_json::json!(ok), None))
}

/// `DELETE /v1/kv/:key[?cas=N][&recurse]`: wakes readers blocked on the key with a 404.
pub(crate) fn kv_delete(ctx: &Ctx<'_>, key: &str) -> Result<Reply, ApiError> {
    let (cas, recurse) = (ctx.query.uint("cas")?, ctx.query.flag("recurse")?);
    if key.is_empty() && !recurse {
        return Err(ApiError::bad_request("Missing key name"));
    }
    check_dc(ctx)?;
    if !ctx.policy()?.kv_write {
        return Err(denied());
    }
    let ok = ctx.shared.core.write(|s| s.kv_delete(key, cas, recurse));
    Ok(Reply::json(&serde_json::json!(ok), None))
}

/// `PUT /v1/agent/service/register[?replace-existing-checks]`: one in-place upsert.
pub(crate) async fn register(ctx: &Ctx<'_>, body: Incoming) -> Result<Reply, ApiError> {
    let replace = ctx.query.flag("replace-existing-checks")?;
    let body = read_body(body, MAX_REGISTER_BODY).await?;
    let spec = super::register::decode(&body)?;
    if !ctx.policy()?.service_write {
        return Err(denied());
    }
    ctx.shared.core.write(|s| s.register(spec, replace));
    Ok(Reply::empty())
}

/// `PUT /v1/agent/service/deregister/:id`: an unknown ID is a no-op answered with 200.
pub(crate) fn deregister(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request("Missing service ID"));
    }
    if !ctx.policy()?.service_write {
        return Err(denied());
    }
    ctx.shared.core.write(|s| s.deregister(id));
    Ok(Reply::empty())
}
