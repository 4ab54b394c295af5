//! State shared by the handle and the connection tasks: the kit's core (store, change
//! signal, parked queries, kill switch), fault rules, ACL tokens, the request log and
//! counters.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::faults::Fault;
use super::params::{ApiError, Query};
use super::state::Store;
pub(crate) use crate::kit::{lock, Rng};
use crate::kit::{Acl, Core, RequestLog, Rules};

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

/// Consul's ACL rule: with ACLs off every token may do everything; with them on, a
/// missing or unknown token is 403 `ACL not found`.
impl Acl<TokenPolicy> {
    /// The policy of `token`, or 403 `ACL not found` when ACLs are on and it is unknown.
    pub fn policy(&self, token: Option<&str>) -> Result<TokenPolicy, ApiError> {
        if !self.enabled() {
            return Ok(TokenPolicy::ALL);
        }
        token
            .and_then(|t| self.get(t))
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
        Query::first(&self.query, key)
    }

    /// The `index` the client sent, if any and numeric.
    pub fn index(&self) -> Option<u64> {
        self.param("index").and_then(|i| i.parse().ok())
    }
}

/// Everything the handle and the server tasks share.
pub(crate) struct Shared {
    pub core: Core<Store>,
    pub faults: Mutex<Rules<Fault>>,
    pub acl: Mutex<Acl<TokenPolicy>>,
    pub log: RequestLog<RecordedRequest>,
    pub health_queries: AtomicUsize,
    pub lowercase_tagged: AtomicBool,
}

impl Shared {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Shared {
            core: Core::new(Store::new(), seed),
            faults: Mutex::default(),
            acl: Mutex::default(),
            log: RequestLog::default(),
            health_queries: AtomicUsize::new(0),
            lowercase_tagged: AtomicBool::new(false),
        }
    }

    pub fn count_health(&self) {
        self.health_queries.fetch_add(1, Ordering::Relaxed);
    }
}
