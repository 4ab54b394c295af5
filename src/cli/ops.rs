//! The operator commands' command line: where the proxy, Consul and Nomad are, and how to print.

use std::process::ExitCode;

use super::args::{OpsArgs, ServeArgs, EXIT_USAGE};
use super::serve::effective_config;
use crate::config::duration;
use crate::ops::{self, Ctx, OpsError, Targets};

fn context(a: &OpsArgs) -> Result<Ctx, (u8, String)> {
    let serve = ServeArgs {
        config: a.config.clone(),
        listen: None,
        admin_listen: None,
        log_format: None,
        threads: None,
        consul_addr: a.consul_addr.clone(),
        service: a.service.clone(),
    };
    let cfg = effective_config(&serve).map_err(|e| (EXIT_USAGE, format!("invalid config: {e}")))?;
    let timeout =
        duration::parse(&a.timeout).map_err(|e| (EXIT_USAGE, format!("--timeout: {e}")))?;
    let targets = Targets {
        admin: a.admin.clone(),
        proxy: a.proxy.clone(),
        nomad_addr: a.nomad_addr.clone(),
        job: a.job.clone(),
    };
    Ctx::new(cfg, &targets, timeout).map_err(|e| (EXIT_USAGE, e.to_string()))
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

pub fn status(a: OpsArgs) -> ExitCode {
    let ctx = match context(&a) {
        Ok(c) => c,
        Err((code, m)) => return fail(code, &m),
    };
    let r = runtime().block_on(ops::status::report(&ctx));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print!("{}", ops::status::render(&r));
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
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "from": s.from, "to": s.to, "elapsed_ms": s.elapsed.as_millis() as u64, "how": s.how, "hsms": s.hsms})
                );
            } else {
                println!(
                    "{what}: {} -> {} ({}); the proxy serves {} on /hello after {:.2}s",
                    s.from,
                    s.to,
                    s.how,
                    s.to,
                    s.elapsed.as_secs_f64()
                );
                if let Some(h) = &s.hsms {
                    println!("{what}: {h}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            }
            fail(1, &format!("{what} refused or failed: {e}"))
        }
    }
}

pub fn switch(a: OpsArgs, force: bool) -> ExitCode {
    let ctx = match context(&a) {
        Ok(c) => c,
        Err((code, m)) => return fail(code, &m),
    };
    let r = runtime().block_on(ops::switch::switch(&ctx, force, None));
    report_switch(&a, "switch", r)
}

pub fn rollback(a: OpsArgs, force: bool) -> ExitCode {
    let ctx = match context(&a) {
        Ok(c) => c,
        Err((code, m)) => return fail(code, &m),
    };
    let r = runtime().block_on(ops::switch::rollback(&ctx, force));
    report_switch(&a, "rollback", r)
}

pub fn diagnose(a: OpsArgs) -> ExitCode {
    let ctx = match context(&a) {
        Ok(c) => c,
        Err((code, m)) => {
            println!("✗ config: {m}\n  fix: zerodown check-config FILE");
            return ExitCode::from(code);
        }
    };
    let checks = runtime().block_on(ops::diagnose::run(&ctx));
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_default()
        );
    } else {
        print!("{}", ops::diagnose::render(&checks));
    }
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn deploy(a: OpsArgs, version: String, image: String) -> ExitCode {
    let ctx = match context(&a) {
        Ok(c) => c,
        Err((code, m)) => return fail(code, &m),
    };
    match runtime().block_on(ops::deploy::deploy(&ctx, &version, &image)) {
        Ok(msg) => {
            if a.json {
                println!("{}", serde_json::json!({"ok": true, "message": msg}));
            } else {
                println!("{msg}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": e.to_string()})
                );
            }
            fail(1, &format!("deploy refused or failed: {e}"))
        }
    }
}
