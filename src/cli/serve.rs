//! `zerodown serve`: load config, bind, run the daemon, and turn signals into reloads and drains.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::args::{ServeArgs, UpgradeArgs, EXIT_USAGE};
use crate::config::{
    duration, process_env, Config, ConfigError, ConsulAddress, ConsulSourceConfig, SourceConfig,
};
use crate::daemon::{Daemon, Listeners};
use crate::runtime::{self, Workers};
use crate::{telemetry, upgrade};

/// The config file (or the embedded defaults) with the command-line flags applied on top.
pub fn effective_config(args: &ServeArgs) -> Result<Config, ConfigError> {
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(a) = args.listen {
        cfg.server.listen = a;
    }
    if let Some(a) = args.admin_listen {
        cfg.server.admin_listen = a;
    }
    if let Some(f) = args.log_format {
        cfg.log.format = f;
    }
    if let Some(t) = args.threads {
        cfg.server.threads = t;
    }
    if args.service.is_some() || args.consul_addr.is_some() {
        cfg.source = SourceConfig::Consul(consul_from_flags(&cfg.source, args)?);
    }
    Ok(cfg)
}

/// `--consul-addr` / `--service` over the file's consul source (or the defaults and `CONSUL_*`).
fn consul_from_flags(
    source: &SourceConfig,
    args: &ServeArgs,
) -> Result<ConsulSourceConfig, ConfigError> {
    let flag_error = |flag: &str, message: String| ConfigError::Whole {
        origin: flag.to_string(),
        message,
    };
    let mut c = match (source, &args.service) {
        (SourceConfig::Consul(c), _) => c.clone(),
        (_, Some(service)) => ConsulSourceConfig::from_env(service, &process_env)
            .map_err(|e| flag_error("environment", e))?,
        (_, None) => {
            return Err(flag_error(
                "--consul-addr",
                "needs --service NAME (or a [source] kind = \"consul\" in the config file)".into(),
            ))
        }
    };
    if let Some(service) = &args.service {
        if service.is_empty() || service.contains(['/', '?', '#', ' ']) {
            return Err(flag_error(
                "--service",
                format!("{service:?} is not a Consul service name"),
            ));
        }
        if c.kv_key == format!("zerodown/{}/active", c.service) {
            c.kv_key = format!("zerodown/{service}/active");
        }
        c.service = service.clone();
    }
    if let Some(addr) = &args.consul_addr {
        c.address = ConsulAddress::parse(addr, c.address.https)
            .map_err(|e| flag_error("--consul-addr", e))?;
    }
    Ok(c)
}

