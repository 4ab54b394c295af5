//! The immutable snapshot of both pools. Built off the request path; read with one `ArcSwap::load`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::endpoint::Endpoint;
use super::gate::Hold;
use super::instance::{Instance, SourceInfo};
use crate::config::PoolName;

/// An instance in a pool, with the endpoint of its address (health, front-end state; shared across
/// snapshots so a tag flip keeps warm connections).
#[derive(Debug, Clone)]
pub struct Member {
    pub instance: Arc<Instance>,
    pub endpoint: Arc<Endpoint>,
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
