//! Slowloris: `n` connections per zerodown that each send a request head one header line every
//! 3 s and never finish it. When zerodown cuts one (its `server.header_timeout`, 10 s), it is
//! opened again, so about `n` are held for the whole soak. Records how long each was held.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const LINE_EVERY: Duration = Duration::from_secs(3);
/// A connection still open after this long is reported as never cut.
const HOLD_MAX: Duration = Duration::from_secs(120);

#[derive(Default, Clone)]
pub struct Stats {
    /// How long each connection stayed open before zerodown closed it (ms).
    pub held_ms: Vec<u32>,
    /// Of those, how many got an answer (e.g. a 408) before the close.
    pub answered: u64,
    pub connect_errors: u64,
    /// Connections still open at the stop, or after `HOLD_MAX`.
    pub open_at_stop: u64,
    pub never_cut: u64,
}

pub type Load = Vec<(usize, JoinHandle<Stats>)>;

pub fn start(world: &crate::setup::World, n: usize, stop: Arc<AtomicBool>) -> Load {
    let mut tasks = Vec::new();
    for (t, target) in world.targets.iter().enumerate() {
        for _ in 0..n {
            tasks.push((t, tokio::spawn(holder(target.http, stop.clone()))));
        }
    }
    tasks
}

/// Per zerodown, the merged stats (and the number of holder tasks that had to be aborted).
pub async fn join(load: Load) -> Vec<(Stats, usize)> {
    let mut out: Vec<(Stats, usize)> = Vec::new();
    for (t, task) in load {
        if out.len() <= t {
            out.resize(t + 1, (Stats::default(), 0));
        }
        let abort = task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(s)) => {
                let o = &mut out[t].0;
                o.held_ms.extend(s.held_ms);
                o.answered += s.answered;
                o.connect_errors += s.connect_errors;
                o.open_at_stop += s.open_at_stop;
                o.never_cut += s.never_cut;
            }
            _ => {
                abort.abort();
                out[t].1 += 1;
            }
        }
    }
    out
}

async fn holder(addr: SocketAddr, stop: Arc<AtomicBool>) -> Stats {
    let mut st = Stats::default();
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..5_000))).await;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) && n < 100_000 {
        n += 1;
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
        else {
            st.connect_errors += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let opened = Instant::now();
        if s.write_all(b"GET /hello HTTP/1.1\r\nHost: soak\r\n")
            .await
            .is_err()
        {
            st.held_ms.push(opened.elapsed().as_millis() as u32);
            continue;
        }
        let mut buf = [0u8; 1024];
        let mut got = false;
        let mut tick = tokio::time::interval_at(opened + LINE_EVERY, LINE_EVERY);
        let closed = loop {
            if stop.load(Ordering::Relaxed) {
                break false;
            }
            if opened.elapsed() > HOLD_MAX {
                st.never_cut += 1;
                break false;
            }
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => got = true,
                },
                _ = tick.tick() => {
                    if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        break true;
                    }
                }
            }
        };
        if closed {
            st.held_ms.push(opened.elapsed().as_millis() as u32);
            st.answered += u64::from(got);
        } else {
            st.open_at_stop += 1;
        }
    }
    st
}
