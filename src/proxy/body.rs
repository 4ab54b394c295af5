//! The body sent to clients: an upstream's streaming body (with its access-log record, written when
//! the body ends or the client goes away) or a short local answer.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::pool::Instance;
use crate::upstream::InFlight;

/// What one access-log line says.
#[derive(Debug)]
pub struct AccessRecord {
    pub start: Instant,
    pub method: Method,
    pub path: String,
    pub peer: IpAddr,
    pub request_id: HeaderValue,
    pub route: Option<String>,
    pub pool: Option<&'static str>,
    pub upstream: Option<Arc<Instance>>,
    pub status: StatusCode,
}

impl AccessRecord {
    pub fn emit(&self, bytes: u64, completed: bool) {
        let upstream = self.upstream.as_deref();
        tracing::info!(
            target: "zerodown::access",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            route = self.route.as_deref().unwrap_or(""),
            pool = self.pool.unwrap_or(""),
            upstream = upstream.map_or("", |i| i.address.as_str()),
            version = upstream.map_or("", |i| i.version.as_str()),
            duration_us = self.start.elapsed().as_micros() as u64,
            bytes,
            completed,
            peer = %self.peer,
            request_id = self.request_id.to_str().unwrap_or(""),
        );
    }
}

/// Response body for clients.
#[derive(Debug)]
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Box<Streamed>),
}

impl ProxyBody {
    pub fn text(s: &'static str) -> ProxyBody {
        ProxyBody::Full(Some(Bytes::from_static(s.as_bytes())))
    }
}

/// An upstream body in flight to a client.
#[derive(Debug)]
pub struct Streamed {
    pub body: Incoming,
    pub log: Option<AccessRecord>,
    pub bytes: u64,
    pub done: bool,
    pub _in_flight: InFlight,
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.emit(self.bytes, self.done || self.body.is_end_stream());
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(s) => {
                let polled = Pin::new(&mut s.body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            s.bytes += d.len() as u64;
                        }
                    }
                    Poll::Ready(None) => s.done = true,
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(d) => d.is_none(),
            ProxyBody::Upstream(s) => s.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(s) => s.body.size_hint(),
        }
    }
}
