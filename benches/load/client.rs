//! A minimal MQTT 3.1.1 and 5.0 client for load generation: CONNECT, SUBSCRIBE, PUBLISH (QoS
//! 0/1/2), PUBACK, PUBREC/PUBREL/PUBCOMP, DISCONNECT. Writes are buffered and flushed in
//! batches; reads parse every packet in a large buffer. Independent of Tern's codec on purpose.
//! MQTT 5 ([`use_mqtt5`]) is the same client with v5 framing: a CONNECT with properties
//! (Session Expiry for a persistent session, an optional Receive Maximum), the CONNACK's and
//! SUBACK's reason codes and properties checked, PUBLISH properties skipped, and an
//! acknowledgement's reason code of 0x80 or more an error (a refused message is not counted
//! as delivered).

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Set by [`use_tls`]: every connection is then made over TLS.
static TLS: OnceLock<TlsConnector> = OnceLock::new();

/// Set by [`use_mqtt5`]: every connection is then MQTT 5, with this Receive Maximum (none:
/// the property is left out, 65,535 by the protocol).
static MQTT5: OnceLock<Option<u16>> = OnceLock::new();

/// Makes every later connection an MQTT 5 one, stating `receive_maximum` in CONNECT when given
/// (how many QoS 1/2 messages the broker may have unacknowledged towards this client).
pub fn use_mqtt5(receive_maximum: Option<u16>) {
    let _ = MQTT5.set(receive_maximum);
}

fn v5() -> bool {
    MQTT5.get().is_some()
}

/// Makes every later connection a TLS one, trusting the PEM CA in `ca` for the name
/// `localhost`. Sessions are never resumed: each connection is a full handshake, as for a
/// fleet of devices reconnecting after an outage.
pub fn use_tls(ca: &Path) -> Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let _ = TLS.set(TlsConnector::from(Arc::new(config)));
    Ok(())
}

/// The receiving half of a TCP or TLS connection.
enum ReadSide {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The sending half of a TCP or TLS connection.
enum WriteSide {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ReadSide::Tcp(h) => Pin::new(h).poll_read(cx, buf),
            ReadSide::Tls(h) => Pin::new(h).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Tcp(h) => Pin::new(h).poll_write(cx, buf),
            WriteSide::Tls(h) => Pin::new(h).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(h) => Pin::new(h).poll_flush(cx),
            WriteSide::Tls(h) => Pin::new(h).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(h) => Pin::new(h).poll_shutdown(cx),
            WriteSide::Tls(h) => Pin::new(h).poll_shutdown(cx),
        }
    }
}

/// Bytes of the payload header: publisher id (4), sequence (8), send time in ns (8), padding.
pub const HEADER_LEN: usize = 24;

/// Builds a payload carrying publisher, sequence and send time.
pub fn make_payload(publisher: u32, seq: u64, epoch: Instant, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len);
    b.put_u32(publisher);
    b.put_u64(seq);
    b.put_u64(epoch.elapsed().as_nanos() as u64);
    b.resize(len, 0xAB);
    b.freeze()
}

/// Reads back (publisher, sequence, send time).
pub fn parse_payload(p: &[u8]) -> Option<(u32, u64, u64)> {
    if p.len() < 20 {
        return None;
    }
    let mut b = p;
    Some((b.get_u32(), b.get_u64(), b.get_u64()))
}

/// What arrived.
pub enum Incoming {
    /// A PUBLISH; `pkid` for QoS 1 and 2.
    Publish {
        /// QoS it was delivered with.
        qos: u8,
        /// Packet id of a QoS 1 or 2 message.
        pkid: Option<u16>,
        /// Payload.
        payload: Bytes,
    },
    /// Anything else (acks, PINGRESP; a PUBREL once [`Client::next`] answered it).
    Other,
    /// The broker closed the connection.
    Closed,
}

/// An acknowledgement of a PUBLISH this client sent.
pub enum Ack {
    /// The exchange is over (PUBACK for QoS 1, PUBCOMP for QoS 2); the packet id is free.
    Done,
    /// PUBREC: the broker has the QoS 2 message; a PUBREL is due.
    Received(u16),
}

