//! The command line's shape: every subcommand and flag. Flag names are an interface scripts
//! depend on: keep them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::LogFormat;

/// EX_USAGE from sysexits.h: the config or the command line is wrong.
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "zerodown",
    version,
    about = "Reverse-proxy load balancer that switches a service between two versions with zero dropped requests"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy daemon.
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        upgrade: UpgradeArgs,
    },
    /// Validate a config file, print the effective configuration, exit 0 (valid) or 64 (invalid).
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
    /// Run the proxy with four built-in demo instances (v1 active, v2 standby).
    Demo(DemoArgs),
    /// What the proxy routes to, beside what Consul (or the upstreams file) holds, with live probes.
    /// Exits 1 when the two disagree, a route through the proxy answers 5xx, or a pool is empty.
    Status(OpsArgs),
    /// Make the standby group active (and the active group standby), then wait for the proxy.
    Switch {
        #[command(flatten)]
        change: ChangeArgs,
        /// Switch even if the standby group is empty, failing or not answering, or a gate holds.
        #[arg(long)]
        force: bool,
    },
    /// Put VERSION on the standby group through Nomad (never touching the active group).
    Deploy {
        /// The version label, e.g. v3.
        version: String,
        /// The container image of the new version.
        #[arg(long)]
        image: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Undo the last switch: make the version that served before it active again. Exits 3,
    /// changing nothing, when that version already serves.
    Rollback {
        #[command(flatten)]
        change: ChangeArgs,
        /// Roll back even if the standby group is failing or not answering, or a gate holds.
        #[arg(long)]
        force: bool,
    },
    /// Check every link from config to instances, printing the likely cause and fix of each failure.
    Diagnose {
        #[command(flatten)]
        ops: OpsArgs,
        #[command(flatten)]
        nomad: NomadArgs,
    },
    /// Exit 0 when the zerodown running here is ready (GET /ready on its admin listener), else 1:
    /// a container's HEALTHCHECK. Reads the admin address from that process's command line.
    Healthcheck(HealthArgs),
    /// Run one demo instance answering `GET /hello` (and HSMS with --hsms).
    DemoBackend {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        #[arg(long, default_value = "v1")]
        version: String,
        #[arg(long, default_value = crate::demo::MESSI)]
        message: String,
        /// Also answer HSMS equipment sessions (S1F1 -> S1F2 naming the version) on this address,
        /// for an instance's `hsms` address in the upstreams file.
        #[arg(long)]
        hsms: Option<SocketAddr>,
    },
}

/// Flags shared by `serve` and `demo`; each overrides the config file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Without it the embedded defaults apply (see config/zerodown.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Public listen address [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listen address for /status, /live, /ready [default: 127.0.0.1:9901].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Log format [default: json].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Worker threads (thread-per-core, each its own runtime); 0 means one per core [default: 0].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Watch Consul at this address (http://host:port or https://…) [default: CONSUL_HTTP_ADDR or 127.0.0.1:8500].
    #[arg(long, value_name = "URL")]
    pub consul_addr: Option<String>,
    /// Watch this Consul service (switches the source to consul).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
}

/// Taking over from a running zerodown without closing its sockets.
#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    /// Take the listening sockets of the zerodown running on server.upgrade_socket; once this
    /// process serves, the old one stops accepting, drains and exits. SIGUSR2 to the running
    /// process starts this for you.
    #[arg(long)]
    pub upgrade: bool,
    /// How long this process may take to load its first pools before it gives up (and the old
    /// one keeps serving).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub upgrade_timeout: String,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Equipment-facing HSMS listener of the demo (demo HSMS hosts of v1 and v2 behind it).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:5000")]
    pub hsms_listen: SocketAddr,
    /// Run the demo without the HSMS listener and hosts.
    #[arg(long)]
    pub no_hsms: bool,
    /// No access log (one line per request otherwise, which a load test turns into gigabytes);
    /// swaps, gate holds and errors are still logged.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Which zerodown `healthcheck` asks.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The admin address to ask [default: the admin listener of the zerodown serve or demo
    /// running as --pid].
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// The zerodown process whose command line and config give the admin address [default: PID
    /// 1 if it is one (a container's entrypoint), else the first one found].
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// How long /ready may take to answer.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub timeout: String,
}

/// Flags shared by every operator command.
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// The config file the proxy runs with (tells the switch mechanism: file, Consul KV, Nomad tags).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The proxy's admin address [default: server.admin_listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// The proxy's public address for end-to-end checks [default: server.listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy: Option<String>,
    /// Consul address [default: from the config, else CONSUL_HTTP_ADDR].
    #[arg(long, value_name = "URL")]
    pub consul_addr: Option<String>,
    /// Consul service [default: from the config].
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Where Nomad is, for the commands that read or change the job.
#[derive(Debug, Clone, Default, Args)]
pub struct NomadArgs {
    /// Nomad address [default: NOMAD_ADDR].
    #[arg(long, value_name = "URL")]
    pub nomad_addr: Option<String>,
    /// Nomad job [default: the service name].
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
}

/// Flags of the commands that change something and wait for the proxy to follow.
#[derive(Debug, Clone, Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub nomad: NomadArgs,
    /// How long to wait for the proxy to serve the new version.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
}
