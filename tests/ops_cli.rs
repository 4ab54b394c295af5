//! The operator commands through the real binary: exit codes a script can rely on (status 1 on a
//! failing route or an empty pool, rollback 3 when there is nothing to do) and help texts that
//! list only the flags a command reads.

mod common;

use std::process::Command;

use common::*;

/// Runs the binary with `args`, off the runtime that serves the proxy.
async fn zerodown(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_zerodown"))
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The config the operator commands read: the daemon's addresses and its upstreams file.
fn ops_config(d: &TestDaemon) -> String {
    let path = d.dir.path().join("zerodown.toml");
    let text = format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n[source]\nkind = \"file\"\npath = \"{}\"\npoll_interval = \"20ms\"\n",
        d.daemon.public_addr,
        d.daemon.admin_addr.unwrap(),
        d.upstreams.display()
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_what_the_commands_found() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let d = start(&[("a", v1.to_string(), "v1", "active")], |_| {}).await;
    let cfg = ops_config(&d);

    // No standby pool: /standby answers 503 and there is nothing to switch to.
    let (code, out, _) = zerodown(&["status", "-c", &cfg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PROBLEM the standby pool is empty")
            && out.contains("PROBLEM /standby answers 503")
            && !out.contains("agree"),
        "{out}"
    );

    write_upstreams(
        &d.upstreams,
        &[
            ("a", v1.to_string(), "v1", "active"),
            ("b", v2.to_string(), "v2", "standby"),
        ],
    );
    eventually("standby loaded", || async {
        !d.daemon.publisher().load_full().standby.is_empty()
    })
    .await;
    let (code, out, _) = zerodown(&["status", "-c", &cfg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("proxy and source agree"), "{out}");
    assert!(
        out.contains("(version v2)"),
        "the table shows the version each instance answers: {out}"
    );

    let (code, out, err) = zerodown(&["switch", "-c", &cfg, "--timeout", "10s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("switch: v1 -> v2"), "{out}");
    let (code, out, err) = zerodown(&["rollback", "-c", &cfg, "--timeout", "10s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("rollback: v2 -> v1"), "{out}");
    let (code, out, err) = zerodown(&["rollback", "-c", &cfg, "--json"]).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("rollback: nothing to do: v1 already serves"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["nothing_to_do"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        get(d.daemon.public_addr, "/hello").await.1,
        "msg-v1 (version v1)\n"
    );
}

#[tokio::test]
async fn each_help_lists_only_the_flags_its_command_reads() {
    let help = |cmd: &'static str| async move { zerodown(&[cmd, "--help"]).await.1 };
    let status = help("status").await;
    for flag in ["--timeout", "--nomad-addr", "--job", "--force"] {
        assert!(
            !status.contains(flag),
            "status --help lists {flag}:\n{status}"
        );
    }
    assert!(
        status.contains("--admin") && status.contains("--json"),
        "{status}"
    );
    let diagnose = help("diagnose").await;
    assert!(
        diagnose.contains("--nomad-addr") && !diagnose.contains("--timeout"),
        "{diagnose}"
    );
    for cmd in ["switch", "rollback", "deploy"] {
        let h = help(cmd).await;
        assert!(
            h.contains("--timeout") && h.contains("--nomad-addr"),
            "{cmd}:\n{h}"
        );
    }
}

/// A second service on its own upstreams file: `--service` switches it alone, reports on its own
/// routes, and names the services when it is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_flag_switches_one_service_and_leaves_the_other() {
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let (u1, u2) = (backend("u1").await, backend("u2").await);
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users.toml");
    write_upstreams(
        &users,
        &[
            ("u-a", u1.to_string(), "u1", "active"),
            ("u-b", u2.to_string(), "u2", "standby"),
        ],
    );
    let primary = [
        ("a", v1.to_string(), "v1", "active"),
        ("b", v2.to_string(), "v2", "standby"),
    ];
    let users_path = users.clone();
    let d = start(&primary, move |c| {
        c.services.push(zerodown::config::ServiceConfig {
            name: "user-service".into(),
            source: zerodown::config::SourceConfig::File(zerodown::config::FileSourceConfig {
                path: users_path,
                poll_interval: std::time::Duration::from_millis(20),
            }),
            pools: c.pools.clone(),
        });
        for (prefix, pool) in [
            ("/users", zerodown::config::PoolName::Active),
            ("/users-standby", zerodown::config::PoolName::Standby),
        ] {
            c.routes.push(zerodown::config::Route {
                service: Some("user-service".into()),
                rewrite: Some("/hello".into()),
                ..zerodown::config::Route::new(prefix, pool)
            });
        }
    })
    .await;
    let cfg = ops_config(&d);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[[services]]\nname = \"user-service\"\npath = \"{}\"\n\n[[routes]]\nprefix = \"/users\"\nservice = \"user-service\"\npool = \"active\"\nrewrite = \"/hello\"\n\n[[routes]]\nprefix = \"/users-standby\"\nservice = \"user-service\"\npool = \"standby\"\nrewrite = \"/hello\"\n\n[[routes]]\nprefix = \"/standby\"\npool = \"standby\"\nrewrite = \"/hello\"\n\n[[routes]]\nprefix = \"/\"\npool = \"active\"\n",
        users.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    eventually("user-service loaded", || async {
        get(d.daemon.public_addr, "/users")
            .await
            .1
            .contains("(version u1)")
    })
    .await;
    let primary_file = std::fs::read_to_string(&d.upstreams).unwrap();

    let (code, out, err) = zerodown(&["status", "-c", &cfg, "--service", "user-service"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("/users-standby") && out.contains("(version u2)"),
        "{out}"
    );
    // Without --service: the primary service, its instances and its own routes.
    let (code, out, err) = zerodown(&["status", "-c", &cfg]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("/hello") && !out.contains("/users"), "{out}");
    assert!(!out.contains("(version u1)"), "{out}");

    let (code, out, err) = zerodown(&[
        "switch",
        "-c",
        &cfg,
        "--service",
        "user-service",
        "--timeout",
        "10s",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("switch: u1 -> u2"), "{out}");
    assert!(get(d.daemon.public_addr, "/users")
        .await
        .1
        .contains("(version u2)"));
    assert!(get(d.daemon.public_addr, "/hello")
        .await
        .1
        .contains("(version v1)"));
    assert_eq!(
        std::fs::read_to_string(&d.upstreams).unwrap(),
        primary_file,
        "the primary service's upstreams file was changed"
    );

    let (code, _, err) = zerodown(&["status", "-c", &cfg, "--service", "nope"]).await;
    assert_eq!(code, 64, "{err}");
    assert_eq!(
        err,
        "zerodown: --service \"nope\": the config has no such service (its services are \
         \"default\", \"user-service\")\n"
    );
}

/// A reader that closes the pipe before the command prints (`zerodown status | head -0`) must
/// not make it panic: Rust ignores SIGPIPE, so `println!` would abort with exit 101.
#[test]
fn a_closed_stdout_does_not_panic_a_command() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/zerodown.toml");
    for args in [
        vec!["diagnose", "--config", config],
        vec!["check-config", config],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zerodown"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}
