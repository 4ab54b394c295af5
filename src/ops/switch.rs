//! `zerodown switch` and `zerodown rollback`: make the standby group active (and the active group
//! standby) through whatever the proxy watches — the upstreams file, the Consul KV selector, or the
//! Nomad job's service tags — after checking the standby group can serve, then wait until the proxy
//! serves the new version on `/hello`.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use super::{nomad, probe, wait_for_proxy, Ctx, Mode, NomadError, OpsError};
use crate::admin::status::{PoolDoc, StatusDoc};
use crate::core::discovery::consul::{ConsulClient, ConsulError};

const STANDBY_EMPTY: &str = "the standby pool is empty: there is nothing to switch to (deploy a version first: zerodown deploy VERSION --image IMAGE)";

/// What a successful switch did.
#[derive(Debug)]
pub struct Switched {
    pub from: String,
    pub to: String,
    pub elapsed: Duration,
    pub how: String,
    /// What the HSMS sessions did, when the proxy has an HSMS listener.
    pub hsms: Option<String>,
}

fn version_of(pool: &PoolDoc) -> Option<String> {
    pool.version.clone()
}

/// Refuses unless every standby instance passes in Consul and answers its probe.
async fn check_standby(ctx: &Ctx, status: &StatusDoc) -> Result<(), OpsError> {
    let standby = &status.pools.standby.instances;
    if standby.is_empty() {
        return Err(OpsError::refused(STANDBY_EMPTY));
    }
    let consul = ctx.consul_entries().await?;
    let mut problems = Vec::new();
    // Instances Consul tags standby but fails are already out of the proxy's pool: still refuse.
    if matches!(ctx.mode, Mode::Nomad { .. }) {
        for e in consul.iter().filter(|e| !e.passing) {
            if e.tags
                .iter()
                .any(|t| t.eq_ignore_ascii_case(ctx.standby_tag()))
            {
                problems.push(format!(
                    "{} ({}) is tagged {} but not passing in Consul: {}",
                    e.id,
                    e.address,
                    ctx.standby_tag(),
                    e.health
                ));
            }
        }
    }
    for i in standby {
        let (id, addr) = (i.id.as_str(), i.address.as_str());
        if ctx.mode.consul().is_some() {
            match consul.iter().find(|e| e.id == id) {
                None => problems.push(format!("{id} ({addr}) is no longer registered in Consul")),
                Some(e) if !e.passing => problems.push(format!(
                    "{id} ({addr}) is not passing in Consul: {}",
                    e.health
                )),
                Some(_) => {}
            }
        }
        match probe(addr).await {
            Ok(a) if a.status == 200 => {}
            Ok(a) => problems.push(format!(
                "{id} ({addr}) answered {} to GET /hello: {}",
                a.status,
                a.excerpt(60)
            )),
            Err(e) => problems.push(format!("{id} ({addr}) does not answer: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(OpsError::refused(format!(
            "the standby group is not ready, so nothing was changed:\n  - {}\n(fix it, or pass --force to switch anyway)",
            problems.join("\n  - ")
        )))
    }
}

/// Makes the standby group active. `expect_to`, when given, must be the standby version.
pub async fn switch(ctx: &Ctx, force: bool, expect_to: Option<&str>) -> Result<Switched, OpsError> {
    let status = ctx.proxy_status().await?;
    let (from, to) = versions(&status, force, expect_to)?;
    if !force {
        check_standby(ctx, &status).await?;
    }
    let how = match &ctx.mode {
        Mode::File(path) => switch_file(ctx, path)?,
        Mode::Kv { consul, key } => switch_kv(ctx, consul, key, &status).await?,
        Mode::Nomad { nomad, job, .. } => {
            let nomad = nomad.as_ref().ok_or_else(|| {
                OpsError::Usage(
                    "the proxy watches Consul tags, which Nomad owns: set NOMAD_ADDR or --nomad-addr"
                        .into(),
                )
            })?;
            switch_nomad(ctx, nomad, job).await?
        }
    };
    let elapsed = wait_for_proxy(ctx, &format!("{to} serving /hello"), |s| {
        s.pools.active.version.as_deref() == Some(to.as_str())
    })
    .await?;
    let hsms = super::hsms::wait_for_sessions(ctx, &to).await?;
    Ok(Switched {
        from,
        to,
        elapsed,
        how,
        hsms,
    })
}

