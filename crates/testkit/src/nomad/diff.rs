//! The `Diff` of a plan answer, in Nomad's shape (`JobDiff` → `TaskGroups[]` → `Tasks[]`,
//! each with `Type` and `Fields[{Type, Name, Old, New, Annotations}]`). Nested values are
//! flattened into one field list per level (`Meta[version]`, `Services[web].Tags`) instead
//! of Nomad's nested `Objects`; tag lists are diffed element by element as Nomad does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::job;
use super::plan::{tasks_updated, DesiredUpdates};

/// Keys rendered as maps (`Meta[key]`) rather than nested structs (`Update.MaxParallel`).
const MAP_KEYS: &[&str] = &["Meta", "CanaryMeta", "Env", "Config"];
/// Server-owned or structural keys left out of a level's own fields.
const SKIP: &[&str] = &[
    "TaskGroups",
    "Tasks",
    "Version",
    "Stable",
    "Status",
    "StatusDescription",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "SubmitTime",
];

/// A flattened leaf: a scalar, or a set of scalars (tags, datacenters).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Leaf {
    One(String),
    Set(BTreeSet<String>),
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn flatten(v: &Value, path: &str, map_style: bool, out: &mut BTreeMap<String, Leaf>) {
    match v {
        Value::Null => {}
        Value::Object(o) => {
            for (k, v) in o
                .iter()
                .filter(|(k, _)| !path.is_empty() || !SKIP.contains(&k.as_str()))
            {
                let name = match (path.is_empty(), map_style) {
                    (true, _) => k.clone(),
                    (false, true) => format!("{path}[{k}]"),
                    (false, false) => format!("{path}.{k}"),
                };
                flatten(v, &name, MAP_KEYS.contains(&k.as_str()), out);
            }
        }
        Value::Array(a) if a.iter().all(|e| scalar(e).is_some()) => {
            if !a.is_empty() {
                out.insert(
                    path.to_string(),
                    Leaf::Set(a.iter().filter_map(scalar).collect()),
                );
            }
        }
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                let key = e
                    .get("Name")
                    .and_then(scalar)
                    .unwrap_or_else(|| i.to_string());
                flatten(e, &format!("{path}[{key}]"), false, out);
            }
        }
        other => {
            if let Some(s) = scalar(other) {
                out.insert(path.to_string(), Leaf::One(s));
            }
        }
    }
}

fn field(kind: &str, name: &str, old: &str, new: &str) -> Value {
    json!({"Type": kind, "Name": name, "Old": old, "New": new, "Annotations": null})
}

/// Field diffs between two objects of the same level.
fn fields(old: Option<&Value>, new: Option<&Value>) -> Vec<Value> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    if let Some(o) = old {
        flatten(o, "", false, &mut a);
    }
    if let Some(n) = new {
        flatten(n, "", false, &mut b);
    }
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        match (a.get(name), b.get(name)) {
            (Some(Leaf::One(x)), Some(Leaf::One(y))) if x != y => {
                out.push(field("Edited", name, x, y))
            }
            (Some(Leaf::One(x)), None) => out.push(field("Deleted", name, x, "")),
            (None, Some(Leaf::One(y))) => out.push(field("Added", name, "", y)),
            (x, y) => {
                let set = |l: Option<&Leaf>| match l {
                    Some(Leaf::Set(s)) => s.clone(),
                    Some(Leaf::One(s)) => BTreeSet::from([s.clone()]),
                    None => BTreeSet::new(),
                };
                let (sa, sb) = (set(x), set(y));
                out.extend(sa.difference(&sb).map(|t| field("Deleted", name, t, "")));
                out.extend(sb.difference(&sa).map(|t| field("Added", name, "", t)));
            }
        }
    }
    out
}

fn kind(old: Option<&Value>, new: Option<&Value>, changed: bool) -> &'static str {
    match (old, new) {
        (None, Some(_)) => "Added",
        (Some(_), None) => "Deleted",
        _ if changed => "Edited",
        _ => "None",
    }
}

