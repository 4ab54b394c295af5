//! State shared by the handle and the connection tasks: the store behind a
//! `std::sync::Mutex` (never held across `.await`), the change signal parked queries wait
//! on, fault rules, ACL tokens, the request log and counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::faults::{Fault, Rules};
use super::params::ApiError;
use super::state::Store;
pub(crate) use crate::common::{Parked, Rng};

/// Locks a mutex, ignoring poisoning: a panicking test must not cascade into others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a token may do. ACLs are off unless `ConsulDouble::set_required_token` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Without it, health and catalog answers are `200 []` with
    /// `X-Consul-Results-Filtered-By-ACLs: true`.
    pub service_read: bool,
    /// Needed by agent register/deregister (else 403 `Permission denied`).
    pub service_write: bool,
    /// Needed by KV reads (else 403 `Permission denied`).
    pub kv_read: bool,
    /// Needed by KV writes and deletes (else 403 `Permission denied`).
    pub kv_write: bool,
}

impl TokenPolicy {
    pub const ALL: TokenPolicy = TokenPolicy {
        service_read: true,
        service_write: true,
        kv_read: true,
        kv_write: true,
    };
    pub const NONE: TokenPolicy = TokenPolicy {
        service_read: false,
        service_write: false,
        kv_read: false,
        kv_write: false,
    };
}

#[derive(Debug, Default)]
pub(crate) struct Acl {
    pub enabled: bool,
    pub tokens: HashMap<String, TokenPolicy>,
}

impl Acl {
    /// The policy of `token`, or 403 `ACL not found` when ACLs are on and it is unknown.
    pub fn policy(&self, token: Option<&str>) -> Result<TokenPolicy, ApiError> {
        if !self.enabled {
            return Ok(TokenPolicy::ALL);
        }
        token
            .and_then(|t| self.tokens.get(t).copied())
            .ok_or_else(|| ApiError::new(403, "ACL not found"))
    }
}

/// One request as the double received it, for assertions such as "the client sent index=7".
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path as sent (still percent-encoded).
    pub path: String,
    /// Raw query string, `""` when absent.
    pub query: String,
    pub headers: http::HeaderMap,
    /// Effective token: `?token`, then `X-Consul-Token`, then `Authorization: Bearer`.
    pub token: Option<String>,
    pub at: tokio::time::Instant,
}

impl RecordedRequest {
    /// First decoded value of a query parameter (`Some("")` for a bare flag).
    pub fn param(&self, key: &str) -> Option<String> {
        super::params::Query::parse(&self.query)
            .get(key)
            .map(str::to_string)
    }

    /// The `index` the client sent, if any and numeric.
    pub fn index(&self) -> Option<u64> {
        self.param("index").and_then(|i| i.parse().ok())
    }
}

/// Everything the handle and the server tasks share.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// Bumped after every write; parked queries re-check their index when it moves.
    pub changed: watch::Sender<u64>,
    pub faults: Mutex<Rules<Fault>>,
    pub acl: Mutex<Acl>,
    pub log: Mutex<Vec<RecordedRequest>>,
    /// Number of blocking queries currently parked.
    pub parked: watch::Sender<usize>,
    pub health_queries: AtomicUsize,
    /// Bumped to drop every open connection (outage, shutdown).
    pub conn_kill: watch::Sender<u64>,
    pub lowercase_tagged: AtomicBool,
    rng: Mutex<Rng>,
}

impl Shared {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Shared {
            store: Mutex::new(Store::new()),
            changed: watch::channel(0).0,
            faults: Mutex::default(),
            acl: Mutex::default(),
            log: Mutex::default(),
            parked: watch::channel(0).0,
            health_queries: AtomicUsize::new(0),
            conn_kill: watch::channel(0).0,
            lowercase_tagged: AtomicBool::new(false),
            rng: Mutex::new(Rng::new(seed)),
        }
    }

    /// Runs a write on the store, then wakes parked queries (outside the lock).
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let r = f(&mut lock(&self.store));
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
        r
    }

    pub fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&lock(&self.store))
    }

    pub fn park(&self) -> Parked<'_> {
        Parked::enter(&self.parked)
    }

    /// Random extra wait of up to `wait / 16`, as Consul's `RPCQueryTimeout` adds.
    pub fn jitter(&self, wait: Duration) -> Duration {
        let max = u64::try_from((wait / 16).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(lock(&self.rng).up_to(max))
    }

    pub fn kill_connections(&self) {
        self.conn_kill.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub fn count_health(&self) {
        self.health_queries.fetch_add(1, Ordering::Relaxed);
    }
}
