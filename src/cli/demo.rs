//! `zerodown demo` and `zerodown demo-backend`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{DemoArgs, EXIT_USAGE};
use super::serve::{effective_config, run_with};
use crate::config::{FileSourceConfig, HsmsConfig, SourceConfig};
use crate::demo::hsms::HsmsHost;
use crate::demo::{self, Backend};

/// The four demo instances: two v1 (active), two v2 (standby).
fn instances() -> [(&'static str, &'static str, &'static str, &'static str); 4] {
    [
        ("hello-v1-a", "v1", "active", demo::MESSI),
        ("hello-v1-b", "v1", "active", demo::MESSI),
        ("hello-v2-a", "v2", "standby", demo::RONALDO),
        ("hello-v2-b", "v2", "standby", demo::RONALDO),
    ]
}

pub fn run(args: DemoArgs) -> ExitCode {
    let mut cfg = match effective_config(&args.serve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zerodown: invalid config: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Bind the instances on a small runtime of their own, so they outlive the proxy's reloads.
    let backends = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zerodown: cannot start the demo runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = match start_instances(&backends, !args.no_hsms) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("zerodown: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !args.no_hsms {
        cfg.hsms = Some(HsmsConfig::new(args.hsms_listen));
    }
    let dir = std::env::temp_dir().join(format!("zerodown-demo-{}", std::process::id()));
    let path: PathBuf = dir.join("upstreams.toml");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, &file)) {
        eprintln!("zerodown: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let source = SourceConfig::File(FileSourceConfig {
        path: path.clone(),
        poll_interval: std::time::Duration::from_millis(500),
    });
    cfg.source = source.clone();
    let quiet = args.quiet;
    if quiet {
        cfg.log.access_log = false;
    }
    let reload_args = args.serve.clone();
    let hsms = cfg.hsms.clone();
    let me = invoked_as();
    let code = run_with(
        cfg,
        move || {
            let mut c = effective_config(&reload_args)?;
            c.source = source.clone();
            c.hsms = hsms.clone();
            if quiet {
                c.log.access_log = false;
            }
            Ok(c)
        },
        |d| {
            let port = d.public_addr.port();
            let hsms = d.hsms_addr.map_or(String::new(), |a| {
                format!("  HSMS equipment -> {a} (S1F1 is answered by the active version's host)\n")
            });
            let admin = d.admin_addr.map(|a| a.to_string()).unwrap_or_default();
            // A config beside the upstreams file, so the operator commands work on the demo too.
            let ops_config = dir.join("zerodown.toml");
            let text = format!(
                "# Written by `zerodown demo` for the operator commands.\n[server]\nlisten = \"{}\"\nadmin_listen = \"{admin}\"\n\n[source]\nkind = \"file\"\npath = \"upstreams.toml\"\npoll_interval = \"500ms\"\n",
                d.public_addr
            );
            let ops = match std::fs::write(&ops_config, text) {
                Ok(()) => format!(
                    "  {me} status -c {0}   -> proxy vs file, with live probes\n  {me} switch -c {0}   -> make v2 active ({me} rollback -c ... goes back)\n",
                    ops_config.display()
                ),
                Err(_) => String::new(),
            };
            eprintln!(
                "\nzerodown demo is running.\n  curl localhost:{port}/hello     -> v1 (active)\n  curl localhost:{port}/standby   -> v2 (standby)\n{hsms}  curl {admin}/status    -> what it routes to\n{ops}  Or swap \"active\" and \"standby\" by hand in {}\n  Stop with Ctrl-C.\n",
                path.display()
            );
        },
        super::serve::Start::Bind,
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(backends);
    code
}

/// The command as the user can type it again: the path this binary was started by (e.g.
/// `target/debug/zerodown` under `cargo run`), or plain `zerodown` when it was found on PATH.
fn invoked_as() -> String {
    let argv0 = std::env::args_os()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    if argv0.is_empty() || !argv0.contains(std::path::MAIN_SEPARATOR) {
        "zerodown".into()
    } else if argv0.contains(' ') {
        format!("'{argv0}'")
    } else {
        argv0
    }
}

/// Starts the demo instances (and their HSMS hosts) on `rt`; returns the upstreams file naming
/// them.
fn start_instances(rt: &tokio::runtime::Runtime, hsms: bool) -> Result<String, String> {
    let mut file = String::from("# zerodown demo instances. Edit the tags and save: the proxy applies it within a second.\n");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    for (id, version, tag, message) in instances() {
        let backend = Backend {
            version: version.into(),
            message: message.into(),
        };
        let addr = rt
            .block_on(demo::spawn_backend(loopback, backend))
            .map_err(|e| format!("cannot start demo instance {id}: {e}"))?;
        let hsms = if hsms {
            let host = HsmsHost {
                version: version.into(),
                delay: std::time::Duration::ZERO,
            };
            let a = rt
                .block_on(demo::hsms::spawn(loopback, host))
                .map_err(|e| format!("cannot start demo HSMS host {id}: {e}"))?;
            format!("hsms = \"{a}\"\n")
        } else {
            String::new()
        };
        file.push_str(&format!(
            "\n[[instances]]\nid = \"{id}\"\naddress = \"{addr}\"\n{hsms}version = \"{version}\"\ntags = [\"{tag}\"]\n"
        ));
    }
    Ok(file)
}

pub fn run_backend(
    listen: SocketAddr,
    version: String,
    message: String,
    hsms: Option<SocketAddr>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zerodown: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("zerodown: cannot listen on {listen}: {e} (choose another address with --listen)");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("demo instance {version} answering GET /hello on {listen}");
        if let Some(addr) = hsms {
            let host = crate::demo::hsms::HsmsHost {
                version: version.clone(),
                delay: std::time::Duration::ZERO,
            };
            match crate::demo::hsms::spawn(addr, host).await {
                Ok(at) => eprintln!("demo HSMS host {version} answering S1F1 on {at}"),
                Err(e) => {
                    eprintln!("zerodown: cannot listen on {addr} for HSMS: {e} (choose another address with --hsms)");
                    return ExitCode::FAILURE;
                }
            }
        }
        tokio::select! {
            _ = demo::serve_backend(listener, Backend { version, message }) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        ExitCode::SUCCESS
    })
}
