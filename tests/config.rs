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
fn example_upstreams_file_parses() {
    let v = zerodown::discovery::file::load(Path::new("config/upstreams.toml")).unwrap();
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

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, stderr) = check_config("tests/data/does-not-exist.toml");
    assert_eq!(code, Some(64));
    assert!(stderr.contains("cannot read the file"), "{stderr}");
}
