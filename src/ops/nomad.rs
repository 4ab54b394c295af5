//! The Nomad side of `switch` and `deploy`: read the job, change only what is meant to change
//! (service tags/meta of the two groups; image and version of the standby group), check the plan,
//! and submit with `EnforceIndex` so a concurrent change is never overwritten. The job is kept as
//! JSON so fields this code does not know round-trip untouched.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use super::{NomadError, OpsError};
use crate::core::discovery::consul::{ConsulClient, ConsulError, VersionRule};

const TIMEOUT: Duration = Duration::from_secs(15);

/// A submit that lost the compare-and-set race (someone changed the job after it was read).
pub const CONFLICT: &str = "Enforcing job modify index";

fn call(call: &'static str) -> impl FnOnce(ConsulError) -> NomadError {
    move |error| NomadError::Call { call, error }
}

fn not_json(what: &'static str) -> impl FnOnce(serde_json::Error) -> NomadError {
    move |error| NomadError::NotJson { what, error }
}

fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).trim().to_string()
}

pub async fn read_job(c: &ConsulClient, job: &str) -> Result<Value, NomadError> {
    let r = c
        .get(&format!("/v1/job/{job}"), TIMEOUT)
        .await
        .map_err(call("Nomad"))?;
    match r.status.as_u16() {
        200 => serde_json::from_slice(&r.body).map_err(not_json("job is")),
        404 => Err(NomadError::NoJob {
            job: job.to_string(),
        }),
        403 => Err(NomadError::Token {
            body: body_text(&r.body),
        }),
        status => Err(NomadError::JobStatus {
            status,
            job: job.to_string(),
            body: body_text(&r.body),
        }),
    }
}

/// All `Services` lists of a group: the group's own and each task's.
fn service_lists(group: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    let Some(g) = group.as_object_mut() else {
        return out;
    };
    let mut tasks_lists = Vec::new();
    for (k, v) in g.iter_mut() {
        match k.as_str() {
            "Services" => out.push(v),
            "Tasks" => tasks_lists.push(v),
            _ => {}
        }
    }
    for tasks in tasks_lists {
        for t in tasks.as_array_mut().into_iter().flatten() {
            if let Some(s) = t.get_mut("Services") {
                out.push(s);
            }
        }
    }
    out
}

fn for_service(job: &mut Value, service: &str, mut f: impl FnMut(usize, &mut Value)) {
    for (gi, group) in job["TaskGroups"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for list in service_lists(group) {
            for s in list.as_array_mut().into_iter().flatten() {
                if s["Name"].as_str() == Some(service) {
                    f(gi, s);
                }
            }
        }
    }
}

/// The groups whose `service` carries `tag` (case-insensitively), by index.
pub fn groups_tagged(job: &Value, service: &str, tag: &str) -> Vec<usize> {
    let mut job = job.clone();
    let mut out = Vec::new();
    for_service(&mut job, service, |gi, s| {
        let has = s["Tags"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t.as_str().is_some_and(|t| t.eq_ignore_ascii_case(tag)));
        if has && !out.contains(&gi) {
            out.push(gi);
        }
    });
    out
}

