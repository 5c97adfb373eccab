//! Byte-level I/O of one connection: readiness-driven reads and writes over its stream (TCP or TLS),
//! buffers taken only while bytes are in flight, the CONNECT read by an absolute deadline, and
//! the bounded flush at close.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::handshake;
use crate::metrics;
use crate::protocol::{self, Connect, DecodeError, Decoder, Packet, ProtocolVersion, ReasonCode};
use crate::transport::Stream;

/// Smallest and largest room kept for one read.
const MIN_READ: usize = 128;
const MAX_READ: usize = 64 * 1024;
/// How long the final DISCONNECT and pending bytes may take to flush.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);
/// After a last word (DISCONNECT, refusing CONNACK), how long and how much of what the client
/// still sends is read and discarded before the socket closes.
const LINGER_FOR: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// What one turn of socket I/O did.
pub(super) enum Done {
    /// Read this many bytes; 0 at end of stream.
    Read(usize),
    /// Wrote some of the output buffer.
    Wrote,
}

/// Byte-level I/O of one connection. Reads and writes wait for readiness first, so a quiet
/// client holds no buffer at all: memory is taken when bytes arrive and given back once they
/// are handled.
pub(super) struct Io {
    pub(super) stream: Stream,
    pub(super) inbuf: BytesMut,
    pub(super) outbuf: BytesMut,
    /// Room taken for the next read: small for quiet clients, doubled while reads fill it.
    read_size: usize,
    /// TLS and WebSockets may accept bytes they cannot pass on yet (the socket was full):
    /// they are flushed once the output buffer is empty.
    unflushed: bool,
    pub(super) decoder: Decoder,
}

impl Io {
    pub(super) fn new(stream: Stream, max_packet_size: u32) -> Io {
        Io {
            stream,
            inbuf: BytesMut::new(),
            outbuf: BytesMut::new(),
            read_size: MIN_READ,
            unflushed: false,
            decoder: Decoder::new(max_packet_size),
        }
    }

    /// I/O for a connection past its CONNECT (one waking from dormancy).
    pub(super) fn for_version(
        stream: Stream,
        max_packet_size: u32,
        version: ProtocolVersion,
    ) -> Io {
        Io {
            decoder: Decoder::resumed(max_packet_size, version),
            ..Io::new(stream, max_packet_size)
        }
    }

