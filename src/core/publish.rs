//! Turns a source's report into a new [`Snapshot`] and publishes it with one pointer swap.
//! Writers are serialised by a mutex; the request path never touches it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

use super::endpoint::Endpoint;
use super::gate::{decide, unix_ms, Current, Hold, Verdict};
use super::instance::{Instance, SourceInfo};
use super::snapshot::{Member, Pool, Snapshot};
use crate::telemetry::json;
use crate::telemetry::metrics::{Lv, Metrics};

/// A source's whole view, split into pools (a reset, never a diff).
#[derive(Debug, Clone)]
pub struct Candidates {
    pub active: Vec<Instance>,
    pub standby: Vec<Instance>,
    pub source: SourceInfo,
}

/// One published swap, kept in a short history for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SwapRecord {
    pub generation: u64,
    /// `membership`, `version_change` or `hold`.
    pub kind: &'static str,
    #[serde(with = "unix_ms")]
    pub at: SystemTime,
    pub reason: String,
    pub active: PoolDiff,
    pub standby: PoolDiff,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolDiff {
    pub old_version: Option<String>,
    pub new_version: Option<String>,
    pub added_count: usize,
    /// The first few added instances (`id@address`).
    pub added: Vec<String>,
    pub removed_count: usize,
    pub removed: Vec<String>,
}

const HISTORY: usize = 32;
/// Repeats of an ongoing hold are logged at most this often.
const HOLD_LOG_EVERY: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("service", &self.service())
            .field("generation", &self.cell.load().generation)
            .finish()
    }
}

/// Owns the one `ArcSwap` the request path reads (one per service).
pub struct Publisher {
    cell: ArcSwap<Snapshot>,
    /// The service these pools belong to (a metrics label and log field).
    service: Lv,
    /// Pool gauges and swap counters are set here, once per swap.
    metrics: Arc<Metrics>,
    writer: Mutex<Writer>,
    generation: watch::Sender<u64>,
    /// A source has offered a view, pools or none (an unknown service's first answer is empty).
    offered: std::sync::atomic::AtomicBool,
}

struct Writer {
    service: Lv,
    single_version: bool,
    history: VecDeque<SwapRecord>,
    last_hold_log: [Option<Instant>; 2],
}

impl Publisher {
    pub fn new(service: &str, single_version: bool, metrics: Arc<Metrics>) -> Publisher {
        let service = Lv::A(Arc::from(service));
        metrics.add_service(&service);
        Publisher {
            cell: ArcSwap::from_pointee(Snapshot::empty()),
            service: service.clone(),
            metrics,
            writer: Mutex::new(Writer {
                service: service.clone(),
                single_version,
                history: VecDeque::new(),
                last_hold_log: [None, None],
            }),
            generation: watch::channel(0).0,
            offered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn service(&self) -> &str {
        self.service.as_str()
    }

    /// The service name as a metrics label.
    pub fn service_label(&self) -> &Lv {
        &self.service
    }

    /// The current snapshot; the request path calls this once per request.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.cell.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.cell.load_full()
    }

    /// Wakes on every swap with the new generation; tests and readiness wait on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn set_single_version(&self, on: bool) {
        self.lock().single_version = on;
    }

