//! The store: jobs with their versions, allocations and deployments, under one Raft-like
//! index. Registration follows Nomad's `Register` endpoint: the `EnforceIndex`
//! check, no new version for an unchanged spec, a new version (and a cancelled older
//! deployment) otherwise. Allocation and deployment changes live in `alloc.rs` and
//! `deploy.rs`, on the same store.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::alloc::{Alloc, AllocSlot};
use super::deploy::Deployment;
use super::job;
use super::params::ApiError;
use super::Timing;

/// Prefix of the error a lost compare-and-set gets; Nomad's API client matches on it to
/// detect the conflict.
pub const ENFORCE_PREFIX: &str = "Enforcing job modify index";

/// Chooses the port of a new allocation (the test's backends must listen there).
pub(crate) type PortFn = Arc<dyn Fn(&AllocSlot) -> u16 + Send + Sync>;

/// The doubles' seedable random source; Nomad adds UUID-shaped ids.
pub(crate) use crate::kit::Rng;

impl Rng {
    /// A UUID-shaped id, as Nomad uses for evaluations, allocations and deployments.
    pub fn uuid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

/// One job: every version (the last is current), its live allocations, and allocations
/// stopped by the scheduler whose services are still to be deregistered.
#[derive(Debug)]
pub(crate) struct JobEntry {
    pub versions: Vec<Value>,
    pub allocs: Vec<Alloc>,
    pub stopping: Vec<Alloc>,
    /// Generation of the rollout task working on this job, if any.
    pub rolling: Option<u64>,
}

impl JobEntry {
    pub fn current(&self) -> &Value {
        &self.versions[self.versions.len() - 1]
    }

    pub fn version(&self) -> u64 {
        (self.versions.len() - 1) as u64
    }
}

/// The answer to a registration (`JobRegisterResponse`).
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub eval_id: String,
    pub eval_index: u64,
    pub job_modify_index: u64,
    /// A new version was stored: the caller starts a rollout.
    pub changed: bool,
}

/// All mutable state; lives behind one `std::sync::Mutex`.
pub(crate) struct Store {
    pub index: u64,
    pub jobs: BTreeMap<String, JobEntry>,
    pub deployments: Vec<Deployment>,
    /// Index of the last write to the deployments table.
    pub deployment_index: u64,
    /// Index of the last write to the jobs table.
    pub jobs_index: u64,
    pub rng: Rng,
    pub timing: Timing,
    pub ports: Option<PortFn>,
    pub next_port: u16,
    /// Armed by `fail_next_deployment`: the next deployment's allocations turn unhealthy.
    pub fail_next: bool,
    /// Number of rollout waves so far (their order seed is `timing.seed + wave`).
    pub waves: u64,
}

