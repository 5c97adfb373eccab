//! The PROXY protocol (HAProxy's v1 and v2): the header a load balancer writes first to say who
//! the client is. [`decode`] is pure and never panics; [`read_header`] takes exactly the
//! header's bytes off the socket, so MQTT, a TLS ClientHello or an HTTP upgrade follows unread.
//! Whether to trust what a header says is the listener's choice, not this module's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The version 2 signature, the header's first 12 bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What a version 1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 line, `\r\n` included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest version 2 header accepted. The format allows 64 KiB of addresses and TLVs; load
/// balancers send a few hundred bytes at most, and a header is held in memory until complete.
pub const V2_MAX: usize = 4096;

/// `PP2_TYPE_SSL`: the client's connection to the load balancer was TLS.
const PP2_TYPE_SSL: u8 = 0x20;
/// `PP2_SUBTYPE_SSL_CN`, within `PP2_TYPE_SSL`: the client certificate's subject common name.
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
/// `PP2_CLIENT_SSL`: the client connected over TLS.
const PP2_CLIENT_SSL: u8 = 0x01;
/// `PP2_CLIENT_CERT_CONN`: the client presented a certificate on this connection.
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
/// `PP2_CLIENT_CERT_SESS`: the client presented a certificate on the TLS session this
/// connection resumed.
const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// What a complete header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The client's address, or `None` when the socket's own address stands: a version 2
    /// LOCAL command (the balancer's health check), `UNKNOWN` (v1), or a family other than
    /// TCP over IPv4 or IPv6.
    pub source: Option<SocketAddr>,
    /// The common name of a client certificate the load balancer verified (v2,
    /// `PP2_TYPE_SSL` with `PP2_SUBTYPE_SSL_CN`, the client-certificate flag set and the
    /// verify result 0); `None` otherwise.
    pub verified_cn: Option<String>,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The first bytes are neither `PROXY ` nor the version 2 signature: the client sent no
    /// header (a plain MQTT client, say).
    #[error("no PROXY protocol header")]
    Missing,
    /// A header that breaks the format.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(&'static str),
}

impl HeaderError {
    /// The `reason` label it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            HeaderError::Missing => "missing",
            HeaderError::Invalid(_) => "invalid",
        }
    }
}

