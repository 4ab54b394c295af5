//! Strict HTTP/1 request framing, checked on the raw bytes before hyper parses them.
//!
//! hyper resolves some ambiguous heads leniently before zerodown sees them: with both
//! `Content-Length` and `Transfer-Encoding` it drops the length (RFC 9112 6.3), and it accepts bare
//! LF line endings (RFC 9112 2.2 allows that). A proxy in front of other parsers must refuse both,
//! since the next hop may read them differently (request smuggling). [`Strict`] wraps a client
//! connection and follows the byte stream message by message (head, then a body framed by
//! `Content-Length` or chunked coding) so it knows where every head starts. Each head line is
//! checked as its LF arrives, before hyper can read that LF, so hyper never holds a complete bad
//! head: from the refused line on, the stream is replaced by a byte hyper cannot parse, so hyper
//! answers 400 and closes the connection after the responses already owed,
//! and the rest of the stream is never read. The upstream receives nothing of it.
//!
//! The body tracker is deliberately lenient: on anything it does not understand (a malformed chunk
//! line, the h2 preface) it stops checking and leaves the connection to hyper, whose
//! own parser refuses malformed bodies.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::telemetry::metrics::{Lv, Metrics, L1};

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A line ends in LF without CR.
    BareLf,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// `Content-Length` values that are not one decimal number.
    BadLength,
    /// `Transfer-Encoding` whose last coding is not `chunked`, or on HTTP/1.0.
    BadTransferEncoding,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BareLf => "bare LF line ending",
            Refusal::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Refusal::BadLength => "invalid or differing Content-Length",
            Refusal::BadTransferEncoding => "Transfer-Encoding not ending in chunked",
        }
    }
}

/// What [`Framer::feed`] found in a slice of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Every byte may go to hyper.
    Pass,
    /// Bytes from `at` on must not: `at` is the LF of the head line that shows the head is bad.
    Refuse { at: usize, why: Refusal },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a size line.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: extensions until CR.
    Ext {
        value: u64,
    },
    /// After the size line's CR.
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Fixed(u64),
    Chunked(Chunk),
    /// Checking stopped; hyper judges the rest.
    Off,
    /// A head was refused; nothing more is read.
    Refused(Refusal),
}

/// Follows one HTTP/1 request stream. Pure: fed slices, it reports where a head is refused.
/// Head lines are checked as they complete, mostly in place; only a line split across reads is
/// copied.
#[derive(Debug)]
pub struct Framer {
    state: State,
    /// The start of a line that continues in the next read.
    partial: Vec<u8>,
    /// What the head read so far says.
    head: HeadFacts,
    max_head: usize,
}

/// The facts of the head being read that decide its framing.
#[derive(Debug, Default)]
struct HeadFacts {
    bytes: usize,
    request_line: bool,
    http10: bool,
    length: Option<u64>,
    te: bool,
    chunked_last: bool,
    /// Stop after this message: the h2 preface. (zerodown refuses CONNECT and never answers an
    /// `Upgrade` with 101, so hyper keeps reading HTTP/1 after those, and so does this.)
    off_after: bool,
}

impl Framer {
    /// `max_head` is the listener's head limit: a longer head is left to hyper, which answers 431.
    pub fn new(max_head: usize) -> Framer {
        Framer {
            state: State::Head,
            partial: Vec::new(),
            head: HeadFacts::default(),
            max_head,
        }
    }

