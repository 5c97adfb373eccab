//! What the admin API may ask of the broker and do to it: who is connected and with what
//! figures, every session (parked ones too), subscriptions, retained messages; disconnecting a
//! client, ending a session, deleting a retained message. Version- and transport-neutral: the
//! HTTP side turns these into JSON. Everything here reads under short locks and never waits on
//! a client, so an operator's request cannot stall message flow.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::registry::SessionView;
use super::BrokerState;
use crate::protocol::{Publish, QoS, SubscriptionOptions};
use crate::session::Message;
use crate::store::Ticket;

/// What the admin API shows of one connection: fixed at CONNECT, plus the figures its
/// connection keeps up to date (one relaxed add per batch of packets, not per message).
/// Every connected client has one, dormant ones too: kept to 48 bytes (a 64-byte allocation
/// with its counts), so it is listed by index and in seconds rather than by name and instant,
/// and the peer's address is packed (an IPv4 address as IPv4-mapped IPv6, shown as IPv4).
#[derive(Debug)]
pub struct ClientInfo {
    /// The client's IP address, IPv6 or IPv4-mapped.
    ip: [u8; 16],
    port: u16,
    /// The listener it came through (its place in [`BrokerState::listeners`], at most
    /// [`MAX_LISTENERS`] - 1) in the low 14 bits, the protocol level - 3 in the top two.
    origin: u16,
    /// Keep-alive granted, in seconds (0: none).
    pub keep_alive: u16,
    inflight: AtomicU16,
    /// When CONNECT was accepted, in Unix seconds.
    pub connected_at: u32,
    /// Session Expiry Interval from CONNECT, in seconds.
    pub expiry_interval: u32,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
}

/// Listeners a broker may have: their index takes 14 bits of [`ClientInfo`].
pub const MAX_LISTENERS: usize = 1 << 14;

impl ClientInfo {
    /// A connection accepted now, at protocol `level` (3, 4 or 5), through listener `listener`
    /// (below [`MAX_LISTENERS`]; the configuration allows no more).
    pub fn new(
        peer: SocketAddr,
        listener: u16,
        level: u8,
        keep_alive: u16,
        expiry_interval: u32,
    ) -> ClientInfo {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let ip = match peer.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let level = u16::from(level.clamp(3, 5) - 3);
        ClientInfo {
            ip: ip.octets(),
            port: peer.port(),
            origin: (level << 14) | (listener & (MAX_LISTENERS as u16 - 1)),
            keep_alive,
            inflight: AtomicU16::new(0),
            connected_at: now,
            expiry_interval,
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
        }
    }

