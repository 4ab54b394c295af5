//! The `/status` document, defined once: the admin API serializes it and the operator commands
//! deserialize it, so the two cannot drift. Fields are only ever added; a reader defaults what an
//! older proxy omits (every struct is `#[serde(default)]`).
//!
//! Every struct declares its fields in alphabetical order: the document used to be built as a
//! `serde_json::Value`, whose maps sort their keys, so this order keeps the served bytes unchanged
//! (a test pins it).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::core::discovery::status::SourceState;
use crate::core::{Hold, SourceInfo, SwapRecord};
use crate::hsms::HsmsStatus;

/// The whole `/status` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusDoc {
    /// Increases by one per swap; 0 before the first load.
    pub generation: u64,
    /// The HSMS front-end, when the config has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsms: Option<HsmsStatus>,
    /// The serving process (it changes at an upgrade).
    pub pid: u32,
    pub pools: Pools,
    /// 1 for a process started fresh, plus one per upgrade.
    pub process_generation: u64,
    /// The active pool has members (what `/ready` answers).
    pub ready: bool,
    /// The service this document describes (`/status?service=NAME`; the primary by default).
    pub service: String,
    /// Every service the proxy serves, the primary first.
    pub services: Vec<String>,
    /// Where the current snapshot came from; `null` before the first load.
    pub source: Option<SourceInfoDoc>,
    pub source_status: SourceStateDoc,
    /// The recent swaps, oldest first.
    pub swaps: Vec<SwapDoc>,
    pub uptime_seconds: u64,
    pub zerodown_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pools {
    pub active: PoolDoc,
    pub standby: PoolDoc,
}

impl Pools {
    /// Both pools with their names, active first.
    pub fn named(&self) -> [(&'static str, &PoolDoc); 2] {
        [("active", &self.active), ("standby", &self.standby)]
    }
}

/// One pool as the proxy routes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolDoc {
    /// The gate decision holding the pool, if any.
    pub hold: Option<HoldDoc>,
    pub instances: Vec<InstanceDoc>,
    /// The version serving, when all members agree.
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceDoc {
    pub address: String,
    /// `passing` under the Consul source (it admits only passing instances), else `null`.
    pub consul_health: Option<String>,
    /// How much longer the instance stays ejected, when it is.
    pub ejected_for_ms: Option<u64>,
    /// The instance's HSMS address, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsms: Option<String>,
    pub id: String,
    pub idle_connections: u64,
    pub in_flight: u64,
    pub tags: Vec<String>,
    pub version: String,
}

/// A gate hold ([`Hold`]), times in Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HoldDoc {
    Empty {
        #[serde(default)]
        since: u64,
    },
    Version {
        #[serde(default)]
        serving: String,
        #[serde(default)]
        since: u64,
        #[serde(default)]
        waiting: Vec<String>,
    },
}

impl HoldDoc {
    /// `empty` or `version`.
    pub fn kind(&self) -> &'static str {
        match self {
            HoldDoc::Empty { .. } => "empty",
            HoldDoc::Version { .. } => "version",
        }
    }
}

/// Where a snapshot's data came from ([`SourceInfo`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceInfoDoc {
    pub index: Option<u64>,
    pub kind: String,
    pub origin: String,
}

/// What the running source last did ([`SourceState`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceStateDoc {
    pub consecutive_errors: u64,
    pub errors_total: u64,
    pub kind: String,
    pub last_error: Option<String>,
    pub last_index: Option<u64>,
    pub last_success_ms: Option<u64>,
    /// What the source's last good answer means for the pools, when it needs saying (e.g. Consul
    /// lists no instance of the service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub origin: String,
    /// Unix milliseconds since when the source has been failing (the pools are then stale).
    pub stale_since_ms: Option<u64>,
    pub watch_restarts: u64,
}

/// One published swap ([`SwapRecord`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwapDoc {
    pub active: PoolDiffDoc,
    /// Unix milliseconds.
    pub at: u64,
    pub generation: u64,
    /// `membership`, `version_change` or `hold`.
    pub kind: String,
    pub reason: String,
    pub standby: PoolDiffDoc,
}

