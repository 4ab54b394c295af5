//! Parking idle HTTP/1 connections: hyper keeps an 8 KB read buffer and an 8 KB write buffer for
//! as long as its connection lives, so an idle keep-alive client costs ~16 KB before anything of
//! zerodown's. [`Parkable`] lets the connection loop end hyper's connection at a message boundary
//! without closing the socket (it reads as end of stream there), hold the bare socket, and start
//! a fresh hyper connection when the next bytes arrive, fed those bytes first.
//!
//! hyper must see the end of stream only when it holds nothing: no unparsed bytes (the framing
//! check says the stream stands at the start of a head), no request in flight (every response
//! body handed to hyper was dropped, so its head and body were encoded) and nothing unflushed.
//! Then hyper takes it as a client closing an idle connection: no answer, no `Connection: close`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::strict::Strict;

/// What the connection loop, the service and the IO share about one client connection.
#[derive(Debug, Default)]
pub struct Activity {
    /// The framing check stood inside a request body after the last read.
    pub in_body: AtomicBool,
    /// Requests handed to the service.
    pub started: AtomicU64,
    /// Responses whose body hyper dropped (written out or abandoned).
    pub finished: AtomicU64,
    /// Draining or past its age: HTTP/1 answers say `Connection: close`.
    pub closing: AtomicBool,
    /// End hyper's connection at the next message boundary (to park or to close).
    pub stop: AtomicBool,
}

impl Activity {
    /// Requests handed to the service and not yet answered in full.
    pub fn in_flight(&self) -> u64 {
        self.started.load(Ordering::Relaxed) - self.finished.load(Ordering::Relaxed)
    }

    /// (started, finished): a change between two looks means the connection was not idle.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.finished.load(Ordering::Relaxed),
        )
    }
}

/// The client IO hyper is given: bytes read while parked first, then the framing-checked stream,
/// which reads as end of stream at a message boundary once [`Activity::stop`] is set.
pub struct Parkable<IO, A> {
    prefix: Bytes,
    io: Strict<IO>,
    act: Arc<A>,
    /// A write was accepted or refused since the last successful flush.
    unflushed: bool,
    /// hyper was given the end of stream at a boundary.
    stopped: bool,
}

impl<IO, A: AsRef<Activity>> Parkable<IO, A> {
    pub fn new(prefix: Bytes, io: Strict<IO>, act: Arc<A>) -> Parkable<IO, A> {
        Parkable {
            prefix,
            io,
            act,
            unflushed: false,
            stopped: false,
        }
    }

    /// The stream back, with any prefix hyper did not read, and whether hyper ended because it
    /// was given the end of stream at a boundary (rather than by itself or the client).
    pub fn into_inner(self) -> (Bytes, Strict<IO>, bool) {
        (self.prefix, self.io, self.stopped)
    }

    fn may_stop(&self) -> bool {
        let act = (*self.act).as_ref();
        act.stop.load(Ordering::Relaxed)
            && !self.unflushed
            && act.in_flight() == 0
            && self.io.at_message_start()
    }
}

impl<IO: AsyncRead + Unpin, A: AsRef<Activity>> AsyncRead for Parkable<IO, A> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        if this.may_stop() {
            this.stopped = true;
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if r.is_ready() {
            let in_body = this.io.in_body();
            (*this.act)
                .as_ref()
                .in_body
                .store(in_body, Ordering::Relaxed);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin, A> AsyncWrite for Parkable<IO, A> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.unflushed = true;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.unflushed = true;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.unflushed = false;
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that counts itself finished when hyper drops it.
pub struct Tracked<B, A: AsRef<Activity>> {
    body: B,
    act: Arc<A>,
}

impl<B, A: AsRef<Activity>> Tracked<B, A> {
    pub fn new(body: B, act: Arc<A>) -> Tracked<B, A> {
        Tracked { body, act }
    }
}

impl<B, A: AsRef<Activity>> Drop for Tracked<B, A> {
    fn drop(&mut self) {
        let act: &Activity = (*self.act).as_ref();
        act.finished.fetch_add(1, Ordering::Relaxed);
    }
}

impl<B: Body + Unpin, A: AsRef<Activity>> Body for Tracked<B, A> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The HTTP/2 prior-knowledge preface, which tells h2c from HTTP/1.1 on the cleartext port.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a cleartext connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniff {
    Http1,
    Http2,
    /// A prefix of the preface: read more.
    More,
}

pub fn sniff(first: &[u8]) -> Sniff {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Sniff::Http1
    } else if n == H2_PREFACE.len() {
        Sniff::Http2
    } else {
        Sniff::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_the_preface_from_http1() {
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Sniff::Http1);
        assert_eq!(sniff(b"P"), Sniff::More);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Sniff::More);
        assert_eq!(sniff(b"POST / HTTP/1.1\r\n"), Sniff::Http1);
        assert_eq!(sniff(H2_PREFACE), Sniff::Http2);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(sniff(&more), Sniff::Http2);
    }
}
