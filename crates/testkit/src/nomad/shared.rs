//! State shared by the handle, the connections and the background tasks: the store behind
//! a `std::sync::Mutex` (never held across `.await`, nor while calling the Consul double),
//! the change signal blocking queries and rollouts wait on, faults, ACLs, the request log,
//! and the rollout and health-timer tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::consul::{ConsulDouble, Times};

use super::faults::Rules;
use super::job;
use super::params::ApiError;
use super::rollout;
use super::state::{Registered, Rng, Store};
use super::sync::{sync_alloc, sync_stopped};
pub(crate) use crate::common::Parked;

/// Locks a mutex, ignoring poisoning: a panicking test must not cascade into others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// ACL tokens: `None` (ACLs off) or secret → may write.
#[derive(Debug, Default)]
pub(crate) struct Acl {
    pub enabled: bool,
    pub tokens: HashMap<String, bool>,
}

impl Acl {
    /// No token means the anonymous token, which may do nothing here (403 `Permission
    /// denied`); an unknown secret is 403 `ACL token not found`.
    pub fn check(&self, token: Option<&str>, write: bool) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let denied = || ApiError::new(403, "Permission denied");
        let t = token.ok_or_else(denied)?;
        match self.tokens.get(t) {
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
        super::params::Query::parse(&self.query)
            .get(key)
            .map(str::to_string)
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
    pub store: Mutex<Store>,
    /// Bumped after every write; parked queries and rollouts re-check when it moves.
    pub changed: watch::Sender<u64>,
    pub consul: Option<Arc<ConsulDouble>>,
    pub faults: Mutex<Rules>,
    pub acl: Mutex<Acl>,
    pub log: Mutex<Vec<NomadRequest>>,
    pub parked: watch::Sender<usize>,
    pub conn_kill: watch::Sender<u64>,
    pub tasks: Mutex<Tasks>,
    jitter: Mutex<Rng>,
}

impl Shared {
    pub fn new(consul: Option<Arc<ConsulDouble>>) -> Self {
        Shared {
            store: Mutex::new(Store::new()),
            changed: watch::channel(0).0,
            consul,
            faults: Mutex::default(),
            acl: Mutex::default(),
            log: Mutex::default(),
            parked: watch::channel(0).0,
            conn_kill: watch::channel(0).0,
            tasks: Mutex::default(),
            jitter: Mutex::new(Rng::new(0x006e_6f6d_6164)),
        }
    }

    /// Runs a write on the store, then wakes waiters (outside the lock).
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let r = f(&mut lock(&self.store));
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
        r
    }

    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&lock(&self.store))
    }

    pub fn park(&self) -> Parked<'_> {
        Parked::enter(&self.parked)
    }

    /// Random extra wait of up to `wait / 16`, as Nomad's blocking queries add.
    pub fn jitter(&self, wait: Duration) -> Duration {
        let max = u64::try_from((wait / 16).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(lock(&self.jitter).up_to(max))
    }

    pub fn kill_connections(&self) {
        self.conn_kill.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub fn add_fault(&self, prefix: &str, fault: super::NomadFault, times: Times) {
        lock(&self.faults).add(prefix, fault, times);
    }

    /// Stops the job's rollout task, if any.
    pub fn abort_rollout(&self, job_id: &str) {
        if let Some((_, task)) = lock(&self.tasks).rollouts.remove(job_id) {
            task.abort();
        }
        self.write(|s| {
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
    shared.write(|s| {
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
    let reg = shared.write(|s| s.register(new, enforce, settled))?;
    if !reg.changed {
        return Ok(reg);
    }
    if settled {
        shared.abort_rollout(&id);
        sync_stopped(shared, &id);
        let ids = shared.read(|s| {
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
