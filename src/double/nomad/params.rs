//! Query strings, Go durations and blocking parameters, with Nomad's errors
//! (`command/agent/http.go` `parseWait`): 400 `Invalid wait time` / `Invalid index`.

use std::time::Duration;

/// Default blocking wait when `wait` is absent.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Nomad clamps longer waits to this (`structs.MaxBlockingRPCQueryTime`).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);

/// An error answer: status and `text/plain` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub body: String,
}

impl ApiError {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        ApiError {
            status,
            body: body.into(),
        }
    }

    pub fn bad_request(body: impl Into<String>) -> Self {
        Self::new(400, body)
    }

    /// A server-side (RPC) failure: Nomad answers 500 with the error text.
    pub fn internal(body: impl Into<String>) -> Self {
        Self::new(500, body)
    }

    /// A validation failure, rendered like Go's `multierror` as Nomad does.
    pub fn validation(errors: &[String]) -> Self {
        let n = errors.len();
        let plural = if n == 1 { "error" } else { "errors" };
        let items: String = errors.iter().map(|e| format!("\t* {e}\n")).collect();
        Self::internal(format!("{n} {plural} occurred:\n{items}\n"))
    }
}

/// Decoded query parameters in order; a bare flag has the value `""`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode(k, true), decode(v, true)),
                None => (decode(p, true), String::new()),
            })
            .collect();
        Query { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let hit = self.pairs.iter().find(|(k, _)| k == key);
        hit.map(|(_, v)| v.as_str())
    }
}

/// Percent-decoding, shared with the Consul double.
pub(crate) use crate::double::consul::params::decode;

/// Go's `time.ParseDuration` in nanoseconds, non-negative only (the Consul double's parser,
/// which also takes signed values).
pub(crate) fn parse_go_duration(s: &str) -> Option<u64> {
    crate::double::consul::params::parse_go_duration(s).and_then(|ns| u64::try_from(ns).ok())
}

/// Formats nanoseconds the way Go's `Duration.String` does for whole units (`10s`, `1m0s`).
pub(crate) fn go_duration_string(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns % 1_000_000_000 != 0 {
        return format!("{}ms", ns / 1_000_000);
    }
    let secs = ns / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Blocking parameters of a read: `index` 0 means "do not block".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocking {
    pub index: u64,
    pub wait: Duration,
}

/// Parses `index` and `wait` with Nomad's errors, default and clamp.
pub(crate) fn blocking(q: &Query) -> Result<Blocking, ApiError> {
    let wait = match q.get("wait") {
        None | Some("") => DEFAULT_WAIT,
        Some(w) => match parse_go_duration(w) {
            None => return Err(ApiError::bad_request("Invalid wait time")),
            Some(0) => DEFAULT_WAIT,
            Some(ns) => Duration::from_nanos(ns).min(MAX_WAIT),
        },
    };
    let index = match q.get("index") {
        None | Some("") => 0,
        Some(i) => i
            .parse()
            .map_err(|_| ApiError::bad_request("Invalid index"))?,
    };
    Ok(Blocking { index, wait })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_blocking_errors() {
        assert_eq!(parse_go_duration("10s"), Some(10_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("300000ms"), Some(300_000_000_000));
        assert_eq!(parse_go_duration("60"), None);
        assert_eq!(go_duration_string(90_000_000_000), "1m30s");
        assert_eq!(go_duration_string(2_000_000_000), "2s");
        let b = |s: &str| blocking(&Query::parse(s));
        assert_eq!(b("wait=1h").map(|b| b.wait), Ok(MAX_WAIT));
        assert_eq!(
            b("wait=60"),
            Err(ApiError::bad_request("Invalid wait time"))
        );
        assert_eq!(b("index=x"), Err(ApiError::bad_request("Invalid index")));
        assert_eq!(b("index=7&wait=5s").map(|b| b.index), Ok(7));
    }
}
