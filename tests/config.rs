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

/// Each bad file: the `file:line:col` of the offending value (none for whole-file rules), and the
/// whole message after it, key, problem and fix.
#[test]
fn bad_files_name_file_line_and_key() {
    let cases = [
        (
            "bad-unknown-key.toml",
            Some("3:1"),
            "unknown field `listen_port`, expected one of `listen`, `admin_listen`, \
             `health_path`, `threads`, `drain_timeout`, `header_timeout`, `keepalive_timeout`, \
             `admin_token_file`, `upgrade_socket` (in `listen_port = 8080`)",
        ),
        (
            "bad-listen.toml",
            Some("2:10"),
            "server.listen: invalid address \"0.0.0.0:80x\" (expected IP:PORT, e.g. \"0.0.0.0:8080\")",
        ),
        (
            "bad-duration.toml",
            Some("2:19"),
            "upstream.connect_timeout: duration \"2\" has no unit (write e.g. \"2s\" or \"2ms\")",
        ),
        (
            "bad-type.toml",
            Some("2:16"),
            "invalid type: string \"three\", expected usize (in `max_attempts = \"three\"`)",
        ),
        (
            "bad-pool.toml",
            Some("3:8"),
            "routes.pool: unknown pool \"canary\" (use \"active\" or \"standby\")",
        ),
        (
            "bad-source-key.toml",
            Some("4:11"),
            "source.service: does not apply to kind = \"file\"",
        ),
        (
            "bad-syntax.toml",
            Some("1:8"),
            "unclosed table, expected `]` (in `[server`)",
        ),
        (
            "bad-same-tags.toml",
            None,
            "pools.active_tag and pools.standby_tag are both \"blue\": give the two pools \
             different tags",
        ),
        (
            "bad-consul-wait.toml",
            Some("4:8"),
            "source.wait: Consul caps blocking queries at 10m; use \"10m\" or less",
        ),
        (
            "bad-consul-pattern.toml",
            Some("4:23"),
            "source.version_tag_pattern: invalid pattern: found open group without closing ')'",
        ),
        (
            "bad-consul-no-service.toml",
            Some("2:8"),
            "source.service: missing (kind = \"consul\" needs service = \"hello-service\", or \
             pass --service)",
        ),
        (
            "bad-hsms-drain.toml",
            Some("4:15"),
            "hsms.drain_bound: 8s is more than half of hsms.t3 (10s): queued primaries would \
             come near their reply timeout (lower drain_bound or raise t3)",
        ),
        (
            "bad-hsms-mode.toml",
            Some("3:8"),
            "hsms.mode: unknown mode \"udp\" (use \"hsms\" or \"tcp\")",
        ),
        (
            "bad-hsms-listen.toml",
            None,
            "hsms.listen is missing: give the equipment-facing address (e.g. listen = \
             \"0.0.0.0:5000\")",
        ),
        (
            "bad-service-unknown.toml",
            Some("3:11"),
            "routes.service: unknown service \"user-service\" (the services are \"default\"): \
             add a [[services]] entry named \"user-service\" or fix the name",
        ),
        (
            "bad-service-same-route.toml",
            Some("12:10"),
            "routes.prefix: \"/\" on host \"example.com\" is claimed by two services, \
             \"default\" and \"user-service\": give each its own prefix or host",
        ),
        (
            "bad-service-no-route.toml",
            None,
            "services: \"user-service\" has no route: add [[routes]] with service = \
             \"user-service\" (and a prefix or host), or remove the service",
        ),
        (
            "bad-service-no-path.toml",
            Some("2:8"),
            "services: \"user-service\" has no path: with the file source each service needs \
             its own upstreams file (path = \"user-service-upstreams.toml\")",
        ),
        (
            "bad-service-name-taken.toml",
            Some("2:8"),
            "services.name: \"default\" is already a service (the primary one comes from \
             [source]): give each service its own name",
        ),
        (
            "bad-route-host.toml",
            Some("2:8"),
            "routes.host: \"example.com:8080\" is not a host name (letters, digits, '.', '-'; \
             no port, scheme or path: e.g. \"users.example.com\")",
        ),
    ];
    for (file, at, message) in cases {
        let path = format!("tests/data/{file}");
        let (code, _, stderr) = check_config(&path);
        assert_eq!(code, Some(64), "{file}: {stderr}");
        let place = match at {
            Some(line_col) => format!("{path}:{line_col}"),
            None => path.clone(),
        };
        assert_eq!(
            stderr,
            format!("zerodown: invalid config: {place}: {message}\n"),
            "{file}"
        );
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

#[test]
fn check_config_reads_the_upstreams_file_it_points_to() {
    let cases = [
        (
            "bad-upstreams.toml",
            "tests/data/bad-upstreams-file.toml:3:11: instances.address: \"127.0.0.1\" is not \
             HOST:PORT (e.g. \"127.0.0.1:9001\")",
        ),
        (
            "missing-upstreams.toml",
            "tests/data/no-such-upstreams.toml: cannot read it: No such file or directory (os \
             error 2)",
        ),
    ];
    for (file, message) in cases {
        let (code, _, stderr) = check_config(&format!("tests/data/{file}"));
        assert_eq!(code, Some(64), "{file}: {stderr}");
        assert_eq!(
            stderr,
            format!("zerodown: the upstreams file (source.path) is not usable: {message}\n"),
            "{file}"
        );
    }
}