    /// The client's address (an IPv4-mapped IPv6 one as IPv4).
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(Ipv6Addr::from(self.ip).to_canonical(), self.port)
    }

    /// The listener it came through: its place in [`BrokerState::listeners`].
    pub fn listener(&self) -> u16 {
        self.origin & (MAX_LISTENERS as u16 - 1)
    }

    /// The protocol version as users name it: `3.1`, `3.1.1` or `5.0`.
    pub fn version(&self) -> &'static str {
        match self.origin >> 14 {
            0 => "3.1",
            1 => "3.1.1",
            _ => "5.0",
        }
    }

    /// `n` more PUBLISH packets received.
    pub fn received(&self, n: u64) {
        if n > 0 {
            self.messages_in.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// `n` more PUBLISH packets sent.
    pub fn sent(&self, n: u64) {
        if n > 0 {
            self.messages_out.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// QoS 1/2 messages sent and not yet acknowledged, now (at most the window, 65,535).
    pub fn set_inflight(&self, n: usize) {
        self.inflight
            .store(u16::try_from(n).unwrap_or(u16::MAX), Ordering::Relaxed);
    }

    /// PUBLISH packets received so far.
    pub fn messages_in(&self) -> u64 {
        self.messages_in.load(Ordering::Relaxed)
    }

    /// PUBLISH packets sent so far.
    pub fn messages_out(&self) -> u64 {
        self.messages_out.load(Ordering::Relaxed)
    }

    /// QoS 1/2 messages in flight to the client.
    pub fn inflight(&self) -> u16 {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// One MQTT listener as the admin API lists it.
#[derive(Debug, Clone)]
pub struct ListenerView {
    /// Its place: 0 for the default listener, then `[[listeners]]` from 1, in order.
    pub index: u16,
    /// `kind:port`.
    pub name: Arc<str>,
    /// What it speaks below MQTT.
    pub kind: crate::config::ListenerKind,
    /// Where it is bound.
    pub address: SocketAddr,
    /// TLS: the certificate file it serves (read again for its expiry when asked).
    pub cert: Option<std::path::PathBuf>,
}

/// One subscription as listed.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    /// Whose.
    pub client_id: Arc<str>,
    /// The filter as the client sent it (`$share/…`, `$queue/…` included).
    pub filter: String,
    /// Options granted.
    pub options: SubscriptionOptions,
    /// v5 Subscription Identifier.
    pub identifier: Option<u32>,
}

/// What a retained delete did.
#[derive(Debug)]
pub enum RetainedDelete {
    /// Nothing is retained under the topic.
    NotFound,
    /// Deleted; with persistence (or a cluster), durable once the ticket completes.
    Deleted(Option<Ticket>),
}

impl BrokerState {
    /// The MQTT listeners, once bound (set once at start).
    pub fn set_listeners(&self, listeners: Vec<ListenerView>) {
        let _ = self.listeners.set(listeners);
    }

    /// The MQTT listeners, in the order they were configured (the default one first, unless
    /// it is turned off).
    pub fn listeners(&self) -> &[ListenerView] {
        self.listeners.get().map_or(&[], Vec::as_slice)
    }

    /// The name (`kind:port`) of listener `index`.
    pub fn listener_name(&self, index: u16) -> &str {
        self.listeners()
            .iter()
            .find(|l| l.index == index)
            .map_or("?", |l| &l.name)
    }

    /// The connection of `generation` shows `info` to the admin API.
    pub fn client_connected(&self, client_id: &Arc<str>, generation: u32, info: Arc<ClientInfo>) {
        self.registry.set_info(client_id, generation, info);
    }

    /// Every known client id (connected and parked), or only `client_id`, unordered.
    pub fn session_views(&self, only: Option<&str>) -> Vec<SessionView> {
        self.registry.views(only)
    }

    /// The user name a client logged in with, if any.
    pub fn username(&self, client_id: &str) -> Option<Arc<str>> {
        self.usernames
            .get(client_id)
            .and_then(|u| u.value().0.clone())
    }

    /// Every subscription: in the router (direct and groups) and declared queues' consumers.
    /// Unordered.
    pub fn subscription_views(&self) -> Vec<SubscriptionView> {
        let mut out = Vec::new();
        self.router.list(|filter, sub| {
            out.push(SubscriptionView {
                client_id: Arc::clone(&sub.client_id),
                filter: filter.to_owned(),
                options: sub.options,
                identifier: sub.id,
            })
        });
        for q in &self.queues {
            let filter = format!("$queue/{}", q.name());
            for sub in q.members() {
                out.push(SubscriptionView {
                    client_id: sub.client_id,
                    filter: filter.clone(),
                    options: sub.options,
                    identifier: sub.id,
                });
            }
        }
        out
    }

    /// Tells the connected client `client_id` to go (v5: DISCONNECT 0x98 Administrative
    /// action), ending its session too with `discard`; false when it is not connected here.
    /// Its will is published, as for any disconnection the client did not ask for.
    pub fn disconnect_client(&self, client_id: &str, discard: bool) -> bool {
        self.registry.kick_by_admin(client_id, discard)
    }

    /// Waits until the connection of `client_id` attached now has handed its session back
    /// (after [`BrokerState::disconnect_client`]), at most `within`; false if it has not.
    pub async fn wait_disconnected(&self, client_id: &str, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        self.registry.wait_detached(client_id, deadline).await
    }

    /// Clients connected through a listener now.
    pub fn connected_clients(&self) -> usize {
        self.registry.connected_clients()
    }

    /// Ends the parked session of `client_id` now, as its expiry would (its pending will is
    /// published); false when there is none.
    pub fn end_parked_session(&self, client_id: &str) -> bool {
        let Some((session, will, mailbox)) = self.registry.remove_parked(client_id) else {
            return false;
        };
        tracing::info!(client_id = %crate::logged::clip(client_id), "session ended by an operator");
        let stored = mailbox.is_stored();
        self.end_session(&session, stored, will, mailbox.take_all());
        true
    }

    /// A page of the retained messages matching `filter` after topic `after`, and the cursor
    /// of the next page.
    pub fn retained_page(
        &self,
        filter: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<Message>>, Option<String>) {
        self.retained.page(filter, after, limit)
    }

    /// Deletes the retained message of `topic` without telling subscribers (as an operator
    /// would expect of a delete; a client deletes by publishing an empty retained message,
    /// which subscribers do receive). In cluster mode the delete goes through the cluster so
    /// every node drops its copy, and travels as an empty retained message there.
    pub fn delete_retained(&self, topic: &str) -> RetainedDelete {
        if !self.retained.contains(topic) {
            return RetainedDelete::NotFound;
        }
        let empty = Arc::new(Message::new(
            Publish {
                dup: false,
                // QoS 1: in cluster mode it is stored in the stream and reaches every node.
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: topic.to_owned(),
                pkid: 0,
                payload: bytes::Bytes::new(),
                properties: Default::default(),
            },
            None,
            std::time::Instant::now(),
        ));
        if let Some(remote) = self.remote.get() {
            return RetainedDelete::Deleted(remote.forward(&empty, false, None));
        }
        self.retained.update(&empty);
        let ticket = self.durable.as_ref().and_then(|d| {
            let mut batch = d.batch();
            batch.retain(&empty);
            batch.submit()
        });
        RetainedDelete::Deleted(ticket)
    }
}
