//! Errors on the request path and the one place they become HTTP statuses.

use http::StatusCode;

/// Why a request could not be proxied. Never falls back to the other pool: that would mix versions.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for this path")]
    NoRoute,
    #[error("the {pool} pool has no instance")]
    EmptyPool { pool: &'static str },
    #[error("every tried instance failed: {tried}")]
    AllFailed { tried: String },
    #[error("upstream {upstream} did not answer within {after_ms} ms")]
    Timeout { upstream: String, after_ms: u128 },
    #[error("upstream {upstream} sent a malformed body: {error}")]
    BadUpstream { upstream: String, error: String },
    #[error("invalid request: {0}")]
    BadRequest(&'static str),
    #[error("request body larger than the route allows")]
    PayloadTooLarge,
    #[error("request body arrived too slowly")]
    BodyTimeout,
    #[error("transfer coding {0:?} is not supported")]
    UnsupportedCoding(String),
    #[error("CONNECT is not supported: zerodown is a reverse proxy, not a tunnel")]
    Connect,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::EmptyPool { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::AllFailed { .. } | ProxyError::BadUpstream { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UnsupportedCoding(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A short plain-text body; details stay in the log, not in answers to clients.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route\n",
            ProxyError::EmptyPool { .. } => "no upstream instance available\n",
            ProxyError::AllFailed { .. } | ProxyError::BadUpstream { .. } => {
                "bad gateway: upstream failed\n"
            }
            ProxyError::Timeout { .. } => "gateway timeout: upstream did not answer in time\n",
            ProxyError::BadRequest(_) => "bad request\n",
            ProxyError::PayloadTooLarge => "request body too large\n",
            ProxyError::BodyTimeout => "request body timed out\n",
            ProxyError::UnsupportedCoding(_) => "transfer coding not implemented\n",
            ProxyError::Connect => "method not allowed\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_is_pinned() {
        let cases = [
            (ProxyError::NoRoute, 404),
            (ProxyError::EmptyPool { pool: "active" }, 503),
            (ProxyError::AllFailed { tried: "a".into() }, 502),
            (
                ProxyError::BadUpstream {
                    upstream: "a".into(),
                    error: "e".into(),
                },
                502,
            ),
            (
                ProxyError::Timeout {
                    upstream: "a".into(),
                    after_ms: 1,
                },
                504,
            ),
            (ProxyError::BadRequest("x"), 400),
            (ProxyError::PayloadTooLarge, 413),
            (ProxyError::BodyTimeout, 408),
            (ProxyError::UnsupportedCoding("gzip".into()), 501),
            (ProxyError::Connect, 405),
        ];
        for (err, code) in cases {
            assert_eq!(err.status().as_u16(), code, "{err}");
            assert!(err.body().ends_with('\n'));
        }
    }
}
