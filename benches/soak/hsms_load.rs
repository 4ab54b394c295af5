//! HSMS equipment load on each zerodown's HSMS listener: sessions that select, then keep
//! `WINDOW` S1F1 W-bit primaries in flight (one sent every `PACE` at most), answering Linktests.
//! Every primary is one record: its S1F2's version, or a T3 timeout (10 s), or lost with its
//! session (disconnect, unexpected message); then the session is opened again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zerodown::demo::equipment::s1f1;
use zerodown::demo::hsms::s1f2_version;
use zerodown::hsms::codec::{self, Decoder, Message, SType};

use crate::http_load::{next_conn, Mode, Outcome, Rec, Shared};
use crate::setup::World;

pub const SESSIONS: usize = 6;
pub const WINDOW: usize = 2;
pub const PACE: Duration = Duration::from_millis(20);
pub const T3: Duration = Duration::from_secs(10);
const MAX_RECS: usize = 2_000_000;

pub struct Load {
    tasks: Vec<JoinHandle<Vec<Rec>>>,
    shared: Arc<Shared>,
}

pub fn start(world: &World, stop: Arc<AtomicBool>) -> Load {
    let shared = Arc::new(Shared::default());
    let mut tasks = Vec::new();
    for (t, target) in world.targets.iter().enumerate() {
        for _ in 0..SESSIONS {
            let (addr, stop, shared) = (target.hsms, stop.clone(), shared.clone());
            tasks.push(tokio::spawn(equipment(t as u8, addr, stop, shared)));
        }
    }
    Load { tasks, shared }
}

pub async fn join(load: Load) -> crate::http_load::Out {
    let mut recs = Vec::new();
    let mut stuck = 0;
    for task in load.tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout(T3 + Duration::from_secs(5), task).await {
            Ok(Ok(r)) => recs.extend(r),
            Ok(Err(_)) => stuck += 1,
            Err(_) => {
                abort.abort();
                stuck += 1;
            }
        }
    }
    crate::http_load::Out {
        recs,
        shared: load.shared,
        stuck,
    }
}

/// One equipment: sessions one after the other until `stop`.
async fn equipment(
    target: u8,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
) -> Vec<Rec> {
    let mut recs = Vec::new();
    let mut system = 100u32;
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..50_000))).await;
    let mut first = true;
    while !stop.load(Ordering::Relaxed) && recs.len() < MAX_RECS {
        if !first {
            shared.hsms_reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        first = false;
        let mut s = Session {
            target,
            conn: next_conn(),
            pending: HashMap::new(),
            recs: &mut recs,
            shared: &shared,
        };
        let err = s.run(addr, &stop, &mut system).await;
        if let Err((outcome, detail)) = err {
            let open = s.pending.len();
            s.lose_all(outcome, &detail);
            if open == 0 {
                // A failure with nothing open (connect, select): one record of its own.
                let now = crate::now_us();
                let rec = Rec {
                    start_us: now,
                    end_us: now,
                    target,
                    mode: Mode::Hsms,
                    outcome,
                    version: 0,
                    conn: s.conn,
                };
                s.recs.push(rec);
                shared.fail(rec, detail);
            }
        }
    }
    recs
}

struct Session<'a> {
    target: u8,
    conn: u32,
    pending: HashMap<u32, (u64, Instant)>,
    recs: &'a mut Vec<Rec>,
    shared: &'a Shared,
}

type Failed = (Outcome, String);

