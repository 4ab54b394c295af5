//! The scheduler's decisions, shared by `POST /v1/job/:id/plan` and the rollout so the plan
//! annotations describe exactly what a registration then does.
//!
//! Per allocation (`genericAllocUpdateFn`): same job version → ignore; else, if
//! the scheduler's `tasksUpdated` finds a change a driver cannot apply in place →
//! destructive; otherwise in place (service tags and meta, update block, count...). Then
//! per group (the cluster reconciler): indexes ≥ Count stop, missing ones are placed,
//! destructive updates wait for canaries or go `MaxParallel` at a time (the rest counted as
//! ignore), in-place updates all go at once.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::job::{self, semantic};

/// What the scheduler does with one existing allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Ignore,
    InPlace,
    Destructive,
}

/// Group-level fields whose change cannot be applied in place.
const GROUP_DESTRUCTIVE: &[&str] = &[
    "EphemeralDisk",
    "Networks",
    "Affinities",
    "Spreads",
    "Consul",
    "Volumes",
];

/// Task fields whose change cannot be applied in place (`Meta` is compared combined).
const TASK_DESTRUCTIVE: &[&str] = &[
    "Driver",
    "User",
    "Config",
    "Env",
    "Artifacts",
    "Vault",
    "Consul",
    "Templates",
    "CSIPluginConfig",
    "Identity",
    "Identities",
    "Resources",
    "Lifecycle",
    "Affinities",
];

fn differs(a: Option<&Value>, b: Option<&Value>) -> bool {
    let norm = |v: Option<&Value>| v.map_or(Value::Null, semantic);
    norm(a) != norm(b)
}

/// Job, group and task `Meta` merged (`Job.CombinedTaskMeta`): the pitfall that makes a
/// job- or group-level meta change restart every task.
fn combined_meta(job: &Value, group: &Value, task: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for layer in [job, group, task] {
        if let Some(Value::Object(m)) = layer.get("Meta") {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    out
}

/// Connect services in a group; any change to them is destructive.
fn connect_services(group: &Value) -> Vec<Value> {
    let services = job::list(group, "Services").iter();
    let connect = services.filter(|s| s.get("Connect").is_some_and(|c| !c.is_null()));
    connect.map(semantic).collect()
}

/// `tasksUpdated`: why group `name` of `b` cannot update allocations of `a` in place.
pub(crate) fn tasks_updated(a: &Value, b: &Value, name: &str) -> Option<String> {
    let (ga, gb) = (job::group(a, name)?, job::group(b, name)?);
    let (ta, tb) = (job::list(ga, "Tasks"), job::list(gb, "Tasks"));
    if ta.len() != tb.len() {
        return Some("number of tasks".into());
    }
    if let Some(f) = GROUP_DESTRUCTIVE
        .iter()
        .find(|f| differs(ga.get(**f), gb.get(**f)))
    {
        return Some(format!("group {f}"));
    }
    for f in ["Affinities", "Spreads"] {
        if differs(a.get(f), b.get(f)) {
            return Some(format!("job {f}"));
        }
    }
    if connect_services(ga) != connect_services(gb) {
        return Some("connect service".into());
    }
    for at in ta {
        let tname = job::str_of(at, "Name");
        let Some(bt) = tb.iter().find(|t| job::str_of(t, "Name") == tname) else {
            return Some(format!("task {tname} deleted"));
        };
        if let Some(f) = TASK_DESTRUCTIVE
            .iter()
            .find(|f| differs(at.get(**f), bt.get(**f)))
        {
            return Some(format!("task {tname} {f}"));
        }
        if combined_meta(a, ga, at) != combined_meta(b, gb, bt) {
            return Some(format!("task {tname} combined meta"));
        }
    }
    None
}

/// How allocation `alloc_job`/`same_version` relates to the target job's group.
pub(crate) fn classify(
    alloc_job: &Value,
    target: &Value,
    group: &str,
    same_version: bool,
) -> Class {
    if same_version {
        Class::Ignore
    } else if tasks_updated(alloc_job, target, group).is_some() {
        Class::Destructive
    } else {
        Class::InPlace
    }
}

/// One existing allocation as the reconciler sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AllocRef<'a> {
    pub group: &'a str,
    pub index: u32,
    /// The job version the allocation runs.
    pub job: &'a Value,
    /// Whether that version is the target version (then: ignore).
    pub same_version: bool,
    pub canary: bool,
}

/// The reconciler's result for one group, as positions in the input slice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupPlan {
    pub stop: Vec<usize>,
    pub ignore: Vec<usize>,
    pub in_place: Vec<usize>,
    pub destructive: Vec<usize>,
    pub place: Vec<u32>,
    /// Canaries already running for the target version.
    pub canaries: usize,
}

