//! Service checks as stored in the catalog, and the agent's rule for re-registration:
//! a check whose ID survives keeps its status and output (`checkStateSnapshot`).

use super::spec::{CheckSpec, CheckStatus, ServiceSpec};

/// A check as stored in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Check {
    pub id: String,
    pub name: String,
    pub status: CheckStatus,
    pub output: String,
    pub notes: String,
    pub kind: String,
    pub interval: String,
    pub timeout: String,
    pub service_tags: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// Builds the new check list, keeping status and output of checks whose ID survives.
pub(crate) fn build_checks(
    spec: &ServiceSpec,
    specs: &[CheckSpec],
    prev: &[Check],
    idx: u64,
) -> Vec<Check> {
    let many = specs.len() > 1;
    let mut out = Vec::with_capacity(specs.len());
    for (n, c) in specs.iter().enumerate() {
        let id = match (&c.id, many) {
            (Some(id), _) => id.clone(),
            (None, false) => format!("service:{}", spec.id),
            (None, true) => format!("service:{}:{}", spec.id, n + 1),
        };
        let old = prev.iter().find(|p| p.id == id);
        let mut check = Check {
            name: c
                .name
                .clone()
                .unwrap_or_else(|| format!("Service '{}' check", spec.name)),
            status: old.map_or(c.status, |o| o.status),
            output: old.map_or_else(|| c.output.clone(), |o| o.output.clone()),
            notes: c.notes.clone(),
            kind: c.kind.clone(),
            interval: c.interval.clone(),
            timeout: c.timeout.clone(),
            service_tags: spec.tags.clone(),
            create_index: old.map_or(idx, |o| o.create_index),
            modify_index: idx,
            id,
        };
        if let Some(o) = old.filter(|o| same_check(o, &check)) {
            check.modify_index = o.modify_index;
        }
        out.push(check);
    }
    out
}

/// A kept check picks up the new service tags (Consul rewrites `ServiceTags` on sync).
pub(crate) fn retag(old: &Check, tags: &[String], idx: u64) -> Check {
    let mut c = old.clone();
    if c.service_tags != tags {
        c.service_tags = tags.to_vec();
        c.modify_index = idx;
    }
    c
}

fn same_check(a: &Check, b: &Check) -> bool {
    let strip = |c: &Check| Check {
        create_index: 0,
        modify_index: 0,
        ..c.clone()
    };
    strip(a) == strip(b)
}

/// The spec a stored check was registered from (its status is kept on upsert anyway).
pub(crate) fn check_spec_of(c: &Check) -> CheckSpec {
    CheckSpec {
        id: Some(c.id.clone()),
        name: Some(c.name.clone()),
        status: c.status,
        kind: c.kind.clone(),
        interval: c.interval.clone(),
        timeout: c.timeout.clone(),
        output: c.output.clone(),
        notes: c.notes.clone(),
    }
}
