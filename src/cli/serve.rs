//! `zerodown serve`: load config, bind, run the daemon, and turn signals into reloads and drains.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use super::args::{ServeArgs, EXIT_USAGE};
use crate::config::{
    process_env, Config, ConfigError, ConsulAddress, ConsulSourceConfig, SourceConfig,
};
use crate::daemon::{Daemon, Listeners};
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
    // One thread: a current-thread runtime, with no cross-thread wake-ups to pay for.
    let mut rt = if cfg.server.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if cfg.server.threads > 1 {
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
        let listeners = match bind(&cfg).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("zerodown: {e}");
                return ExitCode::FAILURE;
            }
        };
        let daemon = match Daemon::run(cfg, listeners) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("zerodown: cannot start: {e}");
                return ExitCode::from(EXIT_USAGE);
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
                _ = hup.recv() => {
                    let applied = match reload_config() {
                        Ok(new) => daemon.reload(new).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = applied {
                        tracing::error!(target: "zerodown::server", error = %e, "config reload rejected: the running config keeps serving");
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!(target: "zerodown::server", "shutdown signal received");
        daemon.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Binds every listener the config names; the error names the address and the setting to change.
async fn bind(cfg: &Config) -> Result<Listeners, String> {
    async fn one(addr: SocketAddr, what: &str, fix: &str) -> Result<TcpListener, String> {
        TcpListener::bind(addr).await.map_err(|e| {
            format!("cannot listen on {addr}{what}: {e} (choose another address with {fix})")
        })
    }
    let public = one(cfg.server.listen, "", "--listen or server.listen").await?;
    let admin = one(
        cfg.server.admin_listen,
        " for the admin API",
        "--admin-listen or server.admin_listen",
    )
    .await?;
    let tls = match &cfg.tls {
        Some(t) => Some(one(t.listen, " for HTTPS", "tls.listen").await?),
        None => None,
    };
    let hsms = match &cfg.hsms {
        Some(h) => Some(one(h.listen, " for HSMS", "hsms.listen").await?),
        None => None,
    };
    Ok(Listeners {
        public,
        admin: Some(admin),
        tls,
        hsms,
    })
}
