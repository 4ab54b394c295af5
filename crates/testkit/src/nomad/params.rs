//! Nomad's reading of the shared query parameters (its `wait` rule: 400 `Invalid wait time`
//! for a negative wait too), its own error answers and Go's duration formatting.

use crate::kit::params::{self, NegativeWait};
pub(crate) use crate::kit::params::{decode, ApiError, Blocking, Query};

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

/// Parses `index` and `wait` with Nomad's errors, default and clamp: a negative wait is
/// invalid.
pub(crate) fn blocking(q: &Query) -> Result<Blocking, ApiError> {
    params::blocking(q, NegativeWait::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::params::{parse_go_duration, MAX_WAIT};

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
