//! The blocking-query kit both doubles are built on. Consul and Nomad serve reads the same
//! way: every write moves one Raft-like index, a read sent with `?index=N` parks until the
//! index passes `N` or its `?wait` (plus up to `wait / 16` of jitter) runs out, and a
//! timeout answers with the unchanged index and data. What is the same in both lives here:
//!
//! - [`Core`]: the store behind its mutex, the change signal, the parked-query counter,
//!   the connection kill switch and the park loop itself ([`Core::block`]).
//! - [`params`]: Go's query-string, boolean and duration parsing, `ApiError` and the
//!   `index`/`wait` parameters with their shared default and clamp.
//! - [`Rules`] and [`Times`]: fault rules consumed request by request, over each double's
//!   own fault type.
//! - [`Acl`] and [`RequestLog`]: token tables and the log of received requests, over each
//!   double's own policy and request types.
//! - [`server`]: the accept loop, HTTP/1.1 connections that die with the kill switch, and
//!   the handle that stops the listener.
//! - `raw` (tests only): the raw HTTP/1.1 client the doubles' own tests use.
//!
//! What differs (Consul's `?token` and snapshot restores, Nomad's read-only ACL tokens and
//! background rollouts, each API's headers and errors) stays in `consul/` and `nomad/`.

mod access;
mod core;
mod faults;
pub(crate) mod params;
#[cfg(test)]
pub(crate) mod raw;
mod rng;
pub(crate) mod server;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) use self::core::Core;
pub(crate) use access::{Acl, RequestLog};
pub(crate) use faults::Rules;
pub use faults::Times;
pub(crate) use rng::Rng;

/// Locks a mutex, ignoring poisoning: a panicking test must not cascade into others.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