/// Receiving side.
pub struct Reader {
    half: ReadSide,
    buf: BytesMut,
    v5: bool,
    /// PUBRELs read by [`Reader::next`], for [`Client::next`] to answer with PUBCOMP.
    pubrel: Option<u16>,
}

/// Sending side.
pub struct Writer {
    half: WriteSide,
    buf: BytesMut,
    next_pkid: u16,
    v5: bool,
}

/// One connected client.
pub struct Client {
    reader: Reader,
    writer: Writer,
    /// The broker's Receive Maximum (MQTT 5 CONNACK; 65,535 when absent or MQTT 3.1.1): how
    /// many QoS 1/2 PUBLISHes this client may have unacknowledged.
    pub send_quota: u16,
}

/// What a v5 property block said that the load tool uses.
#[derive(Default)]
struct Props {
    receive_maximum: Option<u16>,
}

fn get_varint(b: &mut Bytes) -> Result<usize> {
    let mut n = 0usize;
    for i in 0..4 {
        if b.is_empty() {
            bail!("short variable byte integer");
        }
        let byte = b.get_u8();
        n |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    bail!("bad variable byte integer")
}

/// Reads a v5 property block (length, then properties), checking each property's size.
fn properties(b: &mut Bytes) -> Result<Props> {
    let len = get_varint(b)?;
    if b.len() < len {
        bail!("short properties");
    }
    let mut p = b.split_to(len);
    let mut out = Props::default();
    while !p.is_empty() {
        let id = p.get_u8();
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => {
                get_varint(&mut p)?;
                0
            }
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                if p.len() < 2 {
                    bail!("short property {id:#x}");
                }
                2 + usize::from(u16::from_be_bytes([p[0], p[1]]))
            }
            0x26 => {
                for _ in 0..2 {
                    if p.len() < 2 {
                        bail!("short user property");
                    }
                    let l = 2 + usize::from(u16::from_be_bytes([p[0], p[1]]));
                    if p.len() < l {
                        bail!("short user property");
                    }
                    p.advance(l);
                }
                0
            }
            other => bail!("unknown property {other:#x}"),
        };
        if p.len() < size {
            bail!("short property {id:#x}");
        }
        if id == 0x21 {
            out.receive_maximum = Some(u16::from_be_bytes([p[0], p[1]]));
        }
        p.advance(size);
    }
    Ok(out)
}

fn put_varint(b: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        b.put_u8(byte);
        if n == 0 {
            return;
        }
    }
}

fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

impl Client {
    /// Connects with a clean session and keep-alive off, and waits for CONNACK.
    pub async fn connect(host: &str, port: u16, client_id: &str) -> Result<Client> {
        Client::connect_with(host, port, client_id, true).await
    }

    /// Connects with clean session `clean` (0: a persistent session) and keep-alive off.
    pub async fn connect_with(
        host: &str,
        port: u16,
        client_id: &str,
        clean: bool,
    ) -> Result<Client> {
        Client::connect_session(host, port, client_id, clean)
            .await
            .map(|(c, _)| c)
    }

