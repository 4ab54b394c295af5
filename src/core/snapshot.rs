//! The immutable snapshot of both pools. Built off the request path; read with one `ArcSwap::load`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::endpoint::Endpoint;
use super::gate::Hold;
use crate::config::PoolName;
use crate::telemetry::metrics::VersionLabel;

/// One instance as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Instance {
    pub id: String,
    /// `host:port` to dial.
    pub address: String,
    pub version: String,
    pub tags: Vec<String>,
}

impl VersionLabel for Instance {
    fn version_label(&self) -> &str {
        &self.version
    }
}

/// An instance in a pool, with the endpoint of its address (health, front-end state; shared across
/// snapshots so a tag flip keeps warm connections).
#[derive(Debug, Clone)]
pub struct Member {
    pub instance: Arc<Instance>,
    pub endpoint: Arc<Endpoint>,
}

/// Where a snapshot's data came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    pub kind: &'static str,
    /// File path or Consul URL.
    pub origin: String,
    /// The Consul index of the answer, when there is one.
    pub index: Option<u64>,
}

/// One pool: the members it routes to, the version they run and any gate holding it.
#[derive(Debug)]
pub struct Pool {
    pub members: Vec<Member>,
    /// The version serving, when all members agree (always, unless `single_version = false`).
    pub version: Option<String>,
    pub hold: Option<Hold>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(members: Vec<Member>, hold: Option<Hold>) -> Pool {
        let version = single_version(&members);
        Pool {
            members,
            version,
            hold,
            next: AtomicUsize::new(0),
        }
    }

    pub fn empty() -> Pool {
        Pool::new(Vec::new(), None)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The round-robin starting point for one request.
    pub fn next_start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

fn single_version(members: &[Member]) -> Option<String> {
    let first = &members.first()?.instance.version;
    members
        .iter()
        .all(|m| &m.instance.version == first)
        .then(|| first.clone())
}

/// What the request path reads: both pools, swapped together.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per swap; 0 is the empty snapshot before the first load.
    pub generation: u64,
    pub active: Pool,
    pub standby: Pool,
    pub source: Option<SourceInfo>,
    pub created: SystemTime,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            active: Pool::empty(),
            standby: Pool::empty(),
            source: None,
            created: SystemTime::now(),
        }
    }

    pub fn pool(&self, name: PoolName) -> &Pool {
        match name {
            PoolName::Active => &self.active,
            PoolName::Standby => &self.standby,
        }
    }
}