fn task_diffs(old_job: Option<&Value>, new_job: &Value, group: &str) -> Vec<Value> {
    let tasks = |j: Option<&Value>| {
        let g = j.and_then(|j| job::group(j, group));
        g.map_or(&[][..], |g| job::list(g, "Tasks")).to_vec()
    };
    let (a, b) = (tasks(old_job), tasks(Some(new_job)));
    let names: BTreeSet<String> = a
        .iter()
        .chain(&b)
        .map(|t| job::str_of(t, "Name").to_string())
        .collect();
    let destructive = old_job
        .and_then(|o| tasks_updated(o, new_job, group))
        .is_some();
    names
        .into_iter()
        .map(|name| {
            let find = |l: &[Value]| l.iter().find(|t| job::str_of(t, "Name") == name).cloned();
            let (ot, nt) = (find(&a), find(&b));
            let fs = fields(ot.as_ref(), nt.as_ref());
            let note = match (destructive, fs.is_empty()) {
                (true, _) => json!(["forces create/destroy update"]),
                (false, false) => json!(["forces in-place update"]),
                (false, true) => Value::Null,
            };
            json!({"Type": kind(ot.as_ref(), nt.as_ref(), !fs.is_empty()), "Name": name,
                   "Fields": fs, "Objects": null, "Annotations": note})
        })
        .collect()
}

/// The plan's `Diff` between the registered job (if any) and the submitted one.
pub(crate) fn job_diff(
    old: Option<&Value>,
    new: &Value,
    updates: &BTreeMap<String, DesiredUpdates>,
) -> Value {
    let job_fields = fields(old, Some(new));
    let group_names: BTreeSet<String> = old
        .into_iter()
        .chain([new])
        .flat_map(|j| {
            job::groups(j)
                .iter()
                .map(|g| job::str_of(g, "Name").to_string())
        })
        .chain(updates.keys().cloned())
        .collect();
    let mut any_group_change = false;
    let groups: Vec<Value> = group_names
        .into_iter()
        .map(|name| {
            let og = old.and_then(|o| job::group(o, &name));
            let ng = job::group(new, &name);
            let fs = fields(og, ng);
            let tasks = task_diffs(old, new, &name);
            let changed = !fs.is_empty() || tasks.iter().any(|t| t["Type"] != "None");
            any_group_change |= changed;
            let ups = updates.get(&name).copied().unwrap_or_default();
            json!({"Type": kind(og, ng, changed), "Name": name, "Fields": fs, "Objects": null,
                   "Tasks": tasks, "Updates": ups.labels()})
        })
        .collect();
    let changed = !job_fields.is_empty() || any_group_change;
    json!({"Type": kind(old, Some(new), changed), "ID": job::str_of(new, "ID"),
           "Fields": job_fields, "Objects": null, "TaskGroups": groups})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_meta_and_image_fields() {
        let mk = |tag: &str, image: &str| {
            let mut j = json!({"ID": "j", "TaskGroups": [{"Name": "g",
                "Services": [{"Name": "web", "Tags": [tag, "v1"], "Meta": {"version": "1"}}],
                "Tasks": [{"Name": "t", "Config": {"image": image}}]}]});
            job::canonicalize(&mut j).expect("valid");
            j
        };
        let d = job_diff(
            Some(&mk("active", "a:1")),
            &mk("standby", "a:2"),
            &BTreeMap::new(),
        );
        assert_eq!(d["Type"], "Edited");
        let g = &d["TaskGroups"][0];
        let names: Vec<(&str, &str)> = g["Fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|f| {
                (
                    f["Type"].as_str().unwrap_or(""),
                    f["Name"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("Deleted", "Services[web].Tags"),
                ("Added", "Services[web].Tags")
            ]
        );
        let task = &g["Tasks"][0];
        assert_eq!(task["Fields"][0]["Name"], "Config[image]");
        assert_eq!(task["Annotations"][0], "forces create/destroy update");
        let same = job_diff(Some(&mk("a", "x")), &mk("a", "x"), &BTreeMap::new());
        assert_eq!(same["Type"], "None");
    }
}
