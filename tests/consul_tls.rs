//! The Consul source over https and against addresses that fail before HTTP: a CA the source is
//! told to trust (certificates made in the test), a server it must not trust, and a name that
//! does not resolve. The double speaks plain HTTP; a TLS front made here terminates in front of it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::consul::*;
use common::*;
use zerodown::config::{Config, ConsulAddress, ConsulSourceConfig, SourceConfig};
use zerodown::daemon::Daemon;
use zerodown_testkit::ConsulDouble;

/// Terminates TLS for `localhost` with a fresh self-signed certificate and relays to `backend`.
/// Returns its address and the certificate's PEM (the CA a client must trust).
async fn tls_front(backend: SocketAddr) -> (SocketAddr, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = c.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (addr, pem)
}

/// A daemon on `src` that has not necessarily loaded a pool.
async fn start_unready(src: ConsulSourceConfig) -> Daemon {
    let mut cfg = Config::default();
    cfg.log.access_log = false;
    cfg.source = SourceConfig::Consul(src);
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Daemon::start(cfg, public, None).unwrap()
}

async fn registered_double() -> ConsulDouble {
    let consul = ConsulDouble::start().await.unwrap();
    register(&consul, "a", backend("v1").await, "v1", &["active"]);
    consul
}

fn https_source(consul: &ConsulDouble, front: SocketAddr) -> ConsulSourceConfig {
    let mut src = source(consul);
    src.address =
        ConsulAddress::parse(&format!("https://127.0.0.1:{}", front.port()), false).unwrap();
    // The certificate names `localhost`; the address is an IP, as CONSUL_TLS_SERVER_NAME allows.
    src.tls.server_name = Some("localhost".into());
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_consul_with_the_configured_ca_serves_its_instances() {
    let consul = registered_double().await;
    let (front, ca) = tls_front(consul.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    let mut src = https_source(&consul, front);
    src.tls.ca_file = Some(dir.path().join("ca.pem"));
    let d = start_unready(src).await;
    let mut rx = d.publisher().subscribe();
    tokio::time::timeout(DEADLINE, rx.wait_for(|g| *g >= 1))
        .await
        .expect("no pool loaded through https")
        .unwrap();
    assert_eq!(
        get(d.public_addr, "/hello").await,
        (200, "msg-v1 (version v1)\n".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_consul_certificate_is_an_error_naming_tls_and_nothing_is_served() {
    let consul = registered_double().await;
    let (front, _ca) = tls_front(consul.addr()).await;
    // No CA file: the system roots, which do not hold the test's self-signed certificate.
    let d = start_unready(https_source(&consul, front)).await;
    eventually("a TLS error recorded", || async {
        d.status()
            .state()
            .last_error
            .is_some_and(|e| e.contains("TLS handshake with Consul") && e.contains("CONSUL_CACERT"))
    })
    .await;
    assert_eq!(d.status().state().last_index, None);
    assert_eq!(get(d.public_addr, "/hello").await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_consul_name_is_an_error_that_says_so() {
    let consul = ConsulDouble::start().await.unwrap();
    let mut src = source(&consul);
    // `.invalid` never resolves (RFC 6761).
    src.address = ConsulAddress::parse("http://consul.invalid:8500", false).unwrap();
    let d = start_unready(src).await;
    eventually("a connect error naming the host", || async {
        d.status().state().last_error.is_some_and(|e| {
            e.contains("cannot connect to Consul at http://consul.invalid:8500")
                && e.contains("lookup")
        })
    })
    .await;
    // It keeps retrying with backoff rather than giving up.
    let before = d.status().state().errors_total;
    eventually("further attempts", || async {
        d.status().state().errors_total > before
    })
    .await;
    assert_eq!(get(d.public_addr, "/hello").await.0, 503);
}
