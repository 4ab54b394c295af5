//! Deployments, with Nomad's statuses and rules: created when a version of a job with an
//! update block is registered, cancelled by a newer version, failed by unhealthy
//! allocations (then, with `AutoRevert`, the whole job goes back to the last stable
//! version as a new version), successful once every group is placed and healthy. `step`
//! is the deployment watcher's and reconciler's next move, driven by the rollout task.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::alloc::Health;
use super::job;
use super::state::Store;

pub(crate) const RUNNING: &str = "running";
pub(crate) const SUCCESSFUL: &str = "successful";
pub(crate) const FAILED: &str = "failed";
pub(crate) const CANCELLED: &str = "cancelled";

pub(crate) const DESC_RUNNING: &str = "Deployment is running";
pub(crate) const DESC_NEEDS_PROMOTION: &str = "Deployment is running but requires manual promotion";
pub(crate) const DESC_SUCCESSFUL: &str = "Deployment completed successfully";
pub(crate) const DESC_UNHEALTHY: &str = "Failed due to unhealthy allocations";
pub(crate) const DESC_MARKED_FAILED: &str = "Deployment marked as failed";
pub(crate) const DESC_CANCELLED: &str = "Cancelled due to newer version of job";

/// `DeploymentState` of one task group.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeployGroup {
    pub auto_revert: bool,
    pub auto_promote: bool,
    pub promoted: bool,
    /// Set by a promote request; the rollout performs the promotion.
    pub promote_requested: bool,
    pub progress_deadline: u64,
    pub desired_canaries: u32,
    pub desired_total: u32,
    pub placed_canaries: Vec<String>,
    pub placed_allocs: u32,
    pub healthy_allocs: u32,
    pub unhealthy_allocs: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct Deployment {
    pub id: String,
    pub job: String,
    pub version: u64,
    pub status: &'static str,
    pub description: String,
    pub job_modify_index: u64,
    pub job_spec_modify_index: u64,
    pub job_create_index: u64,
    pub groups: BTreeMap<String, DeployGroup>,
    /// Its allocations turn unhealthy (`NomadDouble::fail_next_deployment`).
    pub doomed: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Deployment {
    pub fn to_json(&self) -> Value {
        let groups: serde_json::Map<String, Value> = self
            .groups
            .iter()
            .map(|(name, g)| {
                let canaries = match g.placed_canaries.is_empty() {
                    true => Value::Null,
                    false => json!(g.placed_canaries),
                };
                let state = json!({
                    "AutoRevert": g.auto_revert, "AutoPromote": g.auto_promote,
                    "ProgressDeadline": g.progress_deadline,
                    "RequireProgressBy": "0001-01-01T00:00:00Z",
                    "Promoted": g.promoted, "PlacedCanaries": canaries,
                    "DesiredCanaries": g.desired_canaries, "DesiredTotal": g.desired_total,
                    "PlacedAllocs": g.placed_allocs, "HealthyAllocs": g.healthy_allocs,
                    "UnhealthyAllocs": g.unhealthy_allocs,
                });
                (name.clone(), state)
            })
            .collect();
        json!({
            "ID": self.id, "Namespace": "default", "JobID": self.job,
            "JobVersion": self.version, "JobModifyIndex": self.job_modify_index,
            "JobSpecModifyIndex": self.job_spec_modify_index,
            "JobCreateIndex": self.job_create_index, "IsMultiregion": false,
            "TaskGroups": groups, "Status": self.status,
            "StatusDescription": self.description, "EvalPriority": 50,
            "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
        })
    }
}

/// The rollout's next move after the previous one settled.
#[derive(Debug)]
pub(crate) enum Step {
    /// Something was placed, stopped or promoted: sync, wait for health, step again.
    Continue,
    /// Canaries are healthy and wait for a promote request.
    WaitPromotion,
    Done,
    /// The deployment failed; `revert` is the stable job to register, if any.
    Failed {
        revert: Option<Value>,
    },
}

impl Store {
    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    pub fn deployment_mut(&mut self, id: &str) -> Option<&mut Deployment> {
        self.deployments.iter_mut().find(|d| d.id == id)
    }

    /// The job's deployments, newest first.
    pub fn job_deployments(&self, job_id: &str) -> Vec<&Deployment> {
        let mine = self.deployments.iter().filter(|d| d.job == job_id);
        mine.rev().collect()
    }

    fn running_for(&self, job_id: &str, version: u64) -> Option<String> {
        let d = self
            .job_deployments(job_id)
            .into_iter()
            .find(|d| d.status == RUNNING);
        d.filter(|d| d.version == version).map(|d| d.id.clone())
    }

    pub fn set_deployment_status(&mut self, id: &str, status: &'static str, desc: &str) {
        let idx = self.bump();
        if let Some(d) = self.deployment_mut(id) {
            d.status = status;
            d.description = desc.to_string();
            d.modify_index = idx;
            self.deployment_index = idx;
        }
    }

    /// A newer version cancels the job's running deployment.
    pub fn cancel_running(&mut self, job_id: &str, _idx: u64) {
        let running: Vec<String> = self
            .job_deployments(job_id)
            .into_iter()
            .filter(|d| d.status == RUNNING)
            .map(|d| d.id.clone())
            .collect();
        for id in running {
            self.set_deployment_status(&id, CANCELLED, DESC_CANCELLED);
        }
    }

    /// Creates the deployment of the current version when the job wants one.
    pub fn create_deployment(&mut self, job_id: &str, idx: u64, settled: bool) -> Option<String> {
        let e = self.jobs.get(job_id)?;
        let (current, version) = (e.current().clone(), e.version());
        if !job::wants_deployment(&current) {
            return None;
        }
        let mut groups = BTreeMap::new();
        for g in job::groups(&current) {
            let Some(u) = job::update(g) else {
                continue;
            };
            let name = job::str_of(g, "Name");
            let canaries = if self.destructive_in(job_id, name) {
                u.canary
            } else {
                0
            };
            let total = job::count(g);
            let state = DeployGroup {
                auto_revert: u.auto_revert,
                auto_promote: u.auto_promote,
                progress_deadline: u.progress_deadline,
                desired_canaries: canaries,
                desired_total: total,
                ..DeployGroup::default()
            };
            groups.insert(name.to_string(), state);
        }
        let id = self.rng.uuid();
        let doomed = !settled && std::mem::take(&mut self.fail_next);
        let (status, description) = match settled {
            true => (SUCCESSFUL, DESC_SUCCESSFUL),
            false => (RUNNING, DESC_RUNNING),
        };
        self.deployments.push(Deployment {
            id: id.clone(),
            job: job_id.to_string(),
            version,
            status,
            description: description.to_string(),
            job_modify_index: job::u64_of(&current, "ModifyIndex"),
            job_spec_modify_index: job::u64_of(&current, "JobModifyIndex"),
            job_create_index: job::u64_of(&current, "CreateIndex"),
            groups,
            doomed,
            create_index: idx,
            modify_index: idx,
        });
        self.deployment_index = idx;
        Some(id)
    }

    /// Fails a running deployment; with `AutoRevert` in any group, returns the last stable
    /// version's job for the caller to register (Nomad reverts the whole job).
    pub fn fail_deployment(&mut self, id: &str, why: &str) -> Option<Value> {
        let d = self.deployment(id).filter(|d| d.status == RUNNING)?.clone();
        let mut desc = why.to_string();
        let mut revert = None;
        if d.groups.values().any(|g| g.auto_revert) {
            match self.last_stable(&d.job, d.version) {
                Some(n) => {
                    desc.push_str(&format!(" - rolling back to job version {n}"));
                    revert = self
                        .jobs
                        .get(&d.job)
                        .map(|e| e.versions[n as usize].clone());
                }
                None => desc.push_str(" - no stable job version to auto revert to"),
            }
        }
        self.set_deployment_status(id, FAILED, &desc);
        revert
    }

    /// Asks for the promotion of every group of a running deployment with canaries.
    pub fn request_promotion(&mut self, id: &str) -> Result<(), String> {
        let idx = self.bump();
        let d = self.deployment_mut(id).ok_or("deployment not found")?;
        if d.status != RUNNING {
            return Err(format!(
                "can't promote terminal deployment: status {:?}",
                d.status
            ));
        }
        if d.groups.values().all(|g| g.desired_canaries == 0) {
            return Err("no canaries to promote".into());
        }
        d.groups
            .values_mut()
            .for_each(|g| g.promote_requested = true);
        d.modify_index = idx;
        self.deployment_index = idx;
        Ok(())
    }

    /// Promotes `group`: canaries take their normal tags, the old allocations they
    /// replace stop; the rest is replaced in `MaxParallel` batches.
    fn promote(&mut self, job_id: &str, dep: &str, group: &str) {
        let idx = self.bump();
        let Some(e) = self.jobs.get_mut(job_id) else {
            return;
        };
        let v = e.version();
        let mut taken = Vec::new();
        for a in e
            .allocs
            .iter_mut()
            .filter(|a| a.group == group && a.canary && a.version == v)
        {
            a.canary = false;
            a.modify_index = idx;
            taken.push(a.index);
        }
        let old: Vec<String> = e
            .allocs
            .iter()
            .filter(|a| a.group == group && !a.canary && a.version != v && taken.contains(&a.index))
            .map(|a| a.id.clone())
            .collect();
        for id in old {
            self.stop_alloc(job_id, &id);
        }
        if let Some(g) = self
            .deployment_mut(dep)
            .and_then(|d| d.groups.get_mut(group))
        {
            g.promoted = true;
        }
        self.set_deployment_status(dep, RUNNING, DESC_RUNNING);
    }

    /// Marks the deployment's allocations unhealthy (their Consul checks are left alone).
    fn fail_updated(&mut self, job_id: &str, dep: &str) {
        let mut moved: BTreeMap<String, u32> = BTreeMap::new();
        if let Some(e) = self.jobs.get_mut(job_id) {
            for a in e
                .allocs
                .iter_mut()
                .filter(|a| a.deployment.as_deref() == Some(dep))
            {
                if a.health == Health::Healthy {
                    *moved.entry(a.group.clone()).or_default() += 1;
                }
                a.health = Health::Unhealthy;
            }
        }
        let Some(d) = self.deployment_mut(dep) else {
            return;
        };
        for (group, n) in moved {
            if let Some(g) = d.groups.get_mut(&group) {
                g.healthy_allocs = g.healthy_allocs.saturating_sub(n);
                g.unhealthy_allocs += n;
            }
        }
    }

    /// Old-version, non-canary allocations of `group`, by index.
    fn outdated(&self, job_id: &str, group: &str) -> Vec<(String, u32)> {
        let Some(e) = self.jobs.get(job_id) else {
            return Vec::new();
        };
        let v = e.version();
        let mut old: Vec<(String, u32)> = e
            .allocs
            .iter()
            .filter(|a| a.group == group && !a.canary && a.version != v)
            .map(|a| (a.id.clone(), a.index))
            .collect();
        old.sort_by_key(|(_, i)| *i);
        old
    }

    /// The next move once everything placed so far has a health verdict, for the rollout
    /// of generation `gen` (a superseded rollout gets `Done`).
    pub fn step(&mut self, job_id: &str, gen: u64) -> Step {
        let Some(e) = self.jobs.get(job_id).filter(|e| e.rolling == Some(gen)) else {
            return Step::Done;
        };
        let (target, v) = (e.current().clone(), e.version());
        let latest = self.job_deployments(job_id).into_iter().next();
        if latest.is_some_and(|d| d.version == v && d.status == FAILED) {
            return Step::Done; // a failed deployment places nothing more
        }
        let dep = self.running_for(job_id, v);
        if let Some(d) = dep.as_deref() {
            let mine = |a: &&super::alloc::Alloc| a.deployment.as_deref() == Some(d);
            if e.allocs
                .iter()
                .filter(mine)
                .any(|a| a.health == Health::Unhealthy)
            {
                let revert = self.fail_deployment(d, DESC_UNHEALTHY);
                return Step::Failed { revert };
            }
        }
        let mut waiting = false;
        for g in job::groups(&target) {
            let name = job::str_of(g, "Name");
            let (Some(u), Some(d)) = (job::update(g), dep.as_deref()) else {
                continue;
            };
            let state = self.deployment(d).and_then(|d| d.groups.get(name)).cloned();
            let Some(state) = state.filter(|s| s.desired_canaries > 0 && !s.promoted) else {
                continue;
            };
            let old = self.outdated(job_id, name);
            let e = &self.jobs[job_id];
            let canaries: Vec<u32> = e
                .allocs
                .iter()
                .filter(|a| a.group == name && a.canary && a.version == v)
                .map(|a| a.index)
                .collect();
            let missing = (u.canary as usize).saturating_sub(canaries.len());
            if missing > 0 && !old.is_empty() {
                let free = old
                    .iter()
                    .map(|(_, i)| *i)
                    .filter(|i| !canaries.contains(i));
                for i in free.take(missing).collect::<Vec<_>>() {
                    self.place(job_id, name, i, true, Some(d), false);
                }
                return Step::Continue;
            }
            if u.auto_promote || state.promote_requested {
                self.promote(job_id, d, name);
                return Step::Continue;
            }
            waiting = true;
        }
        if waiting {
            let d = dep.as_deref().unwrap_or_default();
            if self
                .deployment(d)
                .is_some_and(|d| d.description != DESC_NEEDS_PROMOTION)
            {
                self.set_deployment_status(d, RUNNING, DESC_NEEDS_PROMOTION);
            }
            return Step::WaitPromotion;
        }
        let mut any = false;
        for g in job::groups(&target) {
            let name = job::str_of(g, "Name");
            let limit = job::update(g).map_or(usize::MAX, |u| u.max_parallel);
            for (id, _) in self.outdated(job_id, name).into_iter().take(limit) {
                self.replace(job_id, &id, dep.as_deref(), false);
                any = true;
            }
        }
        if any {
            return Step::Continue;
        }
        if let Some(d) = dep
            .as_deref()
            .filter(|d| self.deployment(d).is_some_and(|d| d.doomed))
        {
            // A scripted failure with nothing new placed: the updated allocations fail.
            self.fail_updated(job_id, d);
            let revert = self.fail_deployment(d, DESC_UNHEALTHY);
            return Step::Failed { revert };
        }
        if let Some(d) = dep {
            self.set_deployment_status(&d, SUCCESSFUL, DESC_SUCCESSFUL);
            self.set_stable(job_id, v, true);
        }
        Step::Done
    }
}
