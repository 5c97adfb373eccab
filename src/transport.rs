//! Transports below MQTT: a connection's byte stream is plain TCP or TLS over TCP, and the
//! connection code reads and writes it the same way ([`Stream`]). TLS listeners load their
//! certificate chain and key once, at start ([`tls_acceptor`]); the handshake runs in the
//! connection's own task, bounded in time, so a stalled or plaintext client never holds up the
//! accept loop.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;

use crate::config::IdentitySource;

/// A client connection's byte stream.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Ready when a read may find bytes. For TCP this waits on the socket before any buffer
    /// is taken (a quiet client holds none); TLS has its own buffers, so it is always ready and
    /// the read itself waits.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Tls(_) => Poll::Ready(Ok(())),
        }
    }

    /// The plain TCP socket, for a connection going dormant (TLS ones stay awake: their
    /// session state lives in the TLS stream).
    pub fn into_tcp(self) -> Result<TcpStream, Stream> {
        match self {
            Stream::Tcp(s) => Ok(s),
            other => Err(other),
        }
    }

    /// The identity in the client's verified certificate (TLS with client certificates), from
    /// `source`.
    pub fn peer_identity(&self, source: IdentitySource) -> Option<String> {
        let Stream::Tls(tls) = self else {
            return None;
        };
        let der = tls.get_ref().1.peer_certificates()?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        match source {
            IdentitySource::None => None,
            IdentitySource::Cn => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string),
            IdentitySource::San => {
                let san = cert.subject_alternative_name().ok()??;
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        Some(s.to_string())
                    }
                    _ => None,
                })
            }
        }
    }

    /// Whether it is plain TCP (and so may go dormant).
    pub fn is_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

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
    /// PEM file of the CAs client certificates must chain to; `None`: no client certificates.
    pub ca: Option<&'a Path>,
    /// Refuse clients without a certificate (with `ca`).
    pub required: bool,
}

/// A TLS acceptor for the PEM certificate chain `cert` and private key `key` (PKCS#8, PKCS#1
/// or SEC1; RSA or ECDSA), TLS 1.2 and 1.3, ALPN `mqtt` offered; with `clients.ca`, client
/// certificates are verified against it (chain, expiry) and, if `clients.required`, demanded.
pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    clients: ClientAuth<'_>,
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
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| config_err(e.to_string()))?;
    let builder = match clients.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| file_err("client CA", ca, e.to_string()))?
            {
                let c = c.map_err(|e| file_err("client CA", ca, e.to_string()))?;
                roots
                    .add(c)
                    .map_err(|e| file_err("client CA", ca, e.to_string()))?;
            }
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
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
