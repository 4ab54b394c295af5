//! The HSMS switch proof under load: 20 equipment sessions, each keeping 4 W-bit primaries in
//! flight without pause, plus HTTP load on /hello and /standby, through 20 switches back and forth.
//! Counted by class (proofs that can fail): every primary gets exactly one reply within a deadline
//! far below T3, no session sees anything but its replies (no Deselect, Separate, Reject) or a
//! disconnect, and within each switch window no session gets the old version after its first
//! reply from the new one. HTTP: zero non-200 and the same epoch rule.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::hsms::{host, s1f1, Inst, Rig};
use common::load::{check_no_old_after_new, until_version, Load};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use zerodown::demo::hsms::s1f2_version;
use zerodown::hsms::codec::{self, Decoder, SType};

const SESSIONS: usize = 20;
const WINDOW: usize = 4;
/// A reply later than this is a failure (T3 is 45 s; the relay's drain bound is 10 s).
const REPLY_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Reply {
    start: Instant,
    end: Instant,
    version: String,
}

#[derive(Debug, Default)]
struct Tally {
    replies: Vec<Reply>,
    /// Errors by class: timeout, closed, unexpected message, duplicate reply, bad body.
    errors: Vec<String>,
}

/// One equipment session: select, then keep WINDOW primaries in flight until stopped.
async fn equipment(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let fail = |e: String| tally.lock().unwrap().errors.push(e);
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return fail("connect failed".into());
    };
    stream.set_nodelay(true).unwrap();
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    codec::encode(&codec::select_req(1), &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut selected = false;
    let mut next = 100u32;
    let mut pending: HashMap<u32, Instant> = HashMap::new();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && pending.is_empty() {
            return;
        }
        if selected && !stopping {
            out.clear();
            while pending.len() < WINDOW {
                next += 1;
                codec::encode(&s1f1(next), &mut out).unwrap();
                pending.insert(next, Instant::now());
            }
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                return fail("write failed: connection closed".into());
            }
        }
        let oldest = pending.values().min().copied().unwrap_or_else(Instant::now);
        let deadline = oldest + REPLY_DEADLINE;
        let msg = loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(e) => return fail(format!("bad frame from zerodown: {e}")),
            }
            match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
                Err(_) => {
                    return fail(format!(
                        "timeout: {} primaries without a reply for {REPLY_DEADLINE:?}",
                        pending.len()
                    ))
                }
                Ok(Ok(0)) | Ok(Err(_)) => return fail("disconnect".into()),
                Ok(Ok(_)) => {}
            }
        };
        let h = &msg.header;
        match h.stype {
            SType::SelectRsp if !selected && h.status() == codec::SELECT_OK => selected = true,
            SType::Data if (h.stream, h.function) == (1, 2) => {
                let Some(start) = pending.remove(&h.system) else {
                    fail(format!("duplicate or unknown reply (system {})", h.system));
                    continue;
                };
                match s1f2_version(&msg.body) {
                    Some(version) => tally.lock().unwrap().replies.push(Reply {
                        start,
                        end: Instant::now(),
                        version,
                    }),
                    None => fail("S1F2 without a version".into()),
                }
            }
            other => fail(format!(
                "unexpected message: {other:?} {}/{}",
                h.stream, h.function
            )),
        }
    }
}

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
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..SESSIONS).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = tallies
        .iter()
        .map(|t| tokio::spawn(equipment(rig.hsms, stop.clone(), t.clone())))
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
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(DEADLINE, t)
            .await
            .expect("equipment task stalled")
            .unwrap();
    }
    let active = active_load.finish().await;
    let standby = standby_load.finish().await;

    let mut total = 0;
    let mut checked = 0;
    for (i, t) in tallies.iter().enumerate() {
        let t = t.lock().unwrap();
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
    let checked_a = check_no_old_after_new(&active, &switches, &versions, "active");
    let checked_s = check_no_old_after_new(&standby, &switches, &standby_versions, "standby");
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
