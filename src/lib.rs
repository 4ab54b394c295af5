//! zerodown: a reverse proxy that switches a service between two versions with zero dropped requests.
//!
//! ```text
//!  config ──► discovery (file | consul) ──candidates──► pool::publish (gates) ──ArcSwap──► proxy
//! ```
//!
//! - [`config`]: the config file, validated into [`config::Config`].
//! - [`discovery`]: upstream sources behind one trait; each reports the whole instance set.
//! - [`pool`]: the immutable [`pool::Snapshot`] (active + standby pools), its gates (never empty,
//!   one version at a time) and the single `ArcSwap` it is published through.
//! - [`balance`]: round-robin pick and passive health (ejection) over a pool.
//! - [`upstream`]: pooled HTTP/1.1 connections to instances.
//! - [`proxy`]: the request path: route, pick, forward, retry on connect failure, error mapping.
//! - [`server`]: listeners, connection handling, graceful drain.
//! - [`admin`]: the admin listener (`/live`, `/ready`, `/status`).
//! - [`telemetry`]: logging setup.
//! - [`cli`]: the `zerodown` command line.
//! - [`demo`]: built-in demo instances.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod ops;
pub mod pool;
pub mod proxy;
pub mod server;
pub mod telemetry;
pub mod upstream;
