//! The JSON logs a pipeline reads: the real binary with `--log-format json`, driven through a pool
//! swap, gate holds, a rejected upstreams file and proxied requests (200 and 503). Every line must
//! parse, and every field must be a JSON value of its type — numbers as numbers, lists as arrays,
//! an absent value as null — never Debug text such as `Some("v1")` or `["a"]` in a string.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::Value;

struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(config: &std::path::Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zerodown"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    /// Waits for a line that parses and satisfies `want`; returns it.
    async fn wait_for(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let end = tokio::time::Instant::now() + DEADLINE;
        while tokio::time::Instant::now() < end {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| want(v));
            if let Some(v) = found {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!(
            "no log line for {what}; saw:\n{}",
            self.lines.lock().unwrap().join("\n")
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a field may be: the JSON types it is allowed to take.
#[derive(Clone, Copy, PartialEq)]
enum T {
    Str,
    /// A string or null (an optional value).
    OptStr,
    Num,
    OptNum,
    Bool,
    /// An array of strings.
    Strs,
    /// `{"added": [strings], "removed": [strings]}`.
    Changes,
}

/// The fields each target's events carry, with their types.
fn schema(target: &str) -> &'static [(&'static str, T)] {
    use T::*;
    match target {
        "zerodown::swap" => &[
            ("generation", Num),
            ("kind", Str),
            ("reason", Str),
            ("active_old", OptStr),
            ("active_new", OptStr),
            ("active_added", Num),
            ("active_removed", Num),
            ("active_changes", Changes),
            ("standby_old", OptStr),
            ("standby_new", OptStr),
            ("standby_added", Num),
            ("standby_removed", Num),
            ("standby_changes", Changes),
            ("source", Str),
            ("index", OptNum),
        ],
        "zerodown::gate" => &[
            ("pool", Str),
            ("reason", Str),
            ("serving", Str),
            ("waiting", Strs),
        ],
        "zerodown::source" => &[("source", Str), ("error", Str)],
        "zerodown::access" => &[
            ("method", Str),
            ("path", Str),
            ("status", Num),
            ("route", Str),
            ("pool", Str),
            ("upstream", OptStr),
            ("version", OptStr),
            ("duration_us", Num),
            ("bytes", Num),
            ("completed", Bool),
            ("peer", Str),
            ("request_id", OptStr),
        ],
        "zerodown::server" => &[
            ("listen", Str),
            ("admin", OptStr),
            ("tls", OptStr),
            ("hsms", OptStr),
            ("source", Str),
            ("version", Str),
        ],
        _ => &[],
    }
}

fn is_strs(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}

fn fits(v: &Value, t: T) -> bool {
    match t {
        T::Str => v.is_string(),
        T::OptStr => v.is_string() || v.is_null(),
        T::Num => v.is_u64() || v.is_i64() || v.is_f64(),
        T::OptNum => v.is_u64() || v.is_null(),
        T::Bool => v.is_boolean(),
        T::Strs => is_strs(v),
        T::Changes => {
            v.as_object().is_some_and(|o| o.len() == 2)
                && is_strs(&v["added"])
                && is_strs(&v["removed"])
        }
    }
}

/// A string holding what should have been a value: Debug of an `Option`, or a list, tuple or
/// object written as text.
fn smuggled(s: &str) -> bool {
    s == "None"
        || s.starts_with("Some(")
        || s.starts_with("(")
        || ((s.starts_with('[') || s.starts_with('{')) && serde_json::from_str::<Value>(s).is_ok())
}

/// Every problem with one log line, as text; empty when the line is as it should be.
fn check_line(line: &str) -> Vec<String> {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return vec![format!("not JSON ({e}): {line}")],
    };
    let Some(obj) = v.as_object() else {
        return vec![format!("not an object: {line}")];
    };
    let mut bad = Vec::new();
    for (key, t) in [("timestamp", T::Str), ("level", T::Str), ("target", T::Str)] {
        if !obj.get(key).is_some_and(|x| fits(x, t)) {
            bad.push(format!("{key} missing or mistyped: {line}"));
        }
    }
    let target = v["target"].as_str().unwrap_or("");
    for (key, t) in schema(target) {
        // Each schema lists the fields of its target's main event; other events of the target
        // carry a subset, and every field they carry must have the type listed.
        if let Some(x) = obj.get(*key) {
            if !fits(x, *t) {
                bad.push(format!("{target}: {key} is {x}: {line}"));
            }
        }
    }
    let mut strings = Vec::new();
    collect_strings(&v, &mut strings);
    for s in strings.into_iter().filter(|s| smuggled(s)) {
        bad.push(format!("a value written as text, {s:?}: {line}"));
    }
    if let Some(spans) = obj.get("spans") {
        let ok = spans
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["name"].is_string()));
        if !ok {
            bad.push(format!("spans is not a list of named spans: {line}"));
        }
    }
    bad
}

fn collect_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

