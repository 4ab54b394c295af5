//! The body sent to clients — an upstream's streaming body, or a short local answer — and the
//! [`Outcome`] of each request, recorded (metrics, access log) when the body ends or the client
//! goes away.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::core::InFlight;
use crate::core::Instance;
use crate::http::upstream::{ConnPool, Sender};
use crate::telemetry::metrics::{status_class, Lv, Metrics};

/// Fields only the access log needs; absent when it is off.
#[derive(Debug)]
pub struct LogFields {
    pub method: Method,
    pub path: String,
    pub peer: IpAddr,
    pub sample: f64,
}

/// What one request did; recorded once, on drop.
pub struct Outcome {
    pub start: Instant,
    pub metrics: Arc<Metrics>,
    pub request_id: HeaderValue,
    pub service: Lv,
    pub route: Lv,
    pub pool: &'static str,
    pub upstream: Option<Arc<Instance>>,
    pub status: StatusCode,
    pub bytes: u64,
    pub completed: bool,
    pub log: Option<LogFields>,
}

impl Outcome {
    pub fn new(metrics: Arc<Metrics>, request_id: HeaderValue, log: Option<LogFields>) -> Outcome {
        metrics.in_flight.inc();
        Outcome {
            start: Instant::now(),
            metrics,
            request_id,
            service: Lv::S(""),
            route: Lv::S(""),
            pool: "",
            upstream: None,
            status: StatusCode::OK,
            bytes: 0,
            completed: true,
            log,
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        let m = &self.metrics;
        m.in_flight.dec();
        let elapsed = self.start.elapsed();
        let at = crate::telemetry::metrics::Where {
            service: &self.service,
            route: &self.route,
            pool: self.pool,
        };
        m.request_series.record(
            m,
            at,
            status_class(self.status.as_u16()),
            self.upstream.as_ref(),
            elapsed.as_secs_f64(),
        );
        let Some(log) = &self.log else { return };
        let always = self.status.is_server_error() || !self.completed;
        if !always && log.sample < 1.0 && fastrand::f64() >= log.sample {
            return;
        }
        let upstream = self.upstream.as_deref();
        tracing::info!(
            target: "zerodown::access",
            method = %log.method,
            path = %log.path,
            status = self.status.as_u16(),
            service = self.service.as_str(),
            route = self.route.as_str(),
            pool = self.pool,
            upstream = upstream.map(|i| i.address.as_str()),
            version = upstream.map(|i| i.version.as_str()),
            duration_us = elapsed.as_micros() as u64,
            bytes = self.bytes,
            completed = self.completed,
            peer = %log.peer,
            request_id = self.request_id.to_str().ok(),
        );
    }
}

/// Response body for clients.
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
pub struct Streamed {
    pub body: Incoming,
    /// A frame read ahead of the head (see `first_frame`), handed out first.
    pub first: Option<Frame<Bytes>>,
    pub outcome: Outcome,
    /// The upstream body reported its end.
    pub done: bool,
    pub in_flight: InFlight,
    /// The connection the body arrives on, returned to the pool once the body has ended.
    pub sender: Option<Sender>,
    pub max_idle: usize,
}

impl Streamed {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            let endpoint = self.in_flight.endpoint();
            ConnPool::of(endpoint).put_idle(endpoint, sender, self.max_idle);
        }
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        self.outcome.completed = self.done || (self.first.is_none() && self.body.is_end_stream());
        if self.outcome.completed {
            self.release();
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
                let polled = match s.first.take() {
                    Some(f) => Poll::Ready(Some(Ok(f))),
                    None => Pin::new(&mut s.body).poll_frame(cx),
                };
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            s.outcome.bytes += d.len() as u64;
                        }
                    }
                    Poll::Ready(None) => {
                        s.done = true;
                        s.release();
                    }
                    _ => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(d) => d.is_none(),
            ProxyBody::Upstream(s) => s.first.is_none() && s.body.is_end_stream(),
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
