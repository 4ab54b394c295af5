//! Query strings, Go durations and blocking parameters, with Nomad's errors
//! (`command/agent/http.go` `parseWait`): 400 `Invalid wait time` / `Invalid index`.

use std::time::Duration;

/// The Consul double's error type, query parser, blocking parameters and limits (Nomad uses the
/// same defaults: 5 min wait, clamped at 10 min). Only the parsing of `wait` differs, below.
pub(crate) use crate::consul::params::{decode, ApiError, Blocking, Query, DEFAULT_WAIT, MAX_WAIT};

/// Nomad's own error answers.
impl ApiError {
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

/// Go's `time.ParseDuration` in nanoseconds, non-negative only (the Consul double's parser,
/// which also takes signed values).
pub(crate) fn parse_go_duration(s: &str) -> Option<u64> {
    crate::consul::params::parse_go_duration(s).and_then(|ns| u64::try_from(ns).ok())
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
