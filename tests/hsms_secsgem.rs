//! The HSMS front-end checked by an HSMS implementation nobody here wrote: secsgem (Python) runs
//! the equipment sessions (tests/secsgem/equipment.py) against zerodown's HSMS listener while the
//! active version flips back and forth, and every S1F1 must get its S1F2 from an allowed version.
//!
//! Needs `python3` with `pip install secsgem`. Without it the test prints a skip line and passes,
//! unless `ZERODOWN_REQUIRE_SECSGEM=1` (set by CI), when it fails.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::hsms::{two_versions, Rig};
use common::proc::Proc;
use serde_json::Value;
use zerodown::hsms::SessionView;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/secsgem/equipment.py");
const SESSIONS: usize = 20;
/// Flips of the active version; windows alternate v2, v1, v2, ...
const FLIPS: usize = 20;
/// Time between flips, and the steady state before the first one.
const WINDOW: Duration = Duration::from_millis(1000);
/// How long secsgem keeps sending S1F1 once every session is selected: the steady state, the
/// flips, and a last window, with slack for a slow machine.
const LOAD_SECONDS: f64 = 25.0;
/// secsgem's T3: a lost reply shows up this quickly as a timeout.
const T3_SECONDS: f64 = 5.0;
/// Bound on every session reaching the new version after a flip.
const CONVERGE: Duration = Duration::from_secs(5);
/// v1 holds each reply this long, so a switch away from v1 often has a transaction to drain.
const V1_DELAY: Duration = Duration::from_millis(2);
const MIN_REPLIES_PER_SESSION: u64 = 50;
/// Control messages the equipment may see: answers to its own Select and Linktest, and Linktests.
const ALLOWED_CONTROL: [&str; 3] = ["Select.rsp", "Linktest.rsp", "Linktest.req"];

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Whether python3 can import secsgem; `Err` says why not.
fn secsgem_available() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import secsgem"])
        .stdout(Stdio::null())
        .output()
    {
        Err(e) => Err(format!("python3 cannot be run: {e}")),
        Ok(o) if !o.status.success() => Err(format!(
            "python3 cannot import secsgem: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// Fails when CI requires secsgem, else says the test is skipped. Returns whether to go on.
fn require_secsgem() -> bool {
    let Err(why) = secsgem_available() else {
        return true;
    };
    if std::env::var("ZERODOWN_REQUIRE_SECSGEM").as_deref() == Ok("1") {
        panic!("{why}; ZERODOWN_REQUIRE_SECSGEM=1 needs it: run `pip install secsgem`");
    }
    eprintln!("skipped: secsgem not installed ({why}); `pip install secsgem` to run this test");
    false
}

/// One line per session: id, state, backend version, open transactions, switches, rollbacks.
fn brief(sessions: &[SessionView]) -> String {
    let list: Vec<String> = sessions
        .iter()
        .map(|s| {
            format!(
                "#{} {} on {} open {}/{} queued {} switches {} rollbacks {}{}",
                s.id,
                s.state,
                s.backend.as_ref().map_or("-", |b| b.version.as_str()),
                s.open_to_host,
                s.open_to_equipment,
                s.queued,
                s.switches,
                s.rollbacks,
                s.hold
                    .as_ref()
                    .map(|h| format!(" hold {h}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!("[{}]", list.join("; "))
}

/// Kills the script if the test ends early.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tests/secsgem/equipment.py running: its stdin for instants to report on, its output read on
/// blocking tasks.
struct Run {
    script: Script,
    stdin: std::process::ChildStdin,
    out: tokio::task::JoinHandle<String>,
    err: tokio::task::JoinHandle<String>,
}

impl Run {
    /// `sessions` equipment sessions to `port`, sending S1F1 for `seconds` once all are selected.
    fn start(port: u16, sessions: usize, seconds: f64, t0: f64) -> Run {
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .args(["--address", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--sessions", &sessions.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .args(["--t3", &T3_SECONDS.to_string()])
            .args(["--t0", &format!("{t0:.6}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3 tests/secsgem/equipment.py");
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Run {
            script: Script(child),
            stdin,
            out,
            err,
        }
    }

    /// Tells the script an instant (ms since t0) to report open transactions at.
    fn mark(&mut self, at: f64) {
        writeln!(self.stdin, "{at:.1}").expect("tell the script the instant");
        self.stdin.flush().unwrap();
    }

    /// Waits for the report (and the last lines of stderr); `None` when the test is skipped.
    async fn finish(self, seconds: f64) -> Option<(Value, String)> {
        let Run {
            mut script,
            stdin,
            out,
            err,
        } = self;
        drop(stdin);
        // The script bounds its own waits; this bounds the script.
        let bound = Duration::from_secs_f64(seconds + T3_SECONDS + 15.0);
        let stdout = tokio::time::timeout(bound, out)
            .await
            .expect("the secsgem script did not finish in time")
            .unwrap();
        let stderr = tokio::time::timeout(Duration::from_secs(5), err)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let status = script.0.wait().expect("script exit status");
        let tail: String = {
            let lines: Vec<&str> = stderr.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        if status.code() == Some(2) {
            // secsgem vanished between the check and the run: same rule as at the start.
            if !require_secsgem() {
                return None;
            }
            panic!("the script says secsgem is missing, python3 imports it: {tail}");
        }
        assert!(
            status.success(),
            "script failed ({status}); stderr:\n{tail}"
        );
        let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("script output is not JSON ({e}): {stdout}\nstderr:\n{tail}")
        });
        Some((report, tail))
    }
}

/// For each marked instant, how many sessions had an S1F1 open then.
fn inflight(report: &Value, marks: usize) -> Vec<usize> {
    (0..marks)
        .map(|k| {
            report["per_session"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["inflight_at_flips"][k].as_bool() == Some(true))
                .count()
        })
        .collect()
}

/// An address a process logged (a plain address, or `Some(address)`).
fn logged_addr(v: &Value) -> std::net::SocketAddr {
    v.as_str()
        .expect("an address in the log line")
        .trim_start_matches("Some(")
        .trim_end_matches(')')
        .parse()
        .unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// Errors of any class the equipment counted, and any control message or data it should not
/// have received.
fn protocol_errors(report: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let totals = &report["totals"];
    for class in [
        "t3_timeouts",
        "send_failures",
        "bad_replies",
        "disconnects",
        "left_selected",
        "exceptions",
        "hung",
        "not_selected",
    ] {
        let n = u(&totals[class]);
        if n != 0 {
            bad.push(format!("{class}: {n} (expected 0)"));
        }
    }
    if let Some(control) = report["control_received"].as_object() {
        for (name, n) in control {
            if !ALLOWED_CONTROL.contains(&name.as_str()) {
                bad.push(format!("equipment received {n} {name} (expected none)"));
            }
        }
    }
    if let Some(undecodable) = report["undecodable"].as_object() {
        for (sf, n) in undecodable {
            bad.push(format!("secsgem could not decode {n} {sf}"));
        }
    }
    bad
}

/// Everything wrong with the script's report, given the flip instants (ms since the common t0)
/// and the versions active before the first flip and after it. Empty when the run proves the
/// switch: no error of any class, enough replies, and per session exactly one version change in
/// each flip window, to that window's version (none before the first flip).
fn judge(report: &Value, flips: &[f64], first: &str, second: &str) -> Vec<String> {
    let mut bad = protocol_errors(report);
    let sent = report["flips_ms"].as_array().map_or(0, Vec::len);
    if sent != flips.len() {
        bad.push(format!(
            "the script saw {sent} flips, the test made {}",
            flips.len()
        ));
    }
    let Some(sessions) = report["per_session"].as_array() else {
        bad.push("no per_session in the report".into());
        return bad;
    };
    if sessions.len() != SESSIONS {
        bad.push(format!("{} sessions reported", sessions.len()));
    }
    let target = |window: usize| if window % 2 == 0 { second } else { first };
    for (i, s) in sessions.iter().enumerate() {
        let replies = u(&s["counts"]["replies"]);
        if replies < MIN_REPLIES_PER_SESSION {
            bad.push(format!(
                "session {i}: {replies} replies (want >= {MIN_REPLIES_PER_SESSION})"
            ));
        }
        let runs: Vec<(&str, u64, f64)> = s["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r[0].as_str().unwrap_or("?"),
                    u(&r[1]),
                    r[2].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect();
        for (v, n, at) in &runs {
            if *v != first && *v != second {
                bad.push(format!(
                    "session {i}: {n} replies named version {v:?} (from {at} ms)"
                ));
            }
        }
        // The steady state: the session starts on the first version before any flip.
        match runs.first() {
            None => {
                bad.push(format!("session {i}: no replies"));
                continue;
            }
            Some((v, _, at)) if *v != first || flips.first().is_some_and(|f| at >= f) => {
                bad.push(format!(
                    "session {i}: first reply {v} at {at} ms; expected {first} before the first flip"
                ));
            }
            Some(_) => {}
        }
        // One session has one S1F1 open at a time, so reply order is request order and each run
        // start is a version change at that instant. Window k is [flip k, flip k+1).
        let changes: Vec<(&str, f64)> = runs.iter().skip(1).map(|(v, _, at)| (*v, *at)).collect();
        if let Some((v, at)) = changes
            .iter()
            .find(|(_, at)| flips.first().is_none_or(|f| at < f))
        {
            bad.push(format!(
                "session {i}: changed to {v} at {at} ms, before the first flip"
            ));
        }
        for (k, from) in flips.iter().enumerate() {
            let to = flips.get(k + 1).copied().unwrap_or(f64::INFINITY);
            let inside: Vec<&(&str, f64)> = changes
                .iter()
                .filter(|(_, at)| at >= from && *at < to)
                .collect();
            let want = target(k);
            match inside.as_slice() {
                [(v, _)] if *v == want => {}
                [] => bad.push(format!(
                    "session {i}: did not move to {want} in window {k} ({from:.0}..{to:.0} ms)"
                )),
                [(v, at)] => bad.push(format!(
                    "session {i}: changed to {v} at {at} ms in window {k}, which belongs to {want}"
                )),
                more => bad.push(format!(
                    "session {i}: versions mixed in window {k} ({from:.0}..{to:.0} ms): changes {more:?} \
                     (an old-version reply after a new-version one)"
                )),
            }
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secsgem_equipment_sees_no_error_across_version_flips() {
    if !require_secsgem() {
        return;
    }
    let mut rig = Rig::start(two_versions(V1_DELAY).await, |_| {}).await;
    let hsms = rig.daemon.hsms.clone().expect("hsms front-end");
    let t0 = unix_now();
    let since_t0 = move || (unix_now() - t0) * 1000.0;

    let mut run = Run::start(rig.hsms.port(), SESSIONS, LOAD_SECONDS, t0);
    // Every session selected and on v1 (python start-up and select included in the bound).
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = hsms.sessions();
        if s.len() == SESSIONS
            && s.iter()
                .all(|v| v.backend.as_ref().is_some_and(|b| b.version == "v1"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < ready_by,
            "secsgem sessions never all selected on v1: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Steady state on v1, then FLIPS flips, each window WINDOW long. After each flip every
    // session must report the new version within CONVERGE; if not, flipping stops there and the
    // failure is reported with what the equipment saw.
    let mut bad = Vec::new();
    let mut flips = Vec::new();
    let mut next = tokio::time::Instant::now() + WINDOW;
    'flips: for k in 0..FLIPS {
        tokio::time::sleep_until(next).await;
        let want = if k % 2 == 0 { "v2" } else { "v1" };
        let at = since_t0();
        rig.flip();
        flips.push(at);
        run.mark(at);
        let by = tokio::time::Instant::now() + CONVERGE;
        loop {
            let s = hsms.sessions();
            if s.len() == SESSIONS
                && s.iter()
                    .all(|v| v.backend.as_ref().is_some_and(|b| b.version == want))
            {
                break;
            }
            if tokio::time::Instant::now() >= by {
                bad.push(format!(
                    "flip {k} (at {at:.0} ms): sessions not all on {want} within {CONVERGE:?}: {}",
                    brief(&s)
                ));
                break 'flips;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A slow convergence still leaves the next window a useful length.
        next = (next + WINDOW).max(tokio::time::Instant::now() + WINDOW / 2);
    }
    let sessions = hsms.sessions();
    if flips.len() == FLIPS {
        for s in &sessions {
            if (s.switches, s.rollbacks) != (FLIPS as u64, 0) {
                bad.push(format!(
                    "session {} switched {} times with {} rollbacks (want {FLIPS}, 0)",
                    s.id, s.switches, s.rollbacks
                ));
            }
        }
    }
    let Some((report, tail)) = run.finish(LOAD_SECONDS).await else {
        return;
    };

    let inflight = inflight(&report, flips.len());
    let per_session: Vec<u64> = report["per_session"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| u(&s["counts"]["replies"]))
        .collect();
    let took: Vec<u64> = sessions
        .iter()
        .filter_map(|s| s.last_switch.as_ref().map(|l| l.took_ms))
        .collect();
    eprintln!(
        "secsgem: {} S1F1/S1F2 transactions ({per_session:?} per session), {} flips at \
         {flips:.0?} ms, sessions with an S1F1 open at each flip {inflight:?}, last switch took \
         {took:?} ms; totals {}; control messages received {}; undecodable {}",
        report["totals"]["replies"],
        flips.len(),
        report["totals"],
        report["control_received"],
        report["undecodable"]
    );

    bad.extend(judge(&report, &flips, "v1", "v2"));
    for (k, n) in inflight.iter().enumerate() {
        if *n == 0 {
            bad.push(format!(
                "flip {k}: no session had an S1F1 open (a switch under no load proves little)"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "secsgem run failed:\n  {}\nreport totals: {}\nstderr:\n{tail}",
        bad.join("\n  "),
        report["totals"]
    );
}

/// The judge itself fails on what it must catch (a check that cannot fail is a defect).
#[test]
fn the_judge_catches_timeouts_mixing_and_missing_switches() {
    let flips = [1000.0, 2000.0];
    let session = |runs: Value| {
        serde_json::json!({
            "counts": {"replies": 100},
            "runs": runs,
            "inflight_at_flips": [true, true],
        })
    };
    let good_runs = serde_json::json!([
        ["v1", 50, 10.0, 1005.0],
        ["v2", 30, 1010.0, 2003.0],
        ["v1", 20, 2004.0, 2900.0]
    ]);
    let report = |runs: Value, totals: Value, control: Value| {
        serde_json::json!({
            "totals": totals,
            "control_received": control,
            "undecodable": {},
            "flips_ms": flips,
            "per_session": (0..SESSIONS).map(|_| session(runs.clone())).collect::<Vec<_>>(),
        })
    };
    let zero = serde_json::json!({
        "t3_timeouts": 0, "send_failures": 0, "bad_replies": 0, "disconnects": 0,
        "left_selected": 0, "exceptions": 0, "hung": 0, "not_selected": 0,
    });
    let ok = serde_json::json!({"Select.rsp": 4});
    assert_eq!(
        judge(
            &report(good_runs.clone(), zero.clone(), ok.clone()),
            &flips,
            "v1",
            "v2"
        ),
        Vec::<String>::new()
    );

    let mut t3 = zero.clone();
    t3["t3_timeouts"] = 1.into();
    let bad = judge(
        &report(good_runs.clone(), t3, ok.clone()),
        &flips,
        "v1",
        "v2",
    );
    assert!(bad.iter().any(|b| b.contains("t3_timeouts: 1")), "{bad:?}");

    let separate = serde_json::json!({"Select.rsp": 4, "Separate.req": 1});
    let bad = judge(
        &report(good_runs.clone(), zero.clone(), separate),
        &flips,
        "v1",
        "v2",
    );
    assert!(bad.iter().any(|b| b.contains("Separate.req")), "{bad:?}");

    // v1 answers again after v2 did, inside the v2 window.
    let mixed = serde_json::json!([
        ["v1", 50, 10.0, 1005.0],
        ["v2", 5, 1010.0, 1100.0],
        ["v1", 1, 1101.0, 1101.0],
        ["v2", 10, 1102.0, 1900.0],
        ["v1", 20, 2004.0, 2900.0]
    ]);
    let bad = judge(&report(mixed, zero.clone(), ok.clone()), &flips, "v1", "v2");
    assert!(
        bad.iter().any(|b| b.contains("versions mixed in window 0")),
        "{bad:?}"
    );

    // The session never moved back to v1 after the second flip.
    let stuck = serde_json::json!([["v1", 50, 10.0, 1005.0], ["v2", 50, 1010.0, 2900.0]]);
    let bad = judge(&report(stuck, zero.clone(), ok.clone()), &flips, "v1", "v2");
    assert!(
        bad.iter()
            .any(|b| b.contains("did not move to v1 in window 1")),
        "{bad:?}"
    );

    // A change before any flip, and too few replies.
    let early = serde_json::json!([["v1", 5, 10.0, 500.0], ["v2", 5, 600.0, 2900.0]]);
    let mut r = report(early, zero, ok);
    r["per_session"][0]["counts"]["replies"] = 10.into();
    let bad = judge(&r, &flips, "v1", "v2");
    assert!(
        bad.iter().any(|b| b.contains("before the first flip")),
        "{bad:?}"
    );
    assert!(bad.iter().any(|b| b.contains("10 replies")), "{bad:?}");
}

/// Upgrades of zerodown (the real binary, `serve --upgrade`) while secsgem equipment sessions send
/// S1F1 throughout: the sessions move to each new process, so the equipment sees no disconnect,
/// no Deselect or Separate, no T3 timeout, and every S1F1 gets its S1F2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secsgem_equipment_rides_through_upgrades_of_zerodown() {
    const UPGRADES: u64 = 5;
    const SESSIONS: usize = 8;
    const SECONDS: f64 = 8.0;
    if !require_secsgem() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::hsms::write(
        &dir.path().join("upstreams.toml"),
        &[(
            "v1",
            common::backend("v1").await,
            common::hsms::host("v1", V1_DELAY).await,
            "v1",
            "active",
        )],
    );
    let config = dir.path().join("zerodown.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupgrade_socket = \"upgrade.sock\"\n\n\
         [log]\naccess_log = false\n\n[source]\nkind = \"file\"\npath = \"upstreams.toml\"\npoll_interval = \"50ms\"\n\n\
         [hsms]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let serve: Vec<std::ffi::OsString> = vec!["serve".into(), "--config".into(), config.into()];
    let mut upgrade = serve.clone();
    upgrade.push("--upgrade".into());
    let mut current = Proc::run(&serve);
    let started = current.wait_for("zerodown started");
    let hsms = logged_addr(&started["hsms"]);
    current.wait_for("pool swap");

    let t0 = unix_now();
    let mut run = Run::start(hsms.port(), SESSIONS, SECONDS, t0);
    let mut admin = logged_addr(&started["admin"]);
    let sessions = |admin| async move {
        let (_, body) = common::get(admin, "/status").await;
        let doc: Value = serde_json::from_str(&body).unwrap();
        doc["hsms"]["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = sessions(admin).await;
        if s.len() == SESSIONS && s.iter().all(|v| v["state"] == "selected") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < ready_by,
            "secsgem sessions never all selected: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut marks = Vec::new();
    for generation in 2..=UPGRADES + 1 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let at = (unix_now() - t0) * 1000.0;
        let mut next = Proc::run(&upgrade);
        let s = next.wait_for("zerodown started");
        assert_eq!(s["generation"], generation);
        next.wait_for("serving; the previous generation drains");
        run.mark(at);
        marks.push(at);
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while current.child.try_wait().unwrap().is_none() {
            assert!(
                tokio::time::Instant::now() < end,
                "the old process did not exit"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        admin = logged_addr(&s["admin"]);
        current = next;
    }
    // Still running: every session is in the last process, having lived through every upgrade.
    // The old process exits once it has sent the sessions; the new one lists each as it adopts it.
    let upgrades_of = |s: Vec<Value>| -> Vec<u64> {
        s.iter()
            .map(|s| s["upgrades"].as_u64().unwrap_or(0))
            .collect()
    };
    let adopted_by = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut upgrades = upgrades_of(sessions(admin).await);
    while upgrades != vec![UPGRADES; SESSIONS] && tokio::time::Instant::now() < adopted_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
        upgrades = upgrades_of(sessions(admin).await);
    }
    let Some((report, tail)) = run.finish(SECONDS).await else {
        return;
    };
    let inflight = inflight(&report, marks.len());
    eprintln!(
        "secsgem across {UPGRADES} upgrades: {} S1F1/S1F2 on {SESSIONS} sessions, sessions with an \
         S1F1 open as each upgrade began {inflight:?}; totals {}; control messages received {}",
        report["totals"]["replies"], report["totals"], report["control_received"]
    );
    let mut bad = protocol_errors(&report);
    if upgrades != vec![UPGRADES; SESSIONS] {
        bad.push(format!(
            "sessions' upgrades in the last process {upgrades:?} (want {UPGRADES} each)"
        ));
    }
    if u(&report["totals"]["replies"]) < 20 * SESSIONS as u64 {
        bad.push(format!("too few replies: {}", report["totals"]["replies"]));
    }
    assert!(
        bad.is_empty(),
        "secsgem across upgrades:\n  {}\nstderr:\n{tail}",
        bad.join("\n  ")
    );
    current.signal("TERM");
}
