//! The one change a switch makes, per mechanism — the tags in the upstreams file, the Consul KV
//! selector, the Nomad job's service tags — each checked against what the proxy would then route
//! before it is written, and undone (or described, with the command that undoes it) when the
//! proxy does not follow.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use toml::Spanned;

use super::{nomad, Ctx, Mode, NomadError, OpsError};
use crate::admin::status::{PoolDoc, StatusDoc};
use crate::core::discovery::consul::{ConsulClient, ConsulError};
use crate::core::discovery::{file, split_by_tags};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What a switch wrote, kept so it can be undone.
#[derive(Debug)]
pub enum Change {
    File {
        path: PathBuf,
        before: String,
        after: String,
        swapped: usize,
    },
    Kv {
        key: String,
        /// The value before the switch; `None` when the key did not exist.
        before: Option<String>,
        after: String,
        /// The `cas` index the write was made with.
        index: u64,
    },
    Nomad {
        job: String,
        service: String,
        /// The job's `Version` before the switch, for `nomad job revert`.
        version_before: Option<u64>,
    },
}

impl Change {
    /// What was done, in one line.
    pub fn describe(&self, ctx: &Ctx) -> String {
        match self {
            Change::File { path, swapped, .. } => {
                format!("rewrote {} ({swapped} tags swapped)", path.display())
            }
            Change::Kv {
                key, after, index, ..
            } => format!("wrote {key} = {after} (cas={index})"),
            Change::Nomad { job, service, .. } => format!(
                "swapped the {} / {} tags of {service} in Nomad job {job}",
                ctx.active_tag(),
                ctx.standby_tag()
            ),
        }
    }

    /// Puts back what the switch wrote, unless someone changed it since; returns what was done
    /// or left, and how to undo what was left.
    pub async fn undo(&self, ctx: &Ctx) -> String {
        match self {
            Change::File {
                path,
                before,
                after,
                ..
            } => undo_file(path, before, after),
            Change::Kv {
                key, before, after, ..
            } => match ctx.mode.consul() {
                Some(consul) => undo_kv(consul, key, before.as_deref(), after).await,
                None => format!("{key} was left = {after}"),
            },
            Change::Nomad {
                job,
                version_before,
                ..
            } => {
                let revert = match version_before {
                    Some(v) => format!("nomad job revert {job} {v}"),
                    None => {
                        format!("nomad job history {job}, then nomad job revert {job} <version>")
                    }
                };
                format!(
                    "the Nomad job {job} was left with its {} / {} tags swapped (a Nomad job is not reverted automatically); to undo: {revert} (or zerodown switch --force, which swaps the tags back)",
                    ctx.active_tag(),
                    ctx.standby_tag()
                )
            }
        }
    }
}

/// What the proxy would route as active after a switch: `(id, version)` of each instance.
type Planned = Vec<(String, String)>;

/// Refuses a switch whose result the proxy's gates would not serve: no active instance, or
/// instances of other versions than `to` (the single-version gate would hold the old version, and
/// the switch would never complete).
fn check_planned(planned: &Planned, to: &str, source: &str) -> Result<(), OpsError> {
    if planned.is_empty() {
        return Err(OpsError::refused(format!(
            "after the switch {source} would have no active instance: nothing was changed (zerodown status shows what it holds)"
        )));
    }
    let versions: BTreeSet<&str> = planned.iter().map(|(_, v)| v.as_str()).collect();
    if versions.len() > 1 || !versions.contains(to) {
        let list: Vec<String> = planned
            .iter()
            .map(|(id, v)| format!("{id} ({v})"))
            .collect();
        return Err(OpsError::refused(format!(
            "after the switch {source} would make {} active, not only {to}: the proxy's single-version gate would keep the current version and the switch would never complete; nothing was changed",
            list.join(", ")
        )));
    }
    Ok(())
}

/// Checks what the switch would lead to (unless `force`), then makes the change.
pub async fn apply(
    ctx: &Ctx,
    status: &StatusDoc,
    to: &str,
    force: bool,
) -> Result<Change, OpsError> {
    match &ctx.mode {
        Mode::File(path) => apply_file(ctx, path, to, force),
        Mode::Kv { consul, key } => apply_kv(ctx, consul, key, status, to, force).await,
        Mode::Nomad { nomad, job, .. } => {
            let nomad = nomad.as_ref().ok_or_else(|| {
                OpsError::Usage(
                    "the proxy watches Consul tags, which Nomad owns: set NOMAD_ADDR or --nomad-addr"
                        .into(),
                )
            })?;
            if !force {
                let planned = ctx
                    .consul_entries()
                    .await?
                    .into_iter()
                    .filter(|e| e.passing && has_tag(&e.tags, ctx.standby_tag()))
                    .map(|e| (e.id, e.version))
                    .collect();
                check_planned(&planned, to, "Consul")?;
            }
            apply_nomad(ctx, nomad, job).await
        }
    }
}

fn has_tag(tags: &[String], tag: &str) -> bool {
    tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
}

