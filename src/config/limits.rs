//! Hardening settings: request limits, client timeouts, HTTP/2 flood defences, TLS termination and
//! the admin token. Defaults follow a well-configured nginx (see the README's table).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// What to do with request header names containing `_` (nginx: `ignore_invalid_headers on` drops them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Underscores {
    Drop,
    Reject,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitsConfig {
    /// Request line + headers (431 beyond).
    pub max_header_bytes: usize,
    /// Header count (431 beyond).
    pub max_headers: usize,
    /// Request body, unless a route raises it (413 beyond).
    pub max_body_bytes: u64,
    /// Upstream response head (502 beyond).
    pub max_upstream_header_bytes: usize,
    pub max_connections: usize,
    /// Beyond `max_connections`, a new connection waits this long for a slot, then is closed.
    #[serde(serialize_with = "super::duration::serialize")]
    pub connection_wait: Duration,
    /// Longest pause between two chunks of a request body (408 / connection closed beyond).
    #[serde(serialize_with = "super::duration::serialize")]
    pub body_idle_timeout: Duration,
    /// Longest time to receive a whole request body.
    #[serde(serialize_with = "super::duration::serialize")]
    pub body_timeout: Duration,
    /// Slowest average request-body rate accepted (bytes per second) once `body_min_rate_grace`
    /// has passed; slower clients get 408. 0 turns it off (a route can too).
    pub body_min_rate: u64,
    #[serde(serialize_with = "super::duration::serialize")]
    pub body_min_rate_grace: Duration,
    /// After this many requests an HTTP/1 connection is closed gracefully (`Connection: close`).
    pub max_requests_per_connection: u64,
    /// A connection older than this is closed gracefully after its current request.
    #[serde(serialize_with = "super::duration::serialize")]
    pub max_connection_age: Duration,
    pub underscore_headers: Underscores,
    /// Peers whose `X-Forwarded-For` / `Forwarded` are appended to; from anyone else they are replaced.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
            max_upstream_header_bytes: 64 * 1024,
            max_connections: 10_000,
            connection_wait: Duration::from_millis(100),
            body_idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(300),
            body_min_rate: 500,
            body_min_rate_grace: Duration::from_secs(5),
            max_requests_per_connection: 10_000,
            max_connection_age: Duration::from_secs(3600),
            underscore_headers: Underscores::Drop,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Http2Config {
    pub max_concurrent_streams: u32,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
    pub max_header_list_size: u32,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: 128,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_header_list_size: 64 * 1024,
            initial_stream_window_size: 1024 * 1024,
            initial_connection_window_size: 4 * 1024 * 1024,
        }
    }
}

/// An HTTPS listener; absent unless configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `10.0.0.0/8`, `::1/128` or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}/{}", self.addr, self.prefix))
    }
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR (e.g. \"10.0.0.0/8\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
