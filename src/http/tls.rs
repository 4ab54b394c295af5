//! TLS termination: a rustls server config from PEM files (TLS 1.2 and 1.3 with rustls' safe
//! defaults, ALPN `h2` and `http/1.1`), rebuilt on SIGHUP; connections already open keep theirs.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{SetupError, TlsConfig};

/// Builds the acceptor; errors name the file and the fix.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, SetupError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            let message = format!("tls.cert: cannot read {}: {e}", cfg.cert.display());
            SetupError::file("tls.cert", &cfg.cert, message)
        })?;
    if chain.is_empty() {
        let message = format!(
            "tls.cert: {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            cfg.cert.display()
        );
        return Err(SetupError::file("tls.cert", &cfg.cert, message));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| {
        let message = format!(
            "tls.key: cannot read a private key from {}: {e} (expected PKCS#8, PKCS#1 or SEC1 PEM)",
            cfg.key.display()
        );
        SetupError::file("tls.key", &cfg.key, message)
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::setting("tls", format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            let message = format!(
                "tls.cert / tls.key: {} and {} cannot be used together: {e}",
                cfg.cert.display(),
                cfg.key.display()
            );
            SetupError::file("tls.key", &cfg.key, message)
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
