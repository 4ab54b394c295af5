//! Test doubles of the services zerodown talks to, run in-process on `127.0.0.1:0`.
//!
//! [`NomadDouble`] serves the Nomad job, plan and deployment API and applies jobs to a
//! [`ConsulDouble`] the way Nomad clients do (same service ids, in place, one at a time).
//!
//! [`ConsulDouble`] serves the Consul agent HTTP API that the watcher and the operator
//! commands use (health and catalog service reads with real blocking queries, agent
//! register/deregister, KV with check-and-set), with Consul's answers, headers and errors.
//! Tests change the catalog through synchronous methods while a client is parked, and
//! inject with [`Fault`] what a real Consul or the network in between can do to a client
//! (error statuses, delays, stalled or cut bodies, resets, index resets):
//!
//! ```ignore
//! let consul = ConsulDouble::start().await?;
//! consul.register(ServiceSpec::new("web-1", "web").address("127.0.0.1").port(8080)
//!     .tags(["active"]).check(CheckStatus::Passing));
//! // point the watcher at consul.url(), then:
//! assert!(consul.wait_for_parked(1, Duration::from_secs(2)).await);
//! consul.set_tags("web-1", ["standby"]);               // one index bump, never absent
//! consul.inject_on("/v1/health/", Fault::NO_LEADER, Times::Next(1));
//! consul.outage(true).await?;                          // connect() now gets ECONNREFUSED
//! ```
#![forbid(unsafe_code)]

pub mod consul;
mod kit;
pub mod nomad;

pub use consul::{
    random_order, CheckSpec, CheckStatus, ConsulDouble, Fault, KvEntry, RecordedRequest,
    ServiceSpec, Times, TokenPolicy,
};
pub use nomad::{
    reference_job, set_active, AllocInfo, AllocSlot, DesiredUpdates, Health as AllocHealth,
    NomadDouble, NomadFault, NomadRequest, Timing as NomadTiming, ENFORCE_PREFIX, REFERENCE_JOB_ID,
    REFERENCE_SERVICE,
};
