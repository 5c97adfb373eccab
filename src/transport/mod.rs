//! Transports below MQTT: a connection's byte stream is plain TCP, TLS over TCP, or a WebSocket
//! over either, and the connection code reads and writes it the same way ([`Stream`]). TLS
//! listeners load their certificate chain and key at start and on reload ([`tls_acceptor`]);
//! each listener's [`Transport`] runs the handshakes (TLS, WebSocket upgrade) in the
//! connection's own task, bounded in time, so a stalled or plaintext client never holds up the
//! accept loop. Connection limits and MQTT are not this module's.

mod listener;
mod tls;
pub mod ws;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;

use crate::config::IdentitySource;
pub use listener::{acceptor_for, Transport};
pub use tls::{tls_acceptor, ClientAuth, TlsError};

/// A client connection's byte stream.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// A WebSocket (over TCP or TLS) carrying MQTT in binary frames.
    Ws(Box<ws::WsStream>),
}

impl Stream {
    /// Ready when a read may find bytes. For TCP this waits on the socket before any buffer
    /// is taken (a quiet client holds none); TLS and WebSockets have their own buffers, so
    /// they are always ready and the read itself waits.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Tls(_) | Stream::Ws(_) => Poll::Ready(Ok(())),
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
        let tls = match self {
            Stream::Tcp(_) => return None,
            Stream::Tls(tls) => tls,
            Stream::Ws(ws) => return ws.get_ref().peer_identity(source),
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
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
