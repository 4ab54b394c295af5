//! The world under test: the Consul double, six demo-backend processes with six demo HSMS hosts,
//! the upstreams file, and the two zerodown processes (Consul source and file source).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use zerodown::demo::hsms::{spawn as spawn_hsms, HsmsHost};
use zerodown_testkit::{CheckStatus, ConsulDouble, ServiceSpec};

use crate::{Args, Events};

pub const SERVICE: &str = "hello-service";
/// The version that serves `/hello` before the first switch.
pub const INITIAL: u8 = 1;

/// One upstream instance: a `zerodown demo-backend` process and an in-process HSMS host.
pub struct Instance {
    pub id: String,
    pub version: u8,
    pub http: SocketAddr,
    pub hsms: SocketAddr,
    pub child: Option<Child>,
}

/// One zerodown under test.
pub struct Target {
    pub name: &'static str,
    pub http: SocketAddr,
    pub hsms: SocketAddr,
    pub admin: SocketAddr,
    pub pid: u32,
    pub child: Child,
    pub log: PathBuf,
    /// Switch orders: when (driver clock, µs) and the version made active.
    pub orders: Vec<(u64, u8)>,
}

pub struct World {
    pub consul: ConsulDouble,
    pub instances: Vec<Instance>,
    pub targets: Vec<Target>,
    /// The version the instances' tags make active now.
    pub active: u8,
    pub upstreams: PathBuf,
    pub zerodown: PathBuf,
    pub out: PathBuf,
    pub events: Arc<Events>,
    /// The negative check (`--mix`): both versions tagged active after a switch.
    pub mix: bool,
    pub max_requests: Option<u64>,
}

/// A free loopback port below the ephemeral range (32768+), so that no outgoing connection of
/// the soak's own load takes it while its instance is down between a kill and the restart.
pub fn free_addr() -> SocketAddr {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("local addr");
        }
    }
    panic!("no free port in 20000..32000");
}

fn message(version: u8) -> &'static str {
    if version == 1 {
        zerodown::demo::MESSI
    } else {
        zerodown::demo::RONALDO
    }
}

/// Starts `zerodown demo-backend` on `addr` and waits until it accepts (5 s).
pub async fn spawn_backend(
    zerodown: &std::path::Path,
    out: &std::path::Path,
    addr: SocketAddr,
    version: u8,
) -> Result<Child, String> {
    for _ in 0..20 {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out.join("backends.log"))
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(zerodown)
            .args(["demo-backend", "--listen", &addr.to_string()])
            .args(["--version", &format!("v{version}"), "--message"])
            .arg(message(version))
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn demo-backend: {e}"))?;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // could not bind yet: try again
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        kill(&mut child);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("demo-backend on {addr} did not start"))
}

impl World {
    pub async fn start(args: &Args, events: Arc<Events>) -> Result<World, String> {
        let consul = ConsulDouble::start().await.map_err(|e| e.to_string())?;
        let mut instances = Vec::new();
        for (n, version) in [1u8, 1, 1, 2, 2, 2].into_iter().enumerate() {
            let id = format!("hello-v{version}-{}", (b'a' + (n % 3) as u8) as char);
            let host = HsmsHost {
                version: format!("v{version}"),
                delay: Duration::ZERO,
            };
            let hsms = spawn_hsms("127.0.0.1:0".parse().expect("addr"), host)
                .await
                .map_err(|e| e.to_string())?;
            let http = free_addr();
            let child = spawn_backend(&args.zerodown, &args.out, http, version).await?;
            instances.push(Instance {
                id,
                version,
                http,
                hsms,
                child: Some(child),
            });
        }
        let mut world = World {
            consul,
            instances,
            targets: Vec::new(),
            active: INITIAL,
            upstreams: args.out.join("upstreams.toml"),
            zerodown: args.zerodown.clone(),
            out: args.out.clone(),
            events,
            mix: args.mix,
            max_requests: args.max_requests,
        };
        for i in 0..world.instances.len() {
            world.register(i, CheckStatus::Passing);
        }
        world.write_upstreams()?;
        for (name, consul) in [("consul", true), ("file", false)] {
            let t = world.spawn_target(name, consul).await?;
            world.targets.push(t);
        }
        for t in &world.targets {
            wait_ready(t.admin).await?;
        }
        Ok(world)
    }

    /// Tags of instance `i` for the current active version: `active`/`standby` and a colour.
    pub fn tags(&self, i: usize) -> Vec<String> {
        let inst = &self.instances[i];
        let role = if inst.version == self.active || (self.mix && self.active != INITIAL) {
            "active"
        } else {
            "standby"
        };
        let colour = if inst.version == 1 { "blue" } else { "green" };
        vec![role.to_string(), colour.to_string()]
    }