    /// Reads or writes, whichever the socket is ready for. Polling readiness directly (rather
    /// than holding `readable()`/`writable()` futures) keeps the connection's task small.
    /// `read_first` alternates between calls so neither direction can starve the other.
    pub(super) fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        can_read: bool,
        can_write: bool,
        read_first: bool,
    ) -> Poll<std::io::Result<Done>> {
        let read =
            |io: &mut Io, cx: &mut Context<'_>| io.poll_read_some(cx, can_read).map_ok(Done::Read);
        let write = |io: &mut Io, cx: &mut Context<'_>| match can_write {
            true => io.poll_write_some(cx),
            false => Poll::Pending,
        };
        if read_first {
            match read(self, cx) {
                Poll::Pending => write(self, cx),
                ready => ready,
            }
        } else {
            match write(self, cx) {
                Poll::Pending => read(self, cx),
                ready => ready,
            }
        }
    }

    /// Reads what the socket has. Room is taken only once the socket is readable, so a quiet
    /// client holds no buffer; a short read tells tokio the socket is drained, which saves the
    /// extra `read` that would otherwise only return `EAGAIN`.
    fn poll_read_some(
        &mut self,
        cx: &mut Context<'_>,
        can_read: bool,
    ) -> Poll<std::io::Result<usize>> {
        if !can_read {
            return Poll::Pending;
        }
        std::task::ready!(self.stream.poll_read_ready(cx))?;
        if self.inbuf.capacity() - self.inbuf.len() < self.read_size / 2 {
            self.inbuf.reserve(self.read_size);
        }
        let room = self.inbuf.capacity() - self.inbuf.len();
        let n = std::task::ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.inbuf
        ))?;
        crate::metrics::bytes_received(n);
        // Reads that fill the room ask for more next time; small ones for less.
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        } else if n < self.read_size / 8 && self.read_size > MIN_READ {
            self.read_size /= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Writes what is pending, as much as the stream takes, then flushes what a TLS or
    /// WebSocket layer kept back.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Done>> {
        if self.outbuf.is_empty() {
            if !self.unflushed {
                return Poll::Pending;
            }
            std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
            self.unflushed = false;
            return Poll::Ready(Ok(Done::Wrote));
        }
        let n = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, &self.outbuf))?;
        crate::metrics::bytes_sent(n);
        self.outbuf.advance(n);
        self.unflushed = !self.stream.is_tcp();
        Poll::Ready(Ok(Done::Wrote))
    }

    /// Waits for and reads the next bytes; `Ok(0)` at end of stream.
    async fn read_some(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_some(cx, true)).await
    }

    /// Gives back buffers that hold nothing. A busy client re-takes one per batch (one
    /// allocation per read or write of many packets); a client that goes quiet after a burst
    /// keeps nothing.
    pub(super) fn release_idle_buffers(&mut self) {
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = BytesMut::new();
        }
        if self.outbuf.is_empty() && self.outbuf.capacity() > 0 {
            self.outbuf = BytesMut::new();
        }
    }

    /// Reads until a CONNECT is decoded or the absolute `deadline` passes; bytes trickling in do
    /// not extend it. Answers a refused CONNECT itself.
    pub(super) async fn read_connect(&mut self, deadline: Instant) -> Result<Box<Connect>, String> {
        loop {
            match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(Packet::Connect(c))) => return Ok(c),
                Ok(Some(_)) => return Err("first packet is not CONNECT".into()),
                Ok(None) => {}
                Err(e) => {
                    self.refuse_connect(&e);
                    return Err(e.to_string());
                }
            }
            match tokio::time::timeout_at(deadline, self.read_some()).await {
                Err(_) => return Err("CONNECT timeout".into()),
                Ok(Ok(0)) => return Err("closed".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
            }
        }
    }

    /// CONNACK for a CONNECT that could not be decoded, where the spec gives one.
    fn refuse_connect(&mut self, e: &DecodeError) {
        let (version, reason) = if let DecodeError::UnsupportedProtocol { .. } = e {
            if e.wants_v5_connack() {
                (ProtocolVersion::V5, ReasonCode::UnsupportedProtocolVersion)
            } else {
                (
                    ProtocolVersion::V311,
                    ReasonCode::UnsupportedProtocolVersion,
                )
            }
        } else if self.decoder.version_hint() == Some(ProtocolVersion::V5) {
            (ProtocolVersion::V5, e.reason_code())
        } else {
            metrics::malformed(e.reason_code() as u8);
            metrics::protocol_violation(e.reason_code() as u8);
            return;
        };
        metrics::malformed(e.reason_code() as u8);
        metrics::connect_refused(reason as u8);
        let ack = Packet::ConnAck(Box::new(handshake::refusal(reason)));
        metrics::packet_sent(&ack);
        let _ = protocol::encode(&ack, version, &mut self.outbuf);
    }

    /// Closes after a last word to the client, if one is pending: flushes it, shuts the write side, then reads
    /// and discards what the client still sends (at most 2 s or 64 KiB), so that closing with
    /// unread input does not reset the connection and destroy the last word before the client
    /// has read it.
    pub(super) async fn close_gracefully(&mut self) {
        let last_word = !self.outbuf.is_empty();
        self.close().await;
        if last_word {
            self.linger().await;
        }
    }

    /// Reads and discards input until the client closes, [`LINGER_BYTES`] were read or
    /// [`LINGER_FOR`] passed. Call after [`Io::close`].
    pub(super) async fn linger(&mut self) {
        self.inbuf.clear();
        let mut discarded = 0;
        let _ = tokio::time::timeout(LINGER_FOR, async {
            while discarded < LINGER_BYTES {
                self.inbuf.clear();
                match self.read_some().await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => discarded += n,
                }
            }
        })
        .await;
        self.inbuf = BytesMut::new();
    }

    /// Flushes what is pending (bounded in time) and closes the write side. A plain TCP
    /// socket with nothing pending is left to be closed when dropped: `close` sends the same
    /// FIN, and a connection that ends with nothing to say (the client's DISCONNECT, a lost
    /// client) makes one system call fewer (7 instead of 8 from accept to close). TLS and
    /// WebSocket still end their own protocol (close_notify, a Close frame).
    pub(super) async fn close(&mut self) {
        if self.outbuf.is_empty() && self.stream.is_tcp() {
            return;
        }
        let _ = tokio::time::timeout(FLUSH_ON_CLOSE, async {
            if self.stream.write_all(&self.outbuf).await.is_ok() {
                crate::metrics::bytes_sent(self.outbuf.len());
            }
            let _ = self.stream.shutdown().await;
        })
        .await;
        self.outbuf.clear();
    }
}
