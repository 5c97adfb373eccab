//! MQTT over WebSockets (`ws`, `wss` listeners): the HTTP upgrade on a configured path with
//! subprotocol `mqtt` (or the older `mqttv3.1`), then binary frames carrying the MQTT byte
//! stream. Frame boundaries mean nothing to MQTT [MQTT-6.0.0-2]: a packet may span frames and a
//! frame may hold several packets, so [`WsStream`] turns the frames back into a byte stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::Stream;

/// Subprotocols a client may ask for, in our order of preference: `mqtt` is MQTT 3.1.1 and
/// 5.0's registered name, `mqttv3.1` what older clients (and MQTT 3.1) send.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Read room tungstenite keeps per connection. Its default (128 KiB, taken at once) would be
/// most of an idle connection's memory; MQTT packets from devices are small.
const READ_BUFFER: usize = 4 * 1024;

/// The WebSocket settings for a listener whose largest MQTT packet is `max_packet_size`.
/// Frames and messages are bounded a little above it, so a client cannot make us buffer more
/// than one packet's worth; writes go out at once (our own output buffer batches them).
pub fn config(max_packet_size: u32) -> WebSocketConfig {
    let max = max_packet_size as usize + 64 * 1024;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(max.saturating_mul(4))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Why an upgrade was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The request or the WebSocket handshake was not valid (or not HTTP at all).
    #[error("WebSocket handshake: {0}")]
    Handshake(#[from] WsError),
}

/// Upgrades `stream` to a WebSocket carrying MQTT if the request is for `path` (any path when
/// it is `"*"`, as Mosquitto serves every path) and, when it
/// names subprotocols, offers `mqtt` or `mqttv3.1` (the one chosen is in the response, as RFC 6455
/// requires). Other paths get 404, other subprotocols 400.
pub async fn accept(
    stream: Stream,
    path: &str,
    config: WebSocketConfig,
) -> Result<WsStream, UpgradeError> {
    // tungstenite's callback type fixes the error type.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if path != "*" && request.uri().path() != path {
            return Err(refusal(StatusCode::NOT_FOUND, "no MQTT endpoint here"));
        }
        let offered = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>();
        if offered.is_empty() {
            // RFC 6455 lets a server answer without one; MQTT says clients must offer `mqtt`,
            // but some only ever did the upgrade. They get plain binary frames all the same.
            return Ok(response);
        }
        let Some(chosen) = SUBPROTOCOLS
            .iter()
            .find(|ours| offered.iter().any(|p| p.eq_ignore_ascii_case(ours)))
        else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "subprotocol must be mqtt or mqttv3.1",
            ));
        };
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await?;
    Ok(WsStream {
        ws,
        pending: Bytes::new(),
    })
}

fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = status;
    r
}

/// A WebSocket connection read and written as the MQTT byte stream it carries: each write
/// goes out as one binary frame, reads return the payloads of binary frames in order.
pub struct WsStream {
    ws: WebSocketStream<Stream>,
    /// What is left of the last frame read.
    pending: Bytes,
}

impl WsStream {
    /// The stream below the WebSocket (TCP or TLS).
    pub fn get_ref(&self) -> &Stream {
        self.ws.get_ref()
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            // tungstenite answers pings and close frames itself while reading.
            match std::task::ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // [MQTT-6.0.0-1]: MQTT travels in binary frames only; anything else closes.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame (MQTT needs binary frames)",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(into_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut ws = Pin::new(&mut self.get_mut().ws);
        std::task::ready!(ws.as_mut().poll_ready(cx)).map_err(into_io)?;
        // Accepted whole: a frame the socket cannot take yet waits in tungstenite's buffer, and
        // the next write or flush pushes it out.
        ws.start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(into_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(into_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(into_io)
    }
}

fn into_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}
