//! The operator commands' view of HSMS: a Select probe of an HSMS port, the sessions table of
//! `status`, and the wait of `switch` until every equipment session is on the new version.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Ctx, OpsError};
use crate::admin::status::StatusDoc;
use crate::hsms::codec::{self, Decoder, SType};
use crate::hsms::HsmsStatus;

/// Connects, sends Select.req and waits for Select.rsp 0, then Separate.req; returns the time
/// the answer took. The error names what failed.
pub async fn select_probe(addr: &str, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut out = BytesMut::new();
        let system = 0x6F70_0001;
        codec::encode(&codec::select_req(system), &mut out).map_err(|e| e.to_string())?;
        s.write_all(&out)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let mut buf = BytesMut::new();
        let mut dec = Decoder::new(1 << 20);
        loop {
            if let Some(m) = dec.decode(&mut buf).map_err(|e| format!("not HSMS: {e}"))? {
                if m.header.stype == SType::SelectRsp && m.header.system == system {
                    let status = m.header.status();
                    if status != codec::SELECT_OK {
                        return Err(format!("Select.req refused with status {status}"));
                    }
                    out.clear();
                    let _ = codec::encode(&codec::separate_req(system + 1), &mut out);
                    let _ = s.write_all(&out).await;
                    return Ok(started.elapsed());
                }
                continue;
            }
            match s.read_buf(&mut buf).await {
                Ok(0) => return Err("closed without answering Select.req".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("no Select.rsp within {timeout:?}")))
}

/// Sessions not (yet) on `version`, as `equipment (state, version)` texts.
pub fn not_on(h: &HsmsStatus, version: &str) -> Vec<String> {
    h.sessions
        .iter()
        .filter(|s| s.backend.as_ref().is_none_or(|b| b.version != version))
        .map(|s| {
            format!(
                "{} ({}, on {})",
                s.equipment,
                s.state,
                s.backend.as_ref().map_or("nothing", |b| b.version.as_str())
            )
        })
        .collect()
}

/// After the HTTP pools switched: waits until every HSMS session is on `to`. Returns a line for
/// the report (`None` without an HSMS listener). A hold (the new version has no HSMS instance) is
/// reported, not waited out.
pub async fn wait_for_sessions(ctx: &Ctx, to: &str) -> Result<Option<String>, OpsError> {
    let started = Instant::now();
    let mut last: Option<StatusDoc> = None;
    while started.elapsed() < ctx.timeout {
        let doc = ctx.proxy_status().await?;
        let Some(h) = &doc.hsms else { return Ok(None) };
        if let Some(hold) = &h.hold {
            return Ok(Some(format!("HSMS holds: {hold}")));
        }
        if h.target_version.as_deref() == Some(to) && not_on(h, to).is_empty() {
            return Ok(Some(format!(
                "{} HSMS session(s) on {to} after {:.2}s",
                h.sessions.len(),
                started.elapsed().as_secs_f64()
            )));
        }
        last = Some(doc);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = last
        .as_ref()
        .and_then(|d| d.hsms.as_ref())
        .map(|h| not_on(h, to).join(", "))
        .unwrap_or_default();
    Err(OpsError::NotConverged {
        what: format!("every HSMS session on {to}"),
        timeout: ctx.timeout,
        last: format!("not moved: {left}"),
    })
}

/// The HSMS part of `status`: target, hold, and one line per session.
pub fn render(h: &HsmsStatus) -> String {
    let mut out = format!(
        "\nhsms {} ({:?}): new sessions go to {} [{}]\n",
        h.listen,
        h.mode,
        h.target_version.as_deref().unwrap_or("nothing"),
        h.target_instances.join(", ")
    );
    if let Some(hold) = &h.hold {
        out.push_str(&format!("  hold: {hold}\n"));
    }
    if h.sessions.is_empty() {
        out.push_str("  no equipment connected\n");
    }
    for s in &h.sessions {
        let backend = s.backend.as_ref().map_or("-".to_string(), |b| {
            format!("{} {} {}", b.version, b.instance, b.address)
        });
        let last = s.last_switch.as_ref().map_or(String::new(), |l| {
            format!(
                "  last switch {} -> {} {} ms ({})",
                l.from_version.as_deref().unwrap_or("-"),
                l.to_version,
                l.took_ms,
                l.outcome
            )
        });
        out.push_str(&format!(
            "  {:<22} {:<12} {:<40} open {}/{} queued {}{last}\n",
            s.equipment, s.state, backend, s.open_to_host, s.open_to_equipment, s.queued
        ));
    }
    out
}
