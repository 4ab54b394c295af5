//! The soak under faults (issue 16, item 4): two real zerodown processes (release build) — one on
//! the Consul source (the in-process Consul double), one on the file source — behind the same six
//! `zerodown demo-backend` processes (three v1, three v2) and six demo HSMS hosts, under HTTP/1.1
//! (keep-alive and a new connection per request), h2c and HSMS equipment load, while instances are
//! killed and restarted, Consul goes down, resets its index and answers 500s, both proxies switch
//! every 30 s and reload (SIGHUP) every 10 s, 1,000 slowloris connections hang on each, and the
//! upstreams file is written with garbage and fixed. Every request and every W-bit primary has a
//! deadline; the report counts outcomes by class, checks every answer's version against its
//! window, and samples each zerodown's RSS, open FDs and CPU.
//!
//! Run through `benches/soak.sh` (builds, runs, writes `benches/RESULTS.md`); directly:
//! `cargo bench --bench soak -- --minutes 1 --zerodown target/release/zerodown --out DIR`.

mod faults;
mod hsms_load;
mod http_load;
mod procs;
mod report;
mod setup;
mod slowloris;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

static T0: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the driver started: every record and event uses this clock.
pub fn now_us() -> u64 {
    T0.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The soak's settings, from the command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// Length of the fault phase (the load runs through it, plus warm-up).
    pub minutes: f64,
    pub warmup: Duration,
    pub settle: Duration,
    pub out: PathBuf,
    pub zerodown: PathBuf,
    /// Slowloris connections held against each zerodown.
    pub slowloris: usize,
    /// The negative check: `pools.single_version = false`, and a switch tags the new version
    /// active *beside* the old one, so the proxies mix versions and the report must say so.
    pub mix: bool,
    /// `limits.max_requests_per_connection` for both zerodowns (HTTP/1 `Connection: close`,
    /// h2 graceful GOAWAY at the cap); `None`: the product's default (10,000).
    pub max_requests: Option<u64>,
}

fn parse_args() -> Args {
    let mut a = Args {
        minutes: 10.0,
        warmup: Duration::from_secs(20),
        settle: Duration::from_secs(15),
        out: PathBuf::from("target/soak"),
        zerodown: PathBuf::from("target/release/zerodown"),
        slowloris: 1000,
        mix: false,
        max_requests: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => {} // added by `cargo bench`
            "--minutes" => a.minutes = val().parse().expect("--minutes N"),
            "--warmup" => a.warmup = Duration::from_secs(val().parse().expect("--warmup S")),
            "--settle" => a.settle = Duration::from_secs(val().parse().expect("--settle S")),
            "--out" => a.out = PathBuf::from(val()),
            "--zerodown" => a.zerodown = PathBuf::from(val()),
            "--slowloris" => a.slowloris = val().parse().expect("--slowloris N"),
            "--mix" => a.mix = true,
            "--max-requests" => a.max_requests = Some(val().parse().expect("--max-requests N")),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// One thing the driver did (or saw), for the report's timeline.
#[derive(Debug, Clone)]
pub struct Event {
    pub t_us: u64,
    /// Which zerodown it concerns (`None`: both, or an upstream instance).
    pub target: Option<usize>,
    pub kind: &'static str,
    pub detail: String,
}

/// The shared event log.
#[derive(Default)]
pub struct Events(Mutex<Vec<Event>>);

impl Events {
    pub fn push(&self, target: Option<usize>, kind: &'static str, detail: impl Into<String>) {
        let e = Event {
            t_us: now_us(),
            target,
            kind,
            detail: detail.into(),
        };
        self.0.lock().expect("events").push(e);
    }

    pub fn all(&self) -> Vec<Event> {
        self.0.lock().expect("events").clone()
    }
}

/// Bytes of each zerodown's `/status` and `/metrics`: state that grows without bound shows here.
async fn admin_sizes(world: &setup::World) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for t in &world.targets {
        let size = |r: Option<(u16, String)>| r.map_or(0, |(_, b)| b.len());
        let status = size(http_load::admin_get(t.admin, "/status").await);
        let metrics = size(http_load::admin_get(t.admin, "/metrics").await);
        out.push((status, metrics));
    }
    out
}

fn main() {
    let args = parse_args();
    now_us();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(run(args));
    rt.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    std::fs::create_dir_all(&args.out).expect("out dir");
    let events = Arc::new(Events::default());
    let mut world = match setup::World::start(&args, events.clone()).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("soak: setup failed: {e}");
            return 2;
        }
    };
    eprintln!(
        "soak: ready (consul zerodown pid {}, file zerodown pid {}); warm-up {:?}, faults {} min",
        world.targets[0].pid, world.targets[1].pid, args.warmup, args.minutes
    );
    let mut samples = procs::Samples::default();
    samples.take("idle before", &world);

    let stop = Arc::new(AtomicBool::new(false));
    let load = http_load::start(&world, stop.clone());
    let equipment = hsms_load::start(&world, stop.clone());
    let slow_stop = Arc::new(AtomicBool::new(false));
    let slow = slowloris::start(&world, args.slowloris, slow_stop.clone());
    let sampler = procs::spawn_sampler(&world, args.out.join("samples.tsv"), stop.clone());

    tokio::time::sleep(args.warmup).await;
    samples.take("start (under load)", &world);
    let mut sizes = vec![("start", admin_sizes(&world).await)];
    let fault_secs = (args.minutes * 60.0).round() as u64;
    events.push(
        None,
        "faults",
        format!("fault phase starts ({fault_secs} s)"),
    );
    faults::run(&mut world, fault_secs).await;
    events.push(None, "faults", "fault phase ends");
    samples.take("end (under load)", &world);
    sizes.push(("end", admin_sizes(&world).await));

    stop.store(true, Ordering::Relaxed);
    let http = http_load::join(load).await;
    let hsms = hsms_load::join(equipment).await;
    slow_stop.store(true, Ordering::Relaxed);
    let slow = slowloris::join(slow).await;
    let _ = sampler.await;
    tokio::time::sleep(args.settle).await;
    samples.take("idle after", &world);
    let exits = world.stop().await;

    let r = report::Report {
        args: &args,
        world: &world,
        events: events.all(),
        http,
        hsms,
        slow,
        samples,
        exits,
        admin_sizes: sizes,
    };
    match r.write() {
        Ok(ok) => {
            eprintln!("soak: report in {}", args.out.join("report.md").display());
            if ok {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("soak: writing the report failed: {e}");
            2
        }
    }
}
