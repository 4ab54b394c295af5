//! The HSMS listener: accepts equipment connections within `max_sessions` and runs each as an
//! HSMS session (or a TCP relay), until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::handoff::Adoption;
use super::state::Hsms;
use crate::config::HsmsMode;

/// Accepts equipment connections until shutdown, at most `max_sessions` at once; on shutdown the
/// sessions end (their equipment sees the connection close) within `drain`.
pub async fn serve(
    h: Arc<Hsms>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(h.cfg.max_sessions));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    let mut adoptions = h.adoptions();
    // For the sessions; `shutdown` itself is borrowed by the loop's select.
    let stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            Some(a) = async { adoptions.as_mut()?.recv().await }, if adoptions.is_some() => {
                // Not limited by max_sessions: refusing it would drop a live session.
                let permit = Arc::clone(&permits).try_acquire_owned().ok();
                tasks.spawn(adopted(Arc::clone(&h), a, permit, stop.clone()));
                continue;
            }
            a = listener.accept() => a,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                tracing::warn!(target: "zerodown::hsms", error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            h.metrics.hsms_sessions_refused.inc();
            tracing::warn!(target: "zerodown::hsms", peer = %peer, max_sessions = h.cfg.max_sessions, "HSMS session limit reached: closing the new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let h = Arc::clone(&h);
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("conn", peer = %peer);
        tasks.spawn(
            async move {
                let _permit = permit;
                let s = h.open_session(peer.to_string());
                let view = Arc::clone(&s.view);
                match h.cfg.mode {
                    HsmsMode::Hsms => super::session::run(&h, s.id, view, stream, shutdown).await,
                    HsmsMode::Tcp => super::tcp::run(&h, view, stream, shutdown).await,
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    if h.handing_over() {
        // A session whose hand-over failed stays here until its equipment leaves: this process
        // must not exit while it still holds one.
        tracing::info!(target: "zerodown::hsms", sessions = tasks.len(), "HSMS listener stopped; handing sessions to the next process");
        while tasks.join_next().await.is_some() {}
        return;
    }
    tracing::info!(target: "zerodown::hsms", sessions = tasks.len(), "HSMS listener stopped; ending sessions");
    if tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

/// Serves a session the previous process handed over.
async fn adopted(
    h: Arc<Hsms>,
    a: Adoption,
    permit: Option<OwnedSemaphorePermit>,
    shutdown: watch::Receiver<bool>,
) {
    let _permit = permit;
    let peer = a
        .stream
        .peer_addr()
        .map_or_else(|_| a.parcel.head.equipment.clone(), |p| p.to_string());
    let span = tracing::info_span!("conn", peer = %peer);
    let s = h.open_session(peer);
    super::session::adopt(&h, s.id, Arc::clone(&s.view), a, shutdown)
        .instrument(span)
        .await;
}
