//! A hand-rolled HTTP/2 (h2c, prior knowledge) client for flood tests: frames are written as raw
//! bytes, so a test can do what no well-behaved client library does (reset streams as fast as it
//! opens them, never end a header block). HPACK is encoded by hand with literals only.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

pub const NO_ERROR: u32 = 0x0;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// A GOAWAY as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream: u32,
    pub code: u32,
    /// The debug data, e.g. h2's `too_many_resets`.
    pub debug: String,
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an `n`-bit prefix whose high bits are `first`.
pub fn hpack_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Literal header field without indexing, new name (no Huffman).
pub fn hpack_literal(name: &str, value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    hpack_int(0, 7, name.len(), out);
    out.extend_from_slice(name.as_bytes());
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value);
}

/// Literal without indexing whose name is static-table entry `index`.
pub fn hpack_literal_indexed_name(index: usize, value: &[u8], out: &mut Vec<u8>) {
    hpack_int(0x00, 4, index, out);
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value);
}

/// `GET http://<authority><path>` as an HPACK block.
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    hpack_literal_indexed_name(4, path.as_bytes(), &mut b); // :path
    hpack_literal_indexed_name(1, authority.as_bytes(), &mut b); // :authority
    b
}

pub fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A raw h2c connection whose handshake is done: our preface and SETTINGS sent, the server's
/// SETTINGS read and acknowledged.
pub struct H2 {
    pub read: OwnedReadHalf,
    write: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
    /// The server's initial SETTINGS, as (id, value).
    pub settings: Vec<(u16, u32)>,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> H2 {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        let mut h = H2 {
            read,
            write: Some(write),
            buf: Vec::new(),
            settings: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        h.send(&hello).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let f = tokio::time::timeout_at(deadline, h.next_frame())
                .await
                .expect("no SETTINGS from the server within 5s")
                .expect("server closed during the h2 handshake");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                h.settings = f
                    .payload
                    .chunks(6)
                    .filter(|c| c.len() == 6)
                    .map(|c| {
                        (
                            u16::from_be_bytes([c[0], c[1]]),
                            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                        )
                    })
                    .collect();
                h.send(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
                return h;
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let w = self.write.as_mut().expect("writer handed to a flood task");
        w.write_all(bytes).await
    }

    /// Writes `batches` from a task of its own, so GOAWAY can be read while the flood is still
    /// being written (a server that closes with unread input resets the socket, which can discard
    /// a GOAWAY not yet read). Write errors end the flood quietly: the server hung up.
    /// The task returns how many batches were written, and the write half (dropping it would send
    /// FIN, which must not happen before the reader is done).
    pub fn flood(
        &mut self,
        batches: Vec<Vec<u8>>,
    ) -> tokio::task::JoinHandle<(usize, OwnedWriteHalf)> {
        let mut w = self.write.take().expect("one flood per connection");
        tokio::spawn(async move {
            let mut written = 0;
            for b in batches {
                if w.write_all(&b).await.is_err() {
                    break;
                }
                written += 1;
            }
            (written, w)
        })
    }

    pub fn setting(&self, id: u16) -> Option<u32> {
        self.settings
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// The next frame, or `None` at EOF or on a reset.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.read.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until a GOAWAY (returned), EOF (`Ok(None)`) or `wait` passes (`Err`).
    /// The other frames read are counted by kind into `seen`.
    pub async fn until_goaway(
        &mut self,
        wait: Duration,
        seen: &mut [usize; 16],
    ) -> Result<Option<GoAway>, String> {
        let read = async {
            while let Some(f) = self.next_frame().await {
                seen[(f.kind as usize).min(15)] += 1;
                if f.kind == GOAWAY && f.payload.len() >= 8 {
                    let p = &f.payload;
                    return Some(GoAway {
                        last_stream: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
                        code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                        debug: String::from_utf8_lossy(&p[8..]).into_owned(),
                    });
                }
            }
            None
        };
        tokio::time::timeout(wait, read)
            .await
            .map_err(|_| format!("neither GOAWAY nor close within {wait:?}"))
    }
}