fn now_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Store {
    pub fn new() -> Self {
        let timing = Timing::default();
        Store {
            index: 1,
            jobs: BTreeMap::new(),
            deployments: Vec::new(),
            deployment_index: 1,
            jobs_index: 1,
            rng: Rng::new(timing.seed),
            timing,
            ports: None,
            next_port: 21000,
            fail_next: false,
            waves: 0,
        }
    }

    /// Takes the next Raft index.
    pub fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    pub fn job(&self, id: &str) -> Option<&Value> {
        self.jobs.get(id).map(JobEntry::current)
    }

    /// `EnforceIndex` with the exact error texts of Nomad's `Register` endpoint.
    fn enforce(&self, id: &str, jmi: u64) -> Result<(), ApiError> {
        let err = |tail: String| Err(ApiError::internal(format!("{ENFORCE_PREFIX} {tail}")));
        match self.job(id).map(|j| job::u64_of(j, "JobModifyIndex")) {
            Some(_) if jmi == 0 => err("0: job already exists".into()),
            Some(m) if m != jmi => err(format!(
                "{jmi}: job exists with conflicting job modify index: {m}"
            )),
            None if jmi != 0 => err(format!("{jmi}: job does not exist")),
            _ => Ok(()),
        }
    }

    /// Registers a canonical job. `settled`: the rollout is applied at once and healthy
    /// (seeding a test's starting state) instead of by a rollout task.
    pub fn register(
        &mut self,
        mut new: Value,
        enforce: Option<u64>,
        settled: bool,
    ) -> Result<Registered, ApiError> {
        let id = job::str_of(&new, "ID").to_string();
        if let Some(jmi) = enforce {
            self.enforce(&id, jmi)?;
        }
        let eval_id = self.rng.uuid();
        if let Some(old) = self.job(&id).filter(|old| !job::spec_changed(old, &new)) {
            let job_modify_index = job::u64_of(old, "JobModifyIndex");
            let eval_index = self.bump(); // the evaluation is still created
            return Ok(Registered {
                eval_id,
                eval_index,
                job_modify_index,
                changed: false,
            });
        }
        let idx = self.bump();
        let (version, create_index) = match self.jobs.get(&id) {
            Some(e) => (e.version() + 1, job::u64_of(e.current(), "CreateIndex")),
            None => (0, idx),
        };
        if let Some(o) = new.as_object_mut() {
            for (k, v) in [
                ("Version", json!(version)),
                ("Stable", json!(false)),
                ("Status", json!("pending")),
                ("StatusDescription", json!("")),
                ("CreateIndex", json!(create_index)),
                ("ModifyIndex", json!(idx)),
                ("JobModifyIndex", json!(idx)),
                ("SubmitTime", json!(now_ns())),
            ] {
                o.insert(k.to_string(), v);
            }
        }
        let entry = self.jobs.entry(id.clone()).or_insert_with(|| JobEntry {
            versions: Vec::new(),
            allocs: Vec::new(),
            stopping: Vec::new(),
            rolling: None,
        });
        entry.versions.push(new);
        self.jobs_index = idx;
        self.cancel_running(&id, idx);
        let deployment = self.create_deployment(&id, idx, settled);
        self.commit(&id, deployment.as_deref(), settled);
        if deployment.is_none() || settled {
            self.set_stable(&id, version, true);
        }
        self.refresh_status(&id);
        Ok(Registered {
            eval_id,
            eval_index: idx,
            job_modify_index: idx,
            changed: true,
        })
    }

    /// Marks a version (un)stable; a write to the job when it is the current version.
    pub fn set_stable(&mut self, id: &str, version: u64, stable: bool) {
        let idx = self.bump();
        let Some(e) = self.jobs.get_mut(id) else {
            return;
        };
        let current = e.version() == version;
        if let Some(v) = e.versions.get_mut(version as usize) {
            v["Stable"] = json!(stable);
            if current {
                v["ModifyIndex"] = json!(idx);
                self.jobs_index = idx;
            }
        }
    }

    /// `running` while the job has allocations, else `pending`; a job write if it moves.
    pub fn refresh_status(&mut self, id: &str) {
        let Some(e) = self.jobs.get(id) else {
            return;
        };
        let status = if e.allocs.is_empty() {
            "pending"
        } else {
            "running"
        };
        if job::str_of(e.current(), "Status") == status {
            return;
        }
        let idx = self.bump();
        if let Some(e) = self.jobs.get_mut(id) {
            let n = e.versions.len() - 1;
            e.versions[n]["Status"] = json!(status);
            e.versions[n]["ModifyIndex"] = json!(idx);
            self.jobs_index = idx;
        }
    }

    /// The latest version before `before` marked stable.
    pub fn last_stable(&self, id: &str, before: u64) -> Option<u64> {
        let e = self.jobs.get(id)?;
        let stable = |v: &&Value| v.get("Stable").and_then(Value::as_bool) == Some(true);
        let older = e.versions.iter().take(before as usize);
        older
            .filter(stable)
            .map(|v| job::u64_of(v, "Version"))
            .next_back()
    }

    /// The port for a new allocation: the test's allocator, or the next free-looking one.
    pub fn port_for(&mut self, slot: &AllocSlot) -> u16 {
        if let Some(f) = &self.ports {
            return f(slot);
        }
        self.next_port = self.next_port.wrapping_add(1).max(21001);
        self.next_port
    }
}

impl Store {
    /// Another writer registers the job with an equivalent spec: its `JobModifyIndex` and
    /// `ModifyIndex` move on. `false` if the job does not exist.
    pub fn foreign_write(&mut self, id: &str) -> bool {
        let idx = self.bump();
        let Some(e) = self.jobs.get_mut(id) else {
            return false;
        };
        let n = e.versions.len() - 1;
        e.versions[n]["ModifyIndex"] = json!(idx);
        e.versions[n]["JobModifyIndex"] = json!(idx);
        self.jobs_index = idx;
        true
    }
}
