//! `zerodown healthcheck` against the real binary: it finds the admin port in the server's own
//! command line and config (not a hard-wired one), and is unhealthy until an active pool is loaded.

mod common;

use std::ffi::OsString;
use std::process::Command;

use common::proc::Proc;
use common::*;

/// `zerodown healthcheck ARGS`: its exit code and output.
async fn healthcheck(args: Vec<String>) -> (Option<i32>, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_zerodown"))
            .arg("healthcheck")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Runs `healthcheck ARGS` until it exits `code` with output starting `out`, or the deadline.
async fn until_healthcheck(args: &[String], code: Option<i32>, out: &str) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let (got, text) = healthcheck(args.to_vec()).await;
        if got == code && text.starts_with(out) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "wanted {code:?} {out:?}, still {got:?}: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_follows_the_configured_admin_port_and_the_active_pool() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let dir = tempfile::tempdir().unwrap();
    let upstreams = dir.path().join("upstreams.toml");
    // Nothing tagged active yet: the proxy runs, but / would answer 503.
    write_upstreams(&upstreams, &[("s", v2.to_string(), "v2", "standby")]);
    // A port other than the default 9901, set only in the config file.
    let admin = dead_address();
    let config = dir.path().join("zerodown.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"{admin}\"\n\n[source]\nkind = \"file\"\npath = \"upstreams.toml\"\npoll_interval = \"50ms\"\n"
        ),
    )
    .unwrap();
    let args: Vec<OsString> = vec!["serve".into(), "--config".into(), config.into()];
    let mut p = Proc::run(&args);
    p.wait_for("zerodown started");
    let pid = vec!["--pid".to_string(), p.child.id().to_string()];

    let not_ready = format!("unhealthy: {admin}/ready 503: not ready: the active pool is empty");
    until_healthcheck(&pid, Some(1), &not_ready).await;

    write_upstreams(
        &upstreams,
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("s", v2.to_string(), "v2", "standby"),
        ],
    );
    until_healthcheck(&pid, Some(0), &format!("ready ({admin}/ready)\n")).await;

    // Not a zerodown server: unhealthy, saying so.
    let me = vec!["--pid".to_string(), std::process::id().to_string()];
    let (code, out) = healthcheck(me).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not a zerodown process"), "{out}");
}
