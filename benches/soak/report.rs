//! The soak's report: outcomes by class, failures set against the kills, every answer's version
//! against its window, slowloris, resources, log lines at ERROR (and WARN). Written as markdown
//! (`report.md`, spliced into benches/RESULTS.md by soak.sh) with raw TSVs beside it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::http_load::{Mode, Out, Outcome, Rec};
use crate::procs::{Samples, TICKS_PER_SEC};
use crate::setup::{World, INITIAL};
use crate::slowloris::Stats;
use crate::{Args, Event};

/// A failure counts as "at a kill" when its request started within this window around a kill.
const KILL_BEFORE_US: u64 = 100_000;
const KILL_AFTER_US: u64 = 2_000_000;

pub struct Report<'a> {
    pub args: &'a Args,
    pub world: &'a World,
    pub events: Vec<Event>,
    pub http: Out,
    pub hsms: Out,
    pub slow: Vec<(Stats, usize)>,
    pub samples: Samples,
    pub exits: Vec<String>,
    /// (when, per zerodown: bytes of `/status`, bytes of `/metrics`).
    pub admin_sizes: Vec<(&'static str, Vec<(usize, usize)>)>,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn outcome_name(o: Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Status(s) => format!("status {s}"),
        Outcome::Timeout => "timeout".into(),
        Outcome::Refused => "refused".into(),
        Outcome::Reset => "reset".into(),
        Outcome::Closed => "closed early".into(),
        Outcome::Protocol => "protocol error".into(),
        Outcome::NoVersion => "no version".into(),
        Outcome::Other => "other".into(),
    }
}

/// Version checks of one zerodown, one mode family (HTTP or HSMS).
#[derive(Default)]
struct VersionCheck {
    answers: u64,
    wrong: u64,
    mixed_global: u64,
    mixed_conn: u64,
    /// Per switch: order time, new version, first new answer (µs after the order), requests in
    /// flight at that first new answer's start, sessions/conns that never saw the new version.
    switches: Vec<(u64, u8, Option<u64>, u64, u64)>,
    examples: Vec<String>,
}

fn window_of(orders: &[(u64, u8)], t: u64) -> usize {
    orders.partition_point(|o| o.0 <= t)
}

/// (old, new) versions of window `w` (window 0: before the first switch).
fn versions(orders: &[(u64, u8)], w: usize) -> (u8, u8) {
    let at = |i: usize| if i == 0 { INITIAL } else { orders[i - 1].1 };
    if w == 0 {
        (INITIAL, INITIAL)
    } else {
        (at(w - 1), at(w))
    }
}