    /// [`Client::connect_with`], also saying whether the CONNACK had Session Present.
    pub async fn connect_session(
        host: &str,
        port: u16,
        client_id: &str,
        clean: bool,
    ) -> Result<(Client, bool)> {
        let stream = TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connect to {host}:{port}"))?;
        stream.set_nodelay(true)?;
        let (r, w) = match TLS.get() {
            None => {
                let (r, w) = stream.into_split();
                (ReadSide::Tcp(r), WriteSide::Tcp(w))
            }
            Some(tls) => {
                let name = ServerName::try_from("localhost")?;
                let stream = tls.connect(name, stream).await.context("TLS handshake")?;
                let (r, w) = tokio::io::split(stream);
                (ReadSide::Tls(r), WriteSide::Tls(w))
            }
        };
        let v5 = v5();
        let mut c = Client {
            reader: Reader {
                half: r,
                buf: BytesMut::with_capacity(64 * 1024),
                v5,
                pubrel: None,
            },
            writer: Writer {
                half: w,
                buf: BytesMut::with_capacity(64 * 1024),
                next_pkid: 1,
                v5,
            },
            send_quota: u16::MAX,
        };
        let mut body = BytesMut::new();
        put_str(&mut body, b"MQTT");
        body.put_u8(if v5 { 5 } else { 4 });
        body.put_u8(if clean { 0x02 } else { 0x00 });
        body.put_u16(0);
        if v5 {
            let mut props = BytesMut::new();
            if !clean {
                // A v5 session without an expiry ends with the connection: persistent means
                // "never expires", as a 3.1.1 clean session 0 does.
                props.put_u8(0x11);
                props.put_u32(u32::MAX);
            }
            if let Some(Some(rm)) = MQTT5.get() {
                props.put_u8(0x21);
                props.put_u16(*rm);
            }
            put_varint(&mut body, props.len());
            body.put_slice(&props);
        }
        put_str(&mut body, client_id.as_bytes());
        c.writer.frame(0x10, &body);
        c.writer.flush().await?;
        match c.reader.packet().await? {
            Some((0x20, b)) if !v5 && b.len() == 2 && b[1] == 0 => Ok((c, b[0] & 1 == 1)),
            Some((0x20, mut b)) if v5 && b.len() >= 3 && b[1] == 0 => {
                let present = b.get_u8() & 1 == 1;
                b.advance(1);
                let props = properties(&mut b).context("CONNACK properties")?;
                c.send_quota = props.receive_maximum.unwrap_or(u16::MAX);
                Ok((c, present))
            }
            Some((t, b)) => bail!("CONNACK expected, got type {t:#x} {b:?}"),
            None => bail!("closed before CONNACK"),
        }
    }

    /// Queues a QoS 0 PUBLISH with RETAIN set (sent at the next flush).
    pub async fn publish_retained(&mut self, topic: &str, payload: &[u8]) -> Result<()> {
        self.writer.publish_with_flags(topic, 0x01, payload).await
    }