/// Reconciles every group of `target` (and groups only allocations still have).
pub(crate) fn reconcile(target: &Value, allocs: &[AllocRef<'_>]) -> BTreeMap<String, GroupPlan> {
    let mut out: BTreeMap<String, GroupPlan> = BTreeMap::new();
    for (n, a) in allocs.iter().enumerate() {
        let plan = out.entry(a.group.to_string()).or_default();
        let Some(g) = job::group(target, a.group) else {
            plan.stop.push(n);
            continue;
        };
        if a.canary {
            if a.same_version {
                plan.canaries += 1;
            } else {
                plan.stop.push(n);
            }
            continue;
        }
        if a.index >= job::count(g) {
            plan.stop.push(n);
            continue;
        }
        match classify(a.job, target, a.group, a.same_version) {
            Class::Ignore => plan.ignore.push(n),
            Class::InPlace => plan.in_place.push(n),
            Class::Destructive => plan.destructive.push(n),
        }
    }
    for g in job::groups(target) {
        let name = job::str_of(g, "Name");
        let plan = out.entry(name.to_string()).or_default();
        let held: BTreeSet<u32> = allocs
            .iter()
            .filter(|a| a.group == name && !a.canary)
            .map(|a| a.index)
            .collect();
        plan.place = (0..job::count(g)).filter(|i| !held.contains(i)).collect();
    }
    out
}

/// `Annotations.DesiredTGUpdates[group]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DesiredUpdates {
    pub ignore: u64,
    pub place: u64,
    pub migrate: u64,
    pub stop: u64,
    pub in_place_update: u64,
    pub destructive_update: u64,
    pub canary: u64,
    pub preemptions: u64,
}

impl DesiredUpdates {
    pub fn to_json(self) -> Value {
        json!({
            "Ignore": self.ignore, "Place": self.place, "Migrate": self.migrate,
            "Stop": self.stop, "InPlaceUpdate": self.in_place_update,
            "DestructiveUpdate": self.destructive_update, "Canary": self.canary,
            "Preemptions": self.preemptions,
        })
    }

    /// The `Updates` map of a task group diff (`nomad job plan` prints these).
    pub fn labels(self) -> Value {
        let pairs = [
            ("ignore", self.ignore),
            ("create", self.place),
            ("migrate", self.migrate),
            ("destroy", self.stop),
            ("in-place update", self.in_place_update),
            ("create/destroy update", self.destructive_update),
            ("canary", self.canary),
        ];
        let m: Map<String, Value> = pairs
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        Value::Object(m)
    }
}

/// Counts for one group: destructive updates wait for canaries, or are limited to
/// `MaxParallel` per pass with the rest counted as ignore; without an update block they
/// all go at once. `promoted`: the group's canaries were already promoted.
pub(crate) fn desired(
    target: &Value,
    group: &str,
    plan: &GroupPlan,
    promoted: bool,
) -> DesiredUpdates {
    let len = |v: &Vec<usize>| v.len() as u64;
    let mut d = DesiredUpdates {
        ignore: len(&plan.ignore),
        place: plan.place.len() as u64,
        stop: len(&plan.stop),
        in_place_update: len(&plan.in_place),
        ..DesiredUpdates::default()
    };
    let destructive = len(&plan.destructive);
    let update = job::group(target, group).and_then(job::update);
    match update {
        Some(u) if u.canary > 0 && destructive > 0 && !promoted => {
            d.canary = u64::from(u.canary).saturating_sub(plan.canaries as u64);
            d.ignore += destructive;
        }
        Some(u) => {
            let now = destructive.min(u.max_parallel as u64);
            d.destructive_update = now;
            d.ignore += destructive - now;
        }
        None => d.destructive_update = destructive,
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(image: &str, tags: &[&str], job_meta: Value) -> Value {
        let mut j = json!({"ID": "j", "Meta": job_meta, "TaskGroups": [{"Name": "g", "Count": 2,
            "Services": [{"Name": "s", "Tags": tags}],
            "Tasks": [{"Name": "t", "Driver": "docker", "Config": {"image": image}}]}]});
        job::canonicalize(&mut j).expect("valid");
        j
    }

    #[test]
    fn what_is_destructive() {
        let base = job("a:1", &["active"], Value::Null);
        assert_eq!(
            tasks_updated(&base, &job("a:1", &["standby"], Value::Null), "g"),
            None
        );
        assert!(tasks_updated(&base, &job("a:2", &["active"], Value::Null), "g").is_some());
        let meta = job("a:1", &["active"], json!({"colour": "blue"}));
        assert!(
            tasks_updated(&base, &meta, "g").is_some(),
            "job meta feeds task meta"
        );
        let mut count = base.clone();
        count["TaskGroups"][0]["Count"] = json!(5);
        assert_eq!(tasks_updated(&base, &count, "g"), None);
    }

    #[test]
    fn rolling_limit_and_canaries() {
        let old = job("a:1", &[], Value::Null);
        let mut new = job("a:2", &[], Value::Null);
        let allocs: Vec<AllocRef<'_>> = (0..2)
            .map(|index| AllocRef {
                group: "g",
                index,
                job: &old,
                same_version: false,
                canary: false,
            })
            .collect();
        let plans = reconcile(&new, &allocs);
        let d = desired(&new, "g", &plans["g"], false);
        assert_eq!(
            (d.destructive_update, d.ignore),
            (1, 1),
            "MaxParallel 1 of 2"
        );
        new["TaskGroups"][0]["Update"]["Canary"] = json!(1);
        let d = desired(&new, "g", &plans["g"], false);
        assert_eq!((d.canary, d.destructive_update, d.ignore), (1, 0, 2));
    }
}