fn check_versions(recs: &[&Rec], orders: &[(u64, u8)], global: bool) -> VersionCheck {
    let mut c = VersionCheck::default();
    let mut recs: Vec<&Rec> = recs
        .iter()
        .copied()
        .filter(|r| r.outcome == Outcome::Ok)
        .collect();
    recs.sort_by_key(|r| r.start_us);
    let windows = orders.len() + 1;
    let mut first_new: Vec<Option<&Rec>> = vec![None; windows];
    for r in &recs {
        let w = window_of(orders, r.start_us);
        let (_, new) = versions(orders, w);
        if w > 0 && r.version == new && first_new[w].is_none_or(|f| r.end_us < f.end_us) {
            first_new[w] = Some(r);
        }
    }
    // conn -> (window, end of its first new-version answer in that window)
    let mut conn_new: HashMap<(u8, Mode, u32), (usize, u64)> = HashMap::new();
    let mut conns_in_window: Vec<HashMap<(u8, Mode, u32), bool>> = vec![HashMap::new(); windows];
    for r in &recs {
        c.answers += 1;
        let w = window_of(orders, r.start_us);
        let (old, new) = versions(orders, w);
        let later = orders[w..]
            .iter()
            .take_while(|o| o.0 <= r.end_us)
            .any(|o| o.1 == r.version);
        if r.version != old && r.version != new && !later {
            c.wrong += 1;
            if c.examples.len() < 10 {
                c.examples.push(format!(
                    "wrong version v{} at {:.3} s ({}, conn {}), window {w} allows v{old}/v{new}",
                    r.version,
                    secs(r.start_us),
                    r.mode.name(),
                    r.conn
                ));
            }
            continue;
        }
        let key = (r.target, r.mode, r.conn);
        let seen = conns_in_window[w].entry(key).or_insert(false);
        if r.version == new {
            *seen = true;
            let e = conn_new.entry(key).or_insert((w, r.end_us));
            if e.0 != w {
                *e = (w, r.end_us);
            }
        }
        if w == 0 || old == new || r.version != old {
            continue;
        }
        if global && first_new[w].is_some_and(|f| r.start_us > f.end_us) {
            c.mixed_global += 1;
            if c.examples.len() < 10 {
                c.examples.push(format!(
                    "mixing: v{old} at {:.3} s ({}, conn {}) after v{new} answered at {:.3} s",
                    secs(r.start_us),
                    r.mode.name(),
                    r.conn,
                    secs(first_new[w].map_or(0, |f| f.end_us))
                ));
            }
        }
        if conn_new
            .get(&key)
            .is_some_and(|&(cw, end)| cw == w && r.start_us > end)
        {
            c.mixed_conn += 1;
            if c.examples.len() < 10 {
                c.examples.push(format!(
                    "mixing on one connection: v{old} at {:.3} s ({}, conn {})",
                    secs(r.start_us),
                    r.mode.name(),
                    r.conn
                ));
            }
        }
    }
    for (i, &(t, v)) in orders.iter().enumerate() {
        let w = i + 1;
        let f = first_new[w];
        let in_flight = f.map_or(0, |f| {
            recs.iter()
                .filter(|r| r.start_us < f.start_us && r.end_us > f.start_us)
                .count() as u64
        });
        let never = conns_in_window[w].values().filter(|s| !**s).count() as u64;
        c.switches.push((
            t,
            v,
            f.map(|f| f.end_us.saturating_sub(t)),
            in_flight,
            never,
        ));
    }
    c
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl Report<'_> {
    /// Writes report.md, failures.tsv and events.tsv; returns whether every correctness check
    /// passed (outcomes explained by kills, no wrong version, no mixing, every switch seen).
    pub fn write(&self) -> std::io::Result<bool> {
        let mut md = String::new();
        let mut ok = true;
        let w = &mut md;
        let kills: Vec<u64> = self
            .events
            .iter()
            .filter(|e| e.kind == "kill")
            .map(|e| e.t_us)
            .collect();
        let at_kill = |t: u64| {
            kills
                .iter()
                .any(|&k| t + KILL_BEFORE_US >= k && t <= k + KILL_AFTER_US)
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.events {
            *counts.entry(e.kind).or_default() += 1;
        }
        let _ = writeln!(
            w,
            "Fault phase {} min after a {} s warm-up (load throughout), then {} s idle. Events: {}.\n",
            self.args.minutes,
            self.args.warmup.as_secs(),
            self.args.settle.as_secs(),
            counts
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );

        // Outcomes.
        let _ = writeln!(w, "**Requests by outcome** (every request and W-bit primary has a deadline: HTTP 5 s, HSMS 10 s):\n");
        let _ = writeln!(w, "| zerodown | load | requests | per second | ok | failed | failures by class | at a kill (±) |");
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
        let all: Vec<&Rec> = self.http.recs.iter().chain(&self.hsms.recs).collect();
        let mut groups: BTreeMap<(u8, Mode), Vec<&Rec>> = BTreeMap::new();
        for r in &all {
            groups.entry((r.target, r.mode)).or_default().push(r);
        }
        let mut unexplained = Vec::new();
        for ((t, mode), recs) in &groups {
            let mut by: BTreeMap<Outcome, u64> = BTreeMap::new();
            let mut near = 0;
            for r in recs {
                *by.entry(r.outcome).or_default() += 1;
                if r.outcome != Outcome::Ok {
                    if at_kill(r.start_us) && *mode != Mode::Hsms {
                        near += 1;
                    } else {
                        unexplained.push(**r);
                    }
                }
            }
            let okn = by.get(&Outcome::Ok).copied().unwrap_or(0);
            let classes = by
                .iter()
                .filter(|(o, _)| **o != Outcome::Ok)
                .map(|(o, n)| format!("{} {n}", outcome_name(*o)))
                .collect::<Vec<_>>()
                .join(", ");
            let first = recs.iter().map(|r| r.start_us).min().unwrap_or(0);
            let last = recs.iter().map(|r| r.end_us).max().unwrap_or(0);
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
                self.world.targets[*t as usize].name,
                mode.name(),
                recs.len(),
                recs.len() as f64 / secs(last.saturating_sub(first)).max(1e-3),
                okn,
                recs.len() as u64 - okn,
                if classes.is_empty() {
                    "-".into()
                } else {
                    classes
                },
                near
            );
        }
        let http = &self.http.shared;
        let _ = writeln!(
            w,
            "\nAlso: {} h2 requests resent on a new connection, certainly unprocessed ({} handed back unsent by hyper as the connection closed after a GOAWAY, the rest refused by the GOAWAY): what any h2 client does; \
             {} HTTP/1.1 keep-alive connections ended by the server with `Connection: close`, \
             {} HSMS sessions opened again after an error, {} HTTP and {} HSMS load tasks stalled at the stop.\n",
            http.h2_resent.load(std::sync::atomic::Ordering::Relaxed),
            http.h2_unsent.load(std::sync::atomic::Ordering::Relaxed),
            http.h1_closed_by_server.load(std::sync::atomic::Ordering::Relaxed),
            self.hsms.shared.hsms_reconnects.load(std::sync::atomic::Ordering::Relaxed),
            self.http.stuck,
            self.hsms.stuck,
        );
        if self.http.stuck + self.hsms.stuck > 0 {
            ok = false;
        }
        let failures: Vec<_> = {
            let mut f = self.http.shared.failures.lock().expect("failures").clone();
            f.extend(
                self.hsms
                    .shared
                    .failures
                    .lock()
                    .expect("failures")
                    .iter()
                    .cloned(),
            );
            f
        };
        let mut by_detail: BTreeMap<(String, &str, String, String), (u64, u64)> = BTreeMap::new();
        for f in &failures {
            let key = (
                self.world.targets[f.rec.target as usize].name.to_string(),
                f.rec.mode.name(),
                outcome_name(f.rec.outcome),
                f.detail.chars().take(140).collect::<String>(),
            );
            let e = by_detail.entry(key).or_default();
            e.0 += 1;
            e.1 += u64::from(at_kill(f.rec.start_us) && f.rec.mode != Mode::Hsms);
        }
        if !by_detail.is_empty() {
            let _ = writeln!(
                w,
                "Failures, by what the client got (502 bodies are zerodown's cause text):\n"
            );
            let _ = writeln!(
                w,
                "| zerodown | load | class | detail | count | of which at a kill |"
            );
            let _ = writeln!(w, "|---|---|---|---|---|---|");
            for ((t, m, o, d), (n, k)) in &by_detail {
                let d = d.replace('|', "\\|");
                let _ = writeln!(w, "| {t} | {m} | {o} | {d} | {n} | {k} |");
            }
            let _ = writeln!(w);
        }
        let _ = writeln!(
            w,
            "A failure is \"at a kill\" when its request started between {} ms before and {} s after a demo-backend was SIGKILLed (HSMS hosts are never killed, so no HSMS failure is). **Failures not at a kill: {}.**\n",
            KILL_BEFORE_US / 1000,
            KILL_AFTER_US / 1_000_000,
            unexplained.len()
        );
        if !unexplained.is_empty() {
            ok = false;
            for r in unexplained.iter().take(15) {
                let near = self
                    .events
                    .iter()
                    .min_by_key(|e| e.t_us.abs_diff(r.start_us))
                    .map(|e| format!("{} {} at {:.3} s", e.kind, e.detail, secs(e.t_us)))
                    .unwrap_or_default();
                let _ = writeln!(
                    w,
                    "- {:.3} s {} {} {}: nearest event {near}",
                    secs(r.start_us),
                    self.world.targets[r.target as usize].name,
                    r.mode.name(),
                    outcome_name(r.outcome)
                );
            }
            let _ = writeln!(w);
        }

        // Versions.
        let _ = writeln!(w, "**Versions** (every answer checked against its window: before the first switch only v{INITIAL}; after a switch order the old or the new version, and once the new one has answered — on any connection for HTTP, on the same session for HSMS — an old answer is mixing):\n");
        let _ = writeln!(w, "| zerodown | load | answers checked | wrong version | mixing (global) | mixing (same conn/session) | switches seen | first new answer after the order: median / max | in flight at it (median) | HSMS sessions without a new answer in a window |");
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
        let mut version_examples = Vec::new();
        for (t, target) in self.world.targets.iter().enumerate() {
            for hsms in [false, true] {
                let recs: Vec<&Rec> = all
                    .iter()
                    .copied()
                    .filter(|r| r.target as usize == t && (r.mode == Mode::Hsms) == hsms)
                    .collect();
                let c = check_versions(&recs, &target.orders, !hsms);
                let seen = c.switches.iter().filter(|s| s.2.is_some()).count();
                let mut lat: Vec<u64> = c.switches.iter().filter_map(|s| s.2).collect();
                lat.sort_unstable();
                let mut inflight: Vec<u64> = c.switches.iter().map(|s| s.3).collect();
                inflight.sort_unstable();
                let never: u64 = c.switches.iter().map(|s| s.4).sum();
                if c.wrong + c.mixed_global + c.mixed_conn > 0
                    || seen < c.switches.len()
                    || (hsms && never > 0)
                {
                    ok = false;
                }
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {} | {} | {}/{} | {:.0} / {:.0} ms | {} | {} |",
                    target.name,
                    if hsms { "HSMS" } else { "HTTP (all)" },
                    c.answers,
                    c.wrong,
                    if hsms {
                        "n/a".into()
                    } else {
                        c.mixed_global.to_string()
                    },
                    c.mixed_conn,
                    seen,
                    c.switches.len(),
                    pct(&lat, 0.5) as f64 / 1000.0,
                    lat.last().copied().unwrap_or(0) as f64 / 1000.0,
                    pct(&inflight, 0.5),
                    if hsms {
                        never.to_string()
                    } else {
                        "n/a".into()
                    }
                );
                version_examples.extend(c.examples);
                let mut lines = String::new();
                for s in &c.switches {
                    let _ = writeln!(
                        lines,
                        "{}\t{}\t{:.3}\tv{}\t{}\t{}\t{}",
                        target.name,
                        if hsms { "hsms" } else { "http" },
                        secs(s.0),
                        s.1,
                        s.2.map_or("never".into(), |l| format!("{:.1}", l as f64 / 1000.0)),
                        s.3,
                        s.4
                    );
                }
                self.append("switches.tsv", &lines)?;
            }
        }
        let _ = writeln!(w);
        for e in version_examples.iter().take(20) {
            let _ = writeln!(w, "- {e}");
        }

        // Slowloris.
        let _ = writeln!(w, "\n**Slowloris** ({} connections held against each zerodown, one header line every 3 s, reopened when cut):\n", self.args.slowloris);
        let _ = writeln!(w, "| zerodown | connections cut | held min / median / max | answered before the cut | connect errors | never cut (> 120 s) | open at the stop |");
        let _ = writeln!(w, "|---|---|---|---|---|---|---|");
        for (t, (s, aborted)) in self.slow.iter().enumerate() {
            let mut held: Vec<u64> = s.held_ms.iter().map(|&m| u64::from(m)).collect();
            held.sort_unstable();
            let _ = writeln!(
                w,
                "| {} | {} | {:.1} / {:.1} / {:.1} s | {} | {} | {} | {}{} |",
                self.world.targets[t].name,
                held.len(),
                held.first().copied().unwrap_or(0) as f64 / 1000.0,
                pct(&held, 0.5) as f64 / 1000.0,
                held.last().copied().unwrap_or(0) as f64 / 1000.0,
                s.answered,
                s.connect_errors,
                s.never_cut,
                s.open_at_stop,
                if *aborted > 0 {
                    format!(" ({aborted} holders aborted)")
                } else {
                    String::new()
                }
            );
        }

        // Resources.
        let _ = writeln!(
            w,
            "\n**Resources** of each zerodown (`/proc`: VmRSS, entries in fd/, utime+stime):\n"
        );
        let _ = writeln!(
            w,
            "| zerodown | when | at (s) | RSS | open FDs | of which | CPU used |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|");
        for (t, target) in self.world.targets.iter().enumerate() {
            for row in &self.samples.rows {
                if let Some(Some(s)) = row.targets.get(t) {
                    let kinds = row.sockets.get(t).map_or(String::new(), |k| {
                        k.iter()
                            .map(|(k, n)| format!("{k} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    });
                    let _ = writeln!(
                        w,
                        "| {} | {} | {:.0} | {:.1} MB | {} | {kinds} | {:.1} s |",
                        target.name,
                        row.label,
                        secs(row.t_us),
                        s.rss_kb as f64 / 1024.0,
                        s.fds,
                        s.cpu_ticks as f64 / TICKS_PER_SEC
                    );
                }
            }
        }
        let _ = writeln!(w);
        let find = |label: &str, t: usize| {
            self.samples
                .rows
                .iter()
                .find(|r| r.label == label)
                .and_then(|r| r.targets.get(t).copied().flatten())
        };
        for (t, target) in self.world.targets.iter().enumerate() {
            let growth = |a: u64, b: u64| (b as f64 - a as f64) * 100.0 / (a.max(1) as f64);
            if let (Some(a), Some(b)) = (find("start (under load)", t), find("end (under load)", t))
            {
                let cpu = (b.cpu_ticks - a.cpu_ticks) as f64 / TICKS_PER_SEC;
                let span = self.args.minutes * 60.0;
                let _ = writeln!(
                    w,
                    "- {}: under load, start → end: RSS {:+.1} %, FDs {:+.1} % ({} → {}); CPU {:.1} s over the {:.0} s fault phase ({:.2} cores)",
                    target.name,
                    growth(a.rss_kb, b.rss_kb),
                    growth(a.fds, b.fds),
                    a.fds,
                    b.fds,
                    cpu,
                    span,
                    cpu / span
                );
            }
            if let (Some(a), Some(b)) = (find("idle before", t), find("idle after", t)) {
                let _ = writeln!(
                    w,
                    "- {}: idle, before → after: RSS {:+.1} % ({:.1} → {:.1} MB), FDs {:+.1} % ({} → {})",
                    target.name,
                    growth(a.rss_kb, b.rss_kb),
                    a.rss_kb as f64 / 1024.0,
                    b.rss_kb as f64 / 1024.0,
                    growth(a.fds, b.fds),
                    a.fds,
                    b.fds
                );
            }
        }
        let series = std::fs::read_to_string(self.args.out.join("samples.tsv")).unwrap_or_default();
        for target in &self.world.targets {
            // RSS over the run, by quarter, from the 5 s samples: a leak grows linearly, a heap
            // finding its high-water mark levels off.
            let rss: Vec<(f64, f64)> = series
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    (f.get(1) == Some(&target.name)).then_some(())?;
                    Some((
                        f.first()?.parse().ok()?,
                        f.get(2)?.parse::<f64>().ok()? / 1024.0,
                    ))
                })
                .collect();
            if rss.len() >= 8 {
                let q = |i: usize| rss[(rss.len() - 1) * i / 4];
                let pts: Vec<String> = (0..=4)
                    .map(|i| format!("{:.1} MB at {:.0} s", q(i).1, q(i).0))
                    .collect();
                let (a, b) = (q(2), q(4));
                let _ = writeln!(
                    w,
                    "- {}: RSS by quarter of the run: {}; second half {:+.1} % ({:+.2} MB/min)",
                    target.name,
                    pts.join(", "),
                    (b.1 - a.1) * 100.0 / a.1,
                    (b.1 - a.1) * 60.0 / (b.0 - a.0).max(1.0)
                );
            }
        }
        for (t, target) in self.world.targets.iter().enumerate() {
            let sizes = self
                .admin_sizes
                .iter()
                .filter_map(|(when, v)| v.get(t).map(|(s, m)| format!("{when} {s} / {m}")))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                w,
                "- {}: bytes of `/status` / `/metrics`: {sizes}",
                target.name
            );
        }
        if let (Some(a), Some(b)) = (
            self.samples.rows.first().and_then(|r| r.driver),
            self.samples.rows.last().and_then(|r| r.driver),
        ) {
            let _ = writeln!(
                w,
                "- the driver (load, Consul double, HSMS hosts, slowloris): CPU {:.1} s",
                (b.cpu_ticks - a.cpu_ticks) as f64 / TICKS_PER_SEC
            );
        }

        // Logs.
        let _ = writeln!(
            w,
            "\n**Log lines** (zerodown writes JSON lines; access log off):\n"
        );
        for target in &self.world.targets {
            let (levels, errors, warns) = scan_log(&target.log);
            let _ = writeln!(
                w,
                "- {}: {}",
                target.name,
                levels
                    .iter()
                    .map(|(l, n)| format!("{l} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (msg, n) in &warns {
                let _ = writeln!(w, "  - WARN ×{n}: {msg}");
            }
            for (msg, n) in &errors {
                let _ = writeln!(w, "  - **ERROR** ×{n}: {msg}");
            }
        }
        let _ = writeln!(
            w,
            "\nExit after SIGTERM: {}.",
            self.world
                .targets
                .iter()
                .zip(&self.exits)
                .map(|(t, e)| format!("{} {e}", t.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            w,
            "\nCorrectness checks (failures only at kills, no wrong version, no mixing, every switch seen, no stalled load task): **{}**.",
            if ok { "pass" } else { "FAIL" }
        );

        std::fs::write(self.args.out.join("report.md"), &md)?;
        let mut f = String::from("t_s\tzerodown\tload\toutcome\tdetail\n");
        for x in &failures {
            let _ = writeln!(
                f,
                "{:.3}\t{}\t{}\t{}\t{}",
                secs(x.rec.start_us),
                self.world.targets[x.rec.target as usize].name,
                x.rec.mode.name(),
                outcome_name(x.rec.outcome),
                x.detail.replace(['\t', '\n'], " ")
            );
        }
        std::fs::write(self.args.out.join("failures.tsv"), f)?;
        let mut e = String::from("t_s\tzerodown\tevent\tdetail\n");
        for x in &self.events {
            let t = x.target.map_or("both", |t| self.world.targets[t].name);
            let _ = writeln!(e, "{:.3}\t{t}\t{}\t{}", secs(x.t_us), x.kind, x.detail);
        }
        std::fs::write(self.args.out.join("events.tsv"), e)?;
        Ok(ok)
    }

    fn append(&self, file: &str, text: &str) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.args.out.join(file);
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        if new {
            writeln!(
                f,
                "zerodown\tload\torder_s\tnew\tfirst_new_ms\tin_flight\tconns_without_new"
            )?;
        }
        f.write_all(text.as_bytes())
    }
}

/// Lines per level, and the WARN and ERROR messages (with their main fields) and counts.
#[allow(clippy::type_complexity)]
fn scan_log(
    path: &std::path::Path,
) -> (
    BTreeMap<String, u64>,
    BTreeMap<String, u64>,
    BTreeMap<String, u64>,
) {
    let (mut levels, mut errors, mut warns) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            *levels.entry("not JSON".to_string()).or_default() += 1;
            if line.to_ascii_uppercase().contains("ERROR") {
                *errors.entry(line.chars().take(200).collect()).or_default() += 1;
            }
            continue;
        };
        let level = v["level"].as_str().unwrap_or("?").to_string();
        *levels.entry(level.clone()).or_default() += 1;
        let msg = v["message"].as_str().unwrap_or("").to_string();
        let target = v["target"].as_str().unwrap_or("");
        let error = v["error"]
            .as_str()
            .map_or(String::new(), |e| format!(" (error: {e})"));
        let key = format!("{target}: {msg}{error}")
            .chars()
            .take(220)
            .collect::<String>();
        match level.as_str() {
            "ERROR" => *errors.entry(key).or_default() += 1,
            "WARN" => *warns.entry(key).or_default() += 1,
            _ => {}
        }
    }
    (levels, errors, warns)
}
