//! The rollout of one job version: what the Nomad clients and the deployment watcher do
//! after the scheduler's commit. Each round pushes every allocation's Consul state (stopped
//! ones leave first; the others sync one at a time in a seeded random order with a gap,
//! since each client syncs on its own), waits for every health verdict, then asks the
//! store for the next step (canaries, the next `MaxParallel` batch, success or failure).
//! A newer version aborts this task and starts another from whatever state it left.

use std::sync::Arc;

use crate::consul::{random_order, CheckStatus};

use super::alloc::Health;
use super::deploy::Step;
use super::shared::{spawn_timer, submit, Shared};
use super::sync::{needs_sync, sync_alloc, sync_stopped};

/// Clears the job's `rolling` mark when the task ends or is aborted, unless a newer
/// rollout has taken over.
struct Rolling {
    shared: Arc<Shared>,
    job: String,
    gen: u64,
}

impl Drop for Rolling {
    fn drop(&mut self) {
        self.shared.core.write(|s| {
            if let Some(e) = s
                .jobs
                .get_mut(&self.job)
                .filter(|e| e.rolling == Some(self.gen))
            {
                e.rolling = None;
            }
        });
    }
}

pub(crate) async fn run(shared: Arc<Shared>, job: String, gen: u64) {
    let _rolling = Rolling {
        shared: shared.clone(),
        job: job.clone(),
        gen,
    };
    loop {
        sync_job(&shared, &job).await;
        wait_verdicts(&shared, &job).await;
        let mut changes = shared.core.changed.subscribe();
        changes.borrow_and_update();
        match shared.core.write(|s| s.step(&job, gen)) {
            Step::Continue => {}
            Step::WaitPromotion => {
                let _ = changes.changed().await;
            }
            Step::Done => return,
            Step::Failed { revert } => {
                if let Some(stable) = revert {
                    if let Err(e) = submit(&shared, stable, None, false) {
                        tracing::warn!(error = ?e, "nomad double: auto-revert failed");
                    }
                }
                return;
            }
        }
    }
}

/// One sync wave: stopped allocations deregister, then each out-of-date allocation syncs
/// in a seeded random order, `sync_gap` apart, the last one `straggler` late.
async fn sync_job(shared: &Arc<Shared>, job: &str) {
    sync_stopped(shared, job);
    let (ids, timing, seed) = shared.core.write(|s| {
        s.waves += 1;
        let ids: Vec<String> = s.jobs.get(job).map_or_else(Vec::new, |e| {
            e.allocs.iter().map(|a| a.id.clone()).collect()
        });
        (ids, s.timing.clone(), s.timing.seed.wrapping_add(s.waves))
    });
    let order: Vec<String> = random_order(ids.clone(), seed)
        .into_iter()
        .filter(|id| needs_sync(shared, job, id))
        .collect();
    let n = order.len();
    for (i, id) in order.iter().enumerate() {
        if i > 0 && !timing.sync_gap.is_zero() {
            tokio::time::sleep(timing.sync_gap).await;
        }
        if i + 1 == n && !timing.straggler.is_zero() {
            tokio::time::sleep(timing.straggler).await;
        }
        sync_alloc(shared, job, id);
        start_timer(shared, job, id);
    }
    for id in &ids {
        start_timer(shared, job, id);
    }
}

/// Starts the health timer of a pending allocation (once per health epoch).
fn start_timer(shared: &Arc<Shared>, job: &str, alloc: &str) {
    let due = shared.core.write(|s| {
        let delay = s.timing.health_delay;
        let a = s
            .jobs
            .get_mut(job)?
            .allocs
            .iter_mut()
            .find(|a| a.id == alloc)?;
        if a.health != Health::Pending || a.timer {
            return None;
        }
        a.timer = true;
        Some((a.epoch, delay))
    });
    let Some((epoch, delay)) = due else {
        return;
    };
    let (s, job, alloc) = (shared.clone(), job.to_string(), alloc.to_string());
    spawn_timer(shared, async move {
        tokio::time::sleep(delay).await;
        let Some((doomed, services)) = s.core.read(|st| st.health_due(&job, &alloc, epoch)) else {
            return;
        };
        if let (false, Some(consul)) = (doomed, &s.consul) {
            for id in &services {
                consul.set_check(id, CheckStatus::Passing);
            }
        }
        s.core
            .write(|st| st.resolve_health(&job, &alloc, epoch, !doomed));
    });
}

/// Waits until no allocation of the job awaits a health verdict.
async fn wait_verdicts(shared: &Shared, job: &str) {
    let mut changes = shared.core.changed.subscribe();
    loop {
        changes.borrow_and_update();
        let pending = shared.core.read(|s| {
            let e = s.jobs.get(job);
            e.is_some_and(|e| e.allocs.iter().any(|a| a.health == Health::Pending))
        });
        if !pending || changes.changed().await.is_err() {
            return;
        }
    }
}
