//! The operator commands' command line: where the proxy, Consul and Nomad are, and how to print.

use std::process::ExitCode;

use super::args::{ChangeArgs, NomadArgs, OpsArgs, ServeArgs, EXIT_USAGE};
use super::serve::effective_config;
use crate::config::duration;
use crate::ops::{self, Ctx, OpsError, Targets};

/// Exit code of a command that had nothing to do (e.g. a rollback whose target already serves).
pub const EXIT_NOTHING_TO_DO: u8 = 3;

fn context(a: &OpsArgs, nomad: &NomadArgs, timeout: &str) -> Result<Ctx, (u8, String)> {
    let serve = ServeArgs {
        config: a.config.clone(),
        listen: None,
        admin_listen: None,
        log_format: None,
        threads: None,
        consul_addr: a.consul_addr.clone(),
        service: a.service.clone(),
    };
    let invalid = |e| (EXIT_USAGE, format!("invalid config: {e}"));
    // `--service` picks one of the config's services; otherwise (one service, Consul) it names
    // the Consul service to use instead, as before services existed.
    let file_cfg = effective_config(&ServeArgs {
        service: None,
        ..serve.clone()
    })
    .map_err(invalid)?;
    let names = file_cfg.service_names();
    let (cfg, named) = match a.service.as_deref() {
        Some(name) if names.contains(&name) => {
            let view = file_cfg.for_service(name);
            (
                view.unwrap_or_else(|| file_cfg.clone()),
                Some(name.to_string()),
            )
        }
        Some(name) if names.len() > 1 => {
            let list = names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>();
            return Err((
                EXIT_USAGE,
                format!(
                    "--service {name:?}: the config has no such service (its services are {})",
                    list.join(", ")
                ),
            ));
        }
        _ => {
            // The primary service's part only: its routes are the ones to probe.
            let cfg = effective_config(&serve).map_err(invalid)?;
            let view = cfg.for_service(cfg.primary_service());
            (view.unwrap_or(cfg), None)
        }
    };
    let timeout = duration::parse(timeout).map_err(|e| (EXIT_USAGE, format!("--timeout: {e}")))?;
    let targets = Targets {
        admin: a.admin.clone(),
        proxy: a.proxy.clone(),
        nomad_addr: nomad.nomad_addr.clone(),
        job: nomad.job.clone(),
    };
    let mut ctx = Ctx::new(cfg, &targets, timeout).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    ctx.status_service = named;
    Ok(ctx)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("zerodown: cannot start the runtime: {e}");
            std::process::exit(1)
        })
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("zerodown: {msg}");
    ExitCode::from(code)
}

/// The read-only commands wait for no change: each of their calls has its own bound, and this
/// only fills the context.
const READ_ONLY_TIMEOUT: &str = "60s";

pub fn status(a: OpsArgs) -> ExitCode {
    let ctx = match context(&a, &NomadArgs::default(), READ_ONLY_TIMEOUT) {
        Ok(c) => c,
        Err((code, m)) => return fail(code, &m),
    };
    let r = runtime().block_on(ops::status::report(&ctx));
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        out!("{}", ops::status::render(&r));
    }
    if !r.healthy() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn report_switch(a: &OpsArgs, what: &str, r: Result<ops::switch::Switched, OpsError>) -> ExitCode {
    match r {
        Ok(s) => {
            if a.json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": true, "from": s.from, "to": s.to, "elapsed_ms": s.elapsed.as_millis() as u64, "how": s.how, "hsms": s.hsms, "notes": s.notes})
                );
            } else {
                outln!(
                    "{what}: {} -> {} ({}); the proxy serves {} on /hello after {:.2}s",
                    s.from,
                    s.to,
                    s.how,
                    s.to,
                    s.elapsed.as_secs_f64()
                );
                if let Some(h) = &s.hsms {
                    outln!("{what}: {h}");
                }
            }
            for n in &s.notes {
                eprintln!("zerodown: {what}: note: {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let nothing = matches!(e, OpsError::NothingToDo { .. });
            if a.json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": false, "nothing_to_do": nothing, "error": e.to_string()})
                );
            }
            if nothing {
                fail(EXIT_NOTHING_TO_DO, &format!("{what}: nothing to do: {e}"))
            } else {
                fail(1, &format!("{what} refused or failed: {e}"))
            }
        }
    }
}

fn change_context(c: &ChangeArgs) -> Result<Ctx, (u8, String)> {
    context(&c.ops, &c.nomad, &c.timeout)
}

pub fn switch(c: ChangeArgs, force: bool) -> ExitCode {
    let ctx = match change_context(&c) {
        Ok(c) => c,
        Err((code, m)) => return fail(code, &m),
    };
    let r = runtime().block_on(ops::switch::switch(&ctx, force, None));
    report_switch(&c.ops, "switch", r)
}

pub fn rollback(c: ChangeArgs, force: bool) -> ExitCode {
    let ctx = match change_context(&c) {
        Ok(c) => c,
        Err((code, m)) => return fail(code, &m),
    };
    let r = runtime().block_on(ops::rollback::rollback(&ctx, force));
    report_switch(&c.ops, "rollback", r)
}

pub fn diagnose(a: OpsArgs, nomad: NomadArgs) -> ExitCode {
    let ctx = match context(&a, &nomad, READ_ONLY_TIMEOUT) {
        Ok(c) => c,
        Err((code, m)) => {
            outln!("✗ config: {m}\n  fix: zerodown check-config FILE");
            return ExitCode::from(code);
        }
    };
    let checks = runtime().block_on(ops::diagnose::run(&ctx));
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_default()
        );
    } else {
        out!("{}", ops::diagnose::render(&checks));
    }
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn deploy(c: ChangeArgs, version: String, image: String) -> ExitCode {
    let a = &c.ops;
    let ctx = match change_context(&c) {
        Ok(c) => c,
        Err((code, m)) => return fail(code, &m),
    };
    match runtime().block_on(ops::deploy::deploy(&ctx, &version, &image)) {
        Ok(msg) => {
            if a.json {
                outln!("{}", serde_json::json!({"ok": true, "message": msg}));
            } else {
                outln!("{msg}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if a.json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            }
            fail(1, &format!("deploy refused or failed: {e}"))
        }
    }
}
