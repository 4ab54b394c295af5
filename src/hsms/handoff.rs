//! Equipment sessions across an upgrade. The old process drains each session's backend at a
//! message boundary (the relay's hand-over), then sends the equipment socket with a parcel: the
//! session's state, the primaries waiting for a backend (with their age, so T3 keeps counting) and
//! the bytes of a message the equipment had only begun to send. The successor adopts it with no
//! backend and selects its own, as a switch does; the equipment sees no disconnect and no Deselect.
//! A parcel that cannot be sent stays here: the old process takes the session back and serves it.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use super::codec::{self, Decoder};
use super::relay::HandOff;
use super::state::Hsms;

/// What a session is besides its socket: everything the next process needs to carry it on.
pub struct Parcel {
    pub head: Head,
    pub off: HandOff,
    /// Bytes of a message the equipment had only begun to send.
    pub pending: BytesMut,
}

/// The parcel's fixed part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    /// The session's id in the process that sends it (for the logs).
    pub session: u64,
    pub equipment: String,
    /// The version its data went to: the next process switches from there.
    pub serving: Option<String>,
    /// Upgrades this session has lived through, this one included.
    pub upgrades: u64,
    pub switches: u64,
    pub rollbacks: u64,
    selected: bool,
    t7_left_us: Option<u64>,
    /// Age of each queued primary, in order; their encoded frames follow the head.
    queued_age_us: Vec<u64>,
    queued_bytes: usize,
}

impl Parcel {
    /// `u32` head length, the head as JSON, the queued frames, the pending bytes.
    pub fn encode(&mut self) -> Result<Vec<u8>, String> {
        let mut frames = BytesMut::new();
        for (m, _) in &self.off.queue {
            codec::encode(m, &mut frames).map_err(|e| e.to_string())?;
        }
        self.head.selected = self.off.selected;
        self.head.t7_left_us = self.off.t7_left.map(|d| d.as_micros() as u64);
        self.head.queued_age_us = self
            .off
            .queue
            .iter()
            .map(|(_, a)| a.as_micros() as u64)
            .collect();
        self.head.queued_bytes = frames.len();
        let head = serde_json::to_vec(&self.head).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(4 + head.len() + frames.len() + self.pending.len());
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&frames);
        out.extend_from_slice(&self.pending);
        Ok(out)
    }

    /// Reads what [`Parcel::encode`] wrote; the error names what is wrong. The queued primaries
    /// passed the previous process's size limit already: this process's `max_message_bytes`
    /// applies to what the equipment sends next, not to messages it was promised delivery of.
    pub fn decode(bytes: &[u8]) -> Result<Parcel, String> {
        let short = || "the hand-over message is cut short".to_string();
        let len = bytes.get(..4).ok_or_else(short)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let head = bytes.get(4..4 + len).ok_or_else(short)?;
        let head: Head =
            serde_json::from_slice(head).map_err(|e| format!("unreadable head: {e}"))?;
        let rest = &bytes[4 + len..];
        let frames = rest.get(..head.queued_bytes).ok_or_else(short)?;
        let mut frames = BytesMut::from(frames);
        // No frame is longer than the bytes it comes in: a damaged length cannot make it allocate.
        let mut decoder = Decoder::new(u32::try_from(frames.len()).unwrap_or(u32::MAX));
        let mut queue = Vec::with_capacity(head.queued_age_us.len());
        for age in &head.queued_age_us {
            let m = decoder
                .decode(&mut frames)
                .map_err(|e| format!("a queued primary: {e}"))?
                .ok_or_else(short)?;
            queue.push((m, Duration::from_micros(*age)));
        }
        if !frames.is_empty() {
            return Err("more queued bytes than queued primaries".into());
        }
        let off = HandOff {
            selected: head.selected,
            t7_left: head.t7_left_us.map(Duration::from_micros),
            queue,
        };
        let pending = BytesMut::from(&rest[head.queued_bytes..]);
        Ok(Parcel { head, off, pending })
    }
}

impl Head {
    pub fn new(session: u64, equipment: String, serving: Option<String>) -> Head {
        Head {
            session,
            equipment,
            serving,
            upgrades: 0,
            switches: 0,
            rollbacks: 0,
            selected: false,
            t7_left_us: None,
            queued_age_us: Vec::new(),
            queued_bytes: 0,
        }
    }
}

/// Sends a session to the successor. On failure the socket and the parcel come back: the
/// session stays in this process.
pub async fn send(
    h: &Hsms,
    stream: std::net::TcpStream,
    mut parcel: Parcel,
) -> Result<(), (std::net::TcpStream, Parcel, String)> {
    let Some(next) = h.successor() else {
        return Err((stream, parcel, "no successor to hand it to".into()));
    };
    let payload = match parcel.encode() {
        Ok(p) => p,
        Err(e) => return Err((stream, parcel, e)),
    };
    let sent = tokio::task::spawn_blocking(move || {
        let r = next.send_session(&payload, stream.as_fd());
        (stream, r)
    })
    .await;
    match sent {
        Ok((_, Ok(()))) => Ok(()),
        Ok((stream, Err(e))) => Err((stream, parcel, e.to_string())),
        // The blocking task panicked: the socket went with it, nothing left to keep.
        Err(e) => {
            tracing::error!(target: "zerodown::hsms", error = %e, "hand-over task failed");
            Ok(())
        }
    }
}

/// One session received from the previous process, to be served here.
pub struct Adoption {
    pub stream: std::net::TcpStream,
    pub parcel: Parcel,
}

/// Reads a session the previous process sent; the error names what is wrong with it.
pub fn receive(payload: &[u8], fd: OwnedFd) -> Result<Adoption, String> {
    let parcel = Parcel::decode(payload)?;
    let stream = std::net::TcpStream::from(fd);
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("cannot use the equipment socket: {e}"))?;
    Ok(Adoption { stream, parcel })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsms::codec::Message;

    #[test]
    fn a_parcel_carries_the_queue_in_order_and_the_half_sent_message() {
        let m = |sys| Message::data(1, 6, 11, true, sys, bytes::Bytes::from_static(b"\x01\x00"));
        let off = HandOff {
            selected: true,
            t7_left: None,
            queue: vec![
                (m(7), Duration::from_millis(30)),
                (m(8), Duration::from_millis(5)),
            ],
        };
        let mut head = Head::new(3, "127.0.0.1:4000".into(), Some("v1".into()));
        head.upgrades = 2;
        let mut p = Parcel {
            head,
            off: off.clone(),
            pending: BytesMut::from(&b"\x00\x00\x00\x0c\x00"[..]),
        };
        let bytes = p.encode().unwrap();
        let back = Parcel::decode(&bytes).unwrap();
        assert_eq!(back.off, off);
        assert_eq!(&back.pending[..], b"\x00\x00\x00\x0c\x00");
        assert_eq!(back.head.serving.as_deref(), Some("v1"));
        assert_eq!((back.head.session, back.head.upgrades), (3, 2));

        let err = Parcel::decode(&bytes[..bytes.len() - 20]).err().unwrap();
        assert!(err.contains("cut short"), "{err}");
        assert!(Parcel::decode(b"\x00\x00\x00\x02{}")
            .err()
            .unwrap()
            .contains("unreadable head"));
    }
}