#[test]
fn the_checker_finds_debug_text_and_wrong_types() {
    let ok = r#"{"timestamp":"t","level":"INFO","message":"pool swap","active_old":null,"active_new":"v1","active_changes":{"added":["a@x"],"removed":[]},"index":null,"target":"zerodown::swap"}"#;
    assert_eq!(check_line(ok), Vec::<String>::new());
    for bad in [
        r#"{"timestamp":"t","level":"INFO","active_old":"Some(\"v1\")","target":"zerodown::swap"}"#,
        r#"{"timestamp":"t","level":"INFO","active_old":"None","target":"zerodown::swap"}"#,
        r#"{"timestamp":"t","level":"INFO","active_changes":"([\"a\"], [])","target":"zerodown::swap"}"#,
        r#"{"timestamp":"t","level":"INFO","waiting":"[\"v2\"]","target":"zerodown::gate"}"#,
        r#"{"timestamp":"t","level":"INFO","status":"503","target":"zerodown::access"}"#,
        r#"{"timestamp":"t","level":"INFO","upstream":"","target":"zerodown::access","x":"[1]"}"#,
        r#"not json"#,
    ] {
        assert!(!check_line(bad).is_empty(), "passed: {bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_swap_gate_source_and_access_event_is_typed_json() {
    let (v1, v2, v3) = (
        backend("v1").await,
        backend("v2").await,
        backend("v3").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let upstreams = dir.path().join("upstreams.toml");
    write_upstreams(&upstreams, &[("a", v1.to_string(), "v1", "active")]);
    let config = dir.path().join("zerodown.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"file\"\npath = \"upstreams.toml\"\npoll_interval = \"20ms\"\n",
    )
    .unwrap();
    let p = Proc::spawn(&config);
    let started = p
        .wait_for("start", |v| v["message"] == "zerodown started")
        .await;
    let addr = started["listen"].as_str().unwrap().parse().unwrap();

    // Access: a 200 from v1, and a 503 from the empty standby pool (no upstream, no version).
    assert_eq!(get(addr, "/hello").await.0, 200);
    assert_eq!(get(addr, "/standby").await.0, 503);
    let a503 = p
        .wait_for("503 access", |v| {
            v["target"] == "zerodown::access" && v["status"] == 503
        })
        .await;
    assert!(
        a503["upstream"].is_null() && a503["version"].is_null(),
        "{a503}"
    );
    let a200 = p
        .wait_for("200 access", |v| {
            v["target"] == "zerodown::access" && v["status"] == 200
        })
        .await;
    assert_eq!(a200["version"], "v1", "{a200}");

    // Swap: v2 joins as standby, then becomes active.
    let two = |a: &'static str, b: &'static str| -> Vec<Entry<'static>> {
        vec![
            ("a", v1.to_string(), "v1", a),
            ("b", v2.to_string(), "v2", b),
        ]
    };
    write_upstreams(&upstreams, &two("active", "standby"));
    write_upstreams_after(&p, &upstreams, &two("standby", "active")).await;
    let swap = p
        .wait_for("v1 -> v2 swap", |v| {
            v["target"] == "zerodown::swap" && v["active_new"] == "v2"
        })
        .await;
    assert_eq!(swap["active_old"], "v1", "{swap}");
    assert!(
        swap["index"].is_null(),
        "the file source has no index: {swap}"
    );
    assert_eq!(swap["active_changes"]["added"].as_array().unwrap().len(), 1);

    // Gate: a second version among the active candidates is held back, named in a list.
    write_upstreams(
        &upstreams,
        &[
            ("a", v1.to_string(), "v1", "standby"),
            ("b", v2.to_string(), "v2", "active"),
            ("c", v3.to_string(), "v3", "active"),
        ],
    );
    let hold = p
        .wait_for("version hold", |v| {
            v["target"] == "zerodown::gate" && v["waiting"].is_array()
        })
        .await;
    assert_eq!(
        (hold["serving"].clone(), hold["waiting"].clone()),
        ("v2".into(), serde_json::json!(["v3"]))
    );

    // Source: a file that does not parse is rejected with the reason.
    std::fs::write(&upstreams, "[[instances]]\naddress = \"nowhere\"\n").unwrap();
    let rejected = p
        .wait_for("source error", |v| {
            v["target"] == "zerodown::source" && v["level"] == "ERROR"
        })
        .await;
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("instances.address"),
        "{rejected}"
    );
    write_upstreams(&upstreams, &two("standby", "active"));
    p.wait_for("recovery", |v| v["message"] == "upstreams file valid again")
        .await;

    let lines = p.lines.lock().unwrap().clone();
    let targets: Vec<&str> = ["swap", "gate", "source", "access"].to_vec();
    for t in targets {
        let target = format!("zerodown::{t}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("\"target\":\"{target}\""))),
            "no {target} event"
        );
    }
    let bad: Vec<String> = lines.iter().flat_map(|l| check_line(l)).collect();
    assert!(
        bad.is_empty(),
        "{} bad line(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Writes the upstreams file once the proxy has logged the swap of the previous write, so the two
/// writes are not merged into one poll.
async fn write_upstreams_after(p: &Proc, path: &std::path::Path, entries: &[Entry<'_>]) {
    p.wait_for("standby v2", |v| {
        v["target"] == "zerodown::swap" && v["standby_new"] == "v2"
    })
    .await;
    write_upstreams(path, entries);
}
