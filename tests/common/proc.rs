//! The real binary as a child process: its JSON log lines, waited for by message, and signals.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::DEADLINE;

pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Lines of `seen` a `wait_for` has already returned: each line matches once.
    claimed: Vec<bool>,
}

impl Proc {
    /// `zerodown serve --config CONFIG` on ports chosen by the system.
    pub fn spawn(config: &std::path::Path) -> Proc {
        Proc::spawn_with(config, &[])
    }

    /// As [`Proc::spawn`], with more arguments.
    pub fn spawn_with(config: &std::path::Path, extra: &[&str]) -> Proc {
        let mut args: Vec<OsString> = vec!["serve".into(), "--config".into(), config.into()];
        args.extend(
            ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"].map(OsString::from),
        );
        args.extend(extra.iter().map(OsString::from));
        Proc::run(&args)
    }

    /// The binary with `args`, its JSON log lines read on a thread.
    pub fn run(args: &[OsString]) -> Proc {
        Proc::run_binary(env!("CARGO_BIN_EXE_zerodown").as_ref(), args)
    }

    /// `binary` (a zerodown, e.g. a copy of the built one) with `args`.
    pub fn run_binary(binary: &std::path::Path, args: &[OsString]) -> Proc {
        let mut child = Command::new(binary)
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
            claimed: Vec::new(),
        }
    }

    /// Waits for a JSON log line whose `message` is `msg`; returns it parsed. Lines already read
    /// but not yet returned count too: startup logs its first swap before "zerodown started".
    pub fn wait_for(&mut self, msg: &str) -> serde_json::Value {
        let end = std::time::Instant::now() + DEADLINE;
        let mut next = 0;
        loop {
            while next < self.seen.len() {
                let i = next;
                next += 1;
                if self.claimed[i] {
                    continue;
                }
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.seen[i]) {
                    if v["message"] == msg {
                        self.claimed[i] = true;
                        return v;
                    }
                }
            }
            let Some(left) = end.checked_duration_since(std::time::Instant::now()) else {
                break;
            };
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            self.seen.push(line);
            self.claimed.push(false);
        }
        panic!("no log line {msg:?}; saw:\n{}", self.seen.join("\n"));
    }

    /// Every line read so far (pending ones included), for a failure message.
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
            self.claimed.push(false);
        }
        self.seen.join("\n")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
