//! `zerodown healthcheck`: a container's HEALTHCHECK. It GETs `/ready` on the admin listener of
//! the zerodown running beside it and exits 0 (ready) or 1. The admin address comes from that
//! process's own command line (`/proc/PID/cmdline`, its config file included), so the check
//! follows whatever config and flags the container was started with, and needs no curl.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use super::args::{Cli, Command, HealthArgs, EXIT_USAGE};
use super::serve::effective_config;
use crate::config::duration;
use crate::ops::{http, loopback_for};

pub fn run(args: HealthArgs) -> ExitCode {
    let timeout = match duration::parse(&args.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("zerodown: --timeout: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let admin = match (args.admin, args.pid) {
        (Some(a), _) => a,
        (None, pid) => match server_admin(pid) {
            Ok(a) => a,
            Err(e) => {
                outln!("unhealthy: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            outln!("unhealthy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Docker keeps the output in `docker inspect`'s health log: one line saying why.
    match rt.block_on(http::get(&admin, "/ready", timeout)) {
        Ok(a) if a.status == 200 => {
            outln!("ready ({admin}/ready)");
            ExitCode::SUCCESS
        }
        Ok(a) => {
            outln!("unhealthy: {admin}/ready {}: {}", a.status, a.text().trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            outln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The admin address of the zerodown `serve` or `demo` process `pid`, or, without one, of PID 1
/// (a container's entrypoint) or else the lowest-numbered such process.
fn server_admin(pid: Option<u32>) -> Result<String, String> {
    if let Some(pid) = pid {
        let (argv, cwd) = process(pid).ok_or(format!("cannot read process {pid}"))?;
        return admin_of(&argv, &cwd).map_err(|e| format!("process {pid}: {e}"));
    }
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| format!("cannot list /proc: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let me = std::process::id();
    pids.into_iter()
        .filter(|&p| p != me)
        .filter_map(process)
        .find_map(|(argv, cwd)| admin_of(&argv, &cwd).ok())
        .ok_or_else(|| "no zerodown serve or demo process found".to_string())
}

/// A process's arguments and working directory, read from /proc.
fn process(pid: u32) -> Option<(Vec<OsString>, PathBuf)> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| std::ffi::OsStr::from_bytes(a).to_os_string())
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| "/".into());
    Some((argv, cwd))
}

/// Where the admin listener of the process started with `argv` (in `cwd`) is, as `host:port`.
fn admin_of(argv: &[OsString], cwd: &Path) -> Result<String, String> {
    let named_zerodown = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "zerodown");
    if !named_zerodown {
        return Err("not a zerodown process".into());
    }
    let cli = Cli::try_parse_from(argv).map_err(|e| e.kind().to_string())?;
    let mut serve = match cli.command {
        Command::Serve { serve, .. } => serve,
        Command::Demo(d) => d.serve,
        _ => return Err("not a zerodown serve or demo".into()),
    };
    // A relative --config is relative to the server's working directory, not this one's.
    serve.config = serve.config.map(|c| cwd.join(c));
    let cfg = effective_config(&serve).map_err(|e| format!("its config: {e}"))?;
    let admin = cfg.server.admin_listen;
    if admin.port() == 0 {
        return Err("its admin listener is on port 0 (chosen at start): pass --admin".into());
    }
    Ok(loopback_for(admin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_admin_address_follows_the_servers_command_line_and_config() {
        let root = Path::new("/");
        assert_eq!(
            admin_of(&argv(&["/usr/local/bin/zerodown", "demo"]), root),
            Ok("127.0.0.1:9901".into())
        );
        let flag = ["zerodown", "serve", "--admin-listen", "0.0.0.0:9555"];
        assert_eq!(admin_of(&argv(&flag), root), Ok("127.0.0.1:9555".into()));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("zd.toml"),
            "[server]\nadmin_listen = \"127.0.0.1:9777\"\n",
        )
        .unwrap();
        let relative = ["zerodown", "serve", "-c", "zd.toml"];
        assert_eq!(
            admin_of(&argv(&relative), dir.path()),
            Ok("127.0.0.1:9777".into())
        );
        assert!(admin_of(&argv(&relative), root)
            .unwrap_err()
            .starts_with("its config: "));

        for other in [&["zerodown", "status"][..], &["bash", "serve"], &[]] {
            assert!(admin_of(&argv(other), root).is_err(), "{other:?}");
        }
        let zero = ["zerodown", "serve", "--admin-listen", "127.0.0.1:0"];
        assert!(admin_of(&argv(&zero), root).unwrap_err().contains("port 0"));
    }
}
