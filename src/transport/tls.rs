//! TLS listeners: the acceptor built from PEM files, with optional client certificates.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsVersion;

/// Why a TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {message}")]
    File {
        /// Which file (certificate chain, private key).
        what: &'static str,
        /// Its path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate and key together.
    #[error("certificate {cert} with key {key}: {message}")]
    Config {
        /// The certificate chain file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's reason.
        message: String,
    },
}

/// Who may connect to a TLS listener.
#[derive(Debug, Clone, Copy)]
pub struct ClientAuth<'a> {
    /// PEM file of the CAs client certificates must chain to; `None` (and no `ca_dir`): no
    /// client certificates.
    pub ca: Option<&'a Path>,
    /// A directory of more such CA files (Mosquitto's `capath`).
    pub ca_dir: Option<&'a Path>,
    /// Refuse clients without a certificate (with `ca` or `ca_dir`).
    pub required: bool,
}

/// The certificates of every PEM file in `dir`, in file name order; files holding no
/// certificate (an `openssl rehash` index, a key, a README) are skipped, as OpenSSL's CA path
/// lookup would never find a certificate in them. Symbolic links are followed (`rehash`
/// makes `HASH.0` links to the `.pem` files, so a certificate may be read twice: harmless).
pub fn read_ca_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        what: "CA directory",
        path: dir.display().to_string(),
        message,
    };
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut certs = Vec::new();
    for file in files {
        let Ok(iter) = CertificateDer::pem_file_iter(&file) else {
            continue;
        };
        certs.extend(iter.filter_map(Result::ok));
    }
    Ok(certs)
}

/// A TLS acceptor for the PEM certificate chain `cert` and private key `key` (PKCS#8, PKCS#1
/// or SEC1; RSA or ECDSA), TLS 1.2 and 1.3 (only 1.3 when `min_version` says so), offering
/// the ALPN protocols `alpn` (`mqtt` for MQTT over TLS, `http/1.1` for secure WebSockets: a
/// client offering ALPN must find its protocol or the handshake fails); with `clients.ca` or
/// `clients.ca_dir`, client certificates are verified against them (chain, expiry) and, if
/// `clients.required`, demanded.
pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    clients: ClientAuth<'_>,
    alpn: &[&str],
    min_version: TlsVersion,
) -> Result<TlsAcceptor, TlsError> {
    let file_err = |what, path: &Path, message: String| TlsError::File {
        what,
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err("certificate chain", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err("certificate chain", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(
            "certificate chain",
            cert,
            "no CERTIFICATE in it".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err("private key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_err = |message: String| TlsError::Config {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        message,
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| config_err(e.to_string()))?;
    let builder = match (clients.ca, clients.ca_dir) {
        (None, None) => builder.with_no_client_auth(),
        (file, dir) => {
            let mut roots = rustls::RootCertStore::empty();
            if let Some(ca) = file {
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| file_err("client CA", ca, e.to_string()))?
                {
                    let c = c.map_err(|e| file_err("client CA", ca, e.to_string()))?;
                    roots
                        .add(c)
                        .map_err(|e| file_err("client CA", ca, e.to_string()))?;
                }
            }
            if let Some(dir) = dir {
                for c in read_ca_dir(dir)? {
                    roots
                        .add(c)
                        .map_err(|e| file_err("CA directory", dir, e.to_string()))?;
                }
            }
            // Named for the error: the file if there is one, else the directory.
            let ca = file.or(dir).expect("one of them is set in this arm");
            if roots.is_empty() {
                return Err(file_err("client CA", ca, "no CERTIFICATE in it".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = match clients.required {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| file_err("client CA", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private)
        .map_err(|e| config_err(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
