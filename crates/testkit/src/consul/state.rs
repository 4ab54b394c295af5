//! The catalog and the Raft-like index. Every write takes the next global index; each
//! service name keeps its own index (like Consul's `service.<name>` index table), and a
//! name with no instances falls back to the "last extinction" index, so blocking queries
//! wake exactly when real Consul would. KV lives in `kv.rs` on the same store.

use std::collections::{BTreeMap, HashMap};

use super::checks::{build_checks, check_spec_of, retag, Check};
use super::kv::KvEntry;
use super::spec::{CheckStatus, ServiceSpec};

/// A catalog node with its `serfHealth` check.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub name: String,
    pub address: String,
    pub serf: Check,
    /// `_node_maintenance`, critical, while the node is in maintenance mode (`consul maint`).
    pub maintenance: Option<Check>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A registered service instance (`spec.checks` is always empty; see `checks`).
#[derive(Clone, Debug)]
pub(crate) struct Instance {
    pub spec: ServiceSpec,
    pub checks: Vec<Check>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// All mutable state of the double; lives behind one `std::sync::Mutex`.
#[derive(Debug)]
pub(crate) struct Store {
    /// Global Raft index: bumped by every write, even a no-op one.
    pub index: u64,
    /// Index of the last write to any catalog table (fallback for unknown services).
    pub catalog_index: u64,
    /// Index of the last time a service name lost its last instance.
    pub extinction: u64,
    /// KV table index, including deletions (tombstones).
    pub kv_index: u64,
    /// Bumped by a snapshot restore: parked queries then return at once.
    pub epoch: u64,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Instance>,
    pub service_index: HashMap<String, u64>,
    pub kv: BTreeMap<String, KvEntry>,
}

impl Store {
    pub fn new() -> Self {
        Store {
            index: 1,
            catalog_index: 1,
            extinction: 0,
            kv_index: 1,
            epoch: 0,
            nodes: BTreeMap::new(),
            services: BTreeMap::new(),
            service_index: HashMap::new(),
            kv: BTreeMap::new(),
        }
    }

    /// Takes the next Raft index.
    pub fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Index a health or catalog query for `name` reports (always ≥ 1).
    pub fn index_for_service(&self, name: &str) -> u64 {
        let idx = match self.service_index.get(name) {
            Some(i) if self.has_instances(name) => *i,
            _ if self.extinction > 0 => self.extinction,
            _ => self.catalog_index,
        };
        idx.max(1)
    }

    fn has_instances(&self, name: &str) -> bool {
        self.services.values().any(|i| i.spec.name == name)
    }

    /// All instances of `name` with their nodes, unfiltered, ordered by node then ID.
    pub fn instances(&self, name: &str) -> Vec<(Node, Instance)> {
        let mut out: Vec<(Node, Instance)> = self
            .services
            .values()
            .filter(|i| i.spec.name == name)
            .filter_map(|i| Some((self.nodes.get(&i.spec.node)?.clone(), i.clone())))
            .collect();
        out.sort_by(|a, b| (&a.0.name, &a.1.spec.id).cmp(&(&b.0.name, &b.1.spec.id)));
        out
    }

    /// Marks `name` as changed at `idx`, or records its extinction when it has no instance left.
    fn touch_name(&mut self, name: &str, idx: u64) {
        self.catalog_index = idx;
        if self.has_instances(name) {
            self.service_index.insert(name.to_string(), idx);
        } else if self.service_index.remove(name).is_some() {
            self.extinction = idx;
        }
    }

    /// Creates the node, or updates its address; returns whether anything changed.
    fn ensure_node(&mut self, name: &str, address: &str, idx: u64) -> bool {
        match self.nodes.get_mut(name) {
            Some(n) if n.address == address => false,
            Some(n) => {
                n.address = address.to_string();
                n.modify_index = idx;
                true
            }
            None => {
                let mut serf = node_check("serfHealth".into(), "Serf Health Status", idx);
                serf.status = CheckStatus::Passing;
                serf.output = "Agent alive and reachable".into();
                let node = Node {
                    name: name.to_string(),
                    address: address.to_string(),
                    serf,
                    maintenance: None,
                    create_index: idx,
                    modify_index: idx,
                };
                self.nodes.insert(name.to_string(), node);
                true
            }
        }
    }