pub fn run(args: ServeArgs, upgrade: UpgradeArgs) -> ExitCode {
    let cfg = match effective_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zerodown: invalid config: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let start = if upgrade.upgrade {
        match duration::parse(&upgrade.upgrade_timeout) {
            Ok(t) => Start::Upgrade { timeout: t },
            Err(e) => {
                eprintln!("zerodown: --upgrade-timeout: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    } else {
        Start::Bind
    };
    run_with(cfg, move || effective_config(&args), |_| {}, start)
}

/// How long start-up waits for the first pools before it reports itself running anyway.
const FIRST_POOLS_WAIT: Duration = Duration::from_secs(5);

/// Where a daemon's listening sockets come from.
pub enum Start {
    /// Bound from the config (or taken from systemd's `LISTEN_FDS`, matched by address).
    Bind,
    /// Taken from the running zerodown on `server.upgrade_socket`.
    Upgrade { timeout: Duration },
}

/// Runs a daemon on `cfg` until SIGTERM/SIGINT (or until a successor took over); SIGHUP calls
/// `reload_config` and applies the result; SIGUSR2 starts a successor (`serve --upgrade` with
/// this process's arguments). `on_started` runs once the listeners are bound (the demo prints
/// its instructions there).
pub fn run_with(
    cfg: Config,
    reload_config: impl Fn() -> Result<Config, ConfigError>,
    on_started: impl FnOnce(&Daemon),
    start: Start,
) -> ExitCode {
    telemetry::init(&cfg.log);
    // Thread-per-core: this thread is worker 0 (and runs the sources, admin, HSMS and signals);
    // each worker serves the connections it accepts on its own current-thread runtime.
    let threads = runtime::threads(cfg.server.threads);
    let (rt, workers) = match runtime::build().and_then(|rt| Ok((rt, Workers::start(threads)?))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zerodown: cannot start the runtime ({threads} threads): {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(serve(
        cfg,
        reload_config,
        on_started,
        start,
        workers.handles(),
    ));
    workers.stop();
    code
}

/// [`run_with`] on worker 0's runtime.
async fn serve(
    cfg: Config,
    reload_config: impl Fn() -> Result<Config, ConfigError>,
    on_started: impl FnOnce(&Daemon),
    start: Start,
    workers: &[Handle],
) -> ExitCode {
    let upgrade_socket = cfg.server.upgrade_socket.clone();
    let (listeners, predecessor, generation, activated) = match start {
        Start::Bind => match bind(&cfg, HashMap::new()).await {
            Ok((l, activated)) => (l, None, 1, activated),
            Err(e) => {
                eprintln!("zerodown: {e}");
                return ExitCode::FAILURE;
            }
        },
        Start::Upgrade { timeout } => match take_over(&cfg, timeout).await {
            Ok((l, inherited)) => {
                let g = inherited.manifest.generation + 1;
                (l, Some((inherited, timeout)), g, false)
            }
            Err(e) => {
                eprintln!("zerodown: upgrade failed: {e}; the running zerodown keeps serving");
                return ExitCode::FAILURE;
            }
        },
    };
    // Connections systemd queued before this process started wait for the first pools.
    let hold = activated.then_some(FIRST_POOLS_WAIT);
    let daemon = match Daemon::run_held(cfg, listeners, generation, hold, workers) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("zerodown: cannot start: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some((inherited, timeout)) = predecessor {
        if let Err(e) = become_ready(&daemon, inherited, timeout).await {
            eprintln!("zerodown: upgrade failed: {e}; the running zerodown keeps serving");
            return ExitCode::FAILURE;
        }
    }
    // Up to a few seconds for the first pools, so "running" (the demo's banner, systemd's
    // READY) means /hello answers; a source that is down only delays it that long.
    let mut first = daemon.publisher().subscribe();
    let _ = tokio::time::timeout(FIRST_POOLS_WAIT, first.wait_for(|g| *g >= 1)).await;
    on_started(&daemon);
    upgrade::notify_systemd(&format!("READY=1\nMAINPID={}", std::process::id()));
    let (handed_tx, handed_over) = watch::channel(None);
    if let Some(path) = upgrade_socket {
        tokio::spawn(upgrade::serve_control(path, daemon.offer(), handed_tx));
    }
    match until_stopped(&daemon, &reload_config, handed_over).await {
        Ok(Some(next)) => daemon.hand_over_sessions(next),
        Ok(None) => {}
        Err(e) => {
            eprintln!("zerodown: {e}");
            return ExitCode::FAILURE;
        }
    }
    tracing::info!(target: "zerodown::server", "shutdown signal received");
    let generation = daemon.generation;
    daemon.shutdown().await;
    tracing::info!(target: "zerodown::server", generation, pid = std::process::id(), "stopped");
    ExitCode::SUCCESS
}

/// Turns signals into reloads (SIGHUP) and successors (SIGUSR2) until SIGTERM/SIGINT or a
/// successor took over (returned).
async fn until_stopped(
    daemon: &Daemon,
    reload_config: &impl Fn() -> Result<Config, ConfigError>,
    mut handed_over: watch::Receiver<Option<Arc<upgrade::Successor>>>,
) -> Result<Option<Arc<upgrade::Successor>>, String> {
    let (Ok(mut hup), Ok(mut term), Ok(mut int), Ok(mut usr2)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined2()),
    ) else {
        return Err("cannot install signal handlers".into());
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let applied = match reload_config() {
                    Ok(new) => daemon.reload(new).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = applied {
                    tracing::error!(target: "zerodown::server", error = %e, "config reload rejected: the running config keeps serving");
                }
            }
            _ = usr2.recv() => spawn_successor(),
            Ok(()) = handed_over.changed() => {
                let next = handed_over.borrow_and_update().clone();
                if next.is_some() {
                    tracing::info!(target: "zerodown::upgrade", generation = daemon.generation, "handed over to the next generation: draining");
                    return Ok(next);
                }
            }
            _ = term.recv() => return Ok(None),
            _ = int.recv() => return Ok(None),
        }
    }
}

/// Takes the running process's sockets; any the config names that it did not have are bound.
async fn take_over(
    cfg: &Config,
    timeout: Duration,
) -> Result<(Listeners, upgrade::Inherited), String> {
    let Some(path) = cfg.server.upgrade_socket.clone() else {
        return Err(
            "--upgrade needs server.upgrade_socket in the config (the running zerodown's socket)"
                .into(),
        );
    };
    let took = tokio::task::spawn_blocking(move || upgrade::receive(&path));
    let mut inherited = match tokio::time::timeout(timeout, took).await {
        Ok(Ok(Ok(i))) => i,
        Ok(Ok(Err(e))) => return Err(e.to_string()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => {
            return Err(format!(
                "no answer from the running zerodown within {timeout:?}"
            ))
        }
    };
    let named = std::mem::take(&mut inherited.listeners);
    tracing::info!(target: "zerodown::upgrade", from_pid = inherited.manifest.pid, generation = inherited.manifest.generation + 1, sockets = ?inherited.manifest.listeners, "took the listening sockets");
    let (listeners, _) = bind(cfg, named).await?;
    Ok((listeners, inherited))
}

/// Waits for the first pools (bounded), then tells the predecessor to stop accepting.
async fn become_ready(
    daemon: &Daemon,
    inherited: upgrade::Inherited,
    timeout: Duration,
) -> Result<(), String> {
    let mut first = daemon.publisher().subscribe();
    if tokio::time::timeout(timeout, first.wait_for(|g| *g >= 1))
        .await
        .is_err()
    {
        return Err(format!(
            "no pools loaded within --upgrade-timeout {timeout:?} (is the source reachable?)"
        ));
    }
    let takes_sessions = daemon.takes_sessions();
    // systemd must know the new main process before the old one can exit: told after READY, a
    // slow successor loses the race to the old process's exit, and systemd takes that exit
    // (status 0) for the service's end and stops it, successor included.
    let old_pid = inherited.manifest.pid;
    upgrade::notify_systemd(&format!("MAINPID={}", std::process::id()));
    let previous = tokio::task::spawn_blocking(move || inherited.ready(takes_sessions))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| format!("cannot tell the running zerodown: {e}")));
    let previous = previous.inspect_err(|_| {
        // The old process keeps serving: it is the main process again.
        upgrade::notify_systemd(&format!("MAINPID={old_pid}"));
    })?;
    tracing::info!(target: "zerodown::upgrade", generation = daemon.generation, takes_sessions, "serving; the previous generation drains");
    if let (true, Some(h)) = (takes_sessions, daemon.hsms.clone()) {
        std::thread::spawn(move || adopt_sessions(previous, &h));
    }
    Ok(())
}

/// Reads the sessions the previous process hands over until it has sent them all.
fn adopt_sessions(previous: upgrade::Predecessor, h: &crate::hsms::Hsms) {
    let mut adopted = 0u64;
    loop {
        match previous.next_session() {
            Ok(Some((payload, fd))) => match h.adopt(&payload, fd) {
                Ok(()) => adopted += 1,
                Err(e) => {
                    tracing::error!(target: "zerodown::upgrade", error = %e, "a session from the previous process could not be adopted: its equipment connection is lost")
                }
            },
            Ok(None) => break,
            Err(e) => {
                tracing::error!(target: "zerodown::upgrade", error = %e, "the hand-over line from the previous process broke");
                break;
            }
        }
    }
    tracing::info!(target: "zerodown::upgrade", sessions = adopted, "the previous generation has handed over its sessions");
}

/// SIGUSR2: starts `zerodown serve --upgrade` with this process's arguments.
fn spawn_successor() {
    let Ok(exe) = std::env::current_exe() else {
        tracing::error!(target: "zerodown::upgrade", "SIGUSR2: cannot find this binary to start a successor");
        return;
    };
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--upgrade")
        .collect();
    args.push("--upgrade".into());
    match std::process::Command::new(&exe).args(&args).spawn() {
        Ok(child) => {
            tracing::info!(target: "zerodown::upgrade", pid = child.id(), binary = %exe.display(), "SIGUSR2: started a successor")
        }
        Err(e) => {
            tracing::error!(target: "zerodown::upgrade", error = %e, "SIGUSR2: cannot start a successor")
        }
    }
}

/// Every listener the config names: taken from `inherited` (by name) or from systemd's
/// `LISTEN_FDS` (by address) when there, else bound; true when any came from systemd. The error
/// names the address and the setting.
async fn bind(
    cfg: &Config,
    mut inherited: HashMap<String, std::net::TcpListener>,
) -> Result<(Listeners, bool), String> {
    let mut activated = systemd_sockets();
    let passed = activated.len();
    let mut one = |name: &'static str, addr: SocketAddr, what: &'static str, fix: &'static str| {
        let taken = inherited
            .remove(name)
            // Port 0 in the config means "any": the inherited socket keeps its port.
            .filter(|l| {
                l.local_addr()
                    .is_ok_and(|a| a == addr || (addr.port() == 0 && a.ip() == addr.ip()))
            })
            .or_else(|| activated.remove(&addr));
        async move {
            let listener = match taken {
                Some(l) => l
                    .set_nonblocking(true)
                    .and_then(|_| TcpListener::from_std(l)),
                None => TcpListener::bind(addr).await,
            };
            listener.map_err(|e| {
                format!("cannot listen on {addr}{what}: {e} (choose another address with {fix})")
            })
        }
    };
    let public = one("public", cfg.server.listen, "", "--listen or server.listen").await?;
    let admin = one(
        "admin",
        cfg.server.admin_listen,
        " for the admin API",
        "--admin-listen or server.admin_listen",
    )
    .await?;
    let tls = match &cfg.tls {
        Some(t) => Some(one("tls", t.listen, " for HTTPS", "tls.listen").await?),
        None => None,
    };
    let hsms = match &cfg.hsms {
        Some(h) => Some(one("hsms", h.listen, " for HSMS", "hsms.listen").await?),
        None => None,
    };
    let from_systemd = activated.len() < passed;
    Ok((
        Listeners {
            public,
            admin: Some(admin),
            tls,
            hsms,
        },
        from_systemd,
    ))
}

/// Sockets systemd passed (`LISTEN_FDS`), by the address they listen on.
fn systemd_sockets() -> HashMap<SocketAddr, std::net::TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = HashMap::new();
    for i in 0..fds.len() {
        match fds.take_tcp_listener(i) {
            Ok(Some(l)) => {
                if let Ok(addr) = l.local_addr() {
                    tracing::info!(target: "zerodown::server", %addr, "listening socket from systemd");
                    out.insert(addr, l);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "zerodown::server", fd = i + 3, error = %e, "LISTEN_FDS: not a TCP listening socket")
            }
        }
    }
    out
}