    pub fn history(&self) -> Vec<SwapRecord> {
        self.lock().history.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while holding this lock cannot leave the data half-written (each field is
        // replaced whole), so a poisoned lock is still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Zeroes this service's pool gauges, for a service a reload removed (its series would
    /// otherwise keep reporting the last pools).
    pub fn retire_gauges(&self) {
        self.publish_gauges(&self.cell.load(), &Snapshot::empty());
    }

    /// Whether a source has offered a view yet (set after that view is published).
    pub fn offered(&self) -> bool {
        self.offered.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Gates the candidates and publishes a new snapshot if anything changed. Returns whether it swapped.
    pub fn offer(&self, c: Candidates) -> bool {
        let swapped = self.apply(c);
        self.offered
            .store(true, std::sync::atomic::Ordering::Release);
        swapped
    }

    fn apply(&self, c: Candidates) -> bool {
        let mut w = self.lock();
        let current = self.cell.load_full();
        let now = SystemTime::now();
        let mut reasons = Vec::new();
        let active = w.plan(
            &current.active,
            c.active,
            PoolSide::ACTIVE,
            now,
            &mut reasons,
        );
        let standby = w.plan(
            &current.standby,
            c.standby,
            PoolSide::STANDBY,
            now,
            &mut reasons,
        );
        let unchanged = active.same
            && standby.same
            && same_hold(current.active.hold.as_ref(), active.hold.as_ref())
            && same_hold(current.standby.hold.as_ref(), standby.hold.as_ref());
        if unchanged {
            return false;
        }
        let kind_hold = active.same && standby.same;
        let Built {
            next,
            diffs: [a_diff, s_diff],
            gone,
        } = build(&current, active, standby, &c.source, now);
        let kind = if current.active.version != next.active.version
            || current.standby.version != next.standby.version
        {
            "version_change"
        } else if kind_hold {
            "hold"
        } else {
            "membership"
        };
        self.publish_gauges(&current, &next);
        self.metrics
            .swaps
            .get_or_create(&[("service", self.service.clone()), ("kind", Lv::S(kind))])
            .inc();
        let record = SwapRecord {
            generation: next.generation,
            kind,
            at: now,
            reason: if reasons.is_empty() {
                format!("{} update", c.source.kind)
            } else {
                reasons.join("; ")
            },
            active: a_diff,
            standby: s_diff,
        };
        let generation = next.generation;
        self.cell.store(Arc::new(next));
        for e in gone {
            e.retire();
        }
        // Logged once the swap is visible, so a reader of the log can rely on it.
        log_swap(self.service(), &record, &c.source);
        if w.history.len() == HISTORY {
            w.history.pop_front();
        }
        w.history.push_back(record);
        drop(w);
        self.generation.send_replace(generation);
        true
    }
}

/// Which pool a plan is for: its name and its slot in per-pool bookkeeping.
#[derive(Clone, Copy)]
struct PoolSide {
    name: &'static str,
    slot: usize,
}

impl PoolSide {
    const ACTIVE: PoolSide = PoolSide {
        name: "active",
        slot: 0,
    };
    const STANDBY: PoolSide = PoolSide {
        name: "standby",
        slot: 1,
    };
}

/// What the gates decided for one pool.
struct Plan {
    /// The new sorted instances; `None` keeps the current members.
    instances: Option<Vec<Instance>>,
    hold: Option<Hold>,
    /// The members would stay exactly as they are.
    same: bool,
}

impl Writer {
    /// Runs the gates for one pool; a version decision is logged and added to `reasons`.
    fn plan(
        &mut self,
        pool: &Pool,
        candidates: Vec<Instance>,
        side: PoolSide,
        now: SystemTime,
        reasons: &mut Vec<String>,
    ) -> Plan {
        let now_serving = Current {
            empty: pool.is_empty(),
            version: pool.version.as_deref(),
        };
        let verdict = decide(
            candidates,
            now_serving,
            pool.hold.as_ref(),
            self.single_version,
            now,
        );
        let name = side.name;
        let (instances, hold) = match verdict {
            Verdict::Serve {
                instances,
                hold,
                reason,
            } => {
                if let Some(r) = reason {
                    tracing::error!(target: "zerodown::gate", service = self.service.as_str(), pool = name, reason = %r, "version decision");
                    reasons.push(format!("{name}: {r}"));
                }
                (Some(instances), hold)
            }
            // Keep the current members as they are.
            Verdict::KeepCurrent { hold } => (None, Some(hold)),
        };
        let last = &mut self.last_hold_log[side.slot];
        let at = (self.service.as_str(), name);
        log_hold(last, at, pool.hold.as_ref(), hold.as_ref());
        let same = instances
            .as_ref()
            .is_none_or(|new| pool.members.iter().map(|m| &*m.instance).eq(new.iter()));
        Plan {
            instances,
            hold,
            same,
        }
    }
}

/// The next snapshot, what changed in each pool, and the endpoints that left every pool.
struct Built {
    next: Snapshot,
    diffs: [PoolDiff; 2],
    gone: Vec<Arc<Endpoint>>,
}

fn build(
    current: &Snapshot,
    active: Plan,
    standby: Plan,
    source: &SourceInfo,
    now: SystemTime,
) -> Built {
    // Endpoints by address, built only if a new instance needs one: an address keeps its
    // connection pool and health across pools and swaps.
    let mut by_address: Option<HashMap<&str, &Arc<Endpoint>>> = None;
    let mut endpoint_for = |address: &str| -> Arc<Endpoint> {
        let map = by_address.get_or_insert_with(|| {
            current
                .active
                .members
                .iter()
                .chain(&current.standby.members)
                .map(|m| (m.instance.address.as_str(), &m.endpoint))
                .collect()
        });
        map.get(address)
            .map(|e| Arc::clone(e))
            .unwrap_or_else(|| Arc::new(Endpoint::new(address.to_string())))
    };
    let mut a_built = rebuild(&current.active, active.instances, &mut endpoint_for);
    let mut s_built = rebuild(&current.standby, standby.instances, &mut endpoint_for);
    let next_active = Pool::new(std::mem::take(&mut a_built.members), active.hold);
    let next_standby = Pool::new(std::mem::take(&mut s_built.members), standby.hold);
    a_built.diff.new_version = next_active.version.clone();
    s_built.diff.new_version = next_standby.version.clone();
    let next = Snapshot {
        generation: current.generation + 1,
        active: next_active,
        standby: next_standby,
        source: Some(source.clone()),
        created: now,
    };
    // Addresses that left every pool: their idle connections close once the swap is visible.
    let mut gone: Vec<Arc<Endpoint>> = Vec::new();
    let removed: Vec<&Member> = a_built
        .removed
        .iter()
        .chain(&s_built.removed)
        .copied()
        .collect();
    if !removed.is_empty() {
        let kept: HashSet<&str> = next
            .active
            .members
            .iter()
            .chain(&next.standby.members)
            .map(|m| m.instance.address.as_str())
            .collect();
        for m in removed {
            if !kept.contains(m.instance.address.as_str()) {
                gone.push(Arc::clone(&m.endpoint));
            }
        }
    }
    Built {
        next,
        diffs: [a_built.diff, s_built.diff],
        gone,
    }
}

/// A pool's changes in a swap's log line: `{"added": ["id@addr", …], "removed": […]}`.
fn changes(d: &PoolDiff) -> impl tracing::Value + '_ {
    json(serde_json::json!({ "added": d.added, "removed": d.removed }))
}

fn log_swap(service: &str, record: &SwapRecord, source: &SourceInfo) {
    tracing::info!(
        target: "zerodown::swap",
        service,
        generation = record.generation,
        kind = record.kind,
        reason = %record.reason,
        active_old = record.active.old_version.as_deref(),
        active_new = record.active.new_version.as_deref(),
        active_added = record.active.added_count,
        active_removed = record.active.removed_count,
        active_changes = changes(&record.active),
        standby_old = record.standby.old_version.as_deref(),
        standby_new = record.standby.new_version.as_deref(),
        standby_added = record.standby.added_count,
        standby_removed = record.standby.removed_count,
        standby_changes = changes(&record.standby),
        source = source.kind,
        index = source.index,
        "pool swap"
    );
}

impl Publisher {
    /// Pool gauges and gate-hold metrics, updated once per swap.
    fn publish_gauges(&self, old: &Snapshot, new: &Snapshot) {
        let m = &self.metrics;
        for (name, o, n) in [
            ("active", &old.active, &new.active),
            ("standby", &old.standby, &new.standby),
        ] {
            let pool = Lv::S(name);
            let svc = &self.service;
            m.pool_instances
                .get_or_create(&[("service", svc.clone()), ("pool", pool.clone())])
                .set(n.members.len() as i64);
            if let Some(v) = &o.version {
                m.pool_version
                    .get_or_create(&[
                        ("service", svc.clone()),
                        ("pool", pool.clone()),
                        ("version", Lv::A(v.as_str().into())),
                    ])
                    .set(0);
            }
            if let Some(v) = &n.version {
                m.pool_version
                    .get_or_create(&[
                        ("service", svc.clone()),
                        ("pool", pool.clone()),
                        ("version", Lv::A(v.as_str().into())),
                    ])
                    .set(1);
            }
            for kind in ["empty", "version"] {
                let active = n.hold.as_ref().is_some_and(|h| h.kind() == kind);
                let was = o.hold.as_ref().is_some_and(|h| h.kind() == kind);
                let labels = [
                    ("service", svc.clone()),
                    ("pool", pool.clone()),
                    ("kind", Lv::S(kind)),
                ];
                m.gate_hold_active.get_or_create(&labels).set(active as i64);
                if active && !was {
                    m.gate_holds.get_or_create(&labels).inc();
                }
            }
        }
    }
}

fn same_hold(a: Option<&Hold>, b: Option<&Hold>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Hold::Empty { .. }), Some(Hold::Empty { .. })) => true,
        (
            Some(Hold::Version {
                serving: s1,
                waiting: w1,
                ..
            }),
            Some(Hold::Version {
                serving: s2,
                waiting: w2,
                ..
            }),
        ) => s1 == s2 && w1 == w2,
        _ => false,
    }
}

