//! The load harness behind the zero-error proofs can fail: fed a known-bad upstream (a request that
//! never gets an answer, a 502, a connection closed mid-body, an old version after the new one) or
//! known-bad records, it reports each by class. Cheap: short deadlines, a scripted raw upstream.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::load::{check_no_old_after_new, check_windows, Class, Limits, Load, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// What the scripted upstream does with one request.
#[derive(Clone, Copy, Debug)]
enum Act {
    Answer(&'static str),
    Status(u16),
    /// Never answers (the connection stays open).
    Stall,
    /// Sends the head and half the body, then closes.
    CloseMidBody,
}

/// A raw HTTP/1.1 upstream (keep-alive, GET only) that asks `script` what to do with the n-th
/// request it reads, counted over all connections from 0.
async fn scripted(script: impl Fn(usize) -> Act + Send + Sync + 'static) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let script = Arc::new(script);
    let counter = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (script, counter) = (script.clone(), counter.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..head_end);
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = match script(n) {
                        Act::Answer(v) => (200, format!("msg-{v} (version {v})\n")),
                        Act::Status(code) => (code, "bad gateway\n".to_string()),
                        Act::Stall => return std::future::pending().await,
                        Act::CloseMidBody => {
                            let _ = s
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\nmsg-v1 (ver",
                                )
                                .await;
                            return;
                        }
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Short enough to keep the tests cheap, long enough that loopback answers never miss them.
const FAST: Limits = Limits {
    deadline: Duration::from_millis(1000),
    stall: Duration::from_millis(500),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_a_502_and_an_early_close_are_each_counted() {
    let addr = scripted(|n| match n {
        50 => Act::Stall,
        100 => Act::Status(502),
        150 => Act::CloseMidBody,
        _ => Act::Answer("v1"),
    })
    .await;
    let load = Load::start_with(addr, "/hello", 4, FAST);
    // Well past the three scripted requests, on every connection (the stalled one reconnects
    // after its deadline).
    load.until_each_conn("v1", 60).await;
    let report = load.finish_report().await;
    let counts = report.counts();
    assert_eq!(
        counts.get(&Class::Timeout),
        Some(&1),
        "{}",
        report.describe()
    );
    assert_eq!(
        counts.get(&Class::Status(502)),
        Some(&1),
        "{}",
        report.describe()
    );
    assert_eq!(
        counts.get(&Class::Closed),
        Some(&1),
        "{}",
        report.describe()
    );
    // The connection that waited out the deadline went longer than the stall bound.
    let timed_out = report
        .failures
        .iter()
        .find(|f| f.class == Class::Timeout)
        .unwrap()
        .conn;
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.class == Class::Stalled && f.conn == timed_out),
        "{}",
        report.describe()
    );
    assert!(report.max_gap >= FAST.deadline, "{:?}", report.max_gap);
    assert_eq!(
        report.count(Class::Connect) + report.count(Class::Unfinished),
        0,
        "{}",
        report.describe()
    );
    // The 502 is also a record (its version is checked like any other).
    assert_eq!(report.records.iter().filter(|r| r.status == 502).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "timeout: ")]
async fn finish_fails_on_a_request_that_never_gets_an_answer() {
    let addr = scripted(|n| {
        if n == 20 {
            Act::Stall
        } else {
            Act::Answer("v1")
        }
    })
    .await;
    let load = Load::start_with(addr, "/hello", 2, FAST);
    load.until_each_conn("v1", 20).await;
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_counted_and_its_connection_stalls() {
    let load = Load::start_with(common::dead_address(), "/hello", 1, FAST);
    tokio::time::sleep(FAST.stall * 2).await;
    let report = load.finish_report().await;
    assert!(report.records.is_empty());
    assert!(report.count(Class::Connect) >= 1, "{}", report.describe());
    assert_eq!(report.count(Class::Stalled), 1, "{}", report.describe());
}

/// A live upstream that answers the old version once after the new one was served: the window
/// check names that request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_version_after_the_new_one_is_caught_live() {
    let phase = Arc::new(AtomicU8::new(0));
    let since = Arc::new(AtomicUsize::new(usize::MAX));
    let (p, s) = (phase.clone(), since.clone());
    let addr = scripted(move |n| {
        if p.load(Ordering::SeqCst) == 0 {
            return Act::Answer("v1");
        }
        // The 40th request after the first v2 answer goes back to v1.
        let first = match s.compare_exchange(usize::MAX, n, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => n,
            Err(first) => first,
        };
        if n == first + 40 {
            Act::Answer("v1")
        } else {
            Act::Answer("v2")
        }
    })
    .await;
    let t0 = Instant::now();
    let load = Load::start(addr, "/hello", 4);
    load.until_each_conn("v1", 5).await;
    let t1 = Instant::now();
    phase.store(1, Ordering::SeqCst);
    load.until_each_conn("v2", 30).await;
    let records = load.finish().await;
    let errors = check_windows(&records, &[t0, t1], &["v1", "v2"]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("after the first v2 response) got \"v1\""),
        "{errors:#?}"
    );
}

fn rec(conn: usize, t0: Instant, start_ms: u64, end_ms: u64, version: &str) -> Record {
    Record {
        conn,
        start: t0 + Duration::from_millis(start_ms),
        end: t0 + Duration::from_millis(end_ms),
        status: 200,
        version: version.into(),
    }
}

/// Switches at +100 and +200 ms (v1 -> v2 -> v1), two connections.
fn two_switches() -> (Instant, Vec<Instant>) {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    (t0, vec![t0, at(100), at(200)])
}

#[test]
fn a_clean_run_passes_and_is_counted() {
    let (t0, sw) = two_switches();
    let records = vec![
        rec(0, t0, 10, 20, "v1"),
        // In flight at switch 1.
        rec(0, t0, 95, 110, "v1"),
        rec(1, t0, 90, 101, "v1"),
        // The first new response of window 1 ends at +112...
        rec(1, t0, 102, 112, "v2"),
        // ...so a request started before that may still be old.
        rec(0, t0, 111, 118, "v1"),
        rec(0, t0, 130, 140, "v2"),
        rec(1, t0, 150, 160, "v2"),
        // In flight at switch 2: either side.
        rec(1, t0, 195, 205, "v1"),
        rec(0, t0, 198, 230, "v2"),
        rec(1, t0, 210, 220, "v1"),
        rec(1, t0, 240, 250, "v1"),
    ];
    let w = check_windows(&records, &sw, &["v1", "v2", "v1"]).unwrap();
    assert_eq!(w.all, records.len());
    assert_eq!(w.per_window, vec![1, 2, 1]);
    assert_eq!(w.checked, 3);
    assert_eq!(w.in_flight, vec![2, 2]);
}

#[test]
fn old_after_new_is_a_violation() {
    let (t0, sw) = two_switches();
    let records = vec![
        rec(0, t0, 110, 120, "v2"),
        // Started after the first v2 ended, ended before the next switch.
        rec(1, t0, 130, 140, "v1"),
        rec(0, t0, 210, 220, "v1"),
    ];
    let errors = check_windows(&records, &sw, &["v1", "v2", "v1"]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("conn 1") && errors[0].contains("got \"v1\""));
}

/// The old search looked for the first new response anywhere after the switch; a window in which
/// the new version never answered passed on the strength of a later window.
#[test]
fn the_first_new_search_stops_at_the_next_switch() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let sw = vec![t0, at(100), at(200), at(300)];
    let records = vec![
        rec(0, t0, 110, 120, "v1"),
        rec(0, t0, 130, 140, "v1"),
        rec(0, t0, 210, 220, "v1"),
        rec(0, t0, 310, 320, "v2"),
    ];
    let errors = check_windows(&records, &sw, &["v1", "v2", "v1", "v2"]).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("window 1: no request started between switch 1")),
        "{errors:?}"
    );
}

#[test]
fn a_version_from_nowhere_and_a_mixed_steady_state_are_violations() {
    let (t0, sw) = two_switches();
    let records = vec![
        // Before the first switch only v1.
        rec(0, t0, 10, 20, "v2"),
        rec(0, t0, 110, 120, "v2"),
        // Neither side of any switch.
        rec(1, t0, 105, 125, "v3"),
        rec(1, t0, 210, 220, "v1"),
        // A body without a version.
        rec(1, t0, 230, 240, "?"),
    ];
    let errors = check_windows(&records, &sw, &["v1", "v2", "v1"]).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("window 0") && errors[0].contains("\"v2\""));
    assert!(errors[1].contains("\"v3\""));
    assert!(errors[2].contains("\"?\""));
}

#[test]
#[should_panic(expected = "active: 1 violations of the window rule")]
fn check_no_old_after_new_panics_on_a_violation() {
    let (t0, sw) = two_switches();
    let records = vec![rec(0, t0, 110, 120, "v2"), rec(1, t0, 130, 140, "v1")];
    check_no_old_after_new(&records, &sw[..2], &["v1", "v2"], "active");
}
