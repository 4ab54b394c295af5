//! zerodown: a reverse proxy that switches a service between two versions with zero dropped requests.
//!
//! ```text
//!  config ──► core::discovery (file | consul) ──candidates──► core::publish (gates)
//!                                                                  │ one ArcSwap<Snapshot>
//!                                                                  ▼
//!                                               http (listener → proxy → upstream)
//! ```
//!
//! - [`core`]: the protocol-independent switching core: discovery sources, the version gates, the
//!   one immutable snapshot and its publisher, endpoints (health, in-flight), balancing.
//! - [`http`]: the HTTP front-end: listeners, strict framing, TLS, the request path, pooled
//!   upstream connections.
//! - [`daemon`]: the composition root: builds source, publisher, front-ends and admin from a
//!   config, applies reloads, drains on shutdown.
//! - [`config`]: the config file, validated into [`config::Config`].
//! - [`admin`]: the admin listener (`/live`, `/ready`, `/status`, `/metrics`).
//! - [`telemetry`]: logging setup and Prometheus metrics.
//! - [`ops`]: the operator commands (status, switch, deploy, rollback, diagnose).
//! - [`cli`]: the `zerodown` command line.
//! - [`hsms`]: the HSMS front-end (equipment sessions switched at a transaction boundary).
//! - [`runtime`]: thread-per-core: a current-thread runtime per worker thread.
//! - [`upgrade`]: handing the listening sockets to a new zerodown process.
//! - [`demo`]: built-in demo instances (HTTP and HSMS hosts, an equipment load).
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod demo;
pub mod hsms;
pub mod http;
pub mod ops;
pub mod runtime;
pub mod telemetry;
pub mod upgrade;