    /// Service names with an instance on `node`.
    fn names_on_node(&self, node: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .services
            .values()
            .filter(|i| i.spec.node == node)
            .map(|i| i.spec.name.clone())
            .collect();
        names.dedup();
        names
    }

    /// Agent-style upsert in one write: a re-registration of the same ID keeps the instance
    /// present and keeps each check's status when its check ID is unchanged.
    pub fn register(&mut self, mut spec: ServiceSpec, replace_checks: bool) -> u64 {
        let idx = self.bump();
        let check_specs = std::mem::take(&mut spec.checks);
        let prev = self.services.get(&spec.id).cloned();
        let prev_checks = prev.as_ref().map(|p| p.checks.clone()).unwrap_or_default();
        let mut checks = build_checks(&spec, &check_specs, &prev_checks, idx);
        if !replace_checks {
            for old in &prev_checks {
                if !checks.iter().any(|c| c.id == old.id) {
                    checks.push(retag(old, &spec.tags, idx));
                }
            }
        }
        let node_changed = self.ensure_node(&spec.node, &spec.node_address, idx);
        let same_spec = prev.as_ref().is_some_and(|p| p.spec == spec);
        if same_spec && !node_changed && checks == prev_checks {
            return idx; // idempotent: the Raft index moves, the service index does not
        }
        let names = if node_changed {
            self.names_on_node(&spec.node)
        } else {
            Vec::new()
        };
        let old_name = prev.as_ref().map(|p| p.spec.name.clone());
        let inst = Instance {
            create_index: prev.as_ref().map_or(idx, |p| p.create_index),
            modify_index: match &prev {
                Some(p) if same_spec => p.modify_index,
                _ => idx,
            },
            spec,
            checks,
        };
        let name = inst.spec.name.clone();
        self.services.insert(inst.spec.id.clone(), inst);
        for n in names.iter().chain(old_name.iter()).chain([&name]) {
            self.touch_name(n, idx);
        }
        idx
    }

    /// Removes an instance and its checks; `None` (and no write) when the ID is unknown.
    pub fn deregister(&mut self, id: &str) -> Option<u64> {
        let inst = self.services.remove(id)?;
        let idx = self.bump();
        self.touch_name(&inst.spec.name, idx);
        Some(idx)
    }

    /// Replaces the tags of one instance in place: one write, never absent.
    pub fn set_tags(&mut self, id: &str, tags: Vec<String>) -> Option<u64> {
        let inst = self.services.get(id)?;
        let mut spec = inst.spec.clone();
        spec.tags = tags;
        spec.checks = inst.checks.iter().map(check_spec_of).collect();
        Some(self.register(spec, true))
    }

    /// Sets the status of every service check of instance `id`.
    pub fn set_check(&mut self, id: &str, status: CheckStatus) -> Option<u64> {
        self.services.get(id)?;
        let idx = self.bump();
        let inst = self.services.get_mut(id)?;
        let mut changed = false;
        for c in inst.checks.iter_mut().filter(|c| c.status != status) {
            c.status = status;
            c.modify_index = idx;
            changed = true;
        }
        let name = inst.spec.name.clone();
        if changed {
            self.touch_name(&name, idx);
        }
        Some(idx)
    }

    /// Puts instance `id` in maintenance (`Some(reason)`) or takes it out (`None`), as the agent
    /// does: a critical `_service_maintenance:<id>` check, added or removed.
    pub fn set_service_maintenance(&mut self, id: &str, reason: Option<&str>) -> Option<u64> {
        self.services.get(id)?;
        let idx = self.bump();
        let check_id = format!("_service_maintenance:{id}");
        let inst = self.services.get_mut(id)?;
        let had = inst.checks.iter().any(|c| c.id == check_id);
        inst.checks.retain(|c| c.id != check_id);
        if let Some(reason) = reason {
            let mut check = maintenance_check(check_id, "Service Maintenance Mode", reason, idx);
            check.service_tags = inst.spec.tags.clone();
            inst.checks.push(check);
        }
        let name = inst.spec.name.clone();
        if had || reason.is_some() {
            self.touch_name(&name, idx);
        }
        Some(idx)
    }

