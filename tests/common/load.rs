//! Continuous keep-alive load with per-request records and failures counted by class, and the
//! window check that proves every response carried a version allowed at that moment (see
//! `/work/shared/proofs.md`: every request has a deadline, outcomes by class, bounded windows).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{timeout, timeout_at, Instant};

use super::Conn;

/// Each request (and each connect) must complete, whole body included, within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A connection that finishes no request for this long while the load runs is flagged.
pub const STALL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of one connect and of one request; missing it is a failure.
    pub deadline: Duration,
    /// Longest time a connection may go without a finished request.
    pub stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: REQUEST_DEADLINE,
            stall: STALL,
        }
    }
}

/// One complete response.
#[derive(Debug, Clone)]
pub struct Record {
    /// Which load connection (0..conns) sent it.
    pub conn: usize,
    pub start: Instant,
    pub end: Instant,
    pub status: u16,
    pub version: String,
}

/// What went wrong, by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// The connect was refused, failed, or did not finish within the deadline.
    Connect,
    /// No full response within the deadline.
    Timeout,
    /// The connection was reset or closed before a full response.
    Closed,
    /// The response could not be parsed.
    Protocol,
    /// Any other client-side error.
    Other,
    /// A complete response whose status is not 200.
    Status(u16),
    /// A connection went longer than the stall bound without a finished request.
    Stalled,
    /// A load task did not end within its bound after the stop, or panicked.
    Unfinished,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Status(s) => write!(f, "status {s}"),
            other => write!(f, "{}", format!("{other:?}").to_lowercase()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub conn: usize,
    pub at: Instant,
    pub class: Class,
    pub detail: String,
}

/// Everything a load saw: its complete responses and its failures.
#[derive(Debug)]
pub struct Report {
    pub path: &'static str,
    pub conns: usize,
    pub records: Vec<Record>,
    pub failures: Vec<Failure>,
    /// The longest time any connection went without a finished request.
    pub max_gap: Duration,
    pub ran: Duration,
}

impl Report {
    pub fn counts(&self) -> BTreeMap<Class, usize> {
        let mut m = BTreeMap::new();
        for f in &self.failures {
            *m.entry(f.class).or_insert(0) += 1;
        }
        m
    }

    pub fn count(&self, class: Class) -> usize {
        self.failures.iter().filter(|f| f.class == class).count()
    }

    /// `timeout: 1, status 502: 2` and the first failure of each class.
    pub fn describe(&self) -> String {
        let counts = self.counts();
        let mut out = counts
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        for class in counts.keys() {
            if let Some(f) = self.failures.iter().find(|f| f.class == *class) {
                out.push_str(&format!("\n  e.g. conn {} {class}: {}", f.conn, f.detail));
            }
        }
        out
    }
}

/// The version a demo backend names in its body: `... (version v2)`; `?` when it names none.
pub fn version_of(body: &str) -> String {
    body.rsplit_once("(version ")
        .and_then(|(_, v)| v.split_once(')'))
        .map_or("?", |(v, _)| v)
        .to_string()
}

#[derive(Default)]
struct Shared {
    records: Mutex<Vec<Record>>,
    failures: Mutex<Vec<Failure>>,
}

impl Shared {
    fn fail(&self, conn: usize, class: Class, detail: String) {
        self.failures.lock().unwrap().push(Failure {
            conn,
            at: Instant::now(),
            class,
            detail,
        });
    }
}

