//! `mode = "tcp"`: a plain TCP relay for protocols zerodown does not understand. A new connection
//! goes to an instance of the active version; when the active version changes, connections to the
//! old one get `tcp_drain` to finish and are then closed, so versions cannot mix beyond it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;

use super::state::{lock, BackendView, Hsms, SessionView};

pub async fn run(
    h: &Hsms,
    view: Arc<Mutex<SessionView>>,
    mut client: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(instance) = h.target(None).and_then(|t| h.pick(&t)) else {
        tracing::warn!(target: "zerodown::hsms", "no instance of the active version has an HSMS/TCP address: closing the connection");
        return;
    };
    let address = instance.hsms.clone().unwrap_or_default();
    let mut upstream = match tokio::time::timeout(h.cfg.t6, TcpStream::connect(&address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(target: "zerodown::hsms", backend = %address, error = %e, "connect failed: closing the connection");
            return;
        }
        Err(_) => {
            tracing::warn!(target: "zerodown::hsms", backend = %address, "connect timed out: closing the connection");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    {
        let mut v = lock(&view);
        v.state = "connected".into();
        v.backend = Some(BackendView {
            instance: instance.id.clone(),
            address: address.clone(),
            version: instance.version.clone(),
        });
    }
    let mut generation = h.publisher.subscribe();
    let mut close_at: Option<Instant> = None;
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let drain = async {
            match close_at {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut copy => break,
            Ok(()) = generation.changed(), if close_at.is_none() => {
                let moved = h.target(None).is_some_and(|t| t.version != instance.version);
                if moved {
                    close_at = Some(Instant::now() + h.cfg.tcp_drain);
                    lock(&view).state = "draining".into();
                    tracing::info!(target: "zerodown::hsms", version = %instance.version, drain_ms = h.cfg.tcp_drain.as_millis() as u64, "active version changed: the connection closes after the drain");
                }
            }
            _ = drain => {
                tracing::info!(target: "zerodown::hsms", version = %instance.version, "drain over: closing the connection to the old version");
                break;
            }
            _ = shutdown.wait_for(|down| *down) => break,
        }
    }
}