    /// Puts the node in maintenance mode (`Some(reason)`) or takes it out, like `consul maint`
    /// run on that node's agent: every instance on it then fails `?passing`.
    pub fn set_node_maintenance(&mut self, node: &str, reason: Option<&str>) -> Option<u64> {
        self.nodes.get(node)?;
        let idx = self.bump();
        let n = self.nodes.get_mut(node)?;
        let had = n.maintenance.is_some();
        n.maintenance = reason.map(|reason| {
            maintenance_check(
                "_node_maintenance".into(),
                "Node Maintenance Mode",
                reason,
                idx,
            )
        });
        if had || reason.is_some() {
            for name in self.names_on_node(node) {
                self.touch_name(&name, idx);
            }
        }
        Some(idx)
    }

    /// Sets the node's `serfHealth` status, which every instance on the node inherits.
    pub fn set_node_health(&mut self, node: &str, status: CheckStatus) -> Option<u64> {
        self.nodes.get(node)?;
        let idx = self.bump();
        let n = self.nodes.get_mut(node)?;
        if n.serf.status != status {
            n.serf.status = status;
            n.serf.output = match status {
                CheckStatus::Passing => "Agent alive and reachable".into(),
                _ => "Agent not live or unreachable".into(),
            };
            n.serf.modify_index = idx;
            for name in self.names_on_node(node) {
                self.touch_name(&name, idx);
            }
        }
        Some(idx)
    }

    /// An idempotent write to `name`: a new index, identical data (churn).
    pub fn touch_service(&mut self, name: &str) -> u64 {
        let idx = self.bump();
        if self.has_instances(name) {
            self.service_index.insert(name.to_string(), idx);
        } else {
            self.extinction = idx;
        }
        idx
    }

    /// Moves every service, extinction and missing-key index forward with no data change.
    pub fn touch_all(&mut self) -> u64 {
        let idx = self.bump();
        for v in self.service_index.values_mut() {
            *v = idx;
        }
        self.extinction = idx;
        self.catalog_index = idx;
        self.kv_index = idx;
        idx
    }

    /// Simulates a snapshot restore: the index goes back to `to` (≥ 1), no stored index
    /// exceeds it, and parked queries return at once.
    pub fn restore(&mut self, to: u64) {
        let to = to.max(1);
        let clamp = |v: &mut u64| *v = (*v).min(to);
        for f in [
            &mut self.index,
            &mut self.catalog_index,
            &mut self.extinction,
        ] {
            clamp(f);
        }
        clamp(&mut self.kv_index);
        self.service_index.values_mut().for_each(clamp);
        for n in self.nodes.values_mut() {
            for f in [&mut n.create_index, &mut n.modify_index] {
                clamp(f);
            }
            clamp(&mut n.serf.create_index);
            clamp(&mut n.serf.modify_index);
        }
        for i in self.services.values_mut() {
            clamp(&mut i.create_index);
            clamp(&mut i.modify_index);
            for c in &mut i.checks {
                clamp(&mut c.create_index);
                clamp(&mut c.modify_index);
            }
        }
        for e in self.kv.values_mut() {
            clamp(&mut e.create_index);
            clamp(&mut e.modify_index);
        }
        self.index = to;
        self.epoch += 1;
    }
}

/// The critical check `consul maint` adds, its reason in `Notes`.
fn maintenance_check(id: String, name: &str, reason: &str, idx: u64) -> Check {
    let mut c = node_check(id, name, idx);
    c.notes = reason.to_string();
    c
}

/// A critical check the agent itself owns (no script, no interval), created at `idx`.
fn node_check(id: String, name: &str, idx: u64) -> Check {
    Check {
        id,
        name: name.into(),
        status: CheckStatus::Critical,
        output: String::new(),
        notes: String::new(),
        kind: String::new(),
        interval: String::new(),
        timeout: String::new(),
        service_tags: Vec::new(),
        create_index: idx,
        modify_index: idx,
    }
}
