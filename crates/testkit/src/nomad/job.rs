//! Jobs as JSON with Go field names. A submitted job is canonicalised the way the agent
//! does before storing it (Nomad's `Canonicalize`: name, namespace, type, counts, a
//! default `Update` for service jobs merged into each group, check names), so a job read
//! back and re-submitted compares equal. Unknown fields are kept as sent.

use serde_json::{json, Map, Value};

use super::params::ApiError;

/// Fields the server owns; they never make a spec "changed".
const SERVER_FIELDS: &[&str] = &[
    "Version",
    "Stable",
    "Status",
    "StatusDescription",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
];

const SECOND: u64 = 1_000_000_000;

/// `api.DefaultUpdateStrategy()`: what a service job gets when it sets no `update` block.
fn default_update() -> Value {
    json!({
        "Stagger": 30 * SECOND,
        "MaxParallel": 1,
        "HealthCheck": "checks",
        "MinHealthyTime": 10 * SECOND,
        "HealthyDeadline": 300 * SECOND,
        "ProgressDeadline": 600 * SECOND,
        "AutoRevert": false,
        "AutoPromote": false,
        "Canary": 0,
    })
}

/// Sets `key` to `value` when it is absent or `null`.
fn default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    match obj.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            obj.insert(key.to_string(), value);
        }
    }
}

fn as_object<'a>(v: &'a mut Value, what: &str) -> Result<&'a mut Map<String, Value>, ApiError> {
    v.as_object_mut().ok_or_else(|| {
        ApiError::bad_request(format!("Request decode failed: {what}: expected an object"))
    })
}

/// Non-empty string field, or a decode error when present with another type.
fn name_of(obj: &Map<String, Value>, what: &str) -> Result<String, ApiError> {
    match obj.get("Name") {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => Err(ApiError::bad_request(format!(
            "Request decode failed: {what}.Name: expected a string"
        ))),
    }
}

/// Merges `group` over `job` field by field (`UpdateStrategy.Merge`), then fills defaults.
fn merged_update(job: Option<&Value>, group: Option<&Value>) -> Option<Value> {
    let mut out = match (job, group) {
        (None, None) => return None,
        (Some(j), _) => j.clone(),
        (None, Some(g)) => g.clone(),
    };
    if let (Some(o), Some(Value::Object(g))) = (out.as_object_mut(), group) {
        for (k, v) in g.iter().filter(|(_, v)| !v.is_null()) {
            o.insert(k.clone(), v.clone());
        }
    }
    if let (Some(o), Value::Object(d)) = (out.as_object_mut(), default_update()) {
        for (k, v) in d {
            default(o, &k, v);
        }
    }
    Some(out)
}

fn canonical_service(svc: &mut Value) -> Result<(), ApiError> {
    let s = as_object(svc, "Service")?;
    let name = name_of(s, "Service")?;
    default(s, "Provider", json!("consul"));
    default(s, "AddressMode", json!("auto"));
    default(s, "OnUpdate", json!("require_healthy"));
    for key in ["Tags", "CanaryTags", "Meta", "CanaryMeta", "Checks"] {
        default(s, key, Value::Null);
    }
    default(s, "PortLabel", json!(""));
    if let Some(Value::Array(checks)) = s.get_mut("Checks") {
        for c in checks.iter_mut() {
            let c = as_object(c, "Check")?;
            if name_of(c, "Check")?.is_empty() {
                c.insert("Name".into(), json!(format!("service: {name:?} check")));
            }
        }
    }
    Ok(())
}

fn canonical_services(owner: &mut Map<String, Value>) -> Result<(), ApiError> {
    default(owner, "Services", Value::Null);
    if let Some(Value::Array(list)) = owner.get_mut("Services") {
        for s in list.iter_mut() {
            canonical_service(s)?;
        }
    }
    Ok(())
}