impl Session<'_> {
    /// Every open primary is lost with the session.
    fn lose_all(&mut self, outcome: Outcome, detail: &str) {
        let now = crate::now_us();
        for (_, (start_us, _)) in self.pending.drain() {
            let rec = Rec {
                start_us,
                end_us: now,
                target: self.target,
                mode: Mode::Hsms,
                outcome,
                version: 0,
                conn: self.conn,
            };
            self.recs.push(rec);
            self.shared.fail(rec, detail.to_string());
        }
    }

    async fn run(
        &mut self,
        addr: SocketAddr,
        stop: &AtomicBool,
        system: &mut u32,
    ) -> Result<(), Failed> {
        let mut stream = tokio::time::timeout(T3, TcpStream::connect(addr))
            .await
            .map_err(|_| (Outcome::Timeout, "connect timed out".to_string()))?
            .map_err(|e| (Outcome::Refused, format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut out = BytesMut::new();
        let mut buf = BytesMut::new();
        let mut dec = Decoder::new(1 << 20);
        let _ = codec::encode(&codec::select_req(1), &mut out);
        write(&mut stream, &out).await?;
        let mut selected = false;
        let select_by = Instant::now() + T3;
        let mut next_send = Instant::now();
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping && self.pending.is_empty() {
                out.clear();
                let _ = codec::encode(&codec::separate_req(2), &mut out);
                let _ = stream.write_all(&out).await;
                return Ok(());
            }
            out.clear();
            if selected && !stopping {
                while self.pending.len() < WINDOW && Instant::now() >= next_send {
                    *system = system.wrapping_add(1);
                    let _ = codec::encode(&s1f1(*system), &mut out);
                    self.pending
                        .insert(*system, (crate::now_us(), Instant::now()));
                    next_send += PACE;
                    next_send = next_send.max(Instant::now() - PACE);
                }
            }
            if !out.is_empty() {
                write(&mut stream, &out).await?;
            }
            // Wake for the next send, the oldest primary's deadline, or the select deadline.
            let oldest = self.pending.values().map(|p| p.1).min();
            let mut wake = match oldest {
                Some(o) => o + T3,
                None if selected => Instant::now() + T3,
                None => select_by,
            };
            if selected && !stopping && self.pending.len() < WINDOW {
                wake = wake.min(next_send);
            }
            let msg = loop {
                if let Some(m) = dec
                    .decode(&mut buf)
                    .map_err(|e| (Outcome::Protocol, format!("bad frame: {e}")))?
                {
                    break Some(m);
                }
                match tokio::time::timeout_at(wake, stream.read_buf(&mut buf)).await {
                    Err(_) => break None,
                    Ok(Ok(0)) => return Err((Outcome::Closed, "disconnect".into())),
                    Ok(Err(e)) => return Err((Outcome::Closed, format!("disconnect: {e}"))),
                    Ok(Ok(_)) => {}
                }
            };
            let Some(msg) = msg else {
                let now = Instant::now();
                if !selected && now >= select_by {
                    return Err((Outcome::Timeout, "no Select.rsp within T3".into()));
                }
                if oldest.is_some_and(|o| now >= o + T3) {
                    return Err((Outcome::Timeout, format!("T3: no reply within {T3:?}")));
                }
                continue;
            };
            self.handle(msg, &mut selected, &mut stream, &mut out)
                .await?;
        }
    }

    async fn handle(
        &mut self,
        msg: Message,
        selected: &mut bool,
        stream: &mut TcpStream,
        out: &mut BytesMut,
    ) -> Result<(), Failed> {
        let h = msg.header;
        match h.stype {
            SType::SelectRsp if !*selected => {
                if h.status() != codec::SELECT_OK {
                    return Err((
                        Outcome::Protocol,
                        format!("Select refused ({})", h.status()),
                    ));
                }
                *selected = true;
            }
            SType::LinktestReq => {
                out.clear();
                let _ = codec::encode(&codec::linktest_rsp(&h), out);
                write(stream, out).await?;
            }
            SType::Data if (h.stream, h.function) == (1, 2) => {
                let Some((start_us, _)) = self.pending.remove(&h.system) else {
                    return Err((
                        Outcome::Protocol,
                        format!("reply to no open primary (system {})", h.system),
                    ));
                };
                let version = s1f2_version(&msg.body)
                    .and_then(|v| v.strip_prefix('v')?.parse().ok())
                    .unwrap_or(0);
                let rec = Rec {
                    start_us,
                    end_us: crate::now_us(),
                    target: self.target,
                    mode: Mode::Hsms,
                    outcome: if version == 0 {
                        Outcome::NoVersion
                    } else {
                        Outcome::Ok
                    },
                    version,
                    conn: self.conn,
                };
                if version == 0 {
                    self.shared.fail(rec, "S1F2 without a version".into());
                }
                self.recs.push(rec);
            }
            other => {
                return Err((
                    Outcome::Protocol,
                    format!("unexpected {other:?} S{}F{}", h.stream, h.function),
                ))
            }
        }
        Ok(())
    }
}

async fn write(stream: &mut TcpStream, out: &[u8]) -> Result<(), Failed> {
    stream
        .write_all(out)
        .await
        .map_err(|e| (Outcome::Closed, format!("disconnect on write: {e}")))
}