pub fn group_name(job: &Value, gi: usize) -> String {
    job["TaskGroups"][gi]["Name"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

/// Swaps `active` and `standby` in the tags and meta values of `service` only. Returns how many
/// service blocks changed.
pub fn swap_tags(job: &mut Value, service: &str, active: &str, standby: &str) -> usize {
    let flip = |v: &mut Value| -> bool {
        let Some(s) = v.as_str() else { return false };
        let new = if s.eq_ignore_ascii_case(active) {
            standby
        } else if s.eq_ignore_ascii_case(standby) {
            active
        } else {
            return false;
        };
        *v = Value::String(new.to_string());
        true
    };
    let mut changed = 0;
    for_service(job, service, |_, s| {
        let mut any = false;
        for t in s["Tags"].as_array_mut().into_iter().flatten() {
            any |= flip(t);
        }
        for (_, v) in s["Meta"].as_object_mut().into_iter().flatten() {
            any |= flip(v);
        }
        changed += any as usize;
    });
    changed
}

/// Puts `version` and `image` on group `gi` only: every task's `Config.image`, the service's
/// version tag (a tag matching the configured version pattern) and its version meta key.
pub fn set_version(
    job: &mut Value,
    gi: usize,
    service: &str,
    version: &str,
    image: &str,
    versions: &VersionRule,
) {
    if let Some(tasks) = job["TaskGroups"][gi]["Tasks"].as_array_mut() {
        for t in tasks {
            if t["Config"].is_object() {
                t["Config"]["image"] = json!(image);
            }
        }
    }
    for_service(job, service, |g, s| {
        if g != gi {
            return;
        }
        if let Some(tags) = s["Tags"].as_array_mut() {
            tags.retain(|t| !t.as_str().is_some_and(|t| versions.is_version_tag(t)));
            tags.push(json!(version));
        }
        if !s["Meta"].is_object() {
            s["Meta"] = json!({});
        }
        s["Meta"][versions.meta_key.as_str()] = json!(version);
    });
}

/// `POST /v1/job/:id/plan`: the per-group update annotations.
pub async fn plan(c: &ConsulClient, id: &str, job: &Value) -> Result<Value, NomadError> {
    let body = json!({ "Job": job, "Diff": true }).to_string();
    let r = c
        .call(
            Method::POST,
            &format!("/v1/job/{id}/plan"),
            Bytes::from(body),
            TIMEOUT,
        )
        .await
        .map_err(call("Nomad plan"))?;
    if r.status != 200 {
        return Err(NomadError::PlanRefused {
            status: r.status,
            body: body_text(&r.body),
        });
    }
    serde_json::from_slice(&r.body).map_err(not_json("plan is"))
}

/// Refuses a plan that would restart allocations in `groups` (every group when empty).
pub fn no_destructive(plan: &Value, groups: &[String]) -> Result<(), OpsError> {
    let updates = &plan["Annotations"]["DesiredTGUpdates"];
    let mut bad = Vec::new();
    for (name, u) in updates.as_object().into_iter().flatten() {
        if !groups.is_empty() && !groups.contains(name) {
            continue;
        }
        for (key, what) in [("DestructiveUpdate", "destructive"), ("Canary", "canary")] {
            let n = u[key].as_u64().unwrap_or(0);
            if n > 0 {
                bad.push(format!("{name}: {n} {what}"));
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(OpsError::refused(format!(
            "the Nomad plan would restart allocations ({}): refusing (only service tags/meta may change; check job, group and task meta)",
            bad.join(", ")
        )))
    }
}

/// The job's latest deployment, or `None`.
pub async fn latest_deployment(c: &ConsulClient, id: &str) -> Result<Option<Value>, NomadError> {
    let r = c
        .get(&format!("/v1/job/{id}/deployment"), TIMEOUT)
        .await
        .map_err(call("Nomad"))?;
    if r.status == 404 {
        return Ok(None);
    }
    if r.status != 200 {
        return Err(NomadError::Status {
            status: r.status,
            what: "deployment",
            body: body_text(&r.body),
        });
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(not_json("deployment is"))?;
    Ok((!v.is_null()).then_some(v))
}

/// Every deployment of the job, newest first.
pub async fn deployments(c: &ConsulClient, id: &str) -> Result<Vec<Value>, NomadError> {
    let r = c
        .get(&format!("/v1/job/{id}/deployments"), TIMEOUT)
        .await
        .map_err(call("Nomad"))?;
    if r.status != 200 {
        return Err(NomadError::Status {
            status: r.status,
            what: "deployments",
            body: body_text(&r.body),
        });
    }
    let v: Option<Vec<Value>> =
        serde_json::from_slice(&r.body).map_err(not_json("deployments are"))?;
    Ok(v.unwrap_or_default())
}

pub enum Submit {
    Accepted(Value),
    /// The job changed since it was read: re-read and try again.
    Conflict(String),
}

/// Registers `job` only if its `JobModifyIndex` is still `index`.
pub async fn submit(
    c: &ConsulClient,
    id: &str,
    job: &Value,
    index: u64,
) -> Result<Submit, NomadError> {
    let body = json!({ "Job": job, "EnforceIndex": true, "JobModifyIndex": index }).to_string();
    let r = c
        .call(
            Method::POST,
            &format!("/v1/job/{id}"),
            Bytes::from(body),
            TIMEOUT,
        )
        .await
        .map_err(call("Nomad register"))?;
    let text = body_text(&r.body);
    if r.status == 200 {
        return Ok(Submit::Accepted(
            serde_json::from_str(&text).unwrap_or(Value::Null),
        ));
    }
    if text.starts_with(CONFLICT) {
        return Ok(Submit::Conflict(text));
    }
    Err(NomadError::JobRefused {
        status: r.status,
        body: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Value {
        json!({"ID":"hello","JobModifyIndex":7,"Meta":{"owner":"fab"},"TaskGroups":[
          {"Name":"blue","Services":[{"Name":"hello-service","Tags":["active","v1"],"Meta":{"version":"v1","role":"active"}}],
           "Tasks":[{"Name":"web","Config":{"image":"hello:1"},"Services":null}]},
          {"Name":"green","Tasks":[{"Name":"web","Config":{"image":"hello:2"},
           "Services":[{"Name":"hello-service","Tags":["standby","v2"],"Meta":{"version":"v2"}},{"Name":"other","Tags":["active"]}]}]}
        ]})
    }

    #[test]
    fn swap_touches_only_the_named_service_tags_and_meta() {
        let mut j = job();
        assert_eq!(swap_tags(&mut j, "hello-service", "active", "standby"), 2);
        assert_eq!(
            j["TaskGroups"][0]["Services"][0]["Tags"],
            json!(["standby", "v1"])
        );
        assert_eq!(j["TaskGroups"][0]["Services"][0]["Meta"]["role"], "standby");
        assert_eq!(
            j["TaskGroups"][1]["Tasks"][0]["Services"][0]["Tags"],
            json!(["active", "v2"])
        );
        assert_eq!(
            j["TaskGroups"][1]["Tasks"][0]["Services"][1]["Tags"],
            json!(["active"]),
            "other service untouched"
        );
        assert_eq!(j["Meta"], json!({"owner":"fab"}));
        assert_eq!(groups_tagged(&j, "hello-service", "standby"), vec![0]);
    }

    #[test]
    fn set_version_changes_one_group() {
        let mut j = job();
        let rule = VersionRule::new("version", r"^v\d+").unwrap();
        set_version(&mut j, 1, "hello-service", "v3", "hello:3", &rule);
        assert_eq!(j["TaskGroups"][1]["Tasks"][0]["Config"]["image"], "hello:3");
        assert_eq!(
            j["TaskGroups"][1]["Tasks"][0]["Services"][0]["Tags"],
            json!(["standby", "v3"])
        );
        assert_eq!(
            j["TaskGroups"][1]["Tasks"][0]["Services"][0]["Meta"]["version"],
            "v3"
        );
        assert_eq!(j["TaskGroups"][0]["Tasks"][0]["Config"]["image"], "hello:1");
        assert_eq!(
            j["TaskGroups"][0]["Services"][0]["Tags"],
            json!(["active", "v1"])
        );
    }

    #[test]
    fn destructive_plans_are_refused() {
        let plan = json!({"Annotations":{"DesiredTGUpdates":{"blue":{"InPlaceUpdate":2,"DestructiveUpdate":0},"green":{"DestructiveUpdate":2}}}});
        assert!(no_destructive(&plan, &["blue".into()]).is_ok());
        let e = no_destructive(&plan, &[]).unwrap_err().to_string();
        assert!(e.contains("green: 2 destructive"), "{e}");
    }
}
