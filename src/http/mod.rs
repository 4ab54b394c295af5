//! The HTTP front-end: listeners ([`listener`]), connection handling ([`conn`]) with idle HTTP/1
//! connections parked without hyper's buffers ([`park`]), the strict HTTP/1 framing check
//! ([`strict`]), TLS ([`tls`]), the request path ([`proxy`]), pooled upstream connections
//! ([`upstream`]) and the request-path errors ([`error`]). It reads the core's snapshot and
//! reports outcomes to it; it never reaches into discovery.

pub mod conn;
pub mod error;
pub mod listener;
pub mod park;
pub mod proxy;
pub mod strict;
pub mod tls;
pub mod upstream;
