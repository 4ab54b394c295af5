//! State shared by the handle, the connections and the background tasks: the kit's core
//! (store, change signal, parked queries, kill switch; the store lock is never held while
//! calling the Consul double), faults, ACLs, the request log, and the rollout and
//! health-timer tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::consul::ConsulDouble;
pub(crate) use crate::kit::lock;
use crate::kit::{Acl, Core, RequestLog, Times};

use super::faults::Rules;
use super::job;
use super::params::{ApiError, Query};
use super::rollout;
use super::state::{Registered, Store};
use super::sync::{sync_alloc, sync_stopped};

/// Nomad's ACL rule, with tokens that may write or only read: no token means the anonymous
/// token, which may do nothing here (403 `Permission denied`); an unknown secret is 403
/// `ACL token not found`.
impl Acl<bool> {
    pub fn check(&self, token: Option<&str>, write: bool) -> Result<(), ApiError> {
        if !self.enabled() {
            return Ok(());
        }
        let denied = || ApiError::new(403, "Permission denied");
        let t = token.ok_or_else(denied)?;
        match self.get(t) {
            None => Err(ApiError::new(403, "ACL token not found")),
            Some(false) if write => Err(denied()),
            Some(_) => Ok(()),
        }
    }
}

/// One request as the double received it.
#[derive(Clone, Debug)]
pub struct NomadRequest {
    pub method: String,
    /// Path as sent (still percent-encoded).
    pub path: String,
    /// Raw query string, `""` when absent.
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// `X-Nomad-Token`, else `Authorization: Bearer`.
    pub token: Option<String>,
    pub at: tokio::time::Instant,
}

impl NomadRequest {
    /// First decoded value of a query parameter (`Some("")` for a bare flag).
    pub fn param(&self, key: &str) -> Option<String> {
        Query::first(&self.query, key)
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

#[derive(Default)]
pub(crate) struct Tasks {
    /// Job ID → (generation, rollout task).
    pub rollouts: HashMap<String, (u64, JoinHandle<()>)>,
    pub timers: Vec<JoinHandle<()>>,
    pub next_gen: u64,
}

pub(crate) struct Shared {
    pub core: Core<Store>,
    pub consul: Option<Arc<ConsulDouble>>,
    pub faults: Mutex<Rules>,
    pub acl: Mutex<Acl<bool>>,
    pub log: RequestLog<NomadRequest>,
    pub tasks: Mutex<Tasks>,
}

impl Shared {
    pub fn new(consul: Option<Arc<ConsulDouble>>) -> Self {
        Shared {
            core: Core::new(Store::new(), 0x006e_6f6d_6164),
            consul,
            faults: Mutex::default(),
            acl: Mutex::default(),
            log: RequestLog::default(),
            tasks: Mutex::default(),
        }
    }

    pub fn add_fault(&self, prefix: &str, fault: super::NomadFault, times: Times) {
        lock(&self.faults).add(prefix, fault, times);
    }

    /// Stops the job's rollout task, if any.
    pub fn abort_rollout(&self, job_id: &str) {
        if let Some((_, task)) = lock(&self.tasks).rollouts.remove(job_id) {
            task.abort();
        }
        self.core.write(|s| {
            if let Some(e) = s.jobs.get_mut(job_id) {
                e.rolling = None;
            }
        });
    }

    /// Stops every background task (the double is going away).
    pub fn abort_all(&self) {
        let mut tasks = lock(&self.tasks);
        for (_, (_, t)) in tasks.rollouts.drain() {
            t.abort();
        }
        for t in tasks.timers.drain(..) {
            t.abort();
        }
    }
}

/// Starts (or restarts) the rollout of `job_id` towards its current version.
pub(crate) fn spawn_rollout(shared: &Arc<Shared>, job_id: &str) {
    let mut tasks = lock(&shared.tasks);
    tasks.next_gen += 1;
    let gen = tasks.next_gen;
    shared.core.write(|s| {
        if let Some(e) = s.jobs.get_mut(job_id) {
            e.rolling = Some(gen);
        }
    });
    let task = tokio::spawn(rollout::run(shared.clone(), job_id.to_string(), gen));
    if let Some((_, old)) = tasks.rollouts.insert(job_id.to_string(), (gen, task)) {
        // From inside the old task this takes effect at its next await, and it has none left.
        old.abort();
    }
}

/// Spawns a health timer and keeps its handle so the double can stop it.
pub(crate) fn spawn_timer(
    shared: &Arc<Shared>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let handle = tokio::spawn(task);
    let mut tasks = lock(&shared.tasks);
    tasks.timers.retain(|t| !t.is_finished());
    tasks.timers.push(handle);
}

/// Registers a job as `POST /v1/jobs` does and starts its rollout; `settled` applies it
/// at once, all allocations healthy and the deployment successful.
pub(crate) fn submit(
    shared: &Arc<Shared>,
    mut new: Value,
    enforce: Option<u64>,
    settled: bool,
) -> Result<Registered, ApiError> {
    job::canonicalize(&mut new)?;
    let id = job::str_of(&new, "ID").to_string();
    let reg = shared.core.write(|s| s.register(new, enforce, settled))?;
    if !reg.changed {
        return Ok(reg);
    }
    if settled {
        shared.abort_rollout(&id);
        sync_stopped(shared, &id);
        let ids = shared.core.read(|s| {
            s.jobs
                .get(&id)
                .map(|e| e.allocs.iter().map(|a| a.id.clone()).collect::<Vec<_>>())
        });
        for alloc in ids.unwrap_or_default() {
            sync_alloc(shared, &id, &alloc);
        }
    } else {
        spawn_rollout(shared, &id);
    }
    Ok(reg)
}
