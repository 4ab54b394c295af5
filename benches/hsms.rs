//! HSMS through zerodown against a direct connection, side by side in one run: messages per
//! second and reply latency (p50/p99) with the same equipment load (S1F1 W-bit primaries, a
//! window in flight per session), then the per-session switch time distribution under that load.
//! Run: `cargo bench --bench hsms` (release build). Results go to stdout as one table; the
//! numbers quoted in benches/RESULTS.md come from it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zerodown::config::{Config, FileSourceConfig, HsmsConfig, SourceConfig};
use zerodown::daemon::{Daemon, Listeners};
use zerodown::demo::equipment::{self, Tally};
use zerodown::demo::hsms::{spawn, HsmsHost};

const SESSIONS: usize = 8;
const WINDOW: usize = 4;
const SECONDS: u64 = 3;
const SWITCHES: u64 = 30;

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn load(addr: SocketAddr, sessions: usize, for_: Duration) -> Vec<Tally> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..sessions)
        .map(|_| {
            tokio::spawn(equipment::run(
                addr,
                WINDOW,
                Duration::from_secs(5),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(for_).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("equipment task"));
    }
    out
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// (messages/s, p50 µs, p99 µs, errors) over the tallies, skipping the first 10 % (warm-up).
fn summarise(tallies: &[Tally], seconds: f64) -> (f64, u64, u64, usize) {
    let mut lat: Vec<u64> = Vec::new();
    let mut errors = 0;
    for t in tallies {
        errors += t.errors.len();
        let skip = t.replies.len() / 10;
        lat.extend(
            t.replies
                .iter()
                .skip(skip)
                .map(|r| (r.end - r.start).as_micros() as u64),
        );
    }
    let total: usize = tallies.iter().map(|t| t.replies.len()).sum();
    lat.sort_unstable();
    (
        total as f64 / seconds,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        errors,
    )
}

fn write_upstreams(path: &std::path::Path, v1: SocketAddr, v2: SocketAddr, active: &str) {
    let (t1, t2) = if active == "v1" {
        ("active", "standby")
    } else {
        ("standby", "active")
    };
    let text = format!(
        "[[instances]]\nid = \"v1\"\naddress = \"127.0.0.1:9\"\nhsms = \"{v1}\"\nversion = \"v1\"\ntags = [\"{t1}\"]\n\n[[instances]]\nid = \"v2\"\naddress = \"127.0.0.1:9\"\nhsms = \"{v2}\"\nversion = \"v2\"\ntags = [\"{t2}\"]\n"
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn main() {
    let sessions = arg("HSMS_SESSIONS", SESSIONS as u64) as usize;
    let seconds = arg("HSMS_SECONDS", SECONDS);
    let switches = arg("HSMS_SWITCHES", SWITCHES);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let host = |v: &str| HsmsHost {
            version: v.into(),
            delay: Duration::ZERO,
        };
        let v1 = spawn(any, host("v1")).await.unwrap();
        let v2 = spawn(any, host("v2")).await.unwrap();
        let dir = std::env::temp_dir().join(format!("zerodown-hsms-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let upstreams = dir.join("upstreams.toml");
        write_upstreams(&upstreams, v1, v2, "v1");
        let hsms = tokio::net::TcpListener::bind(any).await.unwrap();
        let mut cfg = Config {
            source: SourceConfig::File(FileSourceConfig {
                path: upstreams.clone(),
                poll_interval: Duration::from_millis(20),
            }),
            ..Config::default()
        };
        cfg.log.level = "warn".into();
        cfg.hsms = Some(HsmsConfig::new(hsms.local_addr().unwrap()));
        let daemon = Daemon::run(
            cfg,
            Listeners {
                public: tokio::net::TcpListener::bind(any).await.unwrap(),
                admin: None,
                tls: None,
                hsms: Some(hsms),
            },
        )
        .unwrap();
        let mut gen = daemon.publisher().subscribe();
        gen.wait_for(|g| *g >= 1).await.unwrap();
        let through = daemon.hsms_addr.unwrap();
        let span = Duration::from_secs(seconds);

        // Interleaved rounds, so machine noise hits both alike.
        let mut rows = Vec::new();
        for round in 0..2 {
            for (name, addr) in [("direct", v1), ("zerodown", through)] {
                let t = load(addr, sessions, span).await;
                let (rate, p50, p99, errors) = summarise(&t, span.as_secs_f64());
                rows.push((round, name, rate, p50, p99, errors));
            }
        }
        println!("# HSMS: {sessions} sessions x {WINDOW} S1F1 in flight, {seconds}s per run");
        println!("round\ttarget\tmsg/s\tp50_us\tp99_us\terrors");
        for (round, name, rate, p50, p99, errors) in &rows {
            println!("{round}\t{name}\t{rate:.0}\t{p50}\t{p99}\t{errors}");
        }

        // Switch time distribution under the same load.
        let front = Arc::clone(daemon.hsms.as_ref().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..sessions)
            .map(|_| {
                tokio::spawn(equipment::run(
                    through,
                    WINDOW,
                    Duration::from_secs(5),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut took = Vec::new();
        for k in 1..=switches {
            let to = if k % 2 == 1 { "v2" } else { "v1" };
            write_upstreams(&upstreams, v1, v2, to);
            let end = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let s = front.sessions();
                if s.len() == sessions && s.iter().all(|s| s.switches == k) {
                    took.extend(s.iter().filter_map(|s| s.last_switch.as_ref().map(|l| l.took_ms)));
                    break;
                }
                assert!(tokio::time::Instant::now() < end, "switch {k} did not complete");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut errors = 0;
        for t in tasks {
            errors += t.await.unwrap().errors.len();
        }
        took.sort_unstable();
        println!(
            "# switch (per session, select + drain + flush), {} samples over {switches} switches: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; equipment errors {errors}",
            took.len(),
            pct(&took, 0.5),
            pct(&took, 0.9),
            pct(&took, 0.99),
            took.last().copied().unwrap_or(0)
        );
        daemon.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
