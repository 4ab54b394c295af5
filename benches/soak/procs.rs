//! Signals and /proc sampling: RSS, open FDs and CPU seconds of each zerodown (and of the driver
//! and the demo backends, for the CPU budget).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

use crate::setup::World;

/// Sends `sig` to `pid`; a failure is printed, not fatal.
pub fn signal(pid: u32, sig: Signal) {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(e) = kill_process(p, sig) {
        eprintln!("soak: kill({pid}, {sig:?}): {e}");
    }
}

/// One process's resource use at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stat {
    pub rss_kb: u64,
    pub fds: u64,
    /// utime + stime, in clock ticks (100 per second on Linux).
    pub cpu_ticks: u64,
}

pub const TICKS_PER_SEC: f64 = 100.0;

/// Reads `/proc/<pid>`; `None` once the process is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(Stat {
        rss_kb,
        fds,
        cpu_ticks: ticks(14) + ticks(15),
    })
}

/// A zerodown's sockets by what they connect to: (kind, count), e.g. "upstream http" 12.
pub fn sockets(pid: u32, world: &World, t: usize) -> Vec<(&'static str, u64)> {
    use std::collections::{BTreeMap, HashMap};
    // inode -> (local port, remote port, state) from the process's own network namespace.
    let mut by_inode: HashMap<u64, (u16, u16, u8)> = HashMap::new();
    for file in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = |a: &str| {
                a.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    .unwrap_or(0)
            };
            if let (Some(l), Some(r), Some(st), Some(ino)) =
                (f.get(1), f.get(2), f.get(3), f.get(9))
            {
                let state = u8::from_str_radix(st, 16).unwrap_or(0);
                if let Ok(ino) = ino.parse() {
                    by_inode.insert(ino, (port(l), port(r), state));
                }
            }
        }
    }
    let target = &world.targets[t];
    let backends: Vec<u16> = world.instances.iter().map(|i| i.http.port()).collect();
    let hsms_hosts: Vec<u16> = world.instances.iter().map(|i| i.hsms.port()).collect();
    let consul = world.consul.addr().port();
    let mut out: BTreeMap<&'static str, u64> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let link = std::fs::read_link(e.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        let kind = match link
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        {
            None if link.starts_with("socket:") => "other socket",
            None => "not a socket",
            Some(ino) => match by_inode.get(&ino) {
                None => "other socket",
                Some(&(_, _, 0x0A)) => "listening",
                Some(&(l, _, _)) if l == target.http.port() => "client http",
                Some(&(l, _, _)) if l == target.hsms.port() => "client hsms",
                Some(&(l, _, _)) if l == target.admin.port() => "admin",
                Some(&(_, r, _)) if backends.contains(&r) => "upstream http",
                Some(&(_, r, _)) if hsms_hosts.contains(&r) => "upstream hsms",
                Some(&(_, r, _)) if r == consul => "consul",
                Some(_) => "other tcp",
            },
        };
        *out.entry(kind).or_default() += 1;
    }
    out.into_iter().collect()
}

/// Labelled samples of every zerodown (index = target), the driver and the backends' CPU.
#[derive(Default)]
pub struct Samples {
    pub rows: Vec<Sample>,
}

pub struct Sample {
    pub label: &'static str,
    pub t_us: u64,
    pub targets: Vec<Option<Stat>>,
    /// Each zerodown's open FDs by kind.
    pub sockets: Vec<Vec<(&'static str, u64)>>,
    pub driver: Option<Stat>,
}

impl Samples {
    pub fn take(&mut self, label: &'static str, world: &World) {
        let row = Sample {
            label,
            t_us: crate::now_us(),
            targets: world.targets.iter().map(|t| stat(t.pid)).collect(),
            sockets: (0..world.targets.len())
                .map(|t| sockets(world.targets[t].pid, world, t))
                .collect(),
            driver: stat(std::process::id()),
        };
        eprintln!(
            "soak: {label}: {}",
            row.targets
                .iter()
                .zip(&world.targets)
                .map(|(s, t)| match s {
                    Some(s) => format!(
                        "{} rss {} kB fds {} cpu {:.1} s",
                        t.name,
                        s.rss_kb,
                        s.fds,
                        s.cpu_ticks as f64 / TICKS_PER_SEC
                    ),
                    None => format!("{} gone", t.name),
                })
                .collect::<Vec<_>>()
                .join("; ")
        );
        self.rows.push(row);
    }
}

/// Every 5 s until `stop`: one TSV line per zerodown (time, name, RSS kB, FDs, CPU s).
pub fn spawn_sampler(
    world: &World,
    path: PathBuf,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let targets: Vec<(&'static str, u32)> = world.targets.iter().map(|t| (t.name, t.pid)).collect();
    tokio::spawn(async move {
        let Ok(mut f) = std::fs::File::create(&path) else {
            return;
        };
        let _ = writeln!(f, "t_s\tzerodown\trss_kb\tfds\tcpu_s");
        while !stop.load(Ordering::Relaxed) {
            for (name, pid) in &targets {
                if let Some(s) = stat(*pid) {
                    let _ = writeln!(
                        f,
                        "{:.1}\t{name}\t{}\t{}\t{:.2}",
                        crate::now_us() as f64 / 1e6,
                        s.rss_kb,
                        s.fds,
                        s.cpu_ticks as f64 / TICKS_PER_SEC
                    );
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}
