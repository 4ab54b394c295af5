//! The endpoints: job read/register/plan, versions, allocations, deployments.
//! Order of checks as in Nomad: blocking parameters and body decoding (400), then the
//! token (403), then the store.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::deploy::RUNNING;
use super::diff::job_diff;
use super::http::{Ctx, Reply};
use super::job;
use super::params::{blocking, ApiError};
use super::plan::{desired, reconcile, AllocRef};
use super::shared::submit;

fn not_found() -> ApiError {
    ApiError::new(404, "job not found")
}

/// Looks a request field up the way Go decodes JSON: exact name first, then any case.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let hit = obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    });
    hit.filter(|v| !v.is_null())
}

/// Decodes a `{"Job": …}` request body; `mismatch` is the error when the path ID differs.
fn job_request(
    ctx: &Ctx<'_>,
    path_id: Option<&str>,
    mismatch: &str,
) -> Result<(Value, Map<String, Value>), ApiError> {
    let v: Value =
        serde_json::from_slice(ctx.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal into Go value of type api.JobRegisterRequest",
        ));
    };
    let job = field(&obj, "Job")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("Job must be specified"))?;
    let id = job.get("ID").and_then(Value::as_str);
    let Some(id) = id else {
        return Err(ApiError::bad_request("Job ID hasn't been provided"));
    };
    if path_id.is_some_and(|p| p != id) {
        return Err(ApiError::bad_request(mismatch));
    }
    Ok((job, obj))
}

/// `GET /v1/job/:id`: the bare job; `X-Nomad-Index` is its `ModifyIndex`.
pub(crate) async fn read_job(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let b = blocking(ctx.query)?;
    ctx.allow(false)?;
    let other_ns = ctx.other_namespace();
    let (index, job) = ctx
        .block(b, |s| match s.job(id).filter(|_| !other_ns) {
            Some(j) => (job::u64_of(j, "ModifyIndex"), Some(j.clone())),
            None => (s.jobs_index, None),
        })
        .await;
    match job {
        Some(j) => Ok(Reply::read(&j, index)),
        None => Ok(Reply::read_error(not_found(), index)),
    }
}

/// `GET /v1/jobs`: list stubs.
pub(crate) async fn list_jobs(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let b = blocking(ctx.query)?;
    ctx.allow(false)?;
    let (index, stubs) = ctx
        .block(b, |s| {
            let stub = |j: &Value| {
                json!({"ID": j["ID"], "ParentID": "", "Name": j["Name"], "Namespace": j["Namespace"],
                       "Type": j["Type"], "Priority": j["Priority"], "Status": j["Status"],
                       "StatusDescription": "", "Stable": j["Stable"], "Version": j["Version"],
                       "CreateIndex": j["CreateIndex"], "ModifyIndex": j["ModifyIndex"],
                       "JobModifyIndex": j["JobModifyIndex"]})
            };
            let all: Vec<Value> = s.jobs.values().map(|e| stub(e.current())).collect();
            (s.jobs_index, all)
        })
        .await;
    Ok(Reply::read(&json!(stubs), index))
}

/// `POST /v1/job/:id` and `POST /v1/jobs`, with `EnforceIndex` compare-and-set.
pub(crate) fn register(ctx: &Ctx<'_>, path_id: Option<&str>) -> Result<Reply, ApiError> {
    let (job, req) = job_request(ctx, path_id, "Job ID does not match name")?;
    ctx.allow(true)?;
    let id = job::str_of(&job, "ID").to_string();
    if ctx.conflict {
        ctx.shared.core.write(|s| s.foreign_write(&id));
    }
    let enforce = field(&req, "EnforceIndex").and_then(Value::as_bool) == Some(true);
    let jmi = field(&req, "JobModifyIndex")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let reg = submit(ctx.shared, job, enforce.then_some(jmi), false)?;
    let body = json!({
        "EvalID": reg.eval_id, "EvalCreateIndex": reg.eval_index,
        "JobModifyIndex": reg.job_modify_index, "Warnings": "",
        "Index": reg.eval_index, "LastContact": 0, "KnownLeader": false,
    });
    Ok(Reply::write(&body, reg.eval_index))
}

