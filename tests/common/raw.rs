//! Raw-bytes tools for the attack suite (`tests/attack.rs`): a recording upstream that keeps the
//! exact bytes of every request it receives and answers with canned bytes (a well-behaved echo, or
//! a malicious one), and a client that writes exact bytes and reads exact responses.
//!
//! Parsing here is deliberately lenient and minimal: it exists to *observe* what the proxy sends,
//! never to judge it; the assertions live in the tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client waits for a response before the test calls it hung.
pub const RESPONSE_WAIT: Duration = Duration::from_secs(5);
/// How long a client waits for the proxy to close a connection it should close.
pub const CLOSE_WAIT: Duration = Duration::from_millis(1500);

/// A byte stream with a buffer of unconsumed bytes.
pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Counts every byte read from the socket (shared with a recorder, if any).
    seen: Option<Arc<AtomicUsize>>,
}

/// Why a read stopped short.
#[derive(Debug)]
pub enum Short {
    /// The peer closed (or reset) the connection; the bytes consumed so far are kept by the caller.
    Closed(String),
    /// The bytes do not even parse as what we were reading.
    Garbage(String),
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            seen: None,
        }
    }

    async fn fill(&mut self) -> Result<(), Short> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err(Short::Closed("EOF".into())),
            Ok(n) => {
                if let Some(seen) = &self.seen {
                    seen.fetch_add(n, Ordering::SeqCst);
                }
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(Short::Closed(format!("read error: {e}"))),
        }
    }

    /// Bytes up to and including `pat`, appended to `raw`.
    async fn until(
        &mut self,
        pat: &[u8],
        limit: usize,
        raw: &mut Vec<u8>,
    ) -> Result<Vec<u8>, Short> {
        let mut from = 0;
        loop {
            if let Some(i) = find(&self.buf[from..], pat) {
                let end = from + i + pat.len();
                let out: Vec<u8> = self.buf.drain(..end).collect();
                raw.extend_from_slice(&out);
                return Ok(out);
            }
            if self.buf.len() > limit {
                return Err(Short::Garbage(format!("no {pat:?} within {limit} bytes")));
            }
            from = self.buf.len().saturating_sub(pat.len());
            if let Err(e) = self.fill().await {
                raw.extend_from_slice(&std::mem::take(&mut self.buf));
                return Err(e);
            }
        }
    }

    async fn exact(&mut self, n: usize, raw: &mut Vec<u8>) -> Result<Vec<u8>, Short> {
        while self.buf.len() < n {
            if let Err(e) = self.fill().await {
                raw.extend_from_slice(&std::mem::take(&mut self.buf));
                return Err(e);
            }
        }
        let out: Vec<u8> = self.buf.drain(..n).collect();
        raw.extend_from_slice(&out);
        Ok(out)
    }

    async fn read_to_eof(&mut self, raw: &mut Vec<u8>) -> Vec<u8> {
        while self.fill().await.is_ok() {}
        let out = std::mem::take(&mut self.buf);
        raw.extend_from_slice(&out);
        out
    }
}

fn find(hay: &[u8], pat: &[u8]) -> Option<usize> {
    hay.windows(pat.len()).position(|w| w == pat)
}

/// One HTTP/1 message as seen on the wire.
#[derive(Debug, Clone)]
pub struct Message {
    /// Every byte of the message, head and body, exactly as received.
    pub raw: Vec<u8>,
    /// The request line or status line.
    pub start: String,
    /// Header lines in order: name lowercased, value with surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
}

impl Message {
    /// The status code of a response (0 when the status line does not parse).
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The request target of a request.
    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    pub fn count(&self, name: &str) -> usize {
        self.all(name).len()
    }