    pub fn register(&self, i: usize, check: CheckStatus) {
        let inst = &self.instances[i];
        let hsms_port = inst.hsms.port().to_string();
        let version = format!("v{}", inst.version);
        self.consul.register(
            ServiceSpec::new(inst.id.clone(), SERVICE)
                .address("127.0.0.1")
                .port(inst.http.port())
                .tags(self.tags(i))
                .meta([
                    ("version", version.as_str()),
                    ("hsms_port", hsms_port.as_str()),
                ])
                .check(check),
        );
    }

    /// The upstreams file for the current tags, written atomically (temp file, rename).
    pub fn upstreams_text(&self) -> String {
        let mut s = String::from("# written by benches/soak\n");
        for (i, inst) in self.instances.iter().enumerate() {
            s.push_str(&format!(
                "\n[[instances]]\nid = \"{}\"\naddress = \"{}\"\nversion = \"v{}\"\ntags = [\"{}\"]\nhsms = \"{}\"\n",
                inst.id,
                inst.http,
                inst.version,
                self.tags(i).join("\", \""),
                inst.hsms
            ));
        }
        s
    }

    pub fn write_upstreams(&self) -> Result<(), String> {
        self.write_upstreams_raw(&self.upstreams_text())
    }

    pub fn write_upstreams_raw(&self, text: &str) -> Result<(), String> {
        let tmp = self.upstreams.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &self.upstreams).map_err(|e| e.to_string())
    }

    async fn spawn_target(&self, name: &'static str, consul: bool) -> Result<Target, String> {
        let (http, hsms, admin) = (free_addr(), free_addr(), free_addr());
        let source = if consul {
            format!(
                "[source]\nkind = \"consul\"\nservice = \"{SERVICE}\"\naddress = \"{}\"\n",
                self.consul.url()
            )
        } else {
            format!(
                "[source]\nkind = \"file\"\npath = \"{}\"\n",
                self.upstreams.display()
            )
        };
        let pools = if self.mix {
            "[pools]\nsingle_version = false\n\n"
        } else {
            ""
        };
        let limits = self.max_requests.map_or(String::new(), |n| {
            format!("[limits]\nmax_requests_per_connection = {n}\n\n")
        });
        let config = format!(
            "# written by benches/soak\n[server]\nlisten = \"{http}\"\nadmin_listen = \"{admin}\"\n\n\
             [log]\naccess_log = false\n\n{limits}{pools}{source}\n[hsms]\nlisten = \"{hsms}\"\n"
        );
        let path = self.out.join(format!("zerodown-{name}.toml"));
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let log = self.out.join(format!("zerodown-{name}.log"));
        let f = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(&self.zerodown)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(f.try_clone().map_err(|e| e.to_string())?)
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn zerodown: {e}"))?;
        let pid = child.id();
        Ok(Target {
            name,
            http,
            hsms,
            admin,
            pid,
            child,
            log,
            orders: Vec::new(),
        })
    }

    /// SIGTERM to each zerodown (they drain and exit 0), then the backends are killed.
    /// Returns each zerodown's exit status.
    pub async fn stop(&mut self) -> Vec<String> {
        let mut exits = Vec::new();
        for t in &mut self.targets {
            crate::procs::signal(t.pid, rustix::process::Signal::TERM);
            let mut status = None;
            for _ in 0..400 {
                match t.child.try_wait() {
                    Ok(Some(s)) => {
                        status = Some(s.to_string());
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(e) => {
                        status = Some(format!("wait failed: {e}"));
                        break;
                    }
                }
            }
            exits.push(status.unwrap_or_else(|| {
                kill(&mut t.child);
                "did not exit within 40 s of SIGTERM (killed)".to_string()
            }));
        }
        for inst in &mut self.instances {
            if let Some(mut c) = inst.child.take() {
                kill(&mut c);
            }
        }
        exits
    }
}

impl Drop for World {
    /// Whatever happened, no process of the soak outlives the driver.
    fn drop(&mut self) {
        for t in &mut self.targets {
            kill(&mut t.child);
        }
        for inst in &mut self.instances {
            if let Some(mut c) = inst.child.take() {
                kill(&mut c);
            }
        }
    }
}

/// SIGKILL and reap (immediate for SIGKILL; a process already reaped is left alone).
pub fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits up to 30 s for `GET /ready` on the admin listener to answer 200.
async fn wait_ready(admin: SocketAddr) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if crate::http_load::admin_get(admin, "/ready")
            .await
            .map(|(s, _)| s)
            == Some(200)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("zerodown (admin {admin}) not ready within 30 s"))
}
