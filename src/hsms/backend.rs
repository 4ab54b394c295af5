//! One HSMS connection from zerodown (active side) to a backend instance: connect, Select within
//! T6, then move whole messages both ways. The session's relay decides what is sent; this task
//! only does the I/O and reports what happened.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::codec::{self, Decoder, Message, SType};
use super::relay::BackendId;

/// What a backend connection reports to its session.
#[derive(Debug)]
pub enum BackendEvent {
    /// The backend answered Select.req with status 0.
    Selected,
    /// Connect or Select failed; the connection is gone.
    SelectFailed(String),
    /// A whole message from the backend.
    Message(Message),
    /// The connection ended (EOF, error, or a framing error, named).
    Closed(String),
}

/// How to reach and talk to a backend.
#[derive(Debug, Clone)]
pub struct Dial {
    pub id: BackendId,
    pub address: String,
    pub t6: Duration,
    pub max_message_bytes: u32,
    /// Messages waiting to be written before the session treats the backend as stuck.
    pub max_queued: usize,
}

/// Starts the connection; the returned sender carries the messages to write. Dropping it makes
/// the task finish writing what is queued and close the connection.
pub fn spawn(dial: Dial, events: mpsc::Sender<(BackendId, BackendEvent)>) -> mpsc::Sender<Message> {
    let (tx, rx) = mpsc::channel(dial.max_queued);
    let span = tracing::debug_span!("upstream", addr = %dial.address);
    tokio::spawn(run(dial, rx, events).instrument(span));
    tx
}

async fn run(
    dial: Dial,
    out: mpsc::Receiver<Message>,
    events: mpsc::Sender<(BackendId, BackendEvent)>,
) {
    let id = dial.id;
    let report = |e: BackendEvent| {
        let events = events.clone();
        async move {
            let _ = events.send((id, e)).await;
        }
    };
    let (rd, wr) = match select(&dial).await {
        Ok(halves) => halves,
        Err(why) => return report(BackendEvent::SelectFailed(why)).await,
    };
    report(BackendEvent::Selected).await;
    let why = relay(rd, wr, out, &dial, &events).await;
    report(BackendEvent::Closed(why)).await;
}

/// Connects and selects within T6 (connect included).
async fn select(dial: &Dial) -> Result<(Reader, OwnedWriteHalf), String> {
    let work = async {
        let stream = TcpStream::connect(dial.address.as_str())
            .await
            .map_err(|e| format!("connect to {} failed: {e}", dial.address))?;
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut reader = Reader::new(rd, dial.max_message_bytes);
        // Any value: the answer must only echo it.
        let system = 0x5A44_0001;
        write(&mut wr, &codec::select_req(system)).await?;
        loop {
            let m = reader.next().await?;
            match m.header.stype {
                SType::SelectRsp if m.header.system == system => {
                    return match m.header.status() {
                        codec::SELECT_OK => Ok((reader, wr)),
                        s => Err(format!("{} refused Select.req (status {s})", dial.address)),
                    };
                }
                // Nothing else is expected before the answer; a Linktest is harmless.
                _ => continue,
            }
        }
    };
    match tokio::time::timeout(dial.t6, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{} did not answer Select.req within T6 ({:?})",
            dial.address, dial.t6
        )),
    }
}

/// Moves messages until either side ends; returns why it ended.
async fn relay(
    mut reader: Reader,
    mut wr: OwnedWriteHalf,
    mut out: mpsc::Receiver<Message>,
    dial: &Dial,
    events: &mpsc::Sender<(BackendId, BackendEvent)>,
) -> String {
    loop {
        tokio::select! {
            m = out.recv() => match m {
                Some(m) => {
                    if let Err(e) = write(&mut wr, &m).await {
                        return e;
                    }
                }
                None => {
                    // The session let this backend go: what was queued is written.
                    let _ = wr.shutdown().await;
                    return "closed by zerodown".into();
                }
            },
            m = reader.next() => match m {
                Ok(m) => {
                    if events.send((dial.id, BackendEvent::Message(m))).await.is_err() {
                        return "session gone".into();
                    }
                }
                Err(e) => return e,
            },
        }
    }
}

async fn write(wr: &mut OwnedWriteHalf, m: &Message) -> Result<(), String> {
    let mut buf = BytesMut::with_capacity(m.encoded_len());
    codec::encode(m, &mut buf).map_err(|e| e.to_string())?;
    wr.write_all(&buf)
        .await
        .map_err(|e| format!("write failed: {e}"))
}

/// Reads whole messages from a backend. Backends are trusted more than equipment, but the same
/// length limit applies.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
}

impl Reader {
    fn new(rd: OwnedReadHalf, max: u32) -> Reader {
        Reader {
            rd,
            buf: BytesMut::with_capacity(4096),
            decoder: Decoder::new(max),
        }
    }

    async fn next(&mut self) -> Result<Message, String> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(format!("bad frame from backend: {e}")),
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) => return Err("backend closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }
}
