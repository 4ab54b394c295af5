//! `zerodown serve`: load config, bind, run the daemon, and turn signals into reloads and drains.

use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use super::{ServeArgs, EXIT_USAGE};
use crate::config::{Config, ConfigError};
use crate::server::Daemon;
use crate::telemetry;

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
    Ok(cfg)
}

pub fn run(args: ServeArgs) -> ExitCode {
    let cfg = match effective_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zerodown: invalid config: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    run_with(cfg, move || effective_config(&args), |_| {})
}

/// Runs a daemon on `cfg` until SIGTERM/SIGINT; SIGHUP calls `reload_config` and applies the result.
/// `on_started` runs once the listeners are bound (the demo prints its instructions there).
pub fn run_with(
    cfg: Config,
    reload_config: impl Fn() -> Result<Config, ConfigError>,
    on_started: impl FnOnce(&Daemon),
) -> ExitCode {
    telemetry::init(&cfg.log);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.server.threads > 0 {
        rt.worker_threads(cfg.server.threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zerodown: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let public = match TcpListener::bind(cfg.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "zerodown: cannot listen on {}: {e} (choose another address with --listen or server.listen)",
                    cfg.server.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let admin = match TcpListener::bind(cfg.server.admin_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "zerodown: cannot listen on {} for the admin API: {e} (choose another address with --admin-listen or server.admin_listen)",
                    cfg.server.admin_listen
                );
                return ExitCode::FAILURE;
            }
        };
        let daemon = match Daemon::start(cfg, public, Some(admin)) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("zerodown: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        on_started(&daemon);
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("zerodown: cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match reload_config() {
                    Ok(new) => daemon.reload(new),
                    Err(e) => tracing::error!(target: "zerodown::server", error = %e, "config reload rejected: the running config keeps serving"),
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!(target: "zerodown::server", "shutdown signal received");
        daemon.shutdown().await;
        ExitCode::SUCCESS
    })
}