    /// Advances over `data`, the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> Feed {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Off => return Feed::Pass,
                State::Refused(why) => return Feed::Refuse { at: i, why },
                State::Head => {
                    let Some(p) = memchr::memchr(b'\n', &data[i..]) else {
                        self.partial.extend_from_slice(&data[i..]);
                        self.grow_head(data.len() - i);
                        return Feed::Pass;
                    };
                    let lf = i + p;
                    self.grow_head(p + 1);
                    if self.state != State::Head {
                        return Feed::Pass;
                    }
                    let verdict = if self.partial.is_empty() {
                        self.line(&data[i..lf])
                    } else {
                        let mut line = std::mem::take(&mut self.partial);
                        line.extend_from_slice(&data[i..lf]);
                        let v = self.line(&line);
                        line.clear();
                        self.partial = line;
                        v
                    };
                    if let Err(why) = verdict {
                        self.state = State::Refused(why);
                        return Feed::Refuse { at: lf, why };
                    }
                    i = lf + 1;
                }
                State::Fixed(n) => {
                    let take = n.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = State::Fixed(n - take);
                    if n == take {
                        self.end_message();
                    }
                }
                State::Chunked(Chunk::Data(n)) => {
                    let take = n.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = State::Chunked(if n == take {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(n - take)
                    });
                }
                State::Chunked(c) => {
                    self.chunk_byte(c, data[i]);
                    i += 1;
                }
            }
        }
        Feed::Pass
    }

    fn grow_head(&mut self, n: usize) {
        self.head.bytes += n;
        if self.head.bytes > self.max_head {
            self.state = State::Off;
            self.partial = Vec::new();
        }
    }

    /// One head line, without its LF.
    fn line(&mut self, line: &[u8]) -> Result<(), Refusal> {
        let Some(line) = line.strip_suffix(b"\r") else {
            return Err(Refusal::BareLf);
        };
        if line.is_empty() {
            // Leading empty lines are skipped, as hyper does; after the request line, the end.
            return if self.head.request_line {
                self.finish_head()
            } else {
                Ok(())
            };
        }
        if !self.head.request_line {
            self.head.request_line = true;
            // The h2 prior-knowledge preface: hyper takes the connection as HTTP/2.
            self.head.off_after = line == b"PRI * HTTP/2.0";
            self.head.http10 = line.ends_with(b"HTTP/1.0");
            return Ok(());
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Ok(()); // hyper refuses it
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                for part in value.split(|&b| b == b',') {
                    let n = parse_length(part.trim_ascii()).ok_or(Refusal::BadLength)?;
                    if self.head.length.is_some_and(|l| l != n) {
                        return Err(Refusal::BadLength);
                    }
                    self.head.length = Some(n);
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                self.head.te = true;
                if let Some(c) = value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .rfind(|c| !c.is_empty())
                {
                    self.head.chunked_last = c.eq_ignore_ascii_case(b"chunked");
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish_head(&mut self) -> Result<(), Refusal> {
        let h = std::mem::take(&mut self.head);
        self.head.off_after = h.off_after;
        match (h.te, h.length) {
            (true, Some(_)) => Err(Refusal::LengthAndChunked),
            (true, None) if !h.chunked_last || h.http10 => Err(Refusal::BadTransferEncoding),
            (true, None) => {
                self.state = State::Chunked(Chunk::Size {
                    value: 0,
                    digits: 0,
                });
                Ok(())
            }
            (false, Some(n)) if n > 0 => {
                self.state = State::Fixed(n);
                Ok(())
            }
            (false, _) => {
                self.end_message();
                Ok(())
            }
        }
    }

    fn end_message(&mut self) {
        let off = std::mem::take(&mut self.head).off_after;
        self.state = if off { State::Off } else { State::Head };
    }

    fn chunk_byte(&mut self, c: Chunk, b: u8) {
        self.state = State::Chunked(match (c, b) {
            (Chunk::Size { value, digits }, _) if b.is_ascii_hexdigit() && digits < 16 => {
                Chunk::Size {
                    value: value << 4 | u64::from(hex(b)),
                    digits: digits + 1,
                }
            }
            (Chunk::Size { value, digits }, b';' | b' ' | b'\t') if digits > 0 => {
                Chunk::Ext { value }
            }
            (Chunk::Size { value, digits }, b'\r') if digits > 0 => Chunk::SizeLf { value },
            (Chunk::Ext { value }, b'\r') => Chunk::SizeLf { value },
            (Chunk::Ext { value }, _) if b != b'\n' => Chunk::Ext { value },
            (Chunk::SizeLf { value: 0 }, b'\n') => Chunk::TrailerStart,
            (Chunk::SizeLf { value }, b'\n') => Chunk::Data(value),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Size {
                value: 0,
                digits: 0,
            },
            (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::TrailerStart | Chunk::Trailer, _) if b != b'\n' => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
            (Chunk::EndLf, b'\n') => return self.end_message(),
            // Malformed (hyper's chunked decoder refuses it): stop following the stream.
            _ => return self.off(),
        });
    }

    fn off(&mut self) {
        self.state = State::Off;
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Replaces a refused head: a NUL is no valid byte anywhere in a head, so hyper's parser fails on
/// it whatever came before, answers 400 and closes.
const POISON: &[u8] = b"\0\r\n\r\n";

/// A client connection whose HTTP/1 request heads are checked by a [`Framer`] before hyper reads
/// them.
pub struct Strict<IO> {
    io: IO,
    framer: Framer,
    /// Bytes of [`POISON`] handed out so far, once a head is refused.
    poisoned: usize,
    peer: std::net::SocketAddr,
    refused: Family<L1, Counter>,
}

impl<IO> Strict<IO> {
    pub fn new(
        io: IO,
        max_head: usize,
        peer: std::net::SocketAddr,
        metrics: &Metrics,
    ) -> Strict<IO> {
        Strict {
            io,
            framer: Framer::new(max_head),
            poisoned: 0,
            peer,
            refused: metrics.requests_refused.clone(),
        }
    }
}

impl<IO> Strict<IO> {
    /// Every byte read so far belongs to a complete message: the next one starts a head.
    pub fn at_message_start(&self) -> bool {
        self.framer.state == State::Head && self.framer.head.bytes == 0
    }

    /// The last read ended inside a request body.
    pub fn in_body(&self) -> bool {
        matches!(self.framer.state, State::Fixed(_) | State::Chunked(_))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Strict<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.framer.state, State::Refused(_)) {
            // The poison, then end of stream: the refused request's bytes are never read.
            let rest = &POISON[this.poisoned..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.poisoned += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if let Feed::Refuse { at, why } = this.framer.feed(&buf.filled()[before..]) {
            tracing::debug!(target: "zerodown::server", peer = %this.peer, reason = why.as_str(), "request refused: ambiguous framing");
            this.refused
                .get_or_create(&[("reason", Lv::S(why.as_str()))])
                .inc();
            buf.set_filled(before + at);
            let n = POISON.len().min(buf.remaining());
            buf.put_slice(&POISON[..n]);
            this.poisoned = n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Strict<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` split at every possible point (and byte by byte); all splits must agree.
    fn run(stream: &[u8]) -> Option<(usize, Refusal)> {
        let whole = first_refusal(stream, &[stream.len()]);
        for cut in 0..=stream.len() {
            assert_eq!(
                first_refusal(stream, &[cut, stream.len()]),
                whole,
                "split at {cut}"
            );
        }
        let bytes: Vec<usize> = (1..=stream.len()).collect();
        assert_eq!(first_refusal(stream, &bytes), whole, "byte by byte");
        whole
    }

    /// The stream offset of the first refusal, feeding slices that end at `cuts`.
    fn first_refusal(stream: &[u8], cuts: &[usize]) -> Option<(usize, Refusal)> {
        let mut f = Framer::new(64 * 1024);
        let mut start = 0;
        for &end in cuts {
            if let Feed::Refuse { at, why } = f.feed(&stream[start..end]) {
                return Some((start + at, why));
            }
            start = end;
        }
        None
    }

    #[test]
    fn good_streams_pass() {
        for s in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;x=y\r\nhel\nl\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\n\n\x00\x00",
        ] {
            assert_eq!(run(s), None, "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn body_bytes_are_never_read_as_a_head() {
        // Bare LFs and a second framing header inside bodies are data, not heads.
        let s = b"POST / HTTP/1.1\r\nContent-Length: 45\r\n\r\nGET /\nContent-Length: 1\nTransfer-Encoding: x\n";
        assert_eq!(run(&s[..]), None);
        let s =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nGET /\n\n\nX\r\n0\r\n\r\n";
        assert_eq!(run(&s[..]), None);
    }

    /// Where the `n`th LF (from 1) of `stream` is.
    fn lf(stream: &[u8], n: usize) -> usize {
        stream
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(n - 1)
            .unwrap()
            .0
    }

    #[test]
    fn ambiguous_heads_are_refused_on_the_line_that_shows_it() {
        // (stream, reason, the LF by which the refusal is certain)
        let cases: [(&[u8], Refusal, usize); 8] = [
            (b"GET / HTTP/1.1\nHost: a\n\n", Refusal::BareLf, 1),
            (b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", Refusal::BareLf, 2),
            (b"\nGET / HTTP/1.1\r\n\r\n", Refusal::BareLf, 1),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Refusal::LengthAndChunked, 4),
            (b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\nX: y\r\n\r\n", Refusal::LengthAndChunked, 5),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Refusal::BadLength, 3),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\nX: y\r\n\r\n", Refusal::BadLength, 2),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Refusal::BadTransferEncoding, 3),
        ];
        for (s, why, n) in cases {
            assert_eq!(
                run(s),
                Some((lf(s, n), why)),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn a_refused_head_after_good_messages_is_found_where_it_ends() {
        let good = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n";
        let s = [&good[..], &bad[..]].concat();
        let head_end = good.len() + bad.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 3;
        assert_eq!(run(&s), Some((head_end, Refusal::LengthAndChunked)));
    }

    #[test]
    fn checking_stops_where_hyper_takes_over() {
        // A malformed chunk line and an over-long head: later bytes are not judged.
        let after = b"GET / HTTP/1.1\nX: y\n\n";
        let first = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(run(&[&first[..], &after[..]].concat()), None);
        let mut f = Framer::new(16);
        assert_eq!(
            f.feed(b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaa\n\n"),
            Feed::Pass
        );
    }

    #[test]
    fn upgrade_and_connect_do_not_switch_checking_off() {
        // zerodown never tunnels, so hyper goes on parsing HTTP/1 after these; so must the check.
        let bad = b"GET / HTTP/1.1\nX: y\n\n";
        for first in [
            &b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
            b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
        ] {
            let s = [first, &bad[..]].concat();
            assert_eq!(run(&s), Some((first.len() + 14, Refusal::BareLf)));
        }
    }
}