/// Decodes the header at the start of `buf`: `Ok(Some((header, length)))` once it is
/// complete, `Ok(None)` while every byte so far may still begin one, an error as soon as none
/// can. Never reads past the header's end, and never panics, whatever the bytes.
pub fn decode(buf: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return match n == V2_SIGNATURE.len() {
            true => decode_v2(buf),
            false => Ok(None),
        };
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return match n == V1_PREFIX.len() {
            true => decode_v1(buf),
            false => Ok(None),
        };
    }
    Err(HeaderError::Missing)
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`, at most 107 bytes.
fn decode_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
    let invalid = HeaderError::Invalid;
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return match buf.len() >= V1_MAX {
            true => Err(invalid("v1 line longer than 107 bytes")),
            false => Ok(None),
        };
    };
    let len = lf + 1;
    let line = window[..lf]
        .strip_suffix(b"\r")
        .ok_or(invalid("v1 line not ended by CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| invalid("v1 line not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", checked by the caller
    let proto = fields.next().unwrap_or("");
    if proto == "UNKNOWN" {
        // The specification: whatever follows UNKNOWN is ignored.
        let header = Header {
            source: None,
            verified_cn: None,
        };
        return Ok(Some((header, len)));
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(invalid("v1 protocol not TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(invalid("v1 line without exactly four addresses and ports"));
    };
    let ip = |s: &str| -> Result<IpAddr, HeaderError> {
        match v6 {
            false => Ipv4Addr::from_str(s).map(IpAddr::V4),
            true => Ipv6Addr::from_str(s).map(IpAddr::V6),
        }
        .map_err(|_| invalid("v1 address not of its protocol's family"))
    };
    let port = |s: &str| -> Result<u16, HeaderError> {
        let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = s.len() > 1 && s.starts_with('0');
        match digits && !leading_zero {
            true => s.parse().map_err(|_| invalid("v1 port above 65535")),
            false => Err(invalid("v1 port not a decimal number")),
        }
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    ip(dst)?;
    port(dport)?;
    let header = Header {
        source: Some(source),
        verified_cn: None,
    };
    Ok(Some((header, len)))
}

/// The signature, version and command, family, length, addresses and TLVs.
fn decode_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, HeaderError> {
    let invalid = HeaderError::Invalid;
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(invalid("v2 version not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(invalid("v2 command neither LOCAL nor PROXY")),
    };
    let (Some(&family), Some(&hi), Some(&lo)) = (buf.get(13), buf.get(14), buf.get(15)) else {
        return Ok(None);
    };
    let len = 16 + usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX {
        return Err(invalid("v2 header longer than Tern accepts (4096 bytes)"));
    }
    let Some(block) = buf.get(16..len) else {
        return Ok(None);
    };
    if local {
        // LOCAL: the balancer speaks for itself; its address block and TLVs are skipped.
        let header = Header {
            source: None,
            verified_cn: None,
        };
        return Ok(Some((header, len)));
    }
    let (source, tlvs) = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = block.get(..12).ok_or(invalid("v2 IPv4 block too short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            (Some(SocketAddr::new(IpAddr::V4(ip), port)), &block[12..])
        }
        0x21 => {
            let a = block.get(..36).ok_or(invalid("v2 IPv6 block too short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            let ip = Ipv6Addr::from(octets);
            (Some(SocketAddr::new(IpAddr::V6(ip), port)), &block[36..])
        }
        // UNSPEC, UDP, UNIX sockets: nothing Tern can use, so the socket's address stands (as
        // HAProxy does); the TLVs after an address block of unknown size are not read.
        _ => (None, &[][..]),
    };
    let verified_cn = match family {
        0x11 | 0x21 => ssl_cn(tlvs)?,
        _ => None,
    };
    Ok(Some((
        Header {
            source,
            verified_cn,
        },
        len,
    )))
}

/// Splits `bytes` into `(type, value)` TLVs; an error if one runs past the end.
fn tlvs(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, HeaderError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((&[kind, hi, lo], rest)) = bytes.split_first_chunk::<3>() else {
            return Err(HeaderError::Invalid("v2 TLV cut short"));
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let value = rest
            .get(..len)
            .ok_or(HeaderError::Invalid("v2 TLV longer than the header"))?;
        out.push((kind, value));
        bytes = &rest[len..];
    }
    Ok(out)
}

/// The client certificate's CN from `PP2_TYPE_SSL`, if the balancer says it verified one.
fn ssl_cn(bytes: &[u8]) -> Result<Option<String>, HeaderError> {
    let mut cn = None;
    for (kind, value) in tlvs(bytes)? {
        if kind != PP2_TYPE_SSL {
            continue;
        }
        let Some((&[client, v0, v1, v2, v3], subs)) = value.split_first_chunk::<5>() else {
            return Err(HeaderError::Invalid("v2 SSL TLV too short"));
        };
        let verified = u32::from_be_bytes([v0, v1, v2, v3]) == 0
            && client & PP2_CLIENT_SSL != 0
            && client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS) != 0;
        for (sub, value) in tlvs(subs)? {
            if sub == PP2_SUBTYPE_SSL_CN && verified {
                let name = std::str::from_utf8(value)
                    .map_err(|_| HeaderError::Invalid("v2 SSL CN not UTF-8"))?;
                cn = Some(name.to_string()).filter(|n| !n.is_empty());
            }
        }
    }
    Ok(cn)
}

/// Why no header could be read from a socket.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a header.
    #[error("{0}")]
    Header(#[from] HeaderError),
    /// The client closed (or the socket failed) before a whole header came.
    #[error("closed before a complete PROXY header: {0}")]
    Closed(std::io::Error),
}

impl ReadError {
    /// The `reason` label it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadError::Header(e) => e.reason(),
            ReadError::Closed(_) => "closed",
        }
    }
}

/// Reads one header off `tcp`, taking exactly its bytes. Bytes are peeked first and consumed
/// only as far as they belong to the header, so the client's next byte is the first one the
/// caller reads; a client that sends no header is refused on its first bytes. Not bounded in
/// time: the caller's deadline is.
pub async fn read_header(tcp: &mut TcpStream) -> Result<Header, ReadError> {
    let mut got = Vec::with_capacity(128);
    let mut peeked = [0u8; 512];
    loop {
        let n = tcp.peek(&mut peeked).await.map_err(ReadError::Closed)?;
        if n == 0 {
            let eof = std::io::ErrorKind::UnexpectedEof.into();
            return Err(ReadError::Closed(eof));
        }
        let had = got.len();
        got.extend_from_slice(&peeked[..n]);
        // While the header is incomplete every byte so far belongs to it; once complete, only
        // those up to its end do.
        let (header, take) = match decode(&got)? {
            Some((header, len)) => (Some(header), len - had),
            None => (None, n),
        };
        tcp.read_exact(&mut peeked[..take])
            .await
            .map_err(ReadError::Closed)?;
        if let Some(header) = header {
            return Ok(header);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// A version 2 header: PROXY (or LOCAL), `family`, the address block and TLVs.
    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        t.extend_from_slice(value);
        t
    }

    fn ipv4_block(tlvs: &[u8]) -> Vec<u8> {
        let mut b = vec![192, 0, 2, 7, 10, 0, 0, 1];
        b.extend_from_slice(&51000u16.to_be_bytes());
        b.extend_from_slice(&1883u16.to_be_bytes());
        b.extend_from_slice(tlvs);
        b
    }

    /// The SSL TLV as HAProxy's `send-proxy-v2-ssl-cn` writes it.
    fn ssl_tlv(client: u8, verify: u32, cn: &str) -> Vec<u8> {
        let mut v = vec![client];
        v.extend_from_slice(&verify.to_be_bytes());
        v.extend(tlv(0x21, b"TLSv1.3"));
        v.extend(tlv(PP2_SUBTYPE_SSL_CN, cn.as_bytes()));
        tlv(PP2_TYPE_SSL, &v)
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 1883\r\nMQTT";
        let (h, len) = decode(line).unwrap().unwrap();
        assert_eq!(h.source, addr("192.0.2.7:51000"));
        assert_eq!(&line[len..], b"MQTT");
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 1883\r\n";
        let (h, len) = decode(line).unwrap().unwrap();
        assert_eq!(h.source, addr("[2001:db8::7]:65535"));
        assert_eq!(len, line.len());
    }

    #[test]
    fn v1_unknown_keeps_the_socket_address() {
        let (h, len) = decode(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!((h.source, len), (None, 15));
        let line = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(decode(line).unwrap().unwrap().0.source, None);
    }

    #[test]
    fn v1_prefixes_need_more() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 1883\r\n";
        for end in 0..line.len() {
            assert_eq!(decode(&line[..end]), Ok(None), "{end} bytes");
        }
    }

    #[test]
    fn v1_malformed_lines_are_invalid() {
        for line in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 1883\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 51000 1883\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 51000 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 051000 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 1883\r\n",
            b"PROXY TCP4 192.0.2.7  10.0.0.1 51000 1883\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 1883 x\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 51000 1883\r\n",
        ] {
            assert!(
                matches!(decode(line), Err(HeaderError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // No line end within 107 bytes.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        assert!(matches!(decode(&long), Err(HeaderError::Invalid(_))));
        long.truncate(V1_MAX - 1);
        assert_eq!(decode(&long), Ok(None));
    }

    #[test]
    fn anything_else_is_missing() {
        // An MQTT 3.1.1 CONNECT, an HTTP request, a TLS ClientHello.
        for start in [&[0x10u8, 0x0c, 0, 4][..], b"GET /mqtt", &[0x16, 0x03, 0x01]] {
            assert_eq!(decode(start), Err(HeaderError::Missing));
        }
        assert_eq!(decode(b"PROXX"), Err(HeaderError::Missing));
        assert_eq!(decode(b""), Ok(None));
    }

    #[test]
    fn v2_ipv4_and_ipv6() {
        let mut h = v2(1, 0x11, &ipv4_block(&[]));
        let len = h.len();
        h.extend_from_slice(&[0x10, 0x00]);
        let (header, used) = decode(&h).unwrap().unwrap();
        assert_eq!(header.source, addr("192.0.2.7:51000"));
        assert_eq!(used, len);
        for end in 0..len {
            assert_eq!(decode(&h[..end]), Ok(None), "{end} bytes");
        }
        let mut block: Vec<u8> = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0xc7, 0x38, 0x07, 0x5b]);
        let (header, _) = decode(&v2(1, 0x21, &block)).unwrap().unwrap();
        assert_eq!(header.source, addr("[2001:db8::7]:51000"));
    }

    #[test]
    fn v2_local_and_unknown_families_keep_the_socket_address() {
        let (h, len) = decode(&v2(0, 0x00, &[])).unwrap().unwrap();
        assert_eq!((h.source, len), (None, 16));
        // LOCAL with an address block: still the socket's address.
        let (h, _) = decode(&v2(0, 0x11, &ipv4_block(&[]))).unwrap().unwrap();
        assert_eq!(h.source, None);
        // UNSPEC, UDP over IPv4, a UNIX socket.
        for family in [0x00, 0x12, 0x31] {
            let (h, _) = decode(&v2(1, family, &[0; 216])).unwrap().unwrap();
            assert_eq!(h.source, None, "family {family:#x}");
        }
    }

    #[test]
    fn v2_malformed_headers_are_invalid() {
        let mut bad_version = v2(1, 0x11, &ipv4_block(&[]));
        bad_version[12] = 0x11;
        let mut bad_command = v2(1, 0x11, &ipv4_block(&[]));
        bad_command[12] = 0x22;
        let cases = [
            bad_version,
            bad_command,
            v2(1, 0x11, &[0; 11]),
            v2(1, 0x21, &[0; 35]),
            v2(1, 0x11, &ipv4_block(&[0x04, 0x00])),
            v2(1, 0x11, &ipv4_block(&[0x04, 0x00, 0x02, 0x00])),
            v2(1, 0x11, &ipv4_block(&tlv(PP2_TYPE_SSL, &[1, 0, 0]))),
        ];
        for h in cases {
            assert!(matches!(decode(&h), Err(HeaderError::Invalid(_))), "{h:?}");
        }
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(decode(&huge), Err(HeaderError::Invalid(_))));
    }

    #[test]
    fn v2_ssl_cn_only_when_the_balancer_verified_a_certificate() {
        let cn_of = |tlvs: Vec<u8>| decode(&v2(1, 0x11, &ipv4_block(&tlvs))).unwrap().unwrap().0;
        let verified = cn_of(ssl_tlv(0x07, 0, "device-7"));
        assert_eq!(verified.verified_cn.as_deref(), Some("device-7"));
        assert_eq!(verified.source, addr("192.0.2.7:51000"));
        // With other TLVs around it (ALPN, NOOP).
        let mut tlvs = tlv(0x01, b"mqtt");
        tlvs.extend(ssl_tlv(0x03, 0, "device-8"));
        tlvs.extend(tlv(0x04, &[0; 3]));
        assert_eq!(cn_of(tlvs).verified_cn.as_deref(), Some("device-8"));
        // Verification failed, no certificate, not TLS at all.
        assert_eq!(cn_of(ssl_tlv(0x03, 1, "device-7")).verified_cn, None);
        assert_eq!(cn_of(ssl_tlv(0x01, 0, "device-7")).verified_cn, None);
        assert_eq!(cn_of(ssl_tlv(0x06, 0, "device-7")).verified_cn, None);
        assert_eq!(cn_of(ssl_tlv(0x03, 0, "")).verified_cn, None);
    }

    /// Over a real socket, a header arriving in pieces is read to its last byte and no further:
    /// what the client sent after it is the next thing read.
    #[tokio::test]
    async fn read_header_takes_exactly_the_header() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Longer than one peek (512 bytes): a NOOP TLV pads it.
        let mut tlvs = ssl_tlv(0x03, 0, "dev");
        tlvs.extend(tlv(0x04, &[0; 1500]));
        let mut v2_then_mqtt = v2(1, 0x11, &ipv4_block(&tlvs));
        v2_then_mqtt.extend_from_slice(&[0x10, 0x0c]);
        let v1_then_mqtt = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 1883\r\n\x10\x0c".to_vec();
        for bytes in [v2_then_mqtt, v1_then_mqtt] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let reader = tokio::spawn(async move {
                let header = read_header(&mut server).await.unwrap();
                let mut next = [0u8; 2];
                server.read_exact(&mut next).await.unwrap();
                (header, next)
            });
            // One byte, most of the rest, then the header's end with MQTT behind it.
            for piece in [
                &bytes[..1],
                &bytes[1..bytes.len() - 5],
                &bytes[bytes.len() - 5..],
            ] {
                client.write_all(piece).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            let (header, next) = reader.await.unwrap();
            assert!(header.source.is_some());
            assert_eq!(next, [0x10, 0x0c]);
        }
        // A plain MQTT client is refused on its first bytes, without waiting for more.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(&[0x10, 0x0c]).await.unwrap();
        let refused = read_header(&mut server).await.unwrap_err();
        assert_eq!(refused.reason(), "missing");
        // A client that closes within its header.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"PROXY TC").await.unwrap();
        drop(client);
        let closed = read_header(&mut server).await.unwrap_err();
        assert_eq!(closed.reason(), "closed");
    }

    proptest! {
        /// Whatever the bytes, decoding answers without panicking, and a header it finds
        /// lies within them.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some((_, len))) = decode(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }

        /// Bytes after a valid signature, the likeliest to reach deep into the parser.
        #[test]
        fn arbitrary_v2_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.extend_from_slice(&body);
            if let Ok(Some((_, len))) = decode(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }

        #[test]
        fn arbitrary_v1_lines_never_panic(line in "PROXY [ -~]{0,120}(\r\n)?") {
            if let Ok(Some((_, len))) = decode(line.as_bytes()) {
                prop_assert!(len <= line.len());
            }
        }
    }
}
