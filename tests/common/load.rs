//! Continuous keep-alive load with per-request records, and the epoch check that proves no request
//! got an old version after the new one had answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::Conn;

#[derive(Debug, Clone)]
pub struct Record {
    pub start: Instant,
    pub end: Instant,
    pub status: u16,
    pub version: String,
}

/// The version a demo backend names in its body: `... (version v2)`.
pub fn version_of(body: &str) -> String {
    body.rsplit("(version ")
        .next()
        .and_then(|v| v.split(')').next())
        .unwrap_or("?")
        .to_string()
}

/// Keep-alive load on one path over `conns` connections, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub records: Arc<Mutex<Vec<Record>>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, path: &'static str, conns: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let records: Arc<Mutex<Vec<Record>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let tasks = (0..conns)
            .map(|_| {
                let (stop, records, errors) = (stop.clone(), records.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut conn = match Conn::open(addr).await {
                        Ok(c) => c,
                        Err(e) => return errors.lock().unwrap().push(format!("connect: {e}")),
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        match conn.get(path).await {
                            Ok((status, body)) => records.lock().unwrap().push(Record {
                                start,
                                end: Instant::now(),
                                status,
                                version: version_of(&body),
                            }),
                            Err(e) => {
                                errors.lock().unwrap().push(format!("{path}: {e}"));
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            records,
            errors,
            tasks,
        }
    }

    /// Stops the load and returns the records, after asserting no connection error and no non-200.
    pub async fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let errors = self.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "connection errors: {errors:?}");
        let records = self.records.lock().unwrap().clone();
        let bad: Vec<_> = records.iter().filter(|r| r.status != 200).collect();
        assert!(
            bad.is_empty(),
            "{} non-200 responses, e.g. {:?}",
            bad.len(),
            bad.first()
        );
        records
    }
}

/// The epoch rule for one pool. `switches[k]` is when the change to epoch k began (whose version is
/// `versions[k]`). A request that starts after the first response of that version and ends before
/// the next change began can only have loaded an epoch-k snapshot, so it must get that version.
/// (Requests overlapping a change may legitimately see either side.) Returns how many were checked.
pub fn check_no_old_after_new(
    records: &[Record],
    switches: &[Instant],
    versions: &[&str],
    pool: &str,
) -> usize {
    let mut checked = 0;
    for k in 1..switches.len() {
        let next = switches
            .get(k + 1)
            .copied()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let first_new = records
            .iter()
            .filter(|r| r.start >= switches[k] && r.version == versions[k])
            .map(|r| r.end)
            .min()
            .unwrap_or_else(|| panic!("{pool}: no response from {} after switch {k}", versions[k]));
        for r in records
            .iter()
            .filter(|r| r.start > first_new && r.end < next)
        {
            assert_eq!(
                r.version, versions[k],
                "{pool}: switch {k}: a request started after the first {} response got {}",
                versions[k], r.version
            );
            checked += 1;
        }
    }
    checked
}

/// Waits until `path` answers with `version` on a dedicated connection.
pub async fn until_version(addr: SocketAddr, path: &str, version: &str) {
    let mut probe = Conn::open(addr).await.unwrap();
    let deadline = Instant::now() + super::DEADLINE;
    loop {
        let (status, body) = probe.get(path).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        if version_of(&body) == version {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never answered {version}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
