//! `zerodown demo` as a user runs it: the banner names commands that work as printed (the path
//! the binary was started by, not a `zerodown` that may not be on PATH), and `--quiet` keeps the
//! access log out of stdout.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::*;

/// Kills the demo if the test fails before it stops it, so no process outlives the test.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_names_runnable_commands_and_quiet_drops_the_access_log() {
    let exe = env!("CARGO_BIN_EXE_zerodown");
    let mut child = Command::new(exe)
        .args(["demo", "--quiet", "--no-hsms"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id());
    let (tx, banner) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
            if line.contains("Stop with Ctrl-C") {
                let _ = tx.send(text.clone());
            }
        }
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let banner = tokio::task::spawn_blocking(move || banner.recv_timeout(DEADLINE))
        .await
        .unwrap()
        .expect("no banner");
    assert!(
        banner.contains(&format!("{exe} status -c ")),
        "the banner's commands name this binary: {banner}"
    );
    let port: u16 = banner
        .split("curl localhost:")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a port in the banner");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..3 {
        assert_eq!(get(addr, "/hello").await.0, 200);
    }
    // The operator command exactly as the banner prints it.
    let status_cmd = banner
        .lines()
        .find(|l| l.contains(" status -c "))
        .and_then(|l| l.split("->").next())
        .unwrap()
        .trim()
        .to_string();
    let words: Vec<String> = status_cmd.split_whitespace().map(str::to_string).collect();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(&words[0]).args(&words[1..]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{status_cmd}: {}",
        String::from_utf8_lossy(&status.stdout)
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = child.wait();
    std::mem::forget(guard);
    let stdout = stdout.join().unwrap();
    assert!(stdout.contains("zerodown started"), "{stdout}");
    assert!(
        !stdout.contains("zerodown::access"),
        "--quiet still logs requests:\n{stdout}"
    );
}

/// `demo-backend --hsms` answers HSMS too, on the address it prints: what a user points an
/// instance's `hsms` address at to try HSMS (and its survival across upgrades) by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backend_answers_hsms_on_the_address_it_prints() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zerodown"))
        .args(["demo-backend", "--listen", "127.0.0.1:0", "--version", "v7"])
        .args(["--hsms", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(child.id());
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr: std::net::SocketAddr = loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("demo-backend printed no HSMS address");
        if let Some(a) = line.strip_prefix("demo HSMS host v7 answering S1F1 on ") {
            break a.parse().unwrap();
        }
    };
    let mut eq = common::hsms::Equipment::connect(addr).await;
    assert_eq!(eq.select().await, zerodown::hsms::codec::SELECT_OK);
    assert_eq!(
        eq.s1f1(std::time::Duration::from_secs(5)).await.as_deref(),
        Some("v7")
    );
    let _ = child.kill();
    let _ = child.wait();
}
