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

    /// The first `n` characters of the body on one line, for tables.
    pub fn excerpt(&self, n: usize) -> String {
        let t = self.text();
        let one_line: String = t
            .trim()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        one_line.chars().take(n).collect()
    }
}

/// `method host:port path`, with optional extra headers; errors are one readable line.
pub async fn fetch(
    addr: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, String> {
    let started = Instant::now();
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("{addr}{path}: {e}"))?;
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| format!("{addr}{path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 16 << 20)
            .collect()
            .await
            .map_err(|e| format!("{addr}{path}: reading the answer: {e}"))?
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
        Err(_) => Err(format!("{addr}{path}: no answer within {timeout:?}")),
    }
}

pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<Answer, String> {
    fetch(addr, Method::GET, path, &[], Bytes::new(), timeout).await
}
