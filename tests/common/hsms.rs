//! An HSMS equipment for tests (active side): connect, Select, send W-bit primaries and match
//! their replies by system bytes, each with a deadline. Built on the product's codec; the
//! independent check of the wire format is the secsgem test. Also the rig: a daemon with an HSMS
//! listener in front of demo HSMS hosts of two versions, switched through the upstreams file.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zerodown::config::{Config, HsmsConfig};
use zerodown::daemon::{Daemon, Listeners};
use zerodown::demo::hsms::{spawn as spawn_host, HsmsHost};
use zerodown::hsms::codec::{self, Decoder, Message, SType};

use super::{backend, test_config, DEADLINE};

pub struct Equipment {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    next_system: u32,
    /// Messages read while waiting for something else.
    pub unsolicited: Vec<Message>,
}

impl Equipment {
    pub async fn connect(addr: SocketAddr) -> Equipment {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the HSMS listener");
        stream.set_nodelay(true).unwrap();
        Equipment {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::new(1 << 20),
            next_system: 1,
            unsolicited: Vec::new(),
        }
    }

    pub fn system(&mut self) -> u32 {
        self.next_system += 1;
        self.next_system
    }

    pub async fn send(&mut self, m: &Message) {
        let mut b = BytesMut::new();
        codec::encode(m, &mut b).unwrap();
        self.stream.write_all(&b).await.expect("write to zerodown");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to zerodown");
    }

    /// The next message, or `None` when the connection closed or nothing came within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<Message> {
        let read = async {
            loop {
                if let Ok(Some(m)) = self.decoder.decode(&mut self.buf) {
                    return Some(m);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok().flatten()
    }

    /// Waits for a message with `system` bytes and `stype`, keeping others in `unsolicited`.
    pub async fn wait_for(&mut self, system: u32, stype: SType, wait: Duration) -> Option<Message> {
        let end = tokio::time::Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let m = self.recv(left).await?;
            if m.header.system == system && m.header.stype == stype {
                return Some(m);
            }
            self.unsolicited.push(m);
        }
    }

    pub async fn select(&mut self) -> u8 {
        let sys = self.system();
        self.send(&codec::select_req(sys)).await;
        let rsp = self
            .wait_for(sys, SType::SelectRsp, Duration::from_secs(5))
            .await
            .expect("Select.rsp");
        rsp.header.status()
    }

    /// S1F1 W and the version its S1F2 names (`None`: no reply within `wait`).
    pub async fn s1f1(&mut self, wait: Duration) -> Option<String> {
        let sys = self.system();
        self.send(&s1f1(sys)).await;
        let r = self.wait_for(sys, SType::Data, wait).await?;
        assert_eq!(
            (r.header.stream, r.header.function),
            (1, 2),
            "reply to S1F1"
        );
        zerodown::demo::hsms::s1f2_version(&r.body)
    }
}

pub use zerodown::demo::equipment::s1f1;

pub async fn host(version: &str, delay: Duration) -> SocketAddr {
    spawn_host(
        "127.0.0.1:0".parse().unwrap(),
        HsmsHost {
            version: version.into(),
            delay,
        },
    )
    .await
    .unwrap()
}

/// (id, http address, hsms address, version, tag)
pub type Inst = (
    &'static str,
    SocketAddr,
    SocketAddr,
    &'static str,
    &'static str,
);

pub fn write(path: &std::path::Path, list: &[Inst]) {
    let mut text = String::new();
    for (id, http, hsms, version, tag) in list {
        text.push_str(&format!(
            "[[instances]]\nid = \"{id}\"\naddress = \"{http}\"\nhsms = \"{hsms}\"\nversion = \"{version}\"\ntags = [\"{tag}\"]\n\n"
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub struct Rig {
    pub daemon: Daemon,
    pub cfg: Config,
    pub hsms: SocketAddr,
    pub upstreams: std::path::PathBuf,
    pub list: Vec<Inst>,
    _dir: tempfile::TempDir,
}

impl Rig {
    pub async fn start(list: Vec<Inst>, tweak: impl FnOnce(&mut Config)) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let upstreams = dir.path().join("upstreams.toml");
        write(&upstreams, &list);
        let mut cfg = test_config(&upstreams);
        let hsms_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        cfg.hsms = Some(HsmsConfig::new(hsms_listener.local_addr().unwrap()));
        tweak(&mut cfg);
        let l = Listeners {
            public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            tls: None,
            hsms: Some(hsms_listener),
        };
        let daemon = Daemon::run(cfg.clone(), l).unwrap();
        let mut rx = daemon.publisher().subscribe();
        tokio::time::timeout(DEADLINE, rx.wait_for(|g| *g >= 1))
            .await
            .expect("first pool never loaded")
            .unwrap();
        let hsms = daemon.hsms_addr.unwrap();
        Rig {
            daemon,
            cfg,
            hsms,
            upstreams,
            list,
            _dir: dir,
        }
    }

    /// Swaps the active and standby tags of every instance.
    pub fn flip(&mut self) {
        for i in &mut self.list {
            i.4 = if i.4 == "active" { "standby" } else { "active" };
        }
        write(&self.upstreams, &self.list);
    }
}

pub async fn two_versions(delay_v1: Duration) -> Vec<Inst> {
    vec![
        (
            "v1-a",
            backend("v1").await,
            host("v1", delay_v1).await,
            "v1",
            "active",
        ),
        (
            "v2-a",
            backend("v2").await,
            host("v2", Duration::ZERO).await,
            "v2",
            "standby",
        ),
    ]
}
