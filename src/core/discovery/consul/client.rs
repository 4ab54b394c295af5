//! A small HTTP(S) client for the Consul agent API: one connection per call (calls are long polls,
//! so reuse buys nothing), a hard timeout over the whole exchange, and errors that name the cause.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::rt::{Read, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::tls::Tls;
use crate::config::{ConsulAddress, SetupError};

/// Answers larger than this are refused rather than buffered.
const MAX_BODY: usize = 64 << 20;

/// One answer, with the metadata headers the watcher uses.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub index: Option<u64>,
    pub known_leader: Option<bool>,
    pub last_contact_ms: Option<u64>,
    pub consistency: Option<String>,
    pub filtered_by_acls: bool,
    pub body: Bytes,
}

/// Why a call failed; the text is what operators read in the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsulError {
    #[error("cannot connect to Consul at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS handshake with Consul at {addr} failed: {reason} (check CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY, CONSUL_TLS_SERVER_NAME)")]
    Tls { addr: String, reason: String },
    #[error("no complete answer from Consul within {0:?}")]
    Timeout(Duration),
    #[error("HTTP exchange with Consul failed: {0}")]
    Http(String),
    #[error("{message}")]
    Status { code: u16, message: String },
    #[error("Consul sent an invalid X-Consul-Index {0:?}")]
    BadIndex(String),
    #[error("Consul's answer is not the expected JSON: {0}")]
    Parse(String),
}

impl ConsulError {
    /// Maps a non-success status to a message naming the likely cause and fix.
    pub fn from_status(status: StatusCode, body: &[u8], what: &str) -> ConsulError {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let msg = match status.as_u16() {
            403 if text.contains("ACL not found") => format!(
                "Consul rejected the ACL token (403 {text}): set CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE or source.token_file to a valid token"
            ),
            403 => format!("the ACL token may not read {what} (403 {text}): grant it the read permission"),
            429 => format!("Consul is rate-limiting this client (429 {text})"),
            500 if text.contains("No cluster leader") => format!(
                "Consul has no cluster leader (500 {text}): reads need one unless source.consistency = \"stale\""
            ),
            400 => format!("Consul refused the query for {what} (400 {text})"),
            code => format!("Consul answered {code} for {what}: {text}"),
        };
        ConsulError::Status {
            code: status.as_u16(),
            message: msg,
        }
    }

    /// Consul (or the way to it) is down or overloaded, rather than refusing this client: worth
    /// probing for its return instead of waiting out the whole backoff.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ConsulError::Connect { .. } | ConsulError::Timeout(_) | ConsulError::Http(_) => true,
            ConsulError::Status { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }
}

/// An HTTP(S) client for HashiCorp APIs; Consul's by default, Nomad's with [`ConsulClient::nomad`].
pub struct ConsulClient {
    addr: ConsulAddress,
    token: Option<HeaderValue>,
    token_header: &'static str,
    tls: Option<Tls>,
}

impl ConsulClient {
    pub fn new(
        addr: ConsulAddress,
        token: Option<String>,
        tls: Option<Tls>,
    ) -> Result<ConsulClient, SetupError> {
        let token = match token {
            Some(t) => {
                let mut v = HeaderValue::from_str(t.trim()).map_err(|_| {
                    SetupError::setting(
                        "source.token_file",
                        "the Consul ACL token holds characters a header cannot carry",
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(ConsulClient {
            addr,
            token,
            token_header: "x-consul-token",
            tls,
        })
    }

    /// The same client speaking to Nomad: the token goes in `X-Nomad-Token`.
    pub fn nomad(mut self) -> ConsulClient {
        self.token_header = "x-nomad-token";
        self
    }

    pub fn address(&self) -> &ConsulAddress {
        &self.addr
    }

    /// `GET {prefix}{path_and_query}`, bounded by `timeout` from connect to the last body byte.
    pub async fn get(&self, path_and_query: &str, timeout: Duration) -> Result<Reply, ConsulError> {
        self.call(Method::GET, path_and_query, Bytes::new(), timeout)
            .await
    }

    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, ConsulError> {
        match tokio::time::timeout(timeout, self.exchange(method, path_and_query, body)).await {
            Ok(r) => r,
            Err(_) => Err(ConsulError::Timeout(timeout)),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Reply, ConsulError> {
        let target = format!("{}{}", self.addr.path_prefix, path_and_query);
        let host = if self.addr.host.contains(':') {
            format!("[{}]:{}", self.addr.host, self.addr.port)
        } else {
            format!("{}:{}", self.addr.host, self.addr.port)
        };
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, host.as_str())
            .header(
                header::USER_AGENT,
                concat!("zerodown/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| ConsulError::Http(e.to_string()))?;
        if let Some(t) = &self.token {
            req.headers_mut().insert(self.token_header, t.clone());
        }
        let stream = TcpStream::connect((self.addr.host.as_str(), self.addr.port))
            .await
            .map_err(|e| ConsulError::Connect {
                addr: self.addr.to_string(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => send(TokioIo::new(stream), req).await,
            Some(tls) => {
                let s = tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| ConsulError::Tls {
                        addr: self.addr.to_string(),
                        reason: e.to_string(),
                    })?;
                send(TokioIo::new(s), req).await
            }
        }
    }
}

async fn send<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<Reply, ConsulError>
where
    IO: Read + Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ConsulError::Http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ConsulError::Http(e.to_string()))?;
    let h = resp.headers();
    let text = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let index = match text("x-consul-index") {
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| ConsulError::BadIndex(v))?,
        ),
        None => None,
    };
    let status = resp.status();
    let known_leader = text("x-consul-knownleader").map(|v| v == "true");
    let last_contact_ms = text("x-consul-lastcontact").and_then(|v| v.parse().ok());
    let consistency = text("x-consul-effective-consistency");
    let filtered_by_acls = text("x-consul-results-filtered-by-acls").is_some_and(|v| v == "true");
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ConsulError::Http(format!("reading the answer: {e}")))?
        .to_bytes();
    conn.abort();
    Ok(Reply {
        status,
        index,
        known_leader,
        last_contact_ms,
        consistency,
        filtered_by_acls,
        body,
    })
}
