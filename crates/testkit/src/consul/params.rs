//! Consul's reading of the shared query parameters: its `wait` rule and consistency modes.

use crate::kit::params::{self, NegativeWait};
pub(crate) use crate::kit::params::{decode, ApiError, Blocking, Query};

/// Parses `index` and `wait` with Consul's errors, default and clamp: a negative wait is the
/// default wait.
pub(crate) fn blocking(q: &Query) -> Result<Blocking, ApiError> {
    params::blocking(q, NegativeWait::Default)
}

/// The consistency mode a read asked for, as echoed in `X-Consul-Effective-Consistency`.
pub(crate) fn consistency(q: &Query) -> Result<&'static str, ApiError> {
    let stale = q.has("stale") || q.has("max_stale");
    match (stale, q.has("consistent")) {
        (true, true) => Err(ApiError::bad_request(
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        )),
        (true, false) => Ok("stale"),
        (false, true) => Ok("consistent"),
        (false, false) => Ok("leader"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::params::{DEFAULT_WAIT, MAX_WAIT};

    #[test]
    fn wait_clamped_and_defaulted() {
        let b = |s: &str| blocking(&Query::parse(s));
        assert_eq!(b("wait=1h").map(|b| b.wait), Ok(MAX_WAIT));
        assert_eq!(b("").map(|b| b.wait), Ok(DEFAULT_WAIT));
        assert_eq!(
            b("wait=60"),
            Err(ApiError::bad_request("Invalid wait time"))
        );
        assert_eq!(b("index=x"), Err(ApiError::bad_request("Invalid index")));
        assert_eq!(b("index=-1"), Err(ApiError::bad_request("Invalid index")));
    }
}