/// How one pool changed in a swap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolDiffDoc {
    /// The first few added instances (`id@address`).
    pub added: Vec<String>,
    pub added_count: u64,
    pub new_version: Option<String>,
    pub old_version: Option<String>,
    pub removed: Vec<String>,
    pub removed_count: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl From<&Hold> for HoldDoc {
    fn from(h: &Hold) -> HoldDoc {
        match h {
            Hold::Empty { since } => HoldDoc::Empty {
                since: unix_ms(*since),
            },
            Hold::Version {
                serving,
                waiting,
                since,
            } => HoldDoc::Version {
                serving: serving.clone(),
                since: unix_ms(*since),
                waiting: waiting.clone(),
            },
        }
    }
}

impl From<&SourceInfo> for SourceInfoDoc {
    fn from(s: &SourceInfo) -> SourceInfoDoc {
        let SourceInfo {
            kind,
            origin,
            index,
        } = s;
        SourceInfoDoc {
            index: *index,
            kind: kind.to_string(),
            origin: origin.clone(),
        }
    }
}

impl From<SourceState> for SourceStateDoc {
    fn from(s: SourceState) -> SourceStateDoc {
        // Destructured whole, so a field added to `SourceState` fails to compile here until the
        // document carries it too.
        let SourceState {
            kind,
            origin,
            last_index,
            last_success_ms,
            stale_since_ms,
            errors_total,
            consecutive_errors,
            last_error,
            watch_restarts,
            note,
        } = s;
        SourceStateDoc {
            consecutive_errors,
            errors_total,
            kind: kind.to_string(),
            last_error,
            last_index,
            last_success_ms,
            note,
            origin,
            stale_since_ms,
            watch_restarts,
        }
    }
}

