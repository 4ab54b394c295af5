//! [`NomadDouble`]: an in-process Nomad HTTP API (jobs, plans, deployments) that applies
//! registered jobs to a [`ConsulDouble`] the way Nomad clients do:
//!
//! - A registration is compare-and-set (`EnforceIndex`, exact conflict bodies); an
//!   unchanged spec makes no new version.
//! - A plan reports `DesiredTGUpdates` from the same reconciler the rollout uses: service
//!   tags/meta → in place; image, env, resources, task/group/job meta → destructive,
//!   `MaxParallel` at a time.
//! - In Consul, in-place updates re-register the same service IDs one instance at a time
//!   in a seeded random order ([`Timing`]); destructive ones deregister the old allocation
//!   and register a new one whose checks start `critical`.
//! - Deployments go `running` → `successful`, or `failed` (then auto-revert to the last
//!   stable version) when scripted with [`NomadDouble::fail_next_deployment`], or
//!   `cancelled` by a newer version.
//!
//! ```ignore
//! let consul = Arc::new(ConsulDouble::start().await?);
//! let nomad = NomadDouble::start(Some(consul.clone())).await?;
//! nomad.set_port_allocator(move |slot| if slot.image.ends_with(":v1") { v1_port } else { v2_port });
//! nomad.seed_job(reference_job("hello:v1", "hello:v2", "v1", "v2"))?; // settled at once
//! // the CLI under test flips tags through nomad.url(), then:
//! let d = nomad.wait_for_deployment("hello-service", "successful", Duration::from_secs(5)).await;
//! ```

mod alloc;
mod deploy;
mod diff;
mod endpoints;
mod faults;
mod http;
mod job;
mod params;
mod plan;
mod reference;
mod rollout;
mod server;
mod shared;
mod state;
mod sync;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

use crate::consul::ConsulDouble;
use crate::kit::server::AcceptTask;
use crate::kit::Times;

pub use alloc::{AllocInfo, AllocSlot, Health};
pub use faults::NomadFault;
pub use plan::DesiredUpdates;
pub use reference::{reference_job, set_active, REFERENCE_JOB_ID, REFERENCE_SERVICE};
pub use shared::NomadRequest;
pub use state::ENFORCE_PREFIX;
pub use sync::ALLOC_ADDRESS;

use deploy::{DESC_MARKED_FAILED, RUNNING};
use shared::{lock, submit, Shared};

/// How fast the simulated clients act. Defaults: 5 ms between two allocations' Consul
/// writes, health verdicts 20 ms after (re)start, no straggler, seed 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Gap between two allocations' Consul writes in one wave (clients sync on their own).
    pub sync_gap: Duration,
    /// From an allocation's placement or in-place update to its health verdict; new
    /// allocations' checks stay `critical` until then.
    pub health_delay: Duration,
    /// Extra delay before the last allocation of each wave syncs (a client retrying).
    pub straggler: Duration,
    /// Seeds IDs and the order in which allocations sync.
    pub seed: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            sync_gap: Duration::from_millis(5),
            health_delay: Duration::from_millis(20),
            straggler: Duration::ZERO,
            seed: 1,
        }
    }
}

/// A running Nomad double. Dropping it stops the listener, its connections and every
/// rollout (the Consul double is left as it is).
pub struct NomadDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: AcceptTask,
}

