//! What a Nomad client's Consul service sync does for its allocations: one registration
//! per service with ID
//! `_nomad-task-<allocID>-<group-<name>|task>-<service>-<portLabel>`, `external-source =
//! nomad` in `Meta`, canary tags and meta while a canary, checks that start `critical`.
//! A sync deregisters IDs that are no longer wanted first, then (re-)registers the
//! changed ones under the same ID, which Consul applies in place.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::consul::{CheckSpec, CheckStatus, ServiceSpec};

use super::alloc::{Alloc, Health};
use super::job;
use super::params::go_duration_string;
use super::shared::Shared;

/// Address the simulated Nomad client registers its allocations with.
pub const ALLOC_ADDRESS: &str = "127.0.0.1";

fn strings(v: &Value, key: &str) -> Vec<String> {
    let items = job::list(v, key).iter();
    items
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}

fn string_map(v: &Value, key: &str) -> BTreeMap<String, String> {
    let Some(Value::Object(m)) = v.get(key) else {
        return BTreeMap::new();
    };
    let pairs = m
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())));
    pairs.collect()
}

/// Nomad's check IDs are `_nomad-check-` and a 40-hex-digit hash of the service and check.
fn check_id(service_id: &str, check: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in service_id.bytes().chain(check.to_string().into_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = super::state::Rng::new(h);
    let hex: String = (0..3).map(|_| format!("{:016x}", rng.next_u64())).collect();
    format!("_nomad-check-{}", &hex[..40])
}

fn registration(alloc: &Alloc, owner: &str, svc: &Value) -> Option<ServiceSpec> {
    let provider = job::str_of(svc, "Provider");
    if !(provider.is_empty() || provider == "consul") {
        return None;
    }
    let name = job::str_of(svc, "Name");
    let label = job::str_of(svc, "PortLabel");
    let id = format!("_nomad-task-{}-{owner}-{name}-{label}", alloc.id);
    let canary_tags = strings(svc, "CanaryTags");
    let tags = match alloc.canary && !canary_tags.is_empty() {
        true => canary_tags,
        false => strings(svc, "Tags"),
    };
    let canary_meta = string_map(svc, "CanaryMeta");
    let mut meta = match alloc.canary && !canary_meta.is_empty() {
        true => canary_meta,
        false => string_map(svc, "Meta"),
    };
    meta.insert("external-source".into(), "nomad".into());
    let mut spec = ServiceSpec::new(id.clone(), name)
        .address(ALLOC_ADDRESS)
        .port(alloc.port)
        .tags(tags)
        .meta(meta);
    for c in job::list(svc, "Checks") {
        let mut check = CheckSpec::new(CheckStatus::Critical).id(check_id(&id, c));
        check.name = Some(job::str_of(c, "Name").to_string());
        check.kind = job::str_of(c, "Type").to_string();
        check.interval = go_duration_string(job::u64_of(c, "Interval"));
        check.timeout = go_duration_string(job::u64_of(c, "Timeout"));
        spec = spec.check_spec(check);
    }
    Some(spec)
}

/// The registrations `alloc` wants for the job version it runs (checks `critical`).
pub(crate) fn desired(job_version: &Value, alloc: &Alloc) -> Vec<ServiceSpec> {
    let Some(g) = job::group(job_version, &alloc.group) else {
        return Vec::new();
    };
    let group_owner = format!("group-{}", alloc.group);
    let mut out: Vec<ServiceSpec> = job::list(g, "Services")
        .iter()
        .filter_map(|s| registration(alloc, &group_owner, s))
        .collect();
    for t in job::list(g, "Tasks") {
        let task = job::str_of(t, "Name");
        out.extend(
            job::list(t, "Services")
                .iter()
                .filter_map(|s| registration(alloc, task, s)),
        );
    }
    out
}

/// The wanted and last-sent registrations of a live allocation.
fn wanted(
    shared: &Shared,
    job_id: &str,
    alloc_id: &str,
) -> Option<(Vec<ServiceSpec>, Vec<ServiceSpec>, Health)> {
    shared.core.read(|s| {
        let e = s.jobs.get(job_id)?;
        let a = e.allocs.iter().find(|a| a.id == alloc_id)?;
        let want = desired(&e.versions[a.version as usize], a);
        Some((want, a.registered.clone(), a.health))
    })
}

/// Whether the allocation's Consul registrations are out of date.
pub(crate) fn needs_sync(shared: &Shared, job_id: &str, alloc_id: &str) -> bool {
    wanted(shared, job_id, alloc_id).is_some_and(|(want, have, _)| want != have)
}

/// Brings one allocation's registrations up to date: stale IDs first, then changed ones
/// (an allocation already healthy registers new checks as passing).
pub(crate) fn sync_alloc(shared: &Shared, job_id: &str, alloc_id: &str) {
    let Some((want, have, health)) = wanted(shared, job_id, alloc_id) else {
        return;
    };
    if want == have {
        return;
    }
    if let Some(consul) = &shared.consul {
        for old in have.iter().filter(|h| !want.iter().any(|w| w.id == h.id)) {
            consul.deregister(&old.id);
        }
        for w in want.iter().filter(|w| !have.contains(w)) {
            let mut spec = w.clone();
            if health == Health::Healthy {
                spec.checks
                    .iter_mut()
                    .for_each(|c| c.status = CheckStatus::Passing);
            }
            consul.register(spec);
        }
    }
    shared.core.write(|s| {
        let e = s.jobs.get_mut(job_id);
        if let Some(a) = e.and_then(|e| e.allocs.iter_mut().find(|a| a.id == alloc_id)) {
            a.registered = want;
        }
    });
}

/// Deregisters the services of allocations the scheduler stopped (before their
/// `shutdown_delay`, as Nomad does).
pub(crate) fn sync_stopped(shared: &Shared, job_id: &str) {
    let stopped = shared.core.write(|s| {
        s.jobs
            .get_mut(job_id)
            .map(|e| std::mem::take(&mut e.stopping))
    });
    let Some(consul) = &shared.consul else {
        return;
    };
    for a in stopped.unwrap_or_default() {
        for spec in &a.registered {
            consul.deregister(&spec.id);
        }
    }
}