/// Keep-alive load on one path over `conns` connections, until stopped.
pub struct Load {
    path: &'static str,
    conns: usize,
    limits: Limits,
    started: Instant,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, path: &'static str, conns: usize) -> Load {
        Load::start_with(addr, path, conns, Limits::default())
    }

    pub fn start_with(addr: SocketAddr, path: &'static str, conns: usize, limits: Limits) -> Load {
        Load::start_as(addr, None, path, conns, limits)
    }

    /// [`Load::start`] with `host` as every request's Host (routes matched by host).
    pub fn start_host(
        addr: SocketAddr,
        host: &'static str,
        path: &'static str,
        conns: usize,
    ) -> Load {
        Load::start_as(addr, Some(host), path, conns, Limits::default())
    }

    fn start_as(
        addr: SocketAddr,
        host: Option<&'static str>,
        path: &'static str,
        conns: usize,
        limits: Limits,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let shared: Arc<Shared> = Arc::default();
        let started = Instant::now();
        let tasks = (0..conns)
            .map(|id| {
                let (stop, shared) = (stop.clone(), shared.clone());
                tokio::spawn(drive(id, (addr, host), path, limits, stop, shared))
            })
            .collect();
        Load {
            path,
            conns,
            limits,
            started,
            stop,
            shared,
            tasks,
        }
    }

    /// Complete responses so far.
    pub fn len(&self) -> usize {
        self.shared.records.lock().unwrap().len()
    }

    /// Waits (bounded by the suite deadline) until every connection has finished `n` requests,
    /// started after this call, that answered `version`: the load provably runs on the new pools
    /// before the caller moves on, and each window gets at least `n * conns` such requests.
    pub async fn until_each_conn(&self, version: &str, n: usize) {
        // Records pushed before `seen` was read all started before `from`.
        let mut seen = self.len();
        let from = Instant::now();
        let deadline = from + super::DEADLINE;
        let mut per_conn = vec![0usize; self.conns];
        loop {
            {
                let records = self.shared.records.lock().unwrap();
                for r in &records[seen..] {
                    if r.start >= from && r.version == version {
                        per_conn[r.conn] += 1;
                    }
                }
                seen = records.len();
            }
            if per_conn.iter().all(|c| *c >= n) {
                return;
            }
            if Instant::now() >= deadline {
                let short: Vec<usize> = (0..self.conns).filter(|c| per_conn[*c] < n).collect();
                let failures: Vec<_> = self
                    .shared
                    .failures
                    .lock()
                    .unwrap()
                    .iter()
                    .take(5)
                    .map(|f| format!("conn {} {}: {}", f.conn, f.class, f.detail))
                    .collect();
                panic!(
                    "{}: connections {short:?} did not each finish {n} requests answered {version} \
                     within {:?}; failures so far: {failures:?}",
                    self.path,
                    super::DEADLINE
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops the load and returns what it saw, failures included: a task that has not ended
    /// within its bound after the stop is a failure (and is aborted), so is a connection that
    /// went longer than the stall bound without a finished request.
    pub async fn finish_report(mut self) -> Report {
        let stopped = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        // The request in flight at the stop, plus a reconnect, each bounded by the deadline.
        let bound = self.limits.deadline * 2 + Duration::from_secs(1);
        let until = stopped + bound;
        for (id, t) in std::mem::take(&mut self.tasks).into_iter().enumerate() {
            let mut t = t;
            match timeout_at(until, &mut t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self
                    .shared
                    .fail(id, Class::Unfinished, format!("task: {e}")),
                Err(_) => {
                    t.abort();
                    self.shared.fail(
                        id,
                        Class::Unfinished,
                        format!("still running {bound:?} after the stop"),
                    );
                }
            }
        }
        let mut records = self.shared.records.lock().unwrap().clone();
        records.sort_by_key(|r| r.end);
        // Gaps between finished requests, per connection, from the start to the stop.
        let mut last = vec![self.started; self.conns];
        let mut max_gap = Duration::ZERO;
        let mut gaps = Vec::new();
        let ends = records
            .iter()
            .map(|r| (r.conn, r.end.min(stopped)))
            .chain((0..self.conns).map(|c| (c, stopped)));
        for (conn, end) in ends {
            let gap = end.saturating_duration_since(last[conn]);
            max_gap = max_gap.max(gap);
            if gap > self.limits.stall {
                gaps.push((conn, last[conn], gap));
            }
            last[conn] = last[conn].max(end);
        }
        for (conn, from, gap) in gaps {
            self.shared.fail(
                conn,
                Class::Stalled,
                format!(
                    "no finished request for {gap:?} from +{:?} after the load started",
                    from - self.started
                ),
            );
        }
        let failures = self.shared.failures.lock().unwrap().clone();
        Report {
            path: self.path,
            conns: self.conns,
            records,
            failures,
            max_gap,
            ran: stopped - self.started,
        }
    }

    /// Stops the load and returns its records, after asserting that nothing failed: no
    /// timeout, connect error, early close, non-200, stalled connection or unfinished task.
    pub async fn finish(self) -> Vec<Record> {
        let report = self.finish_report().await;
        assert!(
            report.failures.is_empty(),
            "{}: {} failures over {} requests: {}",
            report.path,
            report.failures.len(),
            report.records.len(),
            report.describe()
        );
        eprintln!(
            "load {}: {} requests over {} connections in {:?}, longest gap {:?}, zero failures",
            report.path,
            report.records.len(),
            report.conns,
            report.ran,
            report.max_gap
        );
        report.records
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One connection's loop: a request at a time, each under the deadline; after a failure the
/// connection is replaced (a stalled one cannot be reused).
async fn drive(
    id: usize,
    (addr, host): (SocketAddr, Option<&'static str>),
    path: &'static str,
    limits: Limits,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match &mut conn {
            Some(c) => c,
            None => match timeout(limits.deadline, Conn::open_host(addr, host)).await {
                Ok(Ok(c)) => conn.insert(c),
                Ok(Err(e)) => {
                    shared.fail(id, Class::Connect, format!("{addr}: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_) => {
                    shared.fail(
                        id,
                        Class::Connect,
                        format!("{addr}: no connection within {:?}", limits.deadline),
                    );
                    continue;
                }
            },
        };
        let start = Instant::now();
        match timeout(limits.deadline, c.get(path)).await {
            Ok(Ok((status, body))) => {
                let end = Instant::now();
                if status != 200 {
                    shared.fail(id, Class::Status(status), format!("{path}: {body}"));
                }
                shared.records.lock().unwrap().push(Record {
                    conn: id,
                    start,
                    end,
                    status,
                    version: version_of(&body),
                });
            }
            Ok(Err(e)) => {
                shared.fail(id, classify(&e), format!("{path}: {e:?}"));
                conn = None;
            }
            Err(_) => {
                shared.fail(
                    id,
                    Class::Timeout,
                    format!("{path}: no full response within {:?}", limits.deadline),
                );
                conn = None;
            }
        }
    }
}

fn classify(e: &hyper::Error) -> Class {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return Class::Protocol;
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return Class::Closed;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return Class::Closed;
            }
        }
        source = s.source();
    }
    Class::Other
}

/// What the window check found for one pool.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    /// Requests that started after the first response of their window's version and ended
    /// before the next switch: each had to carry exactly that version.
    pub checked: usize,
    /// Every request was checked against the versions allowed over its lifetime; this many.
    pub all: usize,
    /// `per_window[0]`: requests wholly before the first switch (steady state); `per_window[k]`:
    /// the `checked` requests of window k.
    pub per_window: Vec<usize>,
    /// `in_flight[k - 1]`: requests in flight at the moment switch k began.
    pub in_flight: Vec<usize>,
}

impl Windows {
    /// The fewest strictly checked requests in any window after a switch.
    pub fn min_checked(&self) -> usize {
        self.per_window.iter().skip(1).copied().min().unwrap_or(0)
    }

    /// The fewest requests in flight when a switch began.
    pub fn min_in_flight(&self) -> usize {
        self.in_flight.iter().copied().min().unwrap_or(0)
    }

    /// Asserts the proof had enough under it for `conns` connections that each finished
    /// `per_conn` requests on every window's version: at least `per_conn - 1` checked requests
    /// per connection in each window, and half the connections in flight at each switch.
    pub fn assert_enough(&self, pool: &str, conns: usize, per_conn: usize) {
        assert!(
            self.min_checked() >= (per_conn - 1) * conns,
            "{pool}: too few requests checked in some window: {:?}",
            self.per_window
        );
        assert!(
            self.min_in_flight() >= conns / 2,
            "{pool}: some switch began with few requests in flight: {:?}",
            self.in_flight
        );
    }
}

/// Two pools' window counts in one line: `A + S checked (fewest per window a + s), in flight at
/// each <at> >= a + s`.
pub fn both(a: &Windows, s: &Windows, at: &str) -> String {
    format!(
        "{} + {} checked (fewest per window {} + {}), in flight at each {at} >= {} + {}",
        a.checked,
        s.checked,
        a.min_checked(),
        s.min_checked(),
        a.min_in_flight(),
        s.min_in_flight()
    )
}

/// The window rule for one pool. `switches[k]` is when the change to epoch k began (`switches[0]`:
/// the steady state before the first change), `versions[k]` that epoch's version. Window k runs
/// from `switches[k]` to `switches[k + 1]`.
///
/// - In each window k >= 1 some request started in the window must have answered `versions[k]`
///   (the search for the first new response never runs into the next window); the end of the
///   earliest one is `first_new[k]`.
/// - Every request must carry a version allowed over its lifetime: a request that started in
///   window k may see `versions[k]` and the versions of later windows it ran into; the old
///   `versions[k - 1]` only if it started no later than `first_new[k]`. Before the first switch
///   only `versions[0]`.
///
/// Returns the counts, or every violation found.
pub fn check_windows(
    records: &[Record],
    switches: &[Instant],
    versions: &[&str],
) -> Result<Windows, Vec<String>> {
    assert_eq!(switches.len(), versions.len(), "one version per window");
    assert!(!switches.is_empty(), "at least the steady-state window");
    assert!(
        switches.windows(2).all(|w| w[0] <= w[1]),
        "switch times out of order"
    );
    let t0 = switches[0];
    let window = |t: Instant| switches.partition_point(|s| *s <= t).saturating_sub(1);
    let next = |k: usize| switches.get(k + 1).copied();
    let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1e3;
    let mut errors = Vec::new();
    let mut first_new: Vec<Option<Instant>> = vec![None; switches.len()];
    for k in 1..switches.len() {
        first_new[k] = records
            .iter()
            .filter(|r| r.start >= switches[k] && next(k).is_none_or(|n| r.start < n))
            .filter(|r| r.version == versions[k])
            .map(|r| r.end)
            .min();
        if first_new[k].is_none() {
            errors.push(format!(
                "window {k}: no request started between switch {k} (+{:.1} ms) and the next answered {}",
                ms(switches[k]),
                versions[k]
            ));
        }
    }
    let mut w = Windows {
        per_window: vec![0; switches.len()],
        ..Windows::default()
    };
    for r in records {
        let (ks, ke) = (window(r.start), window(r.end));
        let may_be_old = ks >= 1 && first_new[ks].is_none_or(|f| r.start <= f);
        let lo = if may_be_old { ks - 1 } else { ks };
        let allowed = &versions[lo..=ke];
        w.all += 1;
        if !allowed.contains(&r.version.as_str()) {
            errors.push(format!(
                "conn {} request +{:.1}..+{:.1} ms (window {ks}{}) got {:?}; allowed {allowed:?}",
                r.conn,
                ms(r.start),
                ms(r.end),
                if ks >= 1 && !may_be_old {
                    format!(", after the first {} response", versions[ks])
                } else {
                    String::new()
                },
                r.version,
            ));
        }
        if ke == ks {
            if ks == 0 {
                w.per_window[0] += 1;
            } else if !may_be_old {
                w.per_window[ks] += 1;
                w.checked += 1;
            }
        }
    }
    w.in_flight = switches[1..]
        .iter()
        .map(|s| {
            records
                .iter()
                .filter(|r| r.start <= *s && r.end >= *s)
                .count()
        })
        .collect();
    if errors.is_empty() {
        Ok(w)
    } else {
        Err(errors)
    }
}

/// [`check_windows`], panicking with the violations (the first ten and the count).
pub fn check_no_old_after_new(
    records: &[Record],
    switches: &[Instant],
    versions: &[&str],
    pool: &str,
) -> Windows {
    match check_windows(records, switches, versions) {
        Ok(w) => w,
        Err(errors) => panic!(
            "{pool}: {} violations of the window rule over {} requests:\n{}",
            errors.len(),
            records.len(),
            errors
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Waits until `path` answers with `version` on a dedicated connection; each probe under the
/// request deadline.
pub async fn until_version(addr: SocketAddr, path: &str, version: &str) {
    let mut probe = timeout(REQUEST_DEADLINE, Conn::open(addr))
        .await
        .expect("probe connect timed out")
        .unwrap();
    let deadline = Instant::now() + super::DEADLINE;
    loop {
        let (status, body) = timeout(REQUEST_DEADLINE, probe.get(path))
            .await
            .unwrap_or_else(|_| panic!("{path}: probe got no answer within {REQUEST_DEADLINE:?}"))
            .unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        if version_of(&body) == version {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never answered {version}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