fn canonical_task(task: &mut Value, errors: &mut Vec<String>) -> Result<(), ApiError> {
    let t = as_object(task, "Task")?;
    if name_of(t, "Task")?.is_empty() {
        errors.push("Missing task name".into());
    }
    default(t, "Driver", json!(""));
    for key in ["Config", "Env", "Meta", "Templates", "Artifacts", "Vault"] {
        default(t, key, Value::Null);
    }
    default(t, "Resources", json!({"CPU": 100, "MemoryMB": 300}));
    default(t, "KillTimeout", json!(5 * SECOND));
    default(t, "ShutdownDelay", json!(0));
    canonical_services(t)
}

fn canonical_group(
    tg: &mut Value,
    job_update: Option<&Value>,
    errors: &mut Vec<String>,
) -> Result<(), ApiError> {
    let g = as_object(tg, "TaskGroup")?;
    if name_of(g, "TaskGroup")?.is_empty() {
        errors.push("Missing task group name".into());
    }
    match g.get("Count") {
        None | Some(Value::Null) => {
            g.insert("Count".into(), json!(1));
        }
        Some(c) if c.as_u64().is_some_and(|n| n <= i32::MAX as u64) => {}
        Some(c) => errors.push(format!("Task group count can't be negative: {c}")),
    }
    default(g, "Meta", Value::Null);
    let update = merged_update(job_update, g.get("Update").filter(|u| !u.is_null()));
    g.insert("Update".into(), update.unwrap_or(Value::Null));
    canonical_services(g)?;
    match g.get_mut("Tasks") {
        Some(Value::Array(tasks)) if !tasks.is_empty() => {
            for t in tasks.iter_mut() {
                canonical_task(t, errors)?;
            }
        }
        _ => errors.push("Missing tasks for task group".into()),
    }
    Ok(())
}

/// Fills Nomad's defaults in place and validates what the double relies on. Decode
/// problems are 400; validation problems are 500 with a multierror body, as from the RPC.
pub(crate) fn canonicalize(job: &mut Value) -> Result<(), ApiError> {
    let j = as_object(job, "Job")?;
    let id = match j.get("ID") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ApiError::bad_request("Job ID hasn't been provided")),
    };
    default(j, "Name", json!(id));
    default(j, "Namespace", json!("default"));
    default(j, "Region", json!("global"));
    default(j, "Type", json!("service"));
    default(j, "Priority", json!(50));
    default(j, "Datacenters", json!(["*"]));
    default(j, "Meta", Value::Null);
    default(j, "Stop", json!(false));
    let is_service = j.get("Type").and_then(Value::as_str) == Some("service");
    let job_update = match j.get("Update").filter(|u| !u.is_null()) {
        Some(u) => merged_update(Some(u), None),
        None if is_service => Some(default_update()),
        None => None,
    };
    j.insert("Update".into(), job_update.clone().unwrap_or(Value::Null));
    let mut errors = Vec::new();
    match j.get_mut("TaskGroups") {
        Some(Value::Array(groups)) if !groups.is_empty() => {
            for tg in groups.iter_mut() {
                canonical_group(tg, job_update.as_ref(), &mut errors)?;
            }
        }
        _ => errors.push("Missing job task groups".into()),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(&errors))
    }
}

/// `null`, `[]` and `{}` compare equal, as do two jobs differing only in server fields.
pub(crate) fn semantic(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        Value::Array(a) => Value::Array(a.iter().map(semantic).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), semantic(v))).collect())
        }
        other => other.clone(),
    }
}

/// The job without server-owned fields, for `SpecChanged`-style comparison.
pub(crate) fn spec_of(job: &Value) -> Value {
    let mut spec = job.clone();
    if let Some(o) = spec.as_object_mut() {
        for f in SERVER_FIELDS {
            o.remove(*f);
        }
    }
    semantic(&spec)
}

/// Whether `b` differs from `a` in anything but server-owned fields.
pub(crate) fn spec_changed(a: &Value, b: &Value) -> bool {
    spec_of(a) != spec_of(b)
}

pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub(crate) fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub(crate) fn groups(job: &Value) -> &[Value] {
    list(job, "TaskGroups")
}

pub(crate) fn group<'a>(job: &'a Value, name: &str) -> Option<&'a Value> {
    groups(job).iter().find(|g| str_of(g, "Name") == name)
}

pub(crate) fn count(group: &Value) -> u32 {
    u32::try_from(u64_of(group, "Count")).unwrap_or(u32::MAX)
}

/// A group's update strategy, when it asks for deployments (`MaxParallel > 0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Update {
    pub max_parallel: usize,
    pub canary: u32,
    pub auto_revert: bool,
    pub auto_promote: bool,
    pub progress_deadline: u64,
}

pub(crate) fn update(group: &Value) -> Option<Update> {
    let u = group.get("Update").filter(|u| u.is_object())?;
    let flag = |k: &str| u.get(k).and_then(Value::as_bool).unwrap_or(false);
    let max_parallel = usize::try_from(u64_of(u, "MaxParallel")).unwrap_or(usize::MAX);
    (max_parallel > 0).then(|| Update {
        max_parallel,
        canary: u32::try_from(u64_of(u, "Canary")).unwrap_or(u32::MAX),
        auto_revert: flag("AutoRevert"),
        auto_promote: flag("AutoPromote"),
        progress_deadline: u64_of(u, "ProgressDeadline"),
    })
}

/// `Config.image` of the group's first task that has one.
pub(crate) fn image(group: &Value) -> String {
    let tasks = list(group, "Tasks").iter();
    let mut images = tasks.filter_map(|t| t.get("Config")?.get("image")?.as_str());
    images.next().unwrap_or("").to_string()
}

/// Whether a job wants deployments: a service job with a group that has an update block.
pub(crate) fn wants_deployment(job: &Value) -> bool {
    str_of(job, "Type") == "service"
        && groups(job)
            .iter()
            .any(|g| update(g).is_some() && count(g) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_defaults_and_equality() {
        let mut a = json!({"ID": "web", "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t",
            "Services": [{"Name": "s"}]}], "Services": [{"Name": "web", "Checks": [{"Type": "http"}]}]}]});
        canonicalize(&mut a).expect("valid");
        assert_eq!(a["Name"], "web");
        assert_eq!(a["TaskGroups"][0]["Count"], 1);
        assert_eq!(a["TaskGroups"][0]["Update"]["MaxParallel"], 1);
        let check = &a["TaskGroups"][0]["Services"][0]["Checks"][0];
        assert_eq!(check["Name"], "service: \"web\" check");
        let mut b = a.clone();
        b["Version"] = json!(4);
        b["TaskGroups"][0]["Meta"] = json!({});
        canonicalize(&mut b).expect("valid");
        assert!(!spec_changed(&a, &b));
        b["TaskGroups"][0]["Count"] = json!(2);
        assert!(spec_changed(&a, &b));
    }

    #[test]
    fn group_update_merges_over_job_update() {
        let mut j = json!({"ID": "x", "Update": {"MaxParallel": 2, "AutoRevert": true},
            "TaskGroups": [{"Name": "a", "Update": {"MaxParallel": 0}, "Tasks": [{"Name": "t"}]},
                           {"Name": "b", "Tasks": [{"Name": "t"}]}]});
        canonicalize(&mut j).expect("valid");
        assert_eq!(update(&j["TaskGroups"][0]), None);
        let b = update(&j["TaskGroups"][1]).expect("update");
        assert_eq!((b.max_parallel, b.auto_revert), (2, true));
    }

    #[test]
    fn invalid_jobs() {
        let mut no_id = json!({"TaskGroups": []});
        assert_eq!(canonicalize(&mut no_id).map_err(|e| e.status), Err(400));
        let mut no_groups = json!({"ID": "x"});
        let err = canonicalize(&mut no_groups).expect_err("invalid");
        assert_eq!(
            err.body,
            "1 error occurred:\n\t* Missing job task groups\n\n"
        );
    }
}
