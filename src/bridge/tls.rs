//! The TLS client side of a bridge: which CA the remote's certificate must chain to, and the
//! client certificate we present if configured.

use std::sync::Arc;

use crate::config::BridgeConfig;

/// A rustls connector trusting `cafile` and the certificates in `capath`, presenting `certfile`/`keyfile` if given.
pub(super) fn connector(cfg: &BridgeConfig) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = cfg.cafile.as_deref() {
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
            let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
    }
    if let Some(dir) = cfg.capath.as_deref() {
        for c in crate::transport::read_ca_dir(dir).map_err(|e| e.to_string())? {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate in cafile or capath".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&cfg.certfile, &cfg.keyfile) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
