//! `zerodown deploy VERSION --image IMAGE`: put a new version on the standby group only, through
//! the Nomad API — the plan must leave the active group untouched — follow the Nomad deployment to
//! its end (reporting an auto-revert), then check the proxy serves the new version on `/standby`.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{nomad, wait_for_proxy, Ctx, Mode, NomadError, OpsError};
use crate::core::discovery::consul::ConsulClient;

/// Refuses a plan that would replace, stop, place or canary allocations of the `active` groups.
/// (Nomad reports unchanged groups of a changed job as `InPlaceUpdate`: that restarts nothing.)
fn active_untouched(plan: &Value, active: &[String]) -> Result<(), OpsError> {
    for g in active {
        let u = &plan["Annotations"]["DesiredTGUpdates"][g];
        let touched: Vec<String> = ["DestructiveUpdate", "Canary", "Place", "Stop"]
            .iter()
            .filter_map(|k| {
                u[*k]
                    .as_u64()
                    .filter(|n| *n > 0)
                    .map(|n| format!("{k}={n}"))
            })
            .collect();
        if !touched.is_empty() {
            return Err(OpsError::refused(format!(
                "the Nomad plan would change the active group {g} ({}): refusing; a deploy only touches the standby group",
                touched.join(", ")
            )));
        }
    }
    Ok(())
}

pub async fn deploy(ctx: &Ctx, version: &str, image: &str) -> Result<String, OpsError> {
    let Mode::Nomad {
        nomad: Some(n),
        job: job_id,
        ..
    } = &ctx.mode
    else {
        return Err(OpsError::Usage(
            "deploy works through Nomad: the proxy must watch Consul tags (source.kind = \"consul\", active_selector = \"tags\") and NOMAD_ADDR (or --nomad-addr) must be set".into(),
        ));
    };
    let (group, job_version) = submit_to_standby(ctx, n, job_id, version, image).await?;
    follow_deployment(ctx, n, job_id, job_version).await?;
    let elapsed = wait_for_proxy(ctx, &format!("{version} in the standby pool"), |s| {
        s.pools.standby.version.as_deref() == Some(version)
    })
    .await?;
    let route = ctx
        .probe_route(crate::config::PoolName::Standby)
        .ok_or_else(|| {
            OpsError::refused(
                "no route sends to the standby pool: nothing to check the deploy through",
            )
        })?;
    let through = ctx.through(&route).await?;
    if through.status != 200 {
        return Err(OpsError::Through {
            path: route.0.clone(),
            status: through.status,
            excerpt: through.excerpt(60),
        });
    }
    Ok(format!(
        "deployed {version} ({image}) to group {group} of job {job_id} (job version {job_version}); the proxy's standby pool serves it after {:.2}s; {} answers: {}",
        elapsed.as_secs_f64(),
        route.0,
        through.excerpt(60)
    ))
}

/// Puts `version` and `image` on the standby group, re-reading the job when it changed under the
/// submit. Returns the group and the job version the submit created (each accepted change adds
/// one; read back, the job may already be a newer one, e.g. Nomad's auto-revert).
async fn submit_to_standby(
    ctx: &Ctx,
    n: &ConsulClient,
    job_id: &str,
    version: &str,
    image: &str,
) -> Result<(String, u64), OpsError> {
    let service = ctx.service.clone().unwrap_or_default();
    for _ in 0..3 {
        let mut job = nomad::read_job(n, job_id).await?;
        let next_version = job["Version"].as_u64().unwrap_or(0) + 1;
        let index = job["JobModifyIndex"]
            .as_u64()
            .ok_or(NomadError::NoModifyIndex)?;
        if let Some(d) = nomad::latest_deployment(n, job_id).await? {
            if d["Status"].as_str() == Some("running") {
                return Err(OpsError::refused(format!(
                    "Nomad deployment {} is still running: wait for it first",
                    d["ID"].as_str().unwrap_or("?")
                )));
            }
        }
        let (gi, active_names) = standby_group(ctx, &job, job_id, &service)?;
        nomad::set_version(&mut job, gi, &service, version, image, &ctx.versions);
        let plan = nomad::plan(n, job_id, &job).await?;
        active_untouched(&plan, &active_names)?;
        match nomad::submit(n, job_id, &job, index).await? {
            nomad::Submit::Accepted(_) => return Ok((nomad::group_name(&job, gi), next_version)),
            nomad::Submit::Conflict(msg) => {
                tracing::info!(target: "zerodown::ops", error = %msg, "the job changed while deploying: re-reading");
            }
        }
    }
    Err(OpsError::refused(
        "the Nomad job kept changing under the deploy (3 attempts): nothing was applied",
    ))
}

/// The one group whose `service` is tagged standby (by index), and the names of the groups tagged
/// active; refuses a job where that is ambiguous.
fn standby_group(
    ctx: &Ctx,
    job: &Value,
    job_id: &str,
    service: &str,
) -> Result<(usize, Vec<String>), OpsError> {
    let standby = nomad::groups_tagged(job, service, ctx.standby_tag());
    let active = nomad::groups_tagged(job, service, ctx.active_tag());
    let [gi] = standby[..] else {
        return Err(OpsError::refused(format!(
            "expected exactly one group of job {job_id} with {service} tagged {}, found {}",
            ctx.standby_tag(),
            standby.len()
        )));
    };
    if active.contains(&gi) {
        return Err(OpsError::refused(format!(
            "group {} is tagged both active and standby: fix the job first",
            nomad::group_name(job, gi)
        )));
    }
    let names = active.iter().map(|g| nomad::group_name(job, *g)).collect();
    Ok((gi, names))
}

/// Waits for the deployment of `job_version` to end; a failure reports Nomad's reason and revert.
async fn follow_deployment(
    ctx: &Ctx,
    n: &ConsulClient,
    job_id: &str,
    job_version: u64,
) -> Result<(), OpsError> {
    let started = Instant::now();
    while started.elapsed() < ctx.timeout {
        let all = nomad::deployments(n, job_id).await?;
        let Some(d) = all
            .iter()
            .find(|d| d["JobVersion"].as_u64() == Some(job_version))
        else {
            if started.elapsed() > Duration::from_secs(3) {
                // A job Nomad makes no deployment for (MaxParallel 0, batch): nothing to follow.
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let description = d["StatusDescription"].as_str().unwrap_or("").to_string();
        match d["Status"].as_str().unwrap_or("") {
            "successful" => return Ok(()),
            "failed" => {
                return Err(NomadError::DeploymentFailed {
                    id: d["ID"].as_str().unwrap_or("?").to_string(),
                    reverted: description.contains("rolling back"),
                    description,
                }
                .into())
            }
            "cancelled" => return Err(NomadError::DeploymentCancelled { description }.into()),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(NomadError::DeploymentPending(ctx.timeout).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn active_group_must_be_left_alone() {
        let plan = json!({"Annotations":{"DesiredTGUpdates":{"blue":{"Ignore":2},"green":{"DestructiveUpdate":2}}}});
        assert!(active_untouched(&plan, &["blue".into()]).is_ok());
        let plan = json!({"Annotations":{"DesiredTGUpdates":{"blue":{"InPlaceUpdate":2}}}});
        assert!(active_untouched(&plan, &["blue".into()]).is_ok());
        let plan =
            json!({"Annotations":{"DesiredTGUpdates":{"blue":{"DestructiveUpdate":1,"Ignore":1}}}});
        assert!(active_untouched(&plan, &["blue".into()])
            .unwrap_err()
            .to_string()
            .contains("DestructiveUpdate=1"));
    }
}
