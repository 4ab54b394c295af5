//! What the HSMS sessions share: config, the core's snapshot, metrics, and a registry of live
//! sessions for `/status`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::handoff::{self, Adoption};
use super::relay::{BackendId, RelayConfig};
use super::target::{self, Target};
use crate::config::{HsmsConfig, HsmsMode};
use crate::core::{Instance, Publisher};
use crate::telemetry::metrics::Metrics;
use crate::upgrade::Successor;

/// Shared by every equipment connection.
pub struct Hsms {
    pub cfg: HsmsConfig,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    sessions: Mutex<BTreeMap<u64, Arc<Mutex<SessionView>>>>,
    next_session: AtomicU64,
    next_backend: AtomicU64,
    rr: AtomicUsize,
    /// Set at an upgrade: sessions move to this process instead of ending.
    successor: Mutex<Option<Arc<Successor>>>,
    /// Sessions the previous process handed over, for the listener to serve.
    adopt_tx: mpsc::UnboundedSender<Adoption>,
    adopt_rx: Mutex<Option<mpsc::UnboundedReceiver<Adoption>>>,
}

/// One session as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionView {
    pub id: u64,
    pub equipment: String,
    /// `not_selected`, `selected`, `switching`, `handing_over`, `no_backend` (hsms mode);
    /// `connected`, `draining` (tcp mode).
    pub state: String,
    pub backend: Option<BackendView>,
    pub open_to_host: usize,
    pub open_to_equipment: usize,
    pub queued: usize,
    pub switches: u64,
    pub rollbacks: u64,
    pub last_switch: Option<SwitchView>,
    /// Why the session is not on the active version, when it is not.
    pub hold: Option<String>,
    /// Upgrades of zerodown this session lived through (its socket handed to the next process).
    pub upgrades: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub instance: String,
    pub address: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchView {
    pub from_version: Option<String>,
    pub to_version: String,
    pub took_ms: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// `done` or `rolled_back: <reason>`.
    pub outcome: String,
}

/// The HSMS part of `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HsmsStatus {
    pub listen: SocketAddr,
    pub mode: HsmsMode,
    /// The version new sessions go to, and the instances that can serve it.
    pub target_version: Option<String>,
    pub target_instances: Vec<String>,
    pub hold: Option<String>,
    pub sessions: Vec<SessionView>,
}

impl Hsms {
    pub fn new(cfg: HsmsConfig, publisher: Arc<Publisher>, metrics: Arc<Metrics>) -> Hsms {
        let (adopt_tx, adopt_rx) = mpsc::unbounded_channel();
        Hsms {
            cfg,
            publisher,
            metrics,
            sessions: Mutex::new(BTreeMap::new()),
            next_session: AtomicU64::new(1),
            next_backend: AtomicU64::new(1),
            rr: AtomicUsize::new(0),
            successor: Mutex::new(None),
            adopt_tx,
            adopt_rx: Mutex::new(Some(adopt_rx)),
        }
    }

    /// Whether sessions can move to another process (the `hsms` mode; a TCP relay has no
    /// message boundary to move at).
    pub fn takes_sessions(&self) -> bool {
        self.cfg.mode == HsmsMode::Hsms
    }

    /// From now on, stopping sessions move to `next` instead of ending.
    pub fn hand_over_to(&self, next: Arc<Successor>) {
        *lock(&self.successor) = Some(next);
    }

    /// The successor sessions move to, while hand-overs to it work.
    pub fn successor(&self) -> Option<Arc<Successor>> {
        lock(&self.successor)
            .as_ref()
            .filter(|s| s.usable() && s.takes_sessions)
            .cloned()
    }

    /// Whether this process hands its sessions over (and so waits for them as long as it takes).
    pub fn handing_over(&self) -> bool {
        lock(&self.successor).is_some()
    }

    /// A session from the previous process; served once the listener runs.
    pub fn adopt(&self, payload: &[u8], fd: std::os::fd::OwnedFd) -> Result<(), String> {
        let a = handoff::receive(payload, fd)?;
        self.adopt_tx
            .send(a)
            .map_err(|_| "the HSMS listener has stopped".to_string())
    }

    pub(super) fn adoptions(&self) -> Option<mpsc::UnboundedReceiver<Adoption>> {
        lock(&self.adopt_rx).take()
    }

    pub fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            t3: self.cfg.t3,
            t6: self.cfg.t6,
            t7: self.cfg.t7,
            drain_bound: self.cfg.drain_bound,
            max_queued: self.cfg.max_queued,
        }
    }

    pub fn backend_id(&self) -> BackendId {
        self.next_backend.fetch_add(1, Ordering::Relaxed)
    }

    /// The target for a session on `serving`, from the current snapshot.
    pub fn target(&self, serving: Option<&str>) -> Option<Target> {
        target::choose(&self.publisher.load(), serving)
    }

    /// One instance of `t`, round-robin over sessions.
    pub fn pick(&self, t: &Target) -> Option<Arc<Instance>> {
        let n = t.instances.len();
        (n > 0).then(|| Arc::clone(&t.instances[self.rr.fetch_add(1, Ordering::Relaxed) % n]))
    }

    /// Lists a new session in `/status` and the sessions gauge, until the returned guard drops.
    pub(super) fn open_session(self: &Arc<Self>, equipment: String) -> Registered {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let view = Arc::new(Mutex::new(SessionView {
            id,
            equipment,
            state: "not_selected".into(),
            ..SessionView::default()
        }));
        lock(&self.sessions).insert(id, Arc::clone(&view));
        self.metrics.hsms_sessions.inc();
        Registered {
            h: Arc::clone(self),
            id,
            view,
        }
    }

    pub fn status(&self) -> HsmsStatus {
        let sessions = self.sessions();
        let t = self.target(None).or_else(|| {
            // A hold only shows for sessions that are on a version: report the first one's.
            let serving = sessions
                .iter()
                .find_map(|s| s.backend.as_ref().map(|b| b.version.as_str()));
            self.target(serving)
        });
        HsmsStatus {
            listen: self.cfg.listen,
            mode: self.cfg.mode,
            target_version: t.as_ref().map(|t| t.version.clone()),
            target_instances: t
                .as_ref()
                .map(|t| t.instances.iter().map(|i| i.id.clone()).collect())
                .unwrap_or_default(),
            hold: t.and_then(|t| t.hold),
            sessions,
        }
    }

    pub fn sessions(&self) -> Vec<SessionView> {
        let list: Vec<Arc<Mutex<SessionView>>> = lock(&self.sessions).values().cloned().collect();
        list.iter().map(|v| lock(v).clone()).collect()
    }
}

/// A session listed by [`Hsms::open_session`].
pub(super) struct Registered {
    h: Arc<Hsms>,
    pub id: u64,
    pub view: Arc<Mutex<SessionView>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.h.metrics.hsms_sessions.dec();
        lock(&self.h.sessions).remove(&self.id);
    }
}

/// Locks ignoring poisoning: every writer replaces whole fields.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