/// The upstreams file as written, with the position of every tag.
#[derive(Deserialize)]
struct TagsOnly {
    #[serde(default)]
    instances: Vec<InstanceTags>,
}

#[derive(Deserialize)]
struct InstanceTags {
    #[serde(default)]
    tags: Vec<Spanned<String>>,
}

/// Swaps the tags `a` and `s` (case-insensitively) in the text of an upstreams file, touching
/// nothing else: comments, order and layout stay as they were. Returns the new text and how many
/// tags changed.
pub fn swap_tags_in_text(text: &str, a: &str, s: &str) -> Result<(String, usize), toml::de::Error> {
    let doc: TagsOnly = toml::from_str(text)?;
    let mut edits: Vec<(std::ops::Range<usize>, &str)> = Vec::new();
    for tag in doc.instances.iter().flat_map(|i| &i.tags) {
        let new = if tag.get_ref().eq_ignore_ascii_case(a) {
            s
        } else if tag.get_ref().eq_ignore_ascii_case(s) {
            a
        } else {
            continue;
        };
        edits.push((tag.span(), new));
    }
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    let mut out = text.to_string();
    for (span, new) in &edits {
        out.replace_range(
            span.clone(),
            &toml::Value::String(new.to_string()).to_string(),
        );
    }
    Ok((out, edits.len()))
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`: a reader sees
/// the old content or the new, never a part.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), OpsError> {
    let tmp = path.with_extension("zerodown-tmp");
    std::fs::write(&tmp, text).map_err(|error| OpsError::File {
        op: "write",
        path: tmp.clone(),
        error,
    })?;
    std::fs::rename(&tmp, path).map_err(|error| {
        let _ = std::fs::remove_file(&tmp);
        OpsError::File {
            op: "replace",
            path: path.to_path_buf(),
            error,
        }
    })
}

fn apply_file(ctx: &Ctx, path: &Path, to: &str, force: bool) -> Result<Change, OpsError> {
    let before = std::fs::read_to_string(path).map_err(|error| OpsError::File {
        op: "read",
        path: path.to_path_buf(),
        error,
    })?;
    let origin = path.display().to_string();
    file::parse(&before, &origin)?;
    let (a, s) = (ctx.active_tag(), ctx.standby_tag());
    let (after, swapped) = swap_tags_in_text(&before, a, s).map_err(|error| OpsError::Toml {
        path: path.to_path_buf(),
        error,
    })?;
    if swapped == 0 {
        return Err(OpsError::refused(format!(
            "{origin}: no instance is tagged {a:?} or {s:?}: nothing was changed"
        )));
    }
    // The file as the proxy would read it after the switch.
    let (active, _) = split_by_tags(file::parse(&after, &origin)?, &ctx.cfg.pools);
    if !force {
        let planned = active.into_iter().map(|i| (i.id, i.version)).collect();
        check_planned(&planned, to, &origin)?;
    }
    write_atomically(path, &after)?;
    Ok(Change::File {
        path: path.to_path_buf(),
        before,
        after,
        swapped,
    })
}

fn undo_file(path: &Path, before: &str, after: &str) -> String {
    match std::fs::read_to_string(path) {
        Ok(now) if now == after => match write_atomically(path, before) {
            Ok(()) => format!("{} was restored to its content before the switch", path.display()),
            Err(e) => format!(
                "{} could not be restored ({e}); to undo: swap the active and standby tags back in it by hand",
                path.display()
            ),
        },
        Ok(_) => format!(
            "{} changed again after the switch wrote it, so it was left as it is; to undo the switch: swap the active and standby tags back in it by hand",
            path.display()
        ),
        Err(e) => format!(
            "{} cannot be read ({e}), so it was left as it is; to undo: swap the active and standby tags back in it by hand",
            path.display()
        ),
    }
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
        .or_else(|| status.pools.standby.version.clone())
}

/// The selector key's value and the index to write it with (`0`: the key does not exist).
async fn read_key(consul: &ConsulClient, key: &str) -> Result<(Option<String>, u64), OpsError> {
    let r = consul.get(&format!("/v1/kv/{key}?raw"), TIMEOUT).await?;
    match r.status.as_u16() {
        200 => Ok((
            Some(String::from_utf8_lossy(&r.body).trim().to_string()),
            r.index.ok_or(OpsError::KvNoIndex)?,
        )),
        404 => Ok((None, 0)),
        _ => Err(ConsulError::from_status(r.status, &r.body, &format!("key {key}")).into()),
    }
}

/// `PUT ?cas=index` (or `DELETE ?cas=index` for `None`): whether the key was still at `index`.
async fn cas(
    consul: &ConsulClient,
    key: &str,
    value: Option<&str>,
    index: u64,
) -> Result<bool, OpsError> {
    let (method, body) = match value {
        Some(v) => (Method::PUT, Bytes::from(v.to_string())),
        None => (Method::DELETE, Bytes::new()),
    };
    let w = consul
        .call(method, &format!("/v1/kv/{key}?cas={index}"), body, TIMEOUT)
        .await?;
    if w.status != 200 {
        return Err(ConsulError::from_status(w.status, &w.body, &format!("key {key}")).into());
    }
    Ok(String::from_utf8_lossy(&w.body).trim() == "true")
}

async fn apply_kv(
    ctx: &Ctx,
    consul: &ConsulClient,
    key: &str,
    status: &StatusDoc,
    to: &str,
    force: bool,
) -> Result<Change, OpsError> {
    let group = standby_group(ctx, status)
        .ok_or_else(|| OpsError::refused("cannot tell which group the standby pool is"))?;
    if !force {
        let planned = ctx
            .consul_entries()
            .await?
            .into_iter()
            .filter(|e| e.passing && (e.version == group || has_tag(&e.tags, &group)))
            .map(|e| (e.id, e.version))
            .collect();
        check_planned(&planned, to, &format!("Consul (group {group})"))?;
    }
    let (before, index) = read_key(consul, key).await?;
    if !cas(consul, key, Some(&group), index).await? {
        return Err(OpsError::refused(format!(
            "the key {key} changed after it was read (someone else switched?): nothing was written; check `zerodown status` and run again"
        )));
    }
    Ok(Change::Kv {
        key: key.to_string(),
        before,
        after: group,
        index,
    })
}

async fn undo_kv(consul: &ConsulClient, key: &str, before: Option<&str>, after: &str) -> String {
    let manual = match before {
        Some(b) => format!("consul kv put {key} {b}"),
        None => format!("consul kv delete {key}"),
    };
    let restored = match read_key(consul, key).await {
        Ok((Some(now), index)) if now == after => cas(consul, key, before, index).await,
        Ok((now, _)) => {
            return format!(
                "{key} changed again after the switch wrote it (now {}), so it was left as it is; to undo the switch: {manual}",
                now.as_deref().unwrap_or("missing")
            )
        }
        Err(e) => Err(e),
    };
    match (restored, before) {
        (Ok(true), Some(b)) => format!("{key} was restored to {b}"),
        (Ok(true), None) => format!("{key} was deleted again, as before the switch"),
        (Ok(false), _) => format!(
            "{key} changed while it was being restored, so it was left as it is; to undo the switch: {manual}"
        ),
        (Err(e), _) => format!("{key} could not be restored ({e}); to undo: {manual}"),
    }
}

async fn apply_nomad(
    ctx: &Ctx,
    nomad_client: &ConsulClient,
    job_id: &str,
) -> Result<Change, OpsError> {
    let service = ctx.service.clone().unwrap_or_default();
    for attempt in 1..=3 {
        let mut job = nomad::read_job(nomad_client, job_id).await?;
        let index = job["JobModifyIndex"]
            .as_u64()
            .ok_or(NomadError::NoModifyIndex)?;
        let version_before = job["Version"].as_u64();
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
                return Ok(Change::Nomad {
                    job: job_id.to_string(),
                    service,
                    version_before,
                })
            }
            nomad::Submit::Conflict(msg) => {
                tracing::info!(target: "zerodown::ops", attempt, error = %msg, "the job changed while switching: re-reading");
            }
        }
    }
    Err(OpsError::refused(format!("the Nomad job {job_id} kept changing under the switch (3 attempts): nothing was applied; try again")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAND_KEPT: &str = r#"# Upstreams of the hello service. Kept by hand: do not reorder.

# blue: the v1 pair
[[instances]]
id = "a"   # rack 3
address = "127.0.0.1:9001"
tags = [ "Active", "blue" ]   # serving
version = "v1"

[[instances]]
id = "b"
address = "127.0.0.1:9002"
tags = ['standby', "green"]
version = "v2"
"#;

    #[test]
    fn a_tag_swap_keeps_comments_and_layout() {
        let (out, n) = swap_tags_in_text(HAND_KEPT, "active", "standby").unwrap();
        assert_eq!(n, 2);
        let want = HAND_KEPT
            .replace(r#"[ "Active", "blue" ]"#, r#"[ "standby", "blue" ]"#)
            .replace(r#"['standby', "green"]"#, r#"["active", "green"]"#);
        assert_eq!(out, want);
        let back = swap_tags_in_text(&out, "active", "standby").unwrap().0;
        assert!(
            back.contains(r#"tags = [ "active", "blue" ]   # serving"#),
            "{back}"
        );
    }

    #[test]
    fn planned_pools_the_gates_would_not_serve_are_refused() {
        let p = |v: &[(&str, &str)]| -> Planned {
            v.iter()
                .map(|(i, v)| (i.to_string(), v.to_string()))
                .collect()
        };
        assert!(check_planned(&p(&[("b", "v2")]), "v2", "f").is_ok());
        let e = check_planned(&p(&[]), "v2", "f").unwrap_err().to_string();
        assert!(e.contains("no active instance"), "{e}");
        let e = check_planned(&p(&[("a", "v1"), ("b", "v2")]), "v2", "f")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a (v1), b (v2)") && e.contains("nothing was changed"),
            "{e}"
        );
    }
}
