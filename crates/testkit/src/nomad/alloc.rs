//! Allocations: what the scheduler commits when a version is registered (stops, in-place
//! updates and placements at once; destructive replacements later, batch by batch, from
//! the rollout), and how their health resolves.

use serde_json::Value;

use crate::consul::ServiceSpec;

use super::job;
use super::plan::{reconcile, tasks_updated, AllocRef};
use super::state::Store;

/// Deployment health of an allocation (`DeploymentStatus.Healthy`: null, true, false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Pending,
    Healthy,
    Unhealthy,
}

/// What a port allocator is told about a new allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocSlot {
    pub job: String,
    pub group: String,
    /// The `[n]` of the allocation name `job.group[n]`; a replacement keeps its index.
    pub index: u32,
    pub alloc_id: String,
    pub job_version: u64,
    /// `Config.image` of the group's first task.
    pub image: String,
    pub canary: bool,
}

/// A test's view of a live allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocInfo {
    pub id: String,
    pub group: String,
    pub index: u32,
    pub job_version: u64,
    pub port: u16,
    pub canary: bool,
    pub health: Health,
    /// Consul service IDs this allocation has registered.
    pub service_ids: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Alloc {
    pub id: String,
    pub group: String,
    pub index: u32,
    pub version: u64,
    pub port: u16,
    pub canary: bool,
    pub health: Health,
    /// Bumped whenever health is re-evaluated, so a stale timer does nothing.
    pub epoch: u64,
    /// A health timer runs for the current epoch.
    pub timer: bool,
    /// Will turn unhealthy instead of healthy (a scripted failed deployment).
    pub doomed: bool,
    pub deployment: Option<String>,
    /// The registrations last sent to Consul for this allocation.
    pub registered: Vec<ServiceSpec>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Alloc {
    pub fn info(&self) -> AllocInfo {
        AllocInfo {
            id: self.id.clone(),
            group: self.group.clone(),
            index: self.index,
            job_version: self.version,
            port: self.port,
            canary: self.canary,
            health: self.health,
            service_ids: self.registered.iter().map(|s| s.id.clone()).collect(),
        }
    }
}

impl Store {
    /// Applies the reconciler's decisions for the current version: stops, in-place updates
    /// and placements now; destructive ones too when `settled`, else batch by batch later.
    pub fn commit(&mut self, job_id: &str, dep: Option<&str>, settled: bool) {
        let Some(e) = self.jobs.get(job_id) else {
            return;
        };
        let (target, v) = (e.current(), e.version());
        let refs: Vec<AllocRef<'_>> = e
            .allocs
            .iter()
            .map(|a| AllocRef {
                group: &a.group,
                index: a.index,
                job: &e.versions[a.version as usize],
                same_version: a.version == v,
                canary: a.canary,
            })
            .collect();
        let plans = reconcile(target, &refs);
        let ids =
            |ps: &[usize]| -> Vec<String> { ps.iter().map(|&p| e.allocs[p].id.clone()).collect() };
        let (mut stop, mut in_place, mut destructive, mut place) = (vec![], vec![], vec![], vec![]);
        for (g, p) in &plans {
            stop.extend(ids(&p.stop));
            in_place.extend(ids(&p.in_place));
            destructive.extend(ids(&p.destructive));
            place.extend(p.place.iter().map(|i| (g.clone(), *i)));
        }
        for id in stop {
            self.stop_alloc(job_id, &id);
        }
        for id in in_place {
            self.update_in_place(job_id, &id, dep, settled);
        }
        if settled {
            for id in destructive {
                self.replace(job_id, &id, dep, true);
            }
        }
        for (g, i) in place {
            self.place(job_id, &g, i, false, dep, settled);
        }
        self.refresh_status(job_id);
    }

    fn alloc_mut(&mut self, job_id: &str, id: &str) -> Option<&mut Alloc> {
        let e = self.jobs.get_mut(job_id)?;
        e.allocs.iter_mut().find(|a| a.id == id)
    }

    /// Moves an allocation to the stopping list: its services leave Consul on next sync.
    pub fn stop_alloc(&mut self, job_id: &str, id: &str) -> Option<(String, u32)> {
        let e = self.jobs.get_mut(job_id)?;
        let pos = e.allocs.iter().position(|a| a.id == id)?;
        let a = e.allocs.remove(pos);
        let slot = (a.group.clone(), a.index);
        e.stopping.push(a);
        Some(slot)
    }

    /// Stops `id` and places its replacement (new ID, same index) for the current version.
    pub fn replace(&mut self, job_id: &str, id: &str, dep: Option<&str>, settled: bool) {
        if let Some((group, index)) = self.stop_alloc(job_id, id) {
            self.place(job_id, &group, index, false, dep, settled);
        }
    }

    fn update_in_place(&mut self, job_id: &str, id: &str, dep: Option<&str>, settled: bool) {
        let idx = self.bump();
        let Some(v) = self.jobs.get(job_id).map(|e| e.version()) else {
            return;
        };
        let Some(a) = self.alloc_mut(job_id, id) else {
            return;
        };
        a.version = v;
        a.deployment = dep.map(str::to_string);
        a.modify_index = idx;
        if !settled {
            a.health = Health::Pending;
            a.epoch += 1;
            a.timer = false;
        }
        let group = a.group.clone();
        self.count_placed(dep, &group, None, settled);
    }

    /// Places a new allocation of the current version.
    pub fn place(
        &mut self,
        job_id: &str,
        group: &str,
        index: u32,
        canary: bool,
        dep: Option<&str>,
        settled: bool,
    ) -> Option<String> {
        let idx = self.bump();
        let (v, image) = {
            let e = self.jobs.get(job_id)?;
            (e.version(), job::group(e.current(), group).map(job::image))
        };
        let id = self.rng.uuid();
        let slot = AllocSlot {
            job: job_id.to_string(),
            group: group.to_string(),
            index,
            alloc_id: id.clone(),
            job_version: v,
            image: image.unwrap_or_default(),
            canary,
        };
        let port = self.port_for(&slot);
        let doomed = !settled && dep.is_some_and(|d| self.deployment(d).is_some_and(|d| d.doomed));
        let health = if settled {
            Health::Healthy
        } else {
            Health::Pending
        };
        let alloc = Alloc {
            id: id.clone(),
            group: group.to_string(),
            index,
            version: v,
            port,
            canary,
            health,
            epoch: 0,
            timer: false,
            doomed,
            deployment: dep.map(str::to_string),
            registered: Vec::new(),
            create_index: idx,
            modify_index: idx,
        };
        self.jobs.get_mut(job_id)?.allocs.push(alloc);
        self.count_placed(dep, group, canary.then_some(id.as_str()), settled);
        Some(id)
    }

    fn count_placed(
        &mut self,
        dep: Option<&str>,
        group: &str,
        canary: Option<&str>,
        settled: bool,
    ) {
        let Some(d) = dep.and_then(|d| self.deployment_mut(d)) else {
            return;
        };
        if let Some(g) = d.groups.get_mut(group) {
            g.placed_allocs += 1;
            if settled {
                g.healthy_allocs += 1;
            }
            if let Some(c) = canary {
                g.placed_canaries.push(c.to_string());
            }
        }
    }

    /// Whether some allocation of `group` needs a destructive update to the current version.
    pub fn destructive_in(&self, job_id: &str, group: &str) -> bool {
        let Some(e) = self.jobs.get(job_id) else {
            return false;
        };
        let target = e.current();
        e.allocs
            .iter()
            .filter(|a| a.group == group && a.version != e.version())
            .any(|a| {
                let old = &e.versions[a.version as usize];
                tasks_updated(old, target, group).is_some()
            })
    }

    /// For a health timer: `(doomed, service IDs)` if `id` still awaits this epoch's verdict.
    pub fn health_due(&self, job_id: &str, id: &str, epoch: u64) -> Option<(bool, Vec<String>)> {
        let e = self.jobs.get(job_id)?;
        let a = e.allocs.iter().find(|a| a.id == id)?;
        let due = a.epoch == epoch && a.health == Health::Pending;
        due.then(|| {
            (
                a.doomed,
                a.registered.iter().map(|s| s.id.clone()).collect(),
            )
        })
    }

    /// Records a health verdict and counts it in the allocation's running deployment.
    pub fn resolve_health(&mut self, job_id: &str, id: &str, epoch: u64, healthy: bool) {
        let idx = self.bump();
        let Some(a) = self.alloc_mut(job_id, id) else {
            return;
        };
        if a.epoch != epoch || a.health != Health::Pending {
            return;
        }
        a.health = if healthy {
            Health::Healthy
        } else {
            Health::Unhealthy
        };
        a.modify_index = idx;
        let (dep, group) = (a.deployment.clone(), a.group.clone());
        let Some(d) = dep.as_deref().and_then(|d| self.deployment_mut(d)) else {
            return;
        };
        if d.status != "running" {
            return;
        }
        if let Some(g) = d.groups.get_mut(&group) {
            match healthy {
                true => g.healthy_allocs += 1,
                false => g.unhealthy_allocs += 1,
            }
        }
        d.modify_index = idx;
        self.deployment_index = idx;
    }

    /// The allocation list stub of `GET /v1/job/:id/allocations`.
    pub fn alloc_stubs(&self, job_id: &str) -> Vec<Value> {
        let Some(e) = self.jobs.get(job_id) else {
            return Vec::new();
        };
        let stub = |a: &Alloc| {
            let healthy = match a.health {
                Health::Pending => Value::Null,
                Health::Healthy => Value::Bool(true),
                Health::Unhealthy => Value::Bool(false),
            };
            serde_json::json!({
                "ID": a.id, "Name": format!("{job_id}.{}[{}]", a.group, a.index),
                "Namespace": "default", "NodeID": "", "NodeName": "nomad-client-1",
                "JobID": job_id, "JobVersion": a.version, "TaskGroup": a.group,
                "DesiredStatus": "run",
                "ClientStatus": if a.health == Health::Pending { "pending" } else { "running" },
                "DeploymentStatus": {"Healthy": healthy, "Canary": a.canary},
                "CreateIndex": a.create_index, "ModifyIndex": a.modify_index,
            })
        };
        e.allocs.iter().map(stub).collect()
    }
}
