//! A demo HSMS host: the backend side of the HSMS front-end, answering many equipment-facing
//! sessions (zerodown's) at once. It answers S1F1 with S1F2 naming its version, S1F13 with S1F14
//! and S6F11 with S6F12 (both accepted), and any other W-bit primary with an empty secondary,
//! after `delay`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::hsms::codec::{self, Decoder, Message, SType};

/// What a demo HSMS host answers.
#[derive(Debug, Clone)]
pub struct HsmsHost {
    pub version: String,
    /// Held before every data reply (to show a switch waiting for a slow transaction).
    pub delay: Duration,
}

/// Serves `host` on `listener` until the future is dropped, which also ends its sessions (as a
/// crashed host would).
pub async fn serve(listener: TcpListener, host: HsmsHost) {
    let host = Arc::new(host);
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            a = listener.accept() => {
                let Ok((stream, _)) = a else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                sessions.spawn(session(stream, Arc::clone(&host)));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// Binds and spawns one demo host; returns its address.
pub async fn spawn(
    addr: std::net::SocketAddr,
    host: HsmsHost,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, host));
    Ok(local)
}

async fn session(stream: TcpStream, host: Arc<HsmsHost>) {
    let (mut rd, mut wr) = stream.into_split();
    // Replies may be delayed; a writer task keeps reading (and Linktests) going meanwhile.
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(m) = rx.recv().await {
            buf.clear();
            if codec::encode(&m, &mut buf).is_err() || wr.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut decoder = Decoder::new(16 << 20);
    let mut buf = BytesMut::with_capacity(4096);
    let mut selected = false;
    'read: loop {
        loop {
            let m = match decoder.decode(&mut buf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => break 'read,
            };
            let h = &m.header;
            match h.stype {
                SType::SelectReq => {
                    let status = if selected {
                        codec::SELECT_ALREADY_ACTIVE
                    } else {
                        codec::SELECT_OK
                    };
                    selected = true;
                    let _ = tx.send(codec::select_rsp(h, status));
                }
                SType::LinktestReq => {
                    let _ = tx.send(codec::linktest_rsp(h));
                }
                SType::DeselectReq => {
                    selected = false;
                    let _ = tx.send(codec::deselect_rsp(h, codec::DESELECT_OK));
                }
                SType::SeparateReq => break 'read,
                SType::Data if m.expects_reply() => {
                    let reply = reply(&m, &host.version);
                    if host.delay.is_zero() {
                        let _ = tx.send(reply);
                    } else {
                        let (tx, delay) = (tx.clone(), host.delay);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(reply);
                        });
                    }
                }
                _ => {}
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The secondary for a W-bit primary.
fn reply(m: &Message, version: &str) -> Message {
    let h = &m.header;
    let body = match (h.stream, h.function) {
        // S1F2 On Line Data: <L[2] <A MDLN> <A SOFTREV>>, SOFTREV naming the version.
        (1, 1) => list(&[ascii("zerodown-demo"), ascii(version)]),
        // S1F14 Establish Communications Acknowledge: <L[2] <B 0> <L[0]>> (COMMACK accepted).
        (1, 13) => Bytes::from_static(&[0x01, 0x02, 0x21, 0x01, 0x00, 0x01, 0x00]),
        // S6F12 Event Report Acknowledge: <B 0> (accepted).
        (6, 11) => Bytes::from_static(&[0x21, 0x01, 0x00]),
        _ => Bytes::new(),
    };
    Message::data(
        h.session_id,
        h.stream,
        h.function.wrapping_add(1),
        false,
        h.system,
        body,
    )
}

/// A SECS-II ASCII item (format code 0o20, one length byte).
fn ascii(s: &str) -> Bytes {
    let b = &s.as_bytes()[..s.len().min(255)];
    let mut out = BytesMut::with_capacity(2 + b.len());
    out.put_u8(0x41);
    out.put_u8(b.len() as u8);
    out.put_slice(b);
    out.freeze()
}

/// A SECS-II list of items (format code 0, one length byte: the item count).
fn list(items: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(0x01);
    out.put_u8(items.len() as u8);
    for i in items {
        out.put_slice(i);
    }
    out.freeze()
}

/// The version an S1F2 from a demo host names (its second ASCII item), for tests and tools.
pub fn s1f2_version(body: &[u8]) -> Option<String> {
    // <L[2] <A n> ...> : 0x01 0x02 0x41 n <n bytes> 0x41 m <m bytes>
    let rest = body.strip_prefix(&[0x01, 0x02])?;
    let (&f1, rest) = rest.split_first()?;
    let (&n1, rest) = rest.split_first()?;
    if f1 != 0x41 || rest.len() < n1 as usize {
        return None;
    }
    let rest = &rest[n1 as usize..];
    let (&f2, rest) = rest.split_first()?;
    let (&n2, rest) = rest.split_first()?;
    if f2 != 0x41 || rest.len() < n2 as usize {
        return None;
    }
    String::from_utf8(rest[..n2 as usize].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s1f2_names_the_version() {
        let req = Message::data(1, 1, 1, true, 7, Bytes::new());
        let r = reply(&req, "v2");
        assert_eq!((r.header.stream, r.header.function), (1, 2));
        assert_eq!(r.header.system, 7);
        assert!(!r.header.w_bit);
        assert_eq!(s1f2_version(&r.body).as_deref(), Some("v2"));
        assert_eq!(s1f2_version(b"\x01\x02\x41"), None);
    }
}