    /// Every token of every `Connection` line, lowercased.
    pub fn connection_tokens(&self) -> Vec<String> {
        self.all("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The head as text, for failure messages.
    pub fn head_text(&self) -> String {
        let end = find(&self.raw, b"\r\n\r\n").map_or(self.raw.len(), |i| i + 4);
        String::from_utf8_lossy(&self.raw[..end.min(4096)]).into_owned()
    }
}

/// Reads one message. `response` selects the response body rules (1xx/204/304 bodiless, else
/// read to EOF without framing); `raw` receives every consumed byte, even on failure.
async fn read_message(w: &mut Wire, response: bool, raw: &mut Vec<u8>) -> Result<Message, Short> {
    let head = w.until(b"\r\n\r\n", 1024 * 1024, raw).await?;
    let text = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        match line.split_once(':') {
            Some((n, v)) => headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string())),
            None => headers.push((line.to_ascii_lowercase(), String::new())),
        }
    }
    let mut msg = Message {
        raw: Vec::new(),
        start,
        headers,
        body: Vec::new(),
    };
    let status = msg.status();
    let chunked = msg
        .all("transfer-encoding")
        .last()
        .is_some_and(|v| v.to_ascii_lowercase().trim_end().ends_with("chunked"));
    if response && (status / 100 == 1 || status == 204 || status == 304) {
        // bodiless
    } else if chunked {
        loop {
            let line = w.until(b"\n", 64 * 1024, raw).await?;
            let line = String::from_utf8_lossy(&line).into_owned();
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| Short::Garbage(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                loop {
                    let t = w.until(b"\n", 64 * 1024, raw).await?;
                    if t.iter().all(|b| *b == b'\r' || *b == b'\n') {
                        break;
                    }
                }
                break;
            }
            let data = w.exact(size, raw).await?;
            msg.body.extend_from_slice(&data);
            w.until(b"\n", 16, raw).await?;
        }
    } else if let Some(cl) = msg.get("content-length") {
        let n: usize = cl
            .trim()
            .parse()
            .map_err(|_| Short::Garbage(format!("bad content-length {cl:?}")))?;
        msg.body = w.exact(n, raw).await?;
    } else if response {
        msg.body = w.read_to_eof(raw).await;
    }
    msg.raw = std::mem::take(raw);
    Ok(msg)
}

/// What an upstream answers to each request.
#[derive(Clone)]
pub struct Reply {
    pub bytes: Vec<u8>,
    /// Close the connection after answering (so a close-delimited or malformed answer ends).
    pub close: bool,
}

/// The well-behaved answer: 200, `echo\n`, keep-alive.
pub fn echo_reply() -> Reply {
    Reply {
        bytes: b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\necho\n"
            .to_vec(),
        close: false,
    }
}

#[derive(Default)]
struct Log {
    complete: Vec<Message>,
    partial: Vec<Vec<u8>>,
    connections: usize,
}

/// An upstream on 127.0.0.1:0 that records the exact bytes of every request and answers each
/// with its `Reply`.
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    seen: Arc<AtomicUsize>,
}

impl Recorder {
    /// The echo upstream.
    pub async fn echo() -> Recorder {
        Recorder::start(echo_reply()).await
    }

    /// A (possibly malicious) upstream answering every request with `bytes`, then closing.
    pub async fn canned(bytes: impl Into<Vec<u8>>) -> Recorder {
        Recorder::start(Reply {
            bytes: bytes.into(),
            close: true,
        })
        .await
    }

    pub async fn start(reply: Reply) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rec = Recorder {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
            seen: Arc::default(),
        };
        let r = rec.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let r = r.clone();
                let reply = reply.clone();
                r.log.lock().unwrap().connections += 1;
                tokio::spawn(async move { r.serve(stream, reply).await });
            }
        });
        rec
    }

    async fn serve(&self, stream: TcpStream, reply: Reply) {
        let mut w = Wire::new(stream);
        w.seen = Some(Arc::clone(&self.seen));
        loop {
            let mut raw = Vec::new();
            match read_message(&mut w, false, &mut raw).await {
                Ok(msg) => {
                    self.log.lock().unwrap().complete.push(msg);
                    if w.stream.write_all(&reply.bytes).await.is_err() || reply.close {
                        return;
                    }
                }
                Err(_) => {
                    if !raw.is_empty() {
                        self.log.lock().unwrap().partial.push(raw);
                    }
                    return;
                }
            }
        }
    }

    /// Complete requests received, in order, the barrier requests left out.
    pub fn requests(&self) -> Vec<Message> {
        let log = self.log.lock().unwrap();
        log.complete
            .iter()
            .filter(|m| !m.target().starts_with(BARRIER))
            .cloned()
            .collect()
    }

    /// The single complete request received (panics with the list otherwise).
    pub fn only(&self) -> Message {
        let reqs = self.requests();
        assert_eq!(
            reqs.len(),
            1,
            "expected exactly one request upstream, got {}: {:#?}",
            reqs.len(),
            reqs.iter().map(|m| m.head_text()).collect::<Vec<_>>()
        );
        reqs.into_iter().next().unwrap()
    }

    /// Connections that closed in the middle of a request, with the bytes they carried.
    pub fn partial(&self) -> Vec<Vec<u8>> {
        self.log.lock().unwrap().partial.clone()
    }

    /// Bytes read from every connection so far, barrier requests excluded: 0 means the upstream
    /// received nothing at all (not even a head still waiting for its body).
    pub fn bytes_received(&self) -> usize {
        let log = self.log.lock().unwrap();
        let barrier: usize = log
            .complete
            .iter()
            .filter(|m| m.target().starts_with(BARRIER))
            .map(|m| m.raw.len())
            .sum();
        self.seen.load(Ordering::SeqCst) - barrier
    }

    /// Human summary of everything received, for failure messages.
    pub fn summary(&self) -> String {
        let reqs = self.requests();
        let partial = self.partial();
        format!(
            "{} complete request(s) {:?}, {} partial, {} byte(s) in all",
            reqs.len(),
            reqs.iter()
                .map(|m| cut(&m.head_text(), 400))
                .collect::<Vec<_>>(),
            partial.len(),
            self.bytes_received()
        )
    }
}

