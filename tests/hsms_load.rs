//! The HSMS switch proof under load: 20 equipment sessions, each keeping 4 W-bit primaries in
//! flight without pause, plus HTTP load on /hello and /standby, through 20 switches back and forth.
//! Counted by class (proofs that can fail): every primary gets exactly one reply within a deadline
//! far below T3, no session sees anything but its replies (no Deselect, Separate, Reject) or a
//! disconnect, and within each switch window no session gets the old version after its first
//! reply from the new one. HTTP: zero non-200 and the same epoch rule.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::hsms::{host, Inst, Rig};
use common::load::{check_no_old_after_new, until_version, Load};
use common::*;
use tokio::time::Instant;
use zerodown::demo::equipment::{self, Reply};

const SESSIONS: usize = 20;
const WINDOW: usize = 4;
/// A reply later than this is a failure (T3 is 45 s; the relay's drain bound is 10 s).
const REPLY_DEADLINE: Duration = Duration::from_secs(5);

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_switches_under_hsms_and_http_load_lose_nothing_and_never_mix() {
    let mut list: Vec<Inst> = Vec::new();
    for (id, v, tag) in [
        ("v1-a", "v1", "active"),
        ("v1-b", "v1", "active"),
        ("v2-a", "v2", "standby"),
        ("v2-b", "v2", "standby"),
    ] {
        // Replies take 2 ms, so switches find transactions open.
        list.push((
            id,
            backend(v).await,
            host(v, Duration::from_millis(2)).await,
            v,
            tag,
        ));
    }
    let mut rig = Rig::start(list, |_| {}).await;
    let http = rig.daemon.public_addr;
    let front = Arc::clone(rig.daemon.hsms.as_ref().unwrap());
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut latest = Vec::new();
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let (tx, rx) = tokio::sync::watch::channel(None);
            latest.push(rx);
            tokio::spawn(equipment::run_watched(
                rig.hsms,
                WINDOW,
                REPLY_DEADLINE,
                stop.clone(),
                Some(tx),
            ))
        })
        .collect();
    eventually("every session selected on v1", || async {
        let s = front.sessions();
        s.len() == SESSIONS
            && s.iter().all(|s| {
                s.state == "selected" && s.backend.as_ref().is_some_and(|b| b.version == "v1")
            })
    })
    .await;
    let active_load = Load::start(http, "/hello", 8);
    let standby_load = Load::start(http, "/standby", 2);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut switches = vec![t0];
    let mut versions = vec!["v1"];
    let mut standby_versions = vec!["v2"];
    let mut took: Vec<u64> = Vec::new();
    for k in 1..=20u64 {
        let (to, other) = if k % 2 == 1 {
            ("v2", "v1")
        } else {
            ("v1", "v2")
        };
        switches.push(Instant::now());
        versions.push(to);
        standby_versions.push(other);
        rig.flip();
        until_version(http, "/hello", to).await;
        eventually("every HSMS session switched", || async {
            front
                .sessions()
                .iter()
                .all(|s| s.switches == k && s.backend.as_ref().is_some_and(|b| b.version == to))
        })
        .await;
        took.extend(
            front
                .sessions()
                .iter()
                .filter_map(|s| s.last_switch.as_ref().map(|l| l.took_ms)),
        );
        // Every session answered by the new version on a primary sent after the switch, so
        // each window holds new-version replies for the check below (not a fixed sleep).
        let switched = *switches.last().unwrap();
        eventually("every session answered by the new version", || {
            let seen = latest.iter().all(|rx| {
                rx.borrow()
                    .as_ref()
                    .is_some_and(|r| r.version == to && r.start > switched)
            });
            async move { seen }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    for t in tasks {
        let tally = tokio::time::timeout(DEADLINE, t)
            .await
            .expect("equipment task stalled")
            .unwrap();
        tallies.push(tally);
    }
    let active = active_load.finish().await;
    let standby = standby_load.finish().await;

    let mut total = 0;
    let mut checked = 0;
    for (i, t) in tallies.iter().enumerate() {
        assert!(t.errors.is_empty(), "session {i}: {:?}", t.errors);
        assert!(
            t.replies.len() > 200,
            "session {i}: only {} replies",
            t.replies.len()
        );
        total += t.replies.len();
        for k in 0..switches.len() {
            let end = switches.get(k + 1).copied().unwrap_or_else(Instant::now);
            let window: Vec<&Reply> = t
                .replies
                .iter()
                .filter(|r| r.start >= switches[k] && r.end < end)
                .collect();
            // Before the first switch only v1; after a switch, once the new version answered,
            // nothing from the old one until the next switch.
            let first_new = window
                .iter()
                .filter(|r| r.version == versions[k])
                .map(|r| r.end)
                .min();
            let Some(first_new) = first_new else {
                panic!(
                    "session {i}: no reply from {} between switch {k} and the next",
                    versions[k]
                );
            };
            for r in window.iter().filter(|r| r.start > first_new) {
                assert_eq!(
                    r.version, versions[k],
                    "session {i}, window {k}: old version after the new one"
                );
                checked += 1;
            }
            if k == 0 {
                assert!(
                    window.iter().all(|r| r.version == "v1"),
                    "session {i}: steady state mixed"
                );
            }
        }
    }
    let checked_a = check_no_old_after_new(&active, &switches, &versions, "active").checked;
    let checked_s =
        check_no_old_after_new(&standby, &switches, &standby_versions, "standby").checked;
    took.sort_unstable();
    assert_eq!(
        took.len(),
        SESSIONS * 20,
        "every session switched every time"
    );
    let m = rig.daemon.metrics.render();
    for bad in [
        "t3_expired",
        "transaction_lost",
        "dropped",
        "reject",
        "backend_lost",
    ] {
        assert!(
            !m.contains(&format!("zerodown_hsms_events_total{{kind=\"{bad}\"}}")),
            "hsms event {bad} counted:\n{m}"
        );
    }
    assert!(
        m.contains(&format!(
            "zerodown_hsms_switches_total{{outcome=\"done\"}} {}",
            SESSIONS * 20
        )),
        "{m}"
    );
    eprintln!(
        "hsms: {total} replies over {SESSIONS} sessions, {checked} checked against the window rule; \
         per-session switch p50 {} ms, p99 {} ms, max {} ms; http: {} + {} requests, {checked_a} + {checked_s} checked",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took[took.len() - 1],
        active.len(),
        standby.len()
    );
}
