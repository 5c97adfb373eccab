//! A minimal MQTT 3.1.1 client for load generation: CONNECT, SUBSCRIBE, PUBLISH (QoS 0/1),
//! PUBACK, DISCONNECT. Writes are buffered and flushed in batches; reads parse every packet in
//! a large buffer. Independent of Tern's codec on purpose.

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
    /// A PUBLISH; `pkid` for QoS 1.
    Publish {
        /// Packet id of a QoS 1 message.
        pkid: Option<u16>,
        /// Payload.
        payload: Bytes,
    },
    /// Anything else (acks, PINGRESP).
    Other,
    /// The broker closed the connection.
    Closed,
}

/// Receiving side.
pub struct Reader {
    half: ReadSide,
    buf: BytesMut,
}

/// Sending side.
pub struct Writer {
    half: WriteSide,
    buf: BytesMut,
    next_pkid: u16,
}

/// One connected client.
pub struct Client {
    reader: Reader,
    writer: Writer,
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
        let mut c = Client {
            reader: Reader {
                half: r,
                buf: BytesMut::with_capacity(64 * 1024),
            },
            writer: Writer {
                half: w,
                buf: BytesMut::with_capacity(64 * 1024),
                next_pkid: 1,
            },
        };
        let mut body = BytesMut::new();
        put_str(&mut body, b"MQTT");
        body.put_u8(4);
        body.put_u8(if clean { 0x02 } else { 0x00 });
        body.put_u16(0);
        put_str(&mut body, client_id.as_bytes());
        c.writer.frame(0x10, &body);
        c.writer.flush().await?;
        match c.reader.packet().await? {
            Some((0x20, b)) if b.len() == 2 && b[1] == 0 => Ok((c, b[0] & 1 == 1)),
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
        let mut body = BytesMut::new();
        body.put_u16(1);
        put_str(&mut body, filter.as_bytes());
        body.put_u8(qos);
        self.writer.frame(0x82, &body);
        self.writer.flush().await?;
        loop {
            match self.reader.packet().await? {
                Some((0x90, b)) if b.len() == 3 && b[2] < 0x80 => return Ok(()),
                Some((0x90, b)) => bail!("subscription refused: {b:?}"),
                Some(_) => {}
                None => bail!("closed before SUBACK"),
            }
        }
    }

    /// Subscribes to every filter of `filters` in one SUBSCRIBE and waits for a SUBACK that
    /// grants them all.
    pub async fn subscribe_many(&mut self, pkid: u16, filters: &[String], qos: u8) -> Result<()> {
        let mut body = BytesMut::new();
        body.put_u16(pkid);
        for f in filters {
            put_str(&mut body, f.as_bytes());
            body.put_u8(qos);
        }
        self.writer.frame(0x82, &body);
        self.writer.flush().await?;
        loop {
            match self.reader.packet().await? {
                Some((0x90, b))
                    if b.len() == 2 + filters.len() && b[2..].iter().all(|c| *c < 0x80) =>
                {
                    return Ok(())
                }
                Some((0x90, b)) => bail!("subscriptions refused: {:?}", &b[..b.len().min(16)]),
                Some(_) => {}
                None => bail!("closed before SUBACK"),
            }
        }
    }

    /// Next incoming packet.
    pub async fn next(&mut self) -> Result<Incoming> {
        self.reader.next().await
    }

    /// Queues PUBACK, written only once no further packet is already buffered to read (one
    /// write per burst, as a client that batches acknowledgements does).
    pub async fn puback_batched(&mut self, pkid: u16) -> Result<()> {
        self.writer.puback(pkid);
        if !self.reader.has_packet() {
            self.writer.flush().await?;
        }
        Ok(())
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
        let pkid = if qos > 0 { Some(body.get_u16()) } else { None };
        Ok(Incoming::Publish {
            pkid,
            payload: body,
        })
    }

    /// Waits for the next PUBACK, returning its packet id.
    pub async fn puback(&mut self) -> Result<Option<u16>> {
        loop {
            match self.packet().await? {
                Some((0x40, mut b)) if b.len() >= 2 => return Ok(Some(b.get_u16())),
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
        let len = 2 + topic.len() + payload.len() + if qos > 0 { 2 } else { 0 };
        self.buf.put_u8(0x30 | flags);
        put_varint(&mut self.buf, len);
        put_str(&mut self.buf, topic.as_bytes());
        if qos > 0 {
            self.buf.put_u16(self.next_pkid);
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
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