/// Logs a hold when it starts or changes, then at most once per [`HOLD_LOG_EVERY`] while it lasts.
fn log_hold(
    last: &mut Option<Instant>,
    (service, pool): (&str, &str),
    old: Option<&Hold>,
    new: Option<&Hold>,
) {
    let Some(hold) = new else {
        if old.is_some() {
            tracing::info!(target: "zerodown::gate", service, pool, "hold released");
        }
        *last = None;
        return;
    };
    let fresh = !same_hold(old, Some(hold));
    if !fresh && last.is_some_and(|t| t.elapsed() < HOLD_LOG_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    match hold {
        Hold::Empty { .. } => tracing::warn!(
            target: "zerodown::gate",
            service,
            pool,
            "source reports no instance for this pool: keeping the last non-empty set"
        ),
        Hold::Version {
            serving, waiting, ..
        } => tracing::info!(
            target: "zerodown::gate",
            service,
            pool,
            serving = %serving,
            waiting = json(waiting),
            "several versions among candidates: only the serving version routes until none of it is left"
        ),
    }
}

/// Entries listed per side in a swap's log and history; the counts are always exact.
const DIFF_LIST_MAX: usize = 20;

/// A pool's new members, what changed, and the members that left.
struct Rebuilt<'a> {
    members: Vec<Member>,
    diff: PoolDiff,
    removed: Vec<&'a Member>,
}