/// `s` cut to about `max` characters.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Path prefix of barrier requests: a normal request sent through the proxy after an attack, so
/// that whatever the proxy forwarded for the attack has reached the recorder before we look.
pub const BARRIER: &str = "/__barrier";

/// Sends a normal GET through the proxy on a fresh connection and waits for any answer.
pub async fn barrier(proxy: SocketAddr) {
    let mut c = Client::connect(proxy).await;
    c.send(format!("GET {BARRIER} HTTP/1.1\r\nHost: example.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let _ = c.response().await;
}

/// A client connection that writes exact bytes.
pub struct Client {
    pub wire: Wire,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.set_nodelay(true).unwrap();
        Client {
            wire: Wire::new(stream),
        }
    }

    /// Writes every byte; a write error (the proxy already closed) is returned, not a panic.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wire.stream.write_all(bytes).await?;
        self.wire.stream.flush().await
    }

    /// The next response (interim 1xx skipped), or why there is none.
    pub async fn response(&mut self) -> Result<Message, String> {
        self.response_within(RESPONSE_WAIT).await
    }

    pub async fn response_within(&mut self, wait: Duration) -> Result<Message, String> {
        let read = async {
            loop {
                let mut raw = Vec::new();
                match read_message(&mut self.wire, true, &mut raw).await {
                    Ok(m) if m.status() / 100 == 1 && m.status() != 101 => continue,
                    Ok(m) => return Ok(m),
                    Err(Short::Closed(why)) => {
                        return Err(format!(
                            "connection closed before a full response ({why}); got {:?}",
                            String::from_utf8_lossy(&raw[..raw.len().min(512)])
                        ))
                    }
                    Err(Short::Garbage(why)) => return Err(format!("unparseable response: {why}")),
                }
            }
        };
        match tokio::time::timeout(wait, read).await {
            Ok(r) => r,
            Err(_) => Err(format!("no response within {wait:?}")),
        }
    }

    /// Waits up to `CLOSE_WAIT` for the proxy to close: true on EOF or reset, false if the
    /// connection is still open (or sent more bytes).
    pub async fn closed(&mut self) -> bool {
        self.closed_within(CLOSE_WAIT).await
    }

    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        if !self.wire.buf.is_empty() {
            return false;
        }
        let mut b = [0u8; 1024];
        match tokio::time::timeout(wait, self.wire.stream.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => {
                self.wire.buf.extend_from_slice(&b[..n]);
                false
            }
            Err(_) => false,
        }
    }
}

/// Writes `bytes` on a fresh connection: the response (or why there is none) and whether the
/// proxy then closed the connection.
pub async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> (Result<Message, String>, bool) {
    let mut c = Client::connect(proxy).await;
    // A refusal may close the socket while we still write: the response is what counts.
    let _ = c.send(bytes).await;
    let resp = c.response().await;
    let closed = c.closed().await;
    (resp, closed)
}