    /// Queues a PUBLISH with these fixed-header flags (QoS bits, RETAIN).
    pub async fn publish_with_flags(
        &mut self,
        topic: &str,
        flags: u8,
        payload: &[u8],
    ) -> Result<()> {
        self.writer.publish_with_flags(topic, flags, payload).await
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<()> {
        self.subscribe_many(1, &[filter.to_string()], qos).await
    }

    /// Subscribes to every filter of `filters` in one SUBSCRIBE and waits for a SUBACK that
    /// grants them all.
    pub async fn subscribe_many(&mut self, pkid: u16, filters: &[String], qos: u8) -> Result<()> {
        let mut body = BytesMut::new();
        body.put_u16(pkid);
        if self.writer.v5 {
            body.put_u8(0);
        }
        for f in filters {
            put_str(&mut body, f.as_bytes());
            body.put_u8(qos);
        }
        self.writer.frame(0x82, &body);
        self.writer.flush().await?;
        loop {
            match self.reader.packet().await? {
                Some((0x90, mut b)) => {
                    if b.len() < 2 {
                        bail!("short SUBACK");
                    }
                    b.advance(2);
                    if self.reader.v5 {
                        properties(&mut b).context("SUBACK properties")?;
                    }
                    if b.len() == filters.len() && b.iter().all(|c| *c < 0x80) {
                        return Ok(());
                    }
                    bail!("subscriptions refused: {:?}", &b[..b.len().min(16)]);
                }
                Some(_) => {}
                None => bail!("closed before SUBACK"),
            }
        }
    }

    /// Next incoming packet. A PUBREL (the second half of a QoS 2 delivery) is answered here
    /// with PUBCOMP, flushed once no further packet is buffered, and comes back as `Other`.
    pub async fn next(&mut self) -> Result<Incoming> {
        let incoming = self.reader.next().await?;
        if let Some(pkid) = self.reader.pubrel.take() {
            self.writer.frame(0x70, &pkid.to_be_bytes());
            if !self.reader.has_packet() {
                self.writer.flush().await?;
            }
        }
        Ok(incoming)
    }

    /// Queues PUBACK, written only once no further packet is already buffered to read (one
    /// write per burst, as a client that batches acknowledgements does).
    pub async fn puback_batched(&mut self, pkid: u16) -> Result<()> {
        self.ack_batched(1, pkid).await
    }

    /// Acknowledges a delivery of QoS `qos` (1: PUBACK, 2: PUBREC), written only once no
    /// further packet is already buffered to read.
    pub async fn ack_batched(&mut self, qos: u8, pkid: u16) -> Result<()> {
        self.writer
            .frame(if qos == 2 { 0x50 } else { 0x40 }, &pkid.to_be_bytes());
        if !self.reader.has_packet() {
            self.writer.flush().await?;
        }
        Ok(())
    }

    /// Acknowledges a delivery of QoS `qos` (1: PUBACK, 2: PUBREC), flushed at once.
    pub async fn ack(&mut self, qos: u8, pkid: u16) -> Result<()> {
        self.writer
            .frame(if qos == 2 { 0x50 } else { 0x40 }, &pkid.to_be_bytes());
        self.writer.flush().await
    }

    /// Sends PUBACK (flushed at once).
    pub async fn puback(&mut self, pkid: u16) -> Result<()> {
        self.writer.puback(pkid);
        self.writer.flush().await
    }

    /// Queues a PUBLISH, flushing when the buffer is large.
    pub async fn publish(&mut self, topic: &str, qos: u8, payload: &[u8]) -> Result<()> {
        self.writer.publish(topic, qos, payload).await
    }

    /// Flushes buffered packets.
    pub async fn flush(&mut self) -> Result<()> {
        self.writer.flush().await
    }

    /// Sends DISCONNECT and closes.
    pub async fn disconnect(mut self) -> Result<()> {
        self.writer.frame(0xE0, &[]);
        self.writer.flush().await?;
        let _ = self.writer.half.shutdown().await;
        Ok(())
    }

    /// Sends DISCONNECT and waits (at most 5 s) until the broker closed the connection: it has
    /// then dealt with the DISCONNECT, so a persistent session is offline before anything that
    /// follows.
    pub async fn disconnect_and_wait(mut self) -> Result<()> {
        self.writer.frame(0xE0, &[]);
        self.writer.flush().await?;
        let closed = async { while let Ok(Some(_)) = self.reader.packet().await {} };
        tokio::time::timeout(std::time::Duration::from_secs(5), closed)
            .await
            .context("the broker kept the connection open after DISCONNECT")
    }

    /// Splits into receiving and sending halves.
    pub fn into_split(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }
}

impl Reader {
    /// Next packet as (first byte, body), `None` at EOF.
    async fn packet(&mut self) -> Result<Option<(u8, Bytes)>> {
        loop {
            if let Some(p) = self.parse()? {
                return Ok(Some(p));
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Whether a whole packet is already buffered.
    fn has_packet(&self) -> bool {
        let mut len = 0usize;
        for i in 1..5 {
            let Some(&b) = self.buf.get(i) else {
                return false;
            };
            len |= usize::from(b & 0x7F) << (7 * (i - 1));
            if b & 0x80 == 0 {
                return self.buf.len() >= i + 1 + len;
            }
        }
        false
    }

    fn parse(&mut self) -> Result<Option<(u8, Bytes)>> {
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let Some(&b) = self.buf.get(i) else {
                return Ok(None);
            };
            len |= usize::from(b & 0x7F) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            if i > 4 {
                bail!("bad remaining length");
            }
        }
        if self.buf.len() < i + len {
            return Ok(None);
        }
        let first = self.buf[0];
        self.buf.advance(i);
        Ok(Some((first, self.buf.split_to(len).freeze())))
    }

    /// Next incoming packet, classified.
    pub async fn next(&mut self) -> Result<Incoming> {
        let Some((first, mut body)) = self.packet().await? else {
            return Ok(Incoming::Closed);
        };
        if first == 0x62 {
            self.pubrel = Some(self.ack_id("PUBREL", body)?);
            return Ok(Incoming::Other);
        }
        if first >> 4 != 3 {
            return Ok(Incoming::Other);
        }
        let qos = (first >> 1) & 3;
        if body.len() < 2 {
            bail!("short PUBLISH");
        }
        let tlen = usize::from(body.get_u16());
        if body.len() < tlen {
            bail!("short PUBLISH topic");
        }
        body.advance(tlen);
        let pkid = if qos > 0 {
            if body.len() < 2 {
                bail!("short PUBLISH packet id");
            }
            Some(body.get_u16())
        } else {
            None
        };
        if self.v5 {
            let len = get_varint(&mut body).context("PUBLISH properties")?;
            if body.len() < len {
                bail!("short PUBLISH properties");
            }
            body.advance(len);
        }
        Ok(Incoming::Publish {
            qos,
            pkid,
            payload: body,
        })
    }

    /// Reads an acknowledgement's packet id, and under MQTT 5 its reason code: 0x80 or more
    /// is the broker refusing the message, an error here.
    fn ack_id(&self, kind: &str, mut b: Bytes) -> Result<u16> {
        if b.len() < 2 {
            bail!("short {kind}");
        }
        let pkid = b.get_u16();
        if self.v5 && !b.is_empty() && b[0] >= 0x80 {
            bail!("{kind} {pkid} with reason code {:#x}", b[0]);
        }
        Ok(pkid)
    }

    /// Waits for the next PUBACK, returning its packet id.
    pub async fn puback(&mut self) -> Result<Option<u16>> {
        loop {
            match self.packet().await? {
                Some((0x40, b)) => return Ok(Some(self.ack_id("PUBACK", b)?)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Waits for the next acknowledgement of a PUBLISH this client sent (PUBACK, PUBREC,
    /// PUBCOMP); `None` at EOF.
    pub async fn ack(&mut self) -> Result<Option<Ack>> {
        loop {
            match self.packet().await? {
                Some((0x40, b)) => {
                    self.ack_id("PUBACK", b)?;
                    return Ok(Some(Ack::Done));
                }
                Some((0x70, b)) => {
                    self.ack_id("PUBCOMP", b)?;
                    return Ok(Some(Ack::Done));
                }
                Some((0x50, b)) => return Ok(Some(Ack::Received(self.ack_id("PUBREC", b)?))),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }
}

impl Writer {
    fn frame(&mut self, first: u8, body: &[u8]) {
        self.buf.put_u8(first);
        put_varint(&mut self.buf, body.len());
        self.buf.put_slice(body);
    }

    fn puback(&mut self, pkid: u16) {
        self.frame(0x40, &pkid.to_be_bytes());
    }

    /// Queues a PUBACK, written at the next [`Writer::flush`].
    pub fn queue_puback(&mut self, pkid: u16) {
        self.puback(pkid);
    }

    /// Queues a PUBREL (the broker sent PUBREC for our QoS 2 PUBLISH `pkid`).
    pub fn pubrel(&mut self, pkid: u16) {
        self.frame(0x62, &pkid.to_be_bytes());
    }

    /// Queues a PUBLISH, flushing when the buffer is large.
    pub async fn publish(&mut self, topic: &str, qos: u8, payload: &[u8]) -> Result<()> {
        self.publish_with_flags(topic, qos << 1, payload).await
    }

    /// A PUBLISH with these fixed-header flags (QoS bits, RETAIN).
    pub async fn publish_with_flags(
        &mut self,
        topic: &str,
        flags: u8,
        payload: &[u8],
    ) -> Result<()> {
        let qos = (flags >> 1) & 3;
        let len =
            2 + topic.len() + payload.len() + if qos > 0 { 2 } else { 0 } + usize::from(self.v5);
        self.buf.put_u8(0x30 | flags);
        put_varint(&mut self.buf, len);
        put_str(&mut self.buf, topic.as_bytes());
        if qos > 0 {
            self.buf.put_u16(self.next_pkid);
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        }
        if self.v5 {
            // No properties.
            self.buf.put_u8(0);
        }
        self.buf.put_slice(payload);
        if self.buf.len() >= 16 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.half.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}