impl NomadDouble {
    /// Starts on `127.0.0.1:0`; registered jobs are applied to `consul` when given.
    pub async fn start(consul: Option<Arc<ConsulDouble>>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(consul));
        let task = server::spawn_accept(shared.clone(), listener);
        Ok(NomadDouble {
            shared,
            addr,
            accept: AcceptTask::new(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, the value `NOMAD_ADDR` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the clients' pace. The seed fixes the sync order of every later wave and,
    /// mixed with the current index (so IDs never repeat), the IDs generated from now on.
    pub fn set_timing(&self, timing: Timing) {
        self.shared.core.write(|s| {
            s.rng = state::Rng::new(timing.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ s.index);
            s.timing = timing;
        });
    }

    /// Chooses the port each new allocation registers in Consul (where the test's backend
    /// for that group/version listens). Called under the store lock: don't call the double.
    pub fn set_port_allocator(&self, f: impl Fn(&AllocSlot) -> u16 + Send + Sync + 'static) {
        self.shared.core.write(|s| s.ports = Some(Arc::new(f)));
    }

    /// Registers a job as `POST /v1/jobs` without `EnforceIndex` does (a `Job` object, not
    /// the `{"Job": …}` wrapper) and starts its rollout. Returns the `JobModifyIndex`.
    pub fn put_job(&self, job: Value) -> Result<u64, String> {
        let reg = submit(&self.shared, job, None, false).map_err(|e| e.body)?;
        Ok(reg.job_modify_index)
    }

    /// Registers a job already rolled out: allocations placed and healthy in Consul, the
    /// deployment (if any) successful, the version stable. For a test's starting state.
    pub fn seed_job(&self, job: Value) -> Result<u64, String> {
        let reg = submit(&self.shared, job, None, true).map_err(|e| e.body)?;
        Ok(reg.job_modify_index)
    }

    /// The current version of a job, as `GET /v1/job/:id` returns it.
    pub fn job(&self, id: &str) -> Option<Value> {
        self.shared.core.read(|s| s.job(id).cloned())
    }

    /// Every version of a job, oldest first.
    pub fn job_versions(&self, id: &str) -> Vec<Value> {
        self.shared.core.read(|s| {
            s.jobs
                .get(id)
                .map(|e| e.versions.clone())
                .unwrap_or_default()
        })
    }

    /// The job's deployments as the API renders them, newest first.
    pub fn deployments(&self, job: &str) -> Vec<Value> {
        let all = |s: &state::Store| {
            s.job_deployments(job)
                .into_iter()
                .map(|d| d.to_json())
                .collect()
        };
        self.shared.core.read(all)
    }

    pub fn latest_deployment(&self, job: &str) -> Option<Value> {
        self.deployments(job).into_iter().next()
    }

    /// Live allocations of a job.
    pub fn allocs(&self, job: &str) -> Vec<AllocInfo> {
        let infos = |s: &state::Store| {
            s.jobs
                .get(job)
                .map(|e| e.allocs.iter().map(|a| a.info()).collect())
        };
        self.shared.core.read(infos).unwrap_or_default()
    }

    /// The next deployment created fails: its new or updated allocations turn unhealthy
    /// (new ones keep `critical` checks). With `AutoRevert`, the job then reverts.
    pub fn fail_next_deployment(&self) {
        self.shared.core.write(|s| s.fail_next = true);
    }

    /// Fails a running deployment now, as `POST /v1/deployment/fail/:id` does.
    pub fn fail_deployment(&self, id: &str) -> Result<(), String> {
        fail_deployment(&self.shared, id)
    }

    /// Promotes a running deployment's canaries, as `POST /v1/deployment/promote/:id`.
    pub fn promote_deployment(&self, id: &str) -> Result<(), String> {
        self.shared.core.write(|s| s.request_promotion(id))
    }

    /// Waits until the job's latest deployment has `status`; returns it, or `None` at
    /// the deadline.
    pub async fn wait_for_deployment(
        &self,
        job: &str,
        status: &str,
        within: Duration,
    ) -> Option<Value> {
        self.wait_for(within, || {
            let d = self.latest_deployment(job)?;
            (d["Status"] == status).then_some(d)
        })
        .await
    }

    /// Waits until the job's current version is at least `version`.
    pub async fn wait_for_version(&self, job: &str, version: u64, within: Duration) -> bool {
        let at = || {
            self.job(job)
                .filter(|j| j["Version"].as_u64() >= Some(version))
        };
        self.wait_for(within, at).await.is_some()
    }

    /// Waits until no rollout works on the job and every allocation has a health verdict.
    pub async fn wait_settled(&self, job: &str, within: Duration) -> bool {
        let settled = || {
            self.shared.core.read(|s| {
                let e = s.jobs.get(job)?;
                let pending = e.allocs.iter().any(|a| a.health == Health::Pending);
                (e.rolling.is_none() && !pending && e.stopping.is_empty()).then_some(())
            })
        };
        self.wait_for(within, settled).await.is_some()
    }

    async fn wait_for<T>(&self, within: Duration, check: impl Fn() -> Option<T>) -> Option<T> {
        let mut changes = self.shared.core.changed.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            changes.borrow_and_update();
            if let Some(v) = check() {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return check();
            }
        }
    }

    /// Adds a fault for requests whose path starts with `prefix` (`/` for all).
    pub fn inject(&self, prefix: &str, fault: NomadFault, times: Times) {
        self.shared.add_fault(prefix, fault, times);
    }

    /// The next job registration conflicts, as if someone else registered in between.
    pub fn conflict_next_register(&self) {
        self.inject("/", NomadFault::EnforceConflict, Times::Next(1));
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Turns ACLs on with `token` as a management token, or off with `None`.
    pub fn set_required_token(&self, token: Option<&str>) {
        lock(&self.shared.acl).require(token, true);
    }

    /// Adds a token; `write: false` makes it read-only (writes get 403 `Permission denied`).
    pub fn add_token(&self, token: &str, write: bool) {
        lock(&self.shared.acl).add(token, write);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<NomadRequest> {
        self.shared.log.all()
    }

    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// The Raft index.
    pub fn index(&self) -> u64 {
        self.shared.core.read(|s| s.index)
    }

    /// Blocking queries parked right now.
    pub fn parked(&self) -> usize {
        self.shared.core.parked()
    }

    /// Waits until at least `n` blocking queries are parked; `false` if `within` elapses.
    pub async fn wait_for_parked(&self, n: usize, within: Duration) -> bool {
        self.shared.core.wait_for_parked(n, within).await
    }
}

impl Drop for NomadDouble {
    fn drop(&mut self) {
        self.accept.stop();
        self.shared.abort_all();
        self.shared.core.kill_connections();
    }
}

/// Fails a running deployment (`Deployment marked as failed`), stops its rollout and,
/// with `AutoRevert`, registers the last stable version.
pub(crate) fn fail_deployment(shared: &Arc<Shared>, id: &str) -> Result<(), String> {
    let (job, revert) = shared.core.write(|s| {
        let d = s
            .deployment(id)
            .ok_or_else(|| "deployment not found".to_string())?;
        if d.status != RUNNING {
            return Err(format!(
                "can't fail terminal deployment: status {:?}",
                d.status
            ));
        }
        let job = d.job.clone();
        Ok((job, s.fail_deployment(id, DESC_MARKED_FAILED)))
    })?;
    shared.abort_rollout(&job);
    match revert {
        Some(stable) => submit(shared, stable, None, false)
            .map(|_| ())
            .map_err(|e| e.body),
        None => {
            // Finishes the clients' work in progress; nothing more is placed.
            shared::spawn_rollout(shared, &job);
            Ok(())
        }
    }
}
