//! The HTTP front-end: listeners and connection handling ([`listener`]), the strict HTTP/1 framing
//! check ([`strict`]), TLS ([`tls`]), the request path ([`proxy`]), pooled upstream connections
//! ([`upstream`]) and the request-path errors ([`error`]). It reads the core's snapshot and
//! reports outcomes to it; it never reaches into discovery.

pub mod error;
pub mod listener;
pub mod proxy;
pub mod strict;
pub mod tls;
pub mod upstream;