/// Builds a pool's members from its sorted new instances (`None`: keep them all) by one merge-walk
/// over the sorted old members: unchanged instances keep their `Arc`, nothing is hashed.
fn rebuild<'a>(
    old: &'a Pool,
    new: Option<Vec<Instance>>,
    endpoint_for: &mut impl FnMut(&str) -> Arc<Endpoint>,
) -> Rebuilt<'a> {
    let key = |i: &Instance| format!("{}@{}", i.id, i.address);
    let mut diff = PoolDiff {
        old_version: old.version.clone(),
        new_version: None,
        added_count: 0,
        added: Vec::new(),
        removed_count: 0,
        removed: Vec::new(),
    };
    let Some(new) = new else {
        return Rebuilt {
            members: old.members.clone(),
            diff,
            removed: Vec::new(),
        };
    };
    let mut members = Vec::with_capacity(new.len());
    let mut removed = Vec::new();
    let mut olds = old.members.iter().peekable();
    for inst in new {
        while let Some(m) = olds.next_if(|m| *m.instance < inst) {
            removed.push(m);
        }
        match olds.next_if(|m| *m.instance == inst) {
            Some(m) => members.push(m.clone()),
            None => {
                diff.added_count += 1;
                if diff.added.len() < DIFF_LIST_MAX {
                    diff.added.push(key(&inst));
                }
                let endpoint = endpoint_for(&inst.address);
                members.push(Member {
                    instance: Arc::new(inst),
                    endpoint,
                });
            }
        }
    }
    removed.extend(olds);
    diff.removed_count = removed.len();
    diff.removed = removed
        .iter()
        .take(DIFF_LIST_MAX)
        .map(|m| key(&m.instance))
        .collect();
    Rebuilt {
        members,
        diff,
        removed,
    }
}