impl From<&SwapRecord> for SwapDoc {
    fn from(r: &SwapRecord) -> SwapDoc {
        let [active, standby] = [&r.active, &r.standby].map(|d| PoolDiffDoc {
            added: d.added.clone(),
            added_count: d.added_count as u64,
            new_version: d.new_version.clone(),
            old_version: d.old_version.clone(),
            removed: d.removed.clone(),
            removed_count: d.removed_count as u64,
        });
        SwapDoc {
            active,
            at: unix_ms(r.at),
            generation: r.generation,
            kind: r.kind.to_string(),
            reason: r.reason.clone(),
            standby,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::core::discovery::status::SourceStatus;
    use crate::core::{Candidates, Instance, Publisher};
    use crate::telemetry::metrics::Metrics;

    fn since() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
    }

    fn inst(id: &str, version: &str) -> Instance {
        Instance {
            id: id.into(),
            address: format!("[::1]:{}", 9000 + id.len()),
            version: version.into(),
            tags: vec!["active".into(), version.into()],
            hsms: None,
        }
    }

    /// Two swaps through a real publisher, as `/status` reports them.
    fn swaps() -> Vec<SwapRecord> {
        let p = Publisher::new("hello-service", true, Arc::new(Metrics::new()));
        let source = SourceInfo {
            kind: "consul",
            origin: "http://127.0.0.1:8500 service web".into(),
            index: Some(7),
        };
        for v in ["v1", "v2"] {
            p.offer(Candidates {
                active: vec![inst("a", v)],
                standby: vec![inst("bb", "v0")],
                source: source.clone(),
            });
        }
        p.history()
    }

    fn source_state() -> SourceState {
        let s = SourceStatus::default();
        s.reset("consul", "http://127.0.0.1:8500 service web".into());
        s.ok(Some(3));
        s.error("refused");
        s.restarted();
        s.state()
    }

    fn full_doc() -> StatusDoc {
        let instance = InstanceDoc {
            hsms: None,
            address: "[::1]:9001".into(),
            consul_health: Some("passing".into()),
            ejected_for_ms: Some(250),
            id: "a".into(),
            idle_connections: 2,
            in_flight: 1,
            tags: vec!["active".into(), "v1".into()],
            version: "v1".into(),
        };
        StatusDoc {
            generation: 2,
            hsms: None,
            pid: 4242,
            pools: Pools {
                active: PoolDoc {
                    hold: Some(HoldDoc::from(&Hold::Version {
                        serving: "v1".into(),
                        waiting: vec!["v2".into()],
                        since: since(),
                    })),
                    instances: vec![instance.clone()],
                    version: Some("v1".into()),
                },
                standby: PoolDoc {
                    hold: Some(HoldDoc::from(&Hold::Empty { since: since() })),
                    instances: vec![instance],
                    version: None,
                },
            },
            process_generation: 3,
            ready: true,
            service: "web".into(),
            services: vec!["web".into(), "users".into()],
            source: Some(SourceInfoDoc::from(&SourceInfo {
                kind: "file",
                origin: "upstreams.toml".into(),
                index: None,
            })),
            source_status: SourceStateDoc::from(source_state()),
            swaps: swaps().iter().map(SwapDoc::from).collect(),
            uptime_seconds: 9,
            zerodown_version: "0.1.0".into(),
        }
    }

    #[test]
    fn keys_are_written_in_the_order_a_json_value_sorts_them() {
        let doc = full_doc();
        let direct = serde_json::to_string_pretty(&doc).unwrap();
        let through_value =
            serde_json::to_string_pretty(&serde_json::to_value(&doc).unwrap()).unwrap();
        assert_eq!(direct, through_value);
    }

    #[test]
    fn the_document_reads_back_as_written() {
        let doc = full_doc();
        let text = serde_json::to_vec(&doc).unwrap();
        assert_eq!(serde_json::from_slice::<StatusDoc>(&text).unwrap(), doc);
    }

    fn as_value<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn the_mirrors_serialize_as_the_core_types_do() {
        for h in [
            Hold::Empty { since: since() },
            Hold::Version {
                serving: "v1".into(),
                waiting: vec!["v2".into(), "v3".into()],
                since: since(),
            },
        ] {
            assert_eq!(as_value(&h), as_value(&HoldDoc::from(&h)));
        }
        let info = SourceInfo {
            kind: "consul",
            origin: "o".into(),
            index: Some(1),
        };
        assert_eq!(as_value(&info), as_value(&SourceInfoDoc::from(&info)));
        let mut state = source_state();
        assert_eq!(
            as_value(&state),
            as_value(&SourceStateDoc::from(state.clone()))
        );
        state.note = Some("no instance".into());
        assert_eq!(
            as_value(&state),
            as_value(&SourceStateDoc::from(state.clone()))
        );
        let swaps = swaps();
        assert_eq!(swaps.len(), 2);
        for r in &swaps {
            assert_eq!(as_value(r), as_value(&SwapDoc::from(r)));
        }
    }

    #[test]
    fn an_older_proxy_that_omits_later_fields_still_reads() {
        let old = json!({
            "generation": 3,
            "pools": {
                "active": {"version": "v1", "hold": null, "instances": [
                    {"id": "a", "address": "10.0.0.1:80", "version": "v1", "tags": ["active"]}
                ]},
                "standby": {"version": null, "hold": {"kind": "empty", "since": 5}, "instances": []}
            },
            "ready": true,
            "source": {"kind": "consul", "origin": "o", "index": 4},
            "source_status": {"kind": "consul", "origin": "o", "errors_total": 0},
            "swaps": [{"generation": 3, "kind": "membership", "at": 1, "reason": "r",
                       "active": {"old_version": "v1", "new_version": "v1"}, "standby": {}}],
        });
        let doc: StatusDoc = serde_json::from_value(old).unwrap();
        assert_eq!(doc.pools.active.instances[0].consul_health, None);
        assert_eq!(doc.pools.standby.hold, Some(HoldDoc::Empty { since: 5 }));
        assert_eq!(doc.swaps[0].active.added_count, 0);
        assert_eq!(doc.source_status.stale_since_ms, None);
        let _: StatusDoc = serde_json::from_value(Value::Object(Default::default())).unwrap();
    }
}