/// `POST /v1/job/:id/plan`: what registering the job would do, without doing it.
pub(crate) fn plan(ctx: &Ctx<'_>, path_id: &str) -> Result<Reply, ApiError> {
    let (mut new, req) = job_request(ctx, Some(path_id), "Job ID does not match")?;
    ctx.allow(true)?;
    job::canonicalize(&mut new)?;
    let want_diff = field(&req, "Diff").and_then(Value::as_bool) == Some(true);
    let id = job::str_of(&new, "ID").to_string();
    let (index, body) = ctx.shared.core.read(|s| {
        let entry = s.jobs.get(&id);
        let current = entry.map(|e| e.current());
        // An unchanged spec keeps the current version, so its allocations are ignored.
        let same = current
            .filter(|c| !job::spec_changed(c, &new))
            .map(|_| entry.map_or(0, |e| e.version()));
        let allocs = entry.map_or(&[][..], |e| e.allocs.as_slice());
        let refs: Vec<AllocRef<'_>> = allocs
            .iter()
            .filter_map(|a| {
                Some(AllocRef {
                    group: &a.group,
                    index: a.index,
                    job: entry?.versions.get(a.version as usize)?,
                    same_version: same == Some(a.version),
                    canary: a.canary,
                })
            })
            .collect();
        let plans = reconcile(&new, &refs);
        let dep = entry
            .and(s.job_deployments(&id).into_iter().next())
            .filter(|d| d.status == RUNNING);
        let promoted = |g: &str| {
            same.is_some()
                && dep
                    .and_then(|d| d.groups.get(g))
                    .is_some_and(|g| g.promoted)
        };
        let updates: BTreeMap<String, _> = plans
            .iter()
            .map(|(g, p)| (g.clone(), desired(&new, g, p, promoted(g))))
            .collect();
        let mut tg: Map<String, Value> = updates
            .iter()
            .map(|(g, d)| (g.clone(), d.to_json()))
            .collect();
        if let Some(Value::Object(g)) = ctx.destructive.and_then(|g| tg.get_mut(g)) {
            let all: u64 = g.values().filter_map(Value::as_u64).sum();
            g.values_mut().for_each(|v| *v = json!(0));
            g.insert("DestructiveUpdate".into(), json!(all));
        }
        let diff = if want_diff {
            job_diff(current, &new, &updates)
        } else {
            Value::Null
        };
        let jmi = current.map_or(0, |c| job::u64_of(c, "JobModifyIndex"));
        let body = json!({
            "Index": s.index, "JobModifyIndex": jmi, "Diff": diff,
            "Annotations": {"DesiredTGUpdates": tg, "PreemptedAllocs": null},
            "FailedTGAllocs": null, "CreatedEvals": null, "Warnings": "",
            "NextPeriodicLaunch": "0001-01-01T00:00:00Z",
        });
        (s.index, body)
    });
    Ok(Reply::write(&body, index))
}

/// `GET /v1/job/:id/versions`: newest first.
pub(crate) async fn versions(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let b = blocking(ctx.query)?;
    ctx.allow(false)?;
    let (index, versions) = ctx
        .block(b, |s| match s.jobs.get(id) {
            Some(e) => (
                job::u64_of(e.current(), "ModifyIndex"),
                Some(e.versions.iter().rev().cloned().collect::<Vec<_>>()),
            ),
            None => (s.jobs_index, None),
        })
        .await;
    match versions {
        Some(v) => Ok(Reply::read(&json!({"Versions": v, "Diffs": null}), index)),
        None => Ok(Reply::read_error(
            ApiError::new(404, "job versions not found"),
            index,
        )),
    }
}

/// `GET /v1/job/:id/allocations`: live allocations (`[]` for an unknown job).
pub(crate) async fn allocations(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let b = blocking(ctx.query)?;
    ctx.allow(false)?;
    let (index, stubs) = ctx.block(b, |s| (s.index, s.alloc_stubs(id))).await;
    Ok(Reply::read(&json!(stubs), index))
}

/// `GET /v1/job/:id/deployments`: newest first, indexed by the deployments table.
pub(crate) async fn job_deployments(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let b = blocking(ctx.query)?;
    ctx.allow(false)?;
    let (index, list) = ctx
        .block(b, |s| {
            let all: Vec<Value> = s
                .job_deployments(id)
                .into_iter()
                .map(|d| d.to_json())
                .collect();
            (s.deployment_index, all)
        })
        .await;
    Ok(Reply::read(&json!(list), index))
}

/// `GET /v1/job/:id/deployment`: the latest deployment, or JSON `null`.
pub(crate) async fn latest_deployment(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let b = blocking(ctx.query)?;
    ctx.allow(false)?;
    let (index, latest) = ctx
        .block(b, |s| match s.job_deployments(id).first() {
            Some(d) => (d.modify_index, d.to_json()),
            None => (s.deployment_index, Value::Null),
        })
        .await;
    Ok(Reply::read(&latest, index))
}

/// `GET /v1/deployment/:id`.
pub(crate) async fn deployment(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let b = blocking(ctx.query)?;
    ctx.allow(false)?;
    let (index, found) = ctx
        .block(b, |s| match s.deployment(id) {
            Some(d) => (d.modify_index, Some(d.to_json())),
            None => (s.deployment_index, None),
        })
        .await;
    match found {
        Some(d) => Ok(Reply::read(&d, index)),
        None => Ok(Reply::read_error(
            ApiError::new(404, "deployment not found"),
            index,
        )),
    }
}

fn deployment_update(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let index = ctx
        .shared
        .core
        .read(|s| s.deployment(id).map_or(s.index, |d| d.modify_index));
    let body = json!({"EvalID": "", "EvalCreateIndex": 0, "DeploymentModifyIndex": index,
                      "RevertedJobVersion": null, "Index": index});
    Ok(Reply::write(&body, index))
}

/// `POST /v1/deployment/promote/:id` (all groups).
pub(crate) fn promote(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    ctx.allow(true)?;
    ctx.shared
        .core
        .write(|s| s.request_promotion(id))
        .map_err(ApiError::internal)?;
    deployment_update(ctx, id)
}

/// `POST /v1/deployment/fail/:id`: fails a running deployment (rolling back if asked).
pub(crate) fn fail(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    ctx.allow(true)?;
    super::fail_deployment(ctx.shared, id).map_err(ApiError::internal)?;
    deployment_update(ctx, id)
}
