//! Upgrading zerodown without closing its listening sockets.
//!
//! The running process (generation N) listens on a Unix socket (`server.upgrade_socket`, mode
//! 0600). A new process started with `zerodown serve --upgrade` connects to it; the old process
//! checks that the peer runs as the same user (SO_PEERCRED), refuses a second upgrade while one
//! runs, and sends copies of its listening sockets (SCM_RIGHTS) with a manifest naming each. The
//! new process (generation N+1) serves on them, waits until its first pools are loaded, and only
//! then answers `READY`: the old one stops accepting, drains within `server.drain_timeout`, and
//! exits 0. Both processes hold the same sockets the whole time, so no connection is refused. If
//! the new process fails or is not ready within `--upgrade-timeout`, it exits non-zero and the
//! old one, which never stopped accepting, carries on.
//!
//! Sockets can also come from systemd (`LISTEN_FDS`, matched to the config by address).
//!
//! Established HTTP connections finish in the old process (idle keep-alive ones are closed
//! gracefully). HSMS equipment sessions move: a successor that serves HSMS answers
//! `READY sessions`, and the old process then sends each session, at a message boundary, over the
//! same Unix connection: the equipment socket (SCM_RIGHTS) with the session's state
//! ([`crate::hsms`]'s hand-off), until it has none left.

pub mod fds;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The largest hand-off message a successor reads (a session's queued primaries included).
const MAX_SESSION_BYTES: usize = 1 << 30;

/// What travels with the sockets.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The old process's generation; the new one is this + 1.
    pub generation: u64,
    pub pid: u32,
    /// One name per socket, in order: `public`, `admin`, `tls`, `hsms`.
    pub listeners: Vec<String>,
}

/// Why an upgrade could not take the sockets.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot reach the running zerodown at {path}: {source} (is it running with server.upgrade_socket = {path:?}?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the process at {path} runs as user {theirs}, not {ours}: refusing its sockets")]
    OtherUser {
        path: PathBuf,
        theirs: u32,
        ours: u32,
    },
    #[error("the running zerodown refused: {0}")]
    Refused(String),
    #[error("the hand-over failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the running zerodown sent an unreadable manifest: {0}")]
    Manifest(String),
}

/// The sockets a new process received, by name, and the line back to the old process.
pub struct Inherited {
    pub manifest: Manifest,
    pub listeners: HashMap<String, std::net::TcpListener>,
    conn: UnixStream,
}

