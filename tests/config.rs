//! Config files: the documented example equals the defaults, and each bad file fails with a message
//! naming the file, line and key (through the real `check-config` command, exit code 64).

use std::path::Path;
use std::process::Command;

use zerodown::config::Config;

#[test]
fn documented_config_equals_the_embedded_defaults() {
    let cfg = Config::load(Path::new("config/zerodown.toml")).unwrap();
    assert_eq!(cfg, Config::default());
}

#[test]
fn consul_example_parses_with_its_documented_values() {
    let cfg = Config::load(Path::new("config/zerodown-consul.toml")).unwrap();
    let zerodown::config::SourceConfig::Consul(c) = &cfg.source else {
        panic!("not a consul source: {:?}", cfg.source)
    };
    assert_eq!(c.service, "hello-service");
    assert_eq!(c.address.to_string(), "http://127.0.0.1:8500");
    assert_eq!(c.wait, std::time::Duration::from_secs(300));
    assert_eq!(c.version_tag_pattern, r"^v\d+");
    assert_eq!(c.kv_key, "zerodown/hello-service/active");
    // Everything else is the defaults.
    assert_eq!(cfg.routes, Config::default().routes);
}

#[test]
fn hsms_example_parses_to_the_hsms_defaults() {
    let cfg = Config::load(Path::new("config/zerodown-hsms.toml")).unwrap();
    let want = zerodown::config::HsmsConfig::new("0.0.0.0:5000".parse().unwrap());
    assert_eq!(cfg.hsms, Some(want));
}

#[test]
fn example_upstreams_file_parses() {
    let v = zerodown::core::discovery::file::load(Path::new("config/upstreams.toml")).unwrap();
    assert_eq!(v.len(), 4);
}

fn check_config(file: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zerodown"))
        .args(["check-config", file])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_example_and_prints_it() {
    let (code, stdout, _) = check_config("config/zerodown.toml");
    assert_eq!(code, Some(0));
    assert!(stdout.contains("listen = \"0.0.0.0:8080\""), "{stdout}");
    assert!(stdout.contains("connect_timeout = \"2s\""), "{stdout}");
    assert!(
        stdout.contains("config/upstreams.toml: active v1 (2 instances), standby v2 (2 instances)"),
        "check-config reads the upstreams file too: {stdout}"
    );
}

#[test]
fn bad_files_name_file_line_and_key() {
    let cases = [
        ("bad-unknown-key.toml", ":3:1: unknown field `listen_port`"),
        (
            "bad-listen.toml",
            ":2:10: server.listen: invalid address \"0.0.0.0:80x\"",
        ),
        (
            "bad-duration.toml",
            ":2:19: upstream.connect_timeout: duration \"2\" has no unit",
        ),
        ("bad-type.toml", ":2:16: invalid type: string \"three\""),
        (
            "bad-pool.toml",
            ":3:8: routes.pool: unknown pool \"canary\"",
        ),
        (
            "bad-source-key.toml",
            ":4:11: source.service: does not apply to kind = \"file\"",
        ),
        ("bad-syntax.toml", ":1:8:"),
        (
            "bad-same-tags.toml",
            "pools.active_tag and pools.standby_tag are both",
        ),
        (
            "bad-consul-wait.toml",
            ":4:8: source.wait: Consul caps blocking queries at 10m",
        ),
        (
            "bad-consul-pattern.toml",
            ":4:23: source.version_tag_pattern: invalid pattern",
        ),
        (
            "bad-consul-no-service.toml",
            ":2:8: source.service: missing",
        ),
        (
            "bad-hsms-drain.toml",
            ":4:15: hsms.drain_bound: 8s is more than half of hsms.t3 (10s)",
        ),
        (
            "bad-hsms-mode.toml",
            ":3:8: hsms.mode: unknown mode \"udp\" (use \"hsms\" or \"tcp\")",
        ),
        ("bad-hsms-listen.toml", "hsms.listen is missing"),
        (
            "bad-upstreams.toml",
            "tests/data/bad-upstreams-file.toml:3:11: instances.address: \"127.0.0.1\" is not HOST:PORT",
        ),
        (
            "missing-upstreams.toml",
            "tests/data/no-such-upstreams.toml: cannot read it",
        ),
    ];
    for (file, expected) in cases {
        let path = format!("tests/data/{file}");
        let (code, _, stderr) = check_config(&path);
        assert_eq!(code, Some(64), "{file}: {stderr}");
        assert!(
            stderr.contains(&format!("{path}{expected}")) || stderr.contains(expected),
            "{file}: expected {expected:?} in {stderr:?}"
        );
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    }
}

fn serve_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zerodown"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn consul_flags_are_checked() {
    let (code, stderr) = serve_exit(&["--consul-addr", "http://127.0.0.1:8500"]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("--consul-addr: needs --service NAME"),
        "{stderr}"
    );
    let (code, stderr) = serve_exit(&["--consul-addr", "ftp://x", "--service", "web"]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("--consul-addr:") && stderr.contains("unknown scheme"),
        "{stderr}"
    );
    let (code, stderr) = serve_exit(&["--service", "a b"]);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("--service:"), "{stderr}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, stderr) = check_config("tests/data/does-not-exist.toml");
    assert_eq!(code, Some(64));
    assert!(stderr.contains("cannot read the file"), "{stderr}");
}
