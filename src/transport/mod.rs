//! Transports below MQTT: a connection's byte stream is plain TCP, TLS over TCP, or a WebSocket
//! over either, and the connection code reads and writes it the same way ([`Stream`]). TLS
//! listeners load their certificate chain and key at start, on reload ([`tls_acceptor`]) and
//! when the files change on disk ([`watch_tls_files`]);
//! each listener's [`Transport`] runs the handshakes (TLS, WebSocket upgrade) in the
//! connection's own task, bounded in time, so a stalled or plaintext client never holds up the
//! accept loop; a listener behind a load balancer reads the PROXY protocol header first
//! ([`proxy`]). Connection limits and MQTT are not this module's.

mod listener;
pub mod proxy;
mod tls;
mod watch;
pub mod ws;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;

use crate::config::IdentitySource;
pub use listener::{acceptor_for, Established, Transport};
pub use tls::{read_ca_dir, tls_acceptor, ClientAuth, TlsError};
pub use watch::watch_tls_files;

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
            IdentitySource::Subject => Some(subject_rfc2253(cert.subject())),
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

/// A certificate subject as OpenSSL prints it with `XN_FLAG_RFC2253`, which is what Mosquitto's
/// `use_subject_as_username` makes the user name: the relative distinguished names last to
/// first, joined by `,` (attributes within one by `+`, also last first), each `SHORTNAME=value` with RFC 2253's
/// special characters escaped by `\` and control and non-ASCII bytes as `\XX`. Attribute
/// types OpenSSL has no short name for are written as dotted OIDs.
pub fn subject_rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            // OpenSSL reverses every attribute, those within a multi-valued RDN too.
            let attrs: Vec<_> = rdn.iter().collect();
            attrs
                .into_iter()
                .rev()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let key = openssl_short_name(&oid).map_or(oid, str::to_string);
                    let value = attr.as_str().map(escape_rfc2253).unwrap_or_default();
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// OpenSSL's short name for a distinguished-name attribute type.
fn openssl_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// One attribute value escaped as OpenSSL's `ASN1_STRFLGS_RFC2253` does.
fn escape_rfc2253(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    for (i, &b) in bytes.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == bytes.len();
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'#' if first => out.push_str("\\#"),
            b' ' if first || last => out.push_str("\\ "),
            0..=0x1f | 0x7f..=0xff => out.push_str(&format!("\\{b:02X}")),
            _ => out.push(char::from(b)),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn subject_of(dn: &[(DnType, &str)]) -> String {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        // Empty, so the subject holds these in this order (the default holds a CN first).
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, v) in dn {
            p.distinguished_name.push(ty.clone(), *v);
        }
        let cert = p.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        super::subject_rfc2253(parsed.subject())
    }

    /// Mosquitto's use_subject_as_username: OpenSSL's RFC 2253 form, last RDN first, special
    /// characters escaped, non-ASCII bytes as hex.
    #[test]
    fn subject_in_openssls_rfc2253_form() {
        assert_eq!(
            subject_of(&[
                (DnType::CountryName, "GB"),
                (DnType::StateOrProvinceName, "Nottinghamshire"),
                (DnType::LocalityName, "Nottingham"),
                (DnType::OrganizationName, "Server"),
                (DnType::OrganizationalUnitName, "Production"),
                (DnType::CommonName, "test client"),
            ]),
            "CN=test client,OU=Production,O=Server,L=Nottingham,ST=Nottinghamshire,C=GB"
        );
        assert_eq!(
            subject_of(&[(DnType::CommonName, "a,b+c\"d\\e<f>g;h")]),
            "CN=a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h"
        );
        assert_eq!(subject_of(&[(DnType::CommonName, "#x ")]), "CN=\\#x\\ ");
        assert_eq!(subject_of(&[(DnType::CommonName, "é")]), "CN=\\C3\\A9");
    }

    /// A certificate made by OpenSSL (`openssl req -subj '/C=GB/ST=Notts/O=Acme\, Ltd/OU=a\+b/
    /// CN=#dev é ;x /emailAddress=a@b.c/DC=example/UID=u1/serialNumber=42/GN=g+SN=s' -utf8`)
    /// gives what `openssl x509 -subject -nameopt RFC2253` prints for it.
    #[test]
    fn subject_as_openssl_prints_it() {
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::CertificateDer::from_pem_slice(OPENSSL_CERT.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            super::subject_rfc2253(parsed.subject()),
            "GN=g+SN=s,serialNumber=42,UID=u1,DC=example,emailAddress=a@b.c,\
             CN=\\#dev \\C3\\A9 \\;x\\ ,OU=a\\+b,O=Acme\\, Ltd,ST=Notts,C=GB"
        );
    }

    const OPENSSL_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIICzTCCAnOgAwIBAgIUcJ3qGdCGt3pOVpVNnlugUMW2oikwCgYIKoZIzj0EAwIw\n\
gbsxCzAJBgNVBAYTAkdCMQ4wDAYDVQQIDAVOb3R0czESMBAGA1UECgwJQWNtZSwg\n\
THRkMQwwCgYDVQQLDANhK2IxFDASBgNVBAMMCyNkZXYgw6kgO3ggMRQwEgYJKoZI\n\
hvcNAQkBFgVhQGIuYzEXMBUGCgmSJomT8ixkARkWB2V4YW1wbGUxEjAQBgoJkiaJ\n\
k/IsZAEBDAJ1MTELMAkGA1UEBRMCNDIxFDAIBgNVBAQMAXMwCAYDVQQqDAFnMB4X\n\
DTI2MTIwNzA2NTQ1OVoXDTI2MTIwODA2NTQ1OVowgbsxCzAJBgNVBAYTAkdCMQ4w\n\
DAYDVQQIDAVOb3R0czESMBAGA1UECgwJQWNtZSwgTHRkMQwwCgYDVQQLDANhK2Ix\n\
FDASBgNVBAMMCyNkZXYgw6kgO3ggMRQwEgYJKoZIhvcNAQkBFgVhQGIuYzEXMBUG\n\
CgmSJomT8ixkARkWB2V4YW1wbGUxEjAQBgoJkiaJk/IsZAEBDAJ1MTELMAkGA1UE\n\
BRMCNDIxFDAIBgNVBAQMAXMwCAYDVQQqDAFnMFkwEwYHKoZIzj0CAQYIKoZIzj0D\n\
AQcDQgAE3/HD/Iea174qCLb228V2ttp5IHqSUb3dWp0mL3THskuCaNveg09P0yqJ\n\
XpAchpzThakhtP90GmT0XumDTrVhz6NTMFEwHQYDVR0OBBYEFAGnSDRqcOsgF8J3\n\
Hfb3NZJa7PTZMB8GA1UdIwQYMBaAFAGnSDRqcOsgF8J3Hfb3NZJa7PTZMA8GA1Ud\n\
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhALLCZH8AY9Z8qQ6rgKo0GrRf\n\
NTZmhR9r9OUrGxZb3coXAiBCpF9XUWptpd93zaNW8vxSg6pStuh/IGsjuUwzFUme\n\
TQ==\n\
-----END CERTIFICATE-----\n\
";
}