/// The versions a switch goes from and to, refusing when there is nothing (or, with `expect_to`,
/// not the expected version) to switch to. `force` switches to an empty or mixed standby anyway.
fn versions(
    status: &StatusDoc,
    force: bool,
    expect_to: Option<&str>,
) -> Result<(String, String), OpsError> {
    let standby = &status.pools.standby;
    if standby.instances.is_empty() && !force {
        return Err(OpsError::refused(STANDBY_EMPTY));
    }
    let from = version_of(&status.pools.active).unwrap_or_else(|| "none".into());
    let to = match (version_of(standby), force) {
        (Some(v), _) => v,
        (None, false) => return Err(OpsError::refused(
            "the standby pool has no single version to switch to (is it empty or mixed? see zerodown status)",
        )),
        (None, true) => "unknown".into(),
    };
    if let Some(want) = expect_to {
        if want != to {
            return Err(OpsError::refused(format!(
                "the version that served before is {want}, but the standby group runs {to}: a rollback would not bring {want} back (deploy it to standby first)"
            )));
        }
    }
    Ok((from, to))
}

/// Swaps the pool tags in the upstreams file, written atomically (temporary file, then rename).
fn switch_file(ctx: &Ctx, path: &std::path::Path) -> Result<String, OpsError> {
    let file_error = |op, error| OpsError::File {
        op,
        path: path.to_path_buf(),
        error,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error("read", e))?;
    crate::core::discovery::file::parse(&text, &path.display().to_string())?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|error| OpsError::Toml {
        path: path.to_path_buf(),
        error,
    })?;
    let (a, s) = (ctx.active_tag(), ctx.standby_tag());
    let changed = swap_file_tags(&mut doc, a, s);
    if changed == 0 {
        return Err(OpsError::refused(format!(
            "{}: no instance is tagged {a:?} or {s:?}",
            path.display()
        )));
    }
    let tmp = path.with_extension("toml.zerodown-tmp");
    let out = format!(
        "# Rewritten by `zerodown switch`.\n{}",
        toml::to_string_pretty(&doc)?
    );
    std::fs::write(&tmp, out).map_err(|error| OpsError::File {
        op: "write",
        path: tmp.clone(),
        error,
    })?;
    std::fs::rename(&tmp, path).map_err(|e| file_error("replace", e))?;
    Ok(format!(
        "rewrote {} ({changed} tags swapped)",
        path.display()
    ))
}

/// Swaps the tags `a` and `s` (case-insensitively) on every instance of an upstreams file;
/// returns how many tags changed.
fn swap_file_tags(doc: &mut toml::Table, a: &str, s: &str) -> usize {
    let mut changed = 0;
    for inst in doc
        .get_mut("instances")
        .and_then(|v| v.as_array_mut())
        .into_iter()
        .flatten()
    {
        for t in inst
            .get_mut("tags")
            .and_then(|v| v.as_array_mut())
            .into_iter()
            .flatten()
        {
            let Some(tag) = t.as_str() else { continue };
            let new = if tag.eq_ignore_ascii_case(a) {
                s
            } else if tag.eq_ignore_ascii_case(s) {
                a
            } else {
                continue;
            };
            *t = toml::Value::String(new.to_string());
            changed += 1;
        }
    }
    changed
}

/// The name of the standby group for the KV selector: a tag every standby instance carries and no
/// active one does (e.g. `green`), else the standby version.
fn standby_group(ctx: &Ctx, status: &StatusDoc) -> Option<String> {
    let tags = |pool: &PoolDoc| -> Vec<Vec<String>> {
        pool.instances
            .iter()
            .map(|i| i.tags.iter().map(|t| t.to_lowercase()).collect())
            .collect()
    };
    let (standby, active) = (tags(&status.pools.standby), tags(&status.pools.active));
    let pool_tags = [
        ctx.active_tag().to_lowercase(),
        ctx.standby_tag().to_lowercase(),
    ];
    let first = standby.first()?;
    first
        .iter()
        .find(|t| {
            !pool_tags.contains(t)
                && standby.iter().all(|s| s.contains(t))
                && active.iter().all(|a| !a.contains(t))
        })
        .cloned()
        .or_else(|| version_of(&status.pools.standby))
}

