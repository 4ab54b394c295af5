//! Prometheus metrics, one registry per daemon (tests run several in one process). Label values are
//! [`Lv`]s, so the request path clones an `Arc` or a `&'static str` instead of allocating; pool
//! gauges are set when a snapshot is published, never per request.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use super::histogram::Histogram;
use crate::runtime::PerWorker;

/// Something that carries a version label without copying it (the core's instances).
pub trait VersionLabel: Send + Sync + std::fmt::Debug {
    fn version_label(&self) -> &str;
}

/// A label value: static, shared text, or an instance's version (no copy of the string).
#[derive(Debug, Clone)]
pub enum Lv {
    S(&'static str),
    A(Arc<str>),
    Version(Arc<dyn VersionLabel>),
}

impl Lv {
    pub fn as_str(&self) -> &str {
        match self {
            Lv::S(s) => s,
            Lv::A(s) => s,
            Lv::Version(i) => i.version_label(),
        }
    }
}

impl PartialEq for Lv {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Lv {}
impl Hash for Lv {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl EncodeLabelValue for Lv {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

pub type L1 = [(&'static str, Lv); 1];
pub type L2 = [(&'static str, Lv); 2];
pub type L3 = [(&'static str, Lv); 3];
pub type L5 = [(&'static str, Lv); 5];

fn histogram() -> Histogram {
    // 100 µs … ~52 s, doubling.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

type Hist<L = L1> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<L5, Counter>,
    /// `requests` and `request_duration` series found by pointer (see [`RequestSeries`]).
    pub request_series: RequestSeries,
    pub request_duration: Hist<L2>,
    pub in_flight: Gauge,
    pub connections_open: Gauge,
    /// Idle HTTP/1 client connections holding no hyper state (see `http::park`).
    pub connections_parked: Gauge,
    pub connections_refused: Counter,
    /// Client connections accepted, by worker thread (how evenly the workers share the load).
    pub connections_accepted: Family<L1, Counter>,
    pub requests_refused: Family<L1, Counter>,
    // Everything about pools and sources is by service first.
    pub connect_errors: Family<L2, Counter>,
    pub retries: Family<L2, Counter>,
    pub ejections: Family<L2, Counter>,
    pub timeouts: Family<L2, Counter>,
    pub pool_instances: Family<L2, Gauge>,
    pub pool_version: Family<L3, Gauge>,
    pub swaps: Family<L2, Counter>,
    pub gate_holds: Family<L3, Counter>,
    pub gate_hold_active: Family<L3, Gauge>,
    pub watch_requests: Family<L2, Counter>,
    pub watch_errors: Family<L2, Counter>,
    pub watch_duration: Hist<L2>,
    pub watch_last_index: Family<L1, Gauge>,
    pub hsms_sessions: Gauge,
    pub hsms_sessions_refused: Counter,
    /// Sessions at an upgrade, by outcome (`handed_over`, `adopted`, `kept`).
    pub hsms_handovers: Family<L1, Counter>,
    /// Data messages relayed, by direction (`to_backend`, `to_equipment`).
    pub hsms_messages: Family<L1, Counter>,
    /// Session switches, by outcome (`done`, `rolled_back`).
    pub hsms_switches: Family<L1, Counter>,
    pub hsms_switch_duration: Hist,
    /// Protocol events worth an alert, by kind (reject, t3_expired, transaction_lost, dropped, …).
    pub hsms_events: Family<L1, Counter>,
    pub hsms_queued: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("zerodown");
        let m = Metrics {
            requests: Family::default(),
            request_series: RequestSeries::default(),
            request_duration: Family::new_with_constructor(histogram),
            in_flight: Gauge::default(),
            connections_open: Gauge::default(),
            connections_parked: Gauge::default(),
            connections_refused: Counter::default(),
            connections_accepted: Family::default(),
            requests_refused: Family::default(),
            connect_errors: Family::default(),
            retries: Family::default(),
            ejections: Family::default(),
            timeouts: Family::default(),
            pool_instances: Family::default(),
            pool_version: Family::default(),
            swaps: Family::default(),
            gate_holds: Family::default(),
            gate_hold_active: Family::default(),
            watch_requests: Family::default(),
            watch_errors: Family::default(),
            watch_duration: Family::new_with_constructor(histogram),
            watch_last_index: Family::default(),
            hsms_sessions: Gauge::default(),
            hsms_sessions_refused: Counter::default(),
            hsms_handovers: Family::default(),
            hsms_messages: Family::default(),
            hsms_switches: Family::default(),
            hsms_switch_duration: Family::new_with_constructor(histogram),
            hsms_events: Family::default(),
            hsms_queued: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "requests",
            "Proxied and local requests by route, pool, status class and upstream version",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request to the end of the response body, by pool",
            m.request_duration.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests being served now",
            m.in_flight.clone(),
        );
        r.register(
            "client_connections_open",
            "Open client connections on the public listener",
            m.connections_open.clone(),
        );
        r.register(
            "client_connections_parked",
            "Idle HTTP/1 client connections parked without hyper's buffers",
            m.connections_parked.clone(),
        );
        r.register(
            "client_connections_refused",
            "Client connections closed at the connection limit",
            m.connections_refused.clone(),
        );
        r.register(
            "client_connections_accepted",
            "Client connections accepted, by worker thread",
            m.connections_accepted.clone(),
        );
        r.register(
            "requests_refused",
            "HTTP/1 requests refused with 400 for ambiguous framing (bare LF, CL with TE), by reason",
            m.requests_refused.clone(),
        );
        r.register(
            "upstream_connect_errors",
            "Failed connects to upstream instances, by pool",
            m.connect_errors.clone(),
        );
        r.register(
            "upstream_retries",
            "Requests tried again on another instance, by pool",
            m.retries.clone(),
        );
        r.register(
            "upstream_ejections",
            "Instances ejected after consecutive failures, by pool",
            m.ejections.clone(),
        );
        r.register(
            "upstream_timeouts",
            "Upstream responses that did not arrive in time (504), by pool",
            m.timeouts.clone(),
        );
        r.register(
            "pool_instances",
            "Instances each pool routes to",
            m.pool_instances.clone(),
        );
        r.register(
            "pool_serving_version",
            "1 for the version each pool serves",
            m.pool_version.clone(),
        );
        r.register(
            "swaps",
            "Snapshot swaps, by kind (membership, version_change, hold)",
            m.swaps.clone(),
        );
        r.register(
            "gate_holds",
            "Gate holds started, by pool and kind (empty, version)",
            m.gate_holds.clone(),
        );
        r.register(
            "gate_hold_active",
            "1 while a gate hold is in effect, by pool and kind",
            m.gate_hold_active.clone(),
        );
        r.register(
            "watch_requests",
            "Calls made by the upstream source, by watch",
            m.watch_requests.clone(),
        );
        r.register(
            "watch_errors",
            "Failed source calls, by watch",
            m.watch_errors.clone(),
        );
        r.register(
            "watch_duration_seconds",
            "Source call latency (blocking calls included), by watch",
            m.watch_duration.clone(),
        );
        r.register(
            "watch_last_index",
            "The last Consul index of the service watch",
            m.watch_last_index.clone(),
        );
        r.register(
            "hsms_sessions",
            "Equipment HSMS connections open",
            m.hsms_sessions.clone(),
        );
        r.register(
            "hsms_sessions_refused",
            "Equipment connections closed on accept (hsms.max_sessions reached)",
            m.hsms_sessions_refused.clone(),
        );
        r.register(
            "hsms_handovers",
            "Equipment sessions moved at an upgrade, by outcome (handed_over, adopted, kept: a hand-over failed and the session stayed)",
            m.hsms_handovers.clone(),
        );
        r.register(
            "hsms_messages",
            "HSMS data messages relayed, by direction",
            m.hsms_messages.clone(),
        );
        r.register(
            "hsms_switches",
            "HSMS session switches between backends, by outcome (done, rolled_back)",
            m.hsms_switches.clone(),
        );
        r.register(
            "hsms_switch_duration_seconds",
            "How long an HSMS session switch took (select, drain, flush), by outcome",
            m.hsms_switch_duration.clone(),
        );
        r.register(
            "hsms_events",
            "HSMS protocol events, by kind (reject, peer_reject, t3_expired, transaction_lost, dropped, t8_expired, bad_frame, not_selected)",
            m.hsms_events.clone(),
        );
        r.register(
            "hsms_queued",
            "Equipment primaries queued for a backend, over all sessions",
            m.hsms_queued.clone(),
        );
        let info: Family<L1, Gauge> = Family::default();
        info.get_or_create(&[("version", Lv::S(env!("CARGO_PKG_VERSION")))])
            .set(1);
        r.register("build_info", "zerodown's version", info);
        Metrics { registry: r, ..m }
    }

    /// Starts a service's known series at zero, so rate() and alerts see them before the first event.
    pub fn add_service(&self, service: &Lv) {
        let _ = self
            .watch_last_index
            .get_or_create(&[("service", service.clone())]);
        for pool in ["active", "standby"] {
            let p = [("service", service.clone()), ("pool", Lv::S(pool))];
            for f in [
                &self.connect_errors,
                &self.retries,
                &self.ejections,
                &self.timeouts,
            ] {
                let _ = f.get_or_create(&p);
            }
            for kind in ["empty", "version"] {
                let _ = self.gate_holds.get_or_create(&[
                    ("service", service.clone()),
                    ("pool", Lv::S(pool)),
                    ("kind", Lv::S(kind)),
                ]);
            }
        }
    }

    /// The OpenMetrics text exposition (which Prometheus scrapes natively).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out = "# encoding failed\n".into();
        }
        out
    }
}

/// `2xx`, `4xx`, … for the status-class label.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The per-request series (`requests` by route, pool, status class and version, and
/// `request_duration_seconds` by pool), cached by the pointers of their label values. Finding
/// them in the families hashes every label string on every request (about 1,500 instructions per
/// request under callgrind); the pointers hash in a few. Each entry holds the `Arc`s whose
/// pointers it is keyed by, so an address cannot be reused while its entry exists. One cache per
/// worker thread (see [`crate::runtime`]), so its lock is never contended.
#[derive(Default)]
pub struct RequestSeries {
    maps: PerWorker<HashMap<SeriesKey, Series, BuildHasherDefault<PtrHasher>>>,
}

#[derive(PartialEq, Eq, Hash)]
struct SeriesKey {
    service: (usize, usize),
    route: (usize, usize),
    pool: (usize, usize),
    class: usize,
    instance: usize,
}

struct Series {
    requests: Counter,
    duration: Histogram,
    /// Keep the keyed pointers alive.
    _route: Lv,
    _service: Lv,
    _instance: Option<Arc<dyn VersionLabel>>,
}

/// Where a request went, as labels.
#[derive(Clone, Copy)]
pub struct Where<'a> {
    pub service: &'a Lv,
    pub route: &'a Lv,
    pub pool: &'static str,
}

/// Entries kept before the cache starts over (instances come and go with swaps).
const MAX_SERIES: usize = 4096;

fn lv_key(l: &Lv) -> (usize, usize) {
    let s = l.as_str();
    (s.as_ptr() as usize, s.len())
}

impl RequestSeries {
    /// Counts one request and its duration.
    pub fn record<V: VersionLabel + 'static>(
        &self,
        m: &Metrics,
        at: Where,
        class: &'static str,
        instance: Option<&Arc<V>>,
        seconds: f64,
    ) {
        let Where {
            service,
            route,
            pool,
        } = at;
        let key = SeriesKey {
            service: lv_key(service),
            route: lv_key(route),
            pool: (pool.as_ptr() as usize, pool.len()),
            class: class.as_ptr() as usize,
            instance: instance.map_or(0, |i| Arc::as_ptr(i) as usize),
        };
        let mut map = self.maps.mine();
        if map.len() >= MAX_SERIES && !map.contains_key(&key) {
            map.clear();
        }
        let series = map.entry(key).or_insert_with(|| {
            let shared = instance.map(|i| Arc::clone(i) as Arc<dyn VersionLabel>);
            let version = shared.clone().map_or(Lv::S(""), Lv::Version);
            Series {
                requests: m
                    .requests
                    .get_or_create(&[
                        ("service", service.clone()),
                        ("route", route.clone()),
                        ("pool", Lv::S(pool)),
                        ("status_class", Lv::S(class)),
                        ("version", version),
                    ])
                    .clone(),
                duration: m
                    .request_duration
                    .get_or_create(&[("service", service.clone()), ("pool", Lv::S(pool))])
                    .clone(),
                _route: route.clone(),
                _service: service.clone(),
                _instance: shared,
            }
        });
        series.requests.inc();
        series.duration.observe(seconds);
    }
}

/// A multiply-rotate hash for keys made of pointers (FxHash's scheme): no flooding risk, since
/// no key comes from a client.
#[derive(Default)]
struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Instance {
        version: String,
    }

    impl VersionLabel for Instance {
        fn version_label(&self) -> &str {
            &self.version
        }
    }

    fn instance(_id: &str, version: &str) -> Arc<Instance> {
        Arc::new(Instance {
            version: version.into(),
        })
    }

    #[test]
    fn cached_series_count_into_the_family_by_label_value() {
        let m = Metrics::new();
        let route = Lv::A(Arc::from("/"));
        let svc = Lv::A(Arc::from("hello"));
        let at = |route| Where {
            service: &svc,
            route,
            pool: "active",
        };
        let (a, b) = (instance("a", "v1"), instance("b", "v1"));
        for i in [&a, &a, &b] {
            m.request_series
                .record(&m, at(&route), "2xx", Some(i), 0.001);
        }
        // Another Arc with the same text is the same series.
        let same_route = Lv::A(Arc::from("/"));
        m.request_series
            .record(&m, at(&same_route), "5xx", Some(&a), 0.001);
        let labels = |class| {
            [
                ("service", Lv::S("hello")),
                ("route", Lv::S("/")),
                ("pool", Lv::S("active")),
                ("status_class", Lv::S(class)),
                ("version", Lv::S("v1")),
            ]
        };
        assert_eq!(m.requests.get_or_create(&labels("2xx")).get(), 3);
        assert_eq!(m.requests.get_or_create(&labels("5xx")).get(), 1);
        let text = m.render();
        let count = text.lines().find(|l| {
            l.starts_with(
                "zerodown_request_duration_seconds_count{service=\"hello\",pool=\"active\"}",
            )
        });
        assert_eq!(
            count.map(|l| l.rsplit(' ').next()),
            Some(Some("4")),
            "{text}"
        );
    }
}
