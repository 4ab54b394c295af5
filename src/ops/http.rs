//! Plain HTTP exchanges the operator commands make: the proxy's admin API, requests through the
//! proxy, and live probes of instances. One connection per call, bounded by a timeout.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An answer, with how long it took.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub latency: Duration,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body on one line in at most `n` characters, for tables. A longer body keeps its
    /// beginning and its end (where e.g. `(version v2)` is), joined by `…`.
    pub fn excerpt(&self, n: usize) -> String {
        let t = self.text();
        let one_line: Vec<char> = t
            .trim()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if one_line.len() <= n {
            return one_line.into_iter().collect();
        }
        let tail = n / 3;
        let head = n.saturating_sub(tail + 1);
        let mut out: String = one_line[..head].iter().collect();
        out.push('…');
        out.extend(&one_line[one_line.len() - tail..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> Answer {
        Answer {
            status: 200,
            body: Bytes::from(body.to_string()),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn an_excerpt_keeps_the_end_where_the_version_is() {
        let a = answer("Cristiano Ronaldo is the best player in the world! (version v2)\n");
        let e = a.excerpt(60);
        assert_eq!(e.chars().count(), 60);
        assert!(e.ends_with("(version v2)"), "{e}");
        assert!(e.starts_with("Cristiano Ronaldo"), "{e}");
        assert_eq!(answer("short\r\nbody").excerpt(60), "short  body");
    }
}

/// Why an exchange failed; the text is one readable line naming the address.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("{addr}: {error}")]
    Handshake { addr: String, error: hyper::Error },
    #[error("{addr}{path}: {error}")]
    Request {
        addr: String,
        path: String,
        error: http::Error,
    },
    #[error("{addr}{path}: {error}")]
    Send {
        addr: String,
        path: String,
        error: hyper::Error,
    },
    #[error("{addr}{path}: reading the answer: {error}")]
    Read {
        addr: String,
        path: String,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{addr}{path}: no answer within {timeout:?}")]
    Timeout {
        addr: String,
        path: String,
        timeout: Duration,
    },
}

/// `method host:port path`, with optional extra headers.
pub async fn fetch(
    addr: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, FetchError> {
    let started = Instant::now();
    let (a, p) = (|| addr.to_string(), || path.to_string());
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|error| FetchError::Connect { addr: a(), error })?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| FetchError::Handshake { addr: a(), error })?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path);
        // A caller's own Host (a route matched by host) replaces the address.
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", addr);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|error| FetchError::Request {
                addr: a(),
                path: p(),
                error,
            })?;
        let resp = tx
            .send_request(req)
            .await
            .map_err(|error| FetchError::Send {
                addr: a(),
                path: p(),
                error,
            })?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 16 << 20)
            .collect()
            .await
            .map_err(|error| FetchError::Read {
                addr: a(),
                path: p(),
                error,
            })?
            .to_bytes();
        conn.abort();
        Ok(Answer {
            status,
            body,
            latency: started.elapsed(),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout {
            addr: a(),
            path: p(),
            timeout,
        }),
    }
}

pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<Answer, FetchError> {
    fetch(addr, Method::GET, path, &[], Bytes::new(), timeout).await
}