async fn switch_kv(
    ctx: &Ctx,
    consul: &ConsulClient,
    key: &str,
    status: &StatusDoc,
) -> Result<String, OpsError> {
    let group = standby_group(ctx, status)
        .ok_or_else(|| OpsError::refused("cannot tell which group the standby pool is"))?;
    let r = consul
        .get(&format!("/v1/kv/{key}"), Duration::from_secs(10))
        .await?;
    let index = match r.status.as_u16() {
        200 => {
            let v: Value = serde_json::from_slice(&r.body).map_err(OpsError::KvAnswer)?;
            v[0]["ModifyIndex"].as_u64().ok_or(OpsError::KvNoIndex)?
        }
        404 => 0,
        _ => return Err(ConsulError::from_status(r.status, &r.body, &format!("key {key}")).into()),
    };
    let w = consul
        .call(
            Method::PUT,
            &format!("/v1/kv/{key}?cas={index}"),
            Bytes::from(group.clone()),
            Duration::from_secs(10),
        )
        .await?;
    if w.status != 200 {
        return Err(ConsulError::from_status(w.status, &w.body, &format!("key {key}")).into());
    }
    if String::from_utf8_lossy(&w.body).trim() != "true" {
        return Err(OpsError::refused(format!(
            "the key {key} changed after it was read (someone else switched?): nothing was written; check `zerodown status` and run again"
        )));
    }
    Ok(format!("wrote {key} = {group} (cas={index})"))
}

async fn switch_nomad(
    ctx: &Ctx,
    nomad_client: &ConsulClient,
    job_id: &str,
) -> Result<String, OpsError> {
    let service = ctx.service.clone().unwrap_or_default();
    for attempt in 1..=3 {
        let mut job = nomad::read_job(nomad_client, job_id).await?;
        let index = job["JobModifyIndex"]
            .as_u64()
            .ok_or(NomadError::NoModifyIndex)?;
        if let Some(d) = nomad::latest_deployment(nomad_client, job_id).await? {
            if d["Status"].as_str() == Some("running") {
                let id = d["ID"].as_str().unwrap_or("?");
                return Err(OpsError::refused(format!(
                    "Nomad deployment {id} of job {job_id} is still running: wait for it (nomad deployment status {id}) and switch again"
                )));
            }
        }
        let changed = nomad::swap_tags(&mut job, &service, ctx.active_tag(), ctx.standby_tag());
        if changed < 2 {
            return Err(OpsError::refused(format!(
                "the Nomad job {job_id} has {changed} service block(s) of {service} tagged {}/{}: expected one per group",
                ctx.active_tag(),
                ctx.standby_tag()
            )));
        }
        let plan = nomad::plan(nomad_client, job_id, &job).await?;
        nomad::no_destructive(&plan, &[])?;
        match nomad::submit(nomad_client, job_id, &job, index).await? {
            nomad::Submit::Accepted(_) => {
                return Ok(format!(
                    "swapped the {} / {} tags of {service} in Nomad job {job_id}",
                    ctx.active_tag(),
                    ctx.standby_tag()
                ))
            }
            nomad::Submit::Conflict(msg) => {
                tracing::info!(target: "zerodown::ops", attempt, error = %msg, "the job changed while switching: re-reading");
            }
        }
    }
    Err(OpsError::refused(format!("the Nomad job {job_id} kept changing under the switch (3 attempts): nothing was applied; try again")))
}

/// Switches back to the version that served before the last switch, with the same checks.
pub async fn rollback(ctx: &Ctx, force: bool) -> Result<Switched, OpsError> {
    let status = ctx.proxy_status().await?;
    let current = version_of(&status.pools.active);
    let previous = status
        .swaps
        .iter()
        .rev()
        .find(|s| {
            let (old, new) = (&s.active.old_version, &s.active.new_version);
            *new == current && old.is_some() && old != new
        })
        .and_then(|s| s.active.old_version.clone())
        .ok_or_else(|| OpsError::refused("the proxy has no earlier version in its swap history (it has not switched since it started): use zerodown switch"))?;
    switch(ctx, force, Some(&previous)).await
}
