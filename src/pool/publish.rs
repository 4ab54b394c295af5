//! Turns a source's report into a new [`Snapshot`] and publishes it with one pointer swap.
//! Writers are serialised by a mutex; the request path never touches it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

use super::gate::{decide, unix_ms, Hold, Verdict};
use super::snapshot::{Instance, Member, Pool, Snapshot, SourceInfo};
use crate::discovery::status::SourceStatus;
use crate::telemetry::metrics::{Lv, Metrics};
use crate::upstream::Upstream;

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
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

const HISTORY: usize = 32;
/// Repeats of an ongoing hold are logged at most this often.
const HOLD_LOG_EVERY: Duration = Duration::from_secs(60);

/// Owns the one `ArcSwap` the request path reads.
pub struct Publisher {
    cell: ArcSwap<Snapshot>,
    /// What the running source last did; shown by `/status`.
    pub status: SourceStatus,
    /// This daemon's metrics; every component reaches them through the publisher.
    pub metrics: Arc<Metrics>,
    writer: Mutex<Writer>,
    generation: watch::Sender<u64>,
}

struct Writer {
    single_version: bool,
    history: VecDeque<SwapRecord>,
    last_hold_log: [Option<Instant>; 2],
}

impl Publisher {
    pub fn new(single_version: bool) -> Publisher {
        Publisher {
            cell: ArcSwap::from_pointee(Snapshot::empty()),
            status: SourceStatus::default(),
            metrics: Arc::new(Metrics::new()),
            writer: Mutex::new(Writer {
                single_version,
                history: VecDeque::new(),
                last_hold_log: [None, None],
            }),
            generation: watch::channel(0).0,
        }
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

    /// Gates the candidates and publishes a new snapshot if anything changed. Returns whether it swapped.
    pub fn offer(&self, c: Candidates) -> bool {
        let mut w = self.lock();
        let current = self.cell.load_full();
        let now = SystemTime::now();
        let mut reasons = Vec::new();
        let single = w.single_version;
        let plans = [
            (&current.active, c.active, "active", 0usize),
            (&current.standby, c.standby, "standby", 1usize),
        ]
        .map(|(pool, candidates, name, slot)| {
            let cur = pool.instances();
            let verdict = decide(candidates, &cur, pool.hold.as_ref(), single, now);
            let (instances, hold) = match verdict {
                Verdict::Serve {
                    instances,
                    hold,
                    reason,
                } => {
                    if let Some(r) = reason {
                        tracing::error!(target: "zerodown::gate", pool = name, reason = %r, "version decision");
                        reasons.push(format!("{name}: {r}"));
                    }
                    (instances, hold)
                }
                Verdict::KeepCurrent { hold } => (cur.clone(), Some(hold)),
            };
            log_hold(&mut w.last_hold_log[slot], name, pool.hold.as_ref(), hold.as_ref());
            (cur, instances, hold)
        });
        let [(a_cur, a_new, a_hold), (s_cur, s_new, s_hold)] = plans;
        let unchanged = a_cur == a_new
            && s_cur == s_new
            && same_hold(current.active.hold.as_ref(), a_hold.as_ref())
            && same_hold(current.standby.hold.as_ref(), s_hold.as_ref());
        if unchanged {
            return false;
        }

        let mut upstreams: HashMap<&str, &Arc<Upstream>> = HashMap::new();
        for m in current
            .active
            .members
            .iter()
            .chain(&current.standby.members)
        {
            upstreams.insert(m.instance.address.as_str(), &m.upstream);
        }
        let build = |instances: &[Instance]| -> Vec<Member> {
            instances
                .iter()
                .map(|i| Member {
                    instance: Arc::new(i.clone()),
                    upstream: upstreams
                        .get(i.address.as_str())
                        .map(|u| Arc::clone(u))
                        .unwrap_or_else(|| Arc::new(Upstream::new(i.address.clone()))),
                })
                .collect()
        };
        let active = Pool::new(build(&a_new), a_hold);
        let standby = Pool::new(build(&s_new), s_hold);
        let next = Snapshot {
            generation: current.generation + 1,
            active,
            standby,
            source: Some(c.source.clone()),
            created: now,
        };
        let kind = if current.active.version != next.active.version
            || current.standby.version != next.standby.version
        {
            "version_change"
        } else if a_cur == a_new && s_cur == s_new {
            "hold"
        } else {
            "membership"
        };
        self.publish_gauges(&current, &next);
        self.metrics
            .swaps
            .get_or_create(&[("kind", Lv::S(kind))])
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
            active: diff(&current.active, &next.active, &a_cur, &a_new),
            standby: diff(&current.standby, &next.standby, &s_cur, &s_new),
        };
        let generation = next.generation;
        let kept: HashSet<&str> = next
            .active
            .members
            .iter()
            .chain(&next.standby.members)
            .map(|m| m.instance.address.as_str())
            .collect();
        let gone: Vec<Arc<Upstream>> = upstreams
            .iter()
            .filter(|(addr, _)| !kept.contains(*addr))
            .map(|(_, u)| Arc::clone(u))
            .collect();
        self.cell.store(Arc::new(next));
        for u in gone {
            u.retire();
        }
        // Logged once the swap is visible, so a reader of the log can rely on it.
        tracing::info!(
            target: "zerodown::swap",
            generation = record.generation,
            kind = record.kind,
            reason = %record.reason,
            active_old = ?record.active.old_version,
            active_new = ?record.active.new_version,
            active_added = ?record.active.added,
            active_removed = ?record.active.removed,
            standby_old = ?record.standby.old_version,
            standby_new = ?record.standby.new_version,
            standby_added = ?record.standby.added,
            standby_removed = ?record.standby.removed,
            source = c.source.kind,
            index = ?c.source.index,
            "pool swap"
        );
        if w.history.len() == HISTORY {
            w.history.pop_front();
        }
        w.history.push_back(record);
        drop(w);
        self.generation.send_replace(generation);
        true
    }
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
            m.pool_instances
                .get_or_create(&[("pool", pool.clone())])
                .set(n.members.len() as i64);
            if let Some(v) = &o.version {
                m.pool_version
                    .get_or_create(&[
                        ("pool", pool.clone()),
                        ("version", Lv::A(v.as_str().into())),
                    ])
                    .set(0);
            }
            if let Some(v) = &n.version {
                m.pool_version
                    .get_or_create(&[
                        ("pool", pool.clone()),
                        ("version", Lv::A(v.as_str().into())),
                    ])
                    .set(1);
            }
            for kind in ["empty", "version"] {
                let active = n.hold.as_ref().is_some_and(|h| h.kind() == kind);
                let was = o.hold.as_ref().is_some_and(|h| h.kind() == kind);
                let labels = [("pool", pool.clone()), ("kind", Lv::S(kind))];
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
fn log_hold(last: &mut Option<Instant>, pool: &str, old: Option<&Hold>, new: Option<&Hold>) {
    let Some(hold) = new else {
        if old.is_some() {
            tracing::info!(target: "zerodown::gate", pool, "hold released");
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
            pool,
            "source reports no instance for this pool: keeping the last non-empty set"
        ),
        Hold::Version {
            serving, waiting, ..
        } => tracing::info!(
            target: "zerodown::gate",
            pool,
            serving = %serving,
            waiting = ?waiting,
            "several versions among candidates: only the serving version routes until none of it is left"
        ),
    }
}

fn diff(old: &Pool, new: &Pool, old_i: &[Instance], new_i: &[Instance]) -> PoolDiff {
    let key = |i: &Instance| format!("{}@{}", i.id, i.address);
    PoolDiff {
        old_version: old.version.clone(),
        new_version: new.version.clone(),
        added: new_i
            .iter()
            .filter(|i| !old_i.contains(i))
            .map(key)
            .collect(),
        removed: old_i
            .iter()
            .filter(|i| !new_i.contains(i))
            .map(key)
            .collect(),
    }
}
