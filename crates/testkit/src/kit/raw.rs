//! A minimal raw HTTP/1.1 client for the doubles' own tests, so that broken answers
//! (stalls, resets, short bodies) can be observed exactly.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a raw read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Eof,
    Timeout,
    Error(io::ErrorKind),
}

/// A parsed response (or the part that arrived).
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub end: End,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// The answer's `X-Consul-Index` or `X-Nomad-Index`.
    pub fn index(&self) -> u64 {
        let header = self.header("x-consul-index");
        let raw = header.or_else(|| self.header("x-nomad-index"));
        raw.expect("X-Consul-Index or X-Nomad-Index present")
            .parse()
            .expect("numeric index")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("valid JSON body")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }
}

/// Sends one request with `Connection: close` and reads until EOF, error or `within`.
pub(crate) async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    within: Duration,
) -> io::Result<(Vec<u8>, End)> {
    let mut s = TcpStream::connect(addr).await?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Ok((got, End::Timeout)),
            Ok(Ok(0)) => return Ok((got, End::Eof)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Ok((got, End::Error(e.kind()))),
        }
    }
}

/// Parses what arrived; a response without a complete head has status 0.
pub(crate) fn parse(raw: &[u8], end: End) -> Resp {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        let body = raw.to_vec();
        return Resp {
            status: 0,
            headers: vec![],
            body,
            end,
        };
    };
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = raw[split + 4..].to_vec();
    Resp {
        status,
        headers,
        body,
        end,
    }
}