/// Connects to the running process at `path` and takes its sockets. Blocking: call it before the
/// runtime starts, or from `spawn_blocking`.
pub fn receive(path: &Path) -> Result<Inherited, UpgradeError> {
    let conn = UnixStream::connect(path).map_err(|source| UpgradeError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let (theirs, ours) = (fds::peer_uid(&conn)?, fds::own_uid());
    if theirs != ours {
        return Err(UpgradeError::OtherUser {
            path: path.to_path_buf(),
            theirs,
            ours,
        });
    }
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (manifest, sockets) = fds::recv(&conn, 64 * 1024)?.ok_or_else(|| {
        std::io::Error::other("the running zerodown closed before sending its sockets")
    })?;
    if let Some(reason) = manifest.strip_prefix(b"BUSY ") {
        return Err(UpgradeError::Refused(
            String::from_utf8_lossy(reason).into_owned(),
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(&manifest).map_err(|e| UpgradeError::Manifest(e.to_string()))?;
    if manifest.listeners.len() != sockets.len() {
        return Err(UpgradeError::Manifest(format!(
            "{} names for {} sockets",
            manifest.listeners.len(),
            sockets.len()
        )));
    }
    let listeners = manifest
        .listeners
        .iter()
        .cloned()
        .zip(sockets.into_iter().map(std::net::TcpListener::from))
        .collect();
    conn.set_read_timeout(None)?;
    Ok(Inherited {
        manifest,
        listeners,
        conn,
    })
}

impl Inherited {
    /// Tells the old process the new one serves: it stops accepting and drains. With
    /// `takes_sessions` it also hands over its HSMS sessions, read from the returned line.
    pub fn ready(mut self, takes_sessions: bool) -> std::io::Result<Predecessor> {
        let line: &[u8] = if takes_sessions {
            b"READY sessions\n"
        } else {
            b"READY\n"
        };
        self.conn.write_all(line)?;
        self.conn.flush()?;
        Ok(Predecessor { conn: self.conn })
    }
}

/// The previous process, seen from its successor once it answered READY.
pub struct Predecessor {
    conn: UnixStream,
}

impl Predecessor {
    /// The next session it hands over (state and equipment socket); `None` once it has sent them
    /// all and closed the line. Blocking.
    pub fn next_session(&self) -> std::io::Result<Option<(Vec<u8>, OwnedFd)>> {
        let Some((payload, fds)) = fds::recv(&self.conn, MAX_SESSION_BYTES)? else {
            return Ok(None);
        };
        let mut fds = fds.into_iter();
        match (fds.next(), fds.next()) {
            (Some(fd), None) => Ok(Some((payload, fd))),
            _ => Err(std::io::Error::other(
                "a hand-over message without exactly one socket",
            )),
        }
    }
}

/// The next process, once it answered READY: sessions are handed to it on this line.
pub struct Successor {
    pub pid: i32,
    /// Whether it adopts HSMS sessions (its config serves HSMS in `hsms` mode).
    pub takes_sessions: bool,
    conn: std::sync::Mutex<UnixStream>,
    broken: AtomicBool,
}

impl Successor {
    /// The successor with process id `pid` on `conn`, once it answered READY.
    pub fn new(pid: i32, takes_sessions: bool, conn: UnixStream) -> Successor {
        Successor {
            pid,
            takes_sessions,
            conn: std::sync::Mutex::new(conn),
            broken: AtomicBool::new(false),
        }
    }

    /// Sends one session: its state and its equipment socket. Blocking. After a failure every
    /// later call fails at once: the successor is gone or stuck, and sessions stay here.
    pub fn send_session(&self, payload: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<()> {
        if !self.usable() {
            return Err(std::io::Error::other("an earlier hand-over to it failed"));
        }
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let sent = fds::send(&conn, payload, &[fd]);
        if sent.is_err() {
            self.broken.store(true, Ordering::SeqCst);
        }
        sent
    }

    /// False once a hand-over to it failed.
    pub fn usable(&self) -> bool {
        !self.broken.load(Ordering::SeqCst)
    }
}

/// The sockets a running process offers its successor: copies (`dup`) of its listeners.
pub struct Offer {
    pub generation: u64,
    named: std::sync::Mutex<Vec<(&'static str, OwnedFd)>>,
}

impl Offer {
    pub fn new(generation: u64, named: Vec<(&'static str, OwnedFd)>) -> Offer {
        Offer {
            generation,
            named: std::sync::Mutex::new(named),
        }
    }

    /// Closes the copies: a process stopping without a successor must not keep its sockets
    /// open (they would queue connections nobody accepts instead of refusing them).
    pub fn close(&self) {
        self.named.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn copies(&self) -> std::io::Result<(Vec<String>, Vec<OwnedFd>)> {
        let named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if named.is_empty() {
            return Err(std::io::Error::other("this process is stopping"));
        }
        let fds = named
            .iter()
            .map(|(_, fd)| fd.try_clone())
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok((named.iter().map(|(n, _)| n.to_string()).collect(), fds))
    }
}

/// Serves the upgrade socket at `path` until a successor says `READY`, then sets `handed_over`
/// to it.
/// The socket file is created with mode 0600 (created in a private temporary name, then renamed
/// into place, so a successor's own socket replaces its predecessor's atomically).
pub async fn serve_control(
    path: PathBuf,
    offer: Arc<Offer>,
    handed_over: watch::Sender<Option<Arc<Successor>>>,
) {
    let listener = match bind_private(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(target: "zerodown::upgrade", path = %path.display(), error = %e, "cannot open the upgrade socket: upgrades are off");
            return;
        }
    };
    tracing::info!(target: "zerodown::upgrade", path = %path.display(), generation = offer.generation, "upgrade socket ready");
    let busy = Arc::new(AtomicBool::new(false));
    let mut taken = handed_over.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = taken.wait_for(|t| t.is_some()) => return,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "zerodown::upgrade", error = %e, "upgrade socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(stream) = stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) else {
            continue;
        };
        // Each request on its own thread, so a second one is answered (refused) while the
        // first waits for its successor.
        let (offer, busy, done) = (Arc::clone(&offer), Arc::clone(&busy), handed_over.clone());
        tokio::task::spawn_blocking(move || {
            if let Some(next) = hand_over(stream, &offer, &busy) {
                done.send_replace(Some(Arc::new(next)));
            }
        });
    }
}

/// One successor's request; returns it once it took over.
fn hand_over(stream: UnixStream, offer: &Offer, busy: &AtomicBool) -> Option<Successor> {
    let creds = match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "zerodown::upgrade", error = %e, "upgrade refused: cannot check the peer's user");
            return None;
        }
    };
    let pid = creds.pid.as_raw_nonzero().get();
    if creds.uid.as_raw() != fds::own_uid() {
        tracing::warn!(target: "zerodown::upgrade", peer_uid = creds.uid.as_raw(), peer_pid = pid, "upgrade refused: the peer runs as another user");
        return None;
    }
    if busy.swap(true, Ordering::SeqCst) {
        tracing::warn!(target: "zerodown::upgrade", peer_pid = pid, "second upgrade refused: one is already running");
        let _ = fds::send(&stream, b"BUSY an upgrade is already in progress", &[]);
        return None;
    }
    let takes_sessions = offer_to(&stream, offer, pid);
    busy.store(takes_sessions.is_some(), Ordering::SeqCst);
    takes_sessions.map(|takes_sessions| Successor::new(pid, takes_sessions, stream))
}

/// Sends the sockets and waits for READY; returns whether the successor takes HSMS sessions.
fn offer_to(stream: &UnixStream, offer: &Offer, pid: i32) -> Option<bool> {
    tracing::info!(target: "zerodown::upgrade", peer_pid = pid, generation = offer.generation + 1, "upgrade started: sending the listening sockets");
    let sent = offer.copies().and_then(|(listeners, copies)| {
        let manifest = Manifest {
            generation: offer.generation,
            pid: std::process::id(),
            listeners,
        };
        let json = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
        let fds: Vec<BorrowedFd<'_>> = copies.iter().map(|f| f.as_fd()).collect();
        fds::send(stream, &json, &fds)
    });
    if let Err(e) = sent {
        tracing::error!(target: "zerodown::upgrade", error = %e, "upgrade aborted: cannot send the sockets");
        return None;
    }
    // The successor may take long to load its pools; it gives up on its own deadline.
    let mut line = String::new();
    let answered = BufReader::new(stream).read_line(&mut line);
    let takes_sessions = match (answered, line.trim()) {
        (Ok(_), "READY") => false,
        (Ok(_), "READY sessions") => true,
        _ => {
            tracing::warn!(target: "zerodown::upgrade", peer_pid = pid, "upgrade aborted: the new process went away before it was ready; this process keeps serving");
            return None;
        }
    };
    tracing::info!(target: "zerodown::upgrade", peer_pid = pid, takes_sessions, "successor ready: stopping accepting and draining");
    Some(takes_sessions)
}

/// Binds a Unix socket only this user can connect to, replacing `path` atomically.
fn bind_private(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

/// Tells systemd (`Type=notify`) something, when it is listening (`NOTIFY_SOCKET`): `READY=1`
/// once serving, with `MAINPID=` so that after an upgrade the successor becomes the service's
/// main process before its predecessor exits.
pub fn notify_systemd(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = notify_at(&path, state) {
            tracing::warn!(target: "zerodown::upgrade", error = %e, "cannot notify systemd");
        }
    }
}

/// Sends `state` to the notify socket at `path` (`@name`: an abstract socket).
fn notify_at(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_gets_the_notification_on_a_path_or_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sd = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_at(path.as_os_str(), "READY=1\nMAINPID=42").unwrap();
        let mut buf = [0u8; 64];
        let n = sd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=42");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("zerodown-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sd = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        notify_at(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = sd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
