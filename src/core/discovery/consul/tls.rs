//! rustls client configuration for an https Consul: CA from `CONSUL_CACERT`/`source.ca_file` (else
//! the system roots), optional client certificate, optional verification name.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::config::{ConsulAddress, ConsulTls, SetupError};

/// A connector plus the name the server certificate must carry.
#[derive(Clone)]
pub struct Tls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

/// Builds the TLS client; every error names the file or setting to fix.
pub fn build(addr: &ConsulAddress, tls: &ConsulTls) -> Result<Tls, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    let message = format!(
                        "cannot read the Consul CA file {} (CONSUL_CACERT / source.ca_file): {e}",
                        path.display()
                    );
                    SetupError::file("source.ca_file", path, message)
                })?;
            if certs.is_empty() {
                let message = format!(
                    "the Consul CA file {} holds no PEM certificate",
                    path.display()
                );
                return Err(SetupError::file("source.ca_file", path, message));
            }
            for c in certs {
                roots.add(c).map_err(|e| {
                    let message = format!("invalid certificate in {}: {e}", path.display());
                    SetupError::file("source.ca_file", path, message)
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(SetupError::setting(
                    "source.ca_file",
                    "no system CA certificates found: set CONSUL_CACERT or source.ca_file",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::setting("source.address", format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    let message = format!("cannot read the client certificate {} (CONSUL_CLIENT_CERT / source.client_cert): {e}", cert.display());
                    SetupError::file("source.client_cert", cert, message)
                })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                let message = format!(
                    "cannot read the client key {} (CONSUL_CLIENT_KEY / source.client_key): {e}",
                    key.display()
                );
                SetupError::file("source.client_key", key, message)
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                SetupError::setting(
                    "source.client_key",
                    format!("the client certificate and key do not match or are unusable: {e}"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = tls.server_name.clone().unwrap_or_else(|| addr.host.clone());
    let server_name = ServerName::try_from(name.clone()).map_err(|_| {
        SetupError::setting(
            "source.tls_server_name",
            format!("{name:?} is not a valid TLS server name (CONSUL_TLS_SERVER_NAME)"),
        )
    })?;
    Ok(Tls {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    })
}
