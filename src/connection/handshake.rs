//! The CONNECT handshake: read CONNECT by an absolute deadline, check what the broker requires of
//! it, and decide the CONNACK. Nothing here is stored until the CONNECT is accepted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::protocol::{ConnAck, ConnAckProperties, Connect, ProtocolVersion, ReasonCode};
use crate::session::NEVER_EXPIRES;

/// What the broker agreed to for an accepted CONNECT.
#[derive(Debug)]
pub struct Accepted {
    /// The client id, assigned if the client sent none.
    pub client_id: String,
    /// Whether the id was assigned by us (v5: returned in CONNACK).
    pub assigned: bool,
    /// Keep alive in force, seconds (0 = none).
    pub keep_alive: u16,
    /// Whether the keep alive differs from the client's (v5: Server Keep Alive).
    pub keep_alive_changed: bool,
    /// Session expiry interval in force, seconds.
    pub session_expiry: u32,
    /// Outbound inflight window.
    pub window: u16,
}

/// Checks a decoded CONNECT against the broker's rules [MQTT-3.1.3-8, 3.1.2-22/23].
pub fn accept(connect: &Connect, config: &Config) -> Result<Accepted, ReasonCode> {
    let v5 = connect.version.is_v5();
    if connect.properties.authentication_method.is_some() {
        return Err(ReasonCode::BadAuthenticationMethod);
    }
    let (client_id, assigned) = if connect.client_id.is_empty() {
        match connect.version {
            ProtocolVersion::V5 => (assign_client_id(), true),
            ProtocolVersion::V311 if connect.clean_start => (assign_client_id(), true),
            _ => return Err(ReasonCode::ClientIdentifierNotValid),
        }
    } else {
        if connect.version == ProtocolVersion::V31 && connect.client_id.len() > 23 {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        // Reserved for the bridges' and queues' own sessions: a client could otherwise take
        // one over.
        if crate::broker::bridged::is_bridge_session(&connect.client_id)
            || crate::broker::is_queue_session(&connect.client_id)
        {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        (connect.client_id.clone(), false)
    };
    let max = config.limits.max_keepalive;
    let mut keep_alive = connect.keep_alive;
    let mut keep_alive_changed = false;
    if max > 0 && (keep_alive == 0 || keep_alive > max) {
        if !v5 {
            // v3 has no way to tell the client; Mosquitto refuses the same way.
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        keep_alive = max;
        keep_alive_changed = true;
    }
    let session_expiry = if v5 {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        NEVER_EXPIRES
    };
    // A v5 client says how many it can hold (absent: 65,535 [MQTT-3.1.2-21]), within the
    // configured ceiling; a 3.1.1 client cannot, and gets the bounded default.
    let window = if v5 {
        connect
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(config.limits.max_inflight_messages_v5)
    } else {
        config.limits.max_inflight_messages
    };
    Ok(Accepted {
        client_id,
        assigned,
        keep_alive,
        keep_alive_changed,
        session_expiry,
        window,
    })
}

/// A unique id for a client that sent none, shaped like Mosquitto's `auto-…` ids.
fn assign_client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("auto-{:016X}-{n:06X}", t as u64 ^ rand::random::<u64>())
}

/// The CONNACK for an accepted CONNECT, advertising what Tern supports (v5).
pub fn connack(
    accepted: &Accepted,
    version: ProtocolVersion,
    present: bool,
    config: &Config,
) -> ConnAck {
    let mut properties = ConnAckProperties::default();
    if version.is_v5() {
        let l = &config.limits;
        properties.receive_maximum = Some(l.receive_maximum);
        properties.retain_available = Some(1);
        properties.maximum_packet_size = Some(l.max_packet_size);
        properties.topic_alias_maximum = Some(l.topic_alias_maximum);
        properties.wildcard_subscription_available = Some(1);
        properties.subscription_identifiers_available = Some(1);
        properties.shared_subscription_available = Some(1);
        if accepted.assigned {
            properties.assigned_client_identifier = Some(accepted.client_id.clone());
        }
        if accepted.keep_alive_changed {
            properties.server_keep_alive = Some(accepted.keep_alive);
        }
    }
    ConnAck {
        session_present: present,
        reason: ReasonCode::Success,
        properties,
    }
}

/// A refusing CONNACK [MQTT-3.2.2-6: session present 0 with a non-zero code].
pub fn refusal(reason: ReasonCode) -> ConnAck {
    ConnAck {
        session_present: false,
        reason,
        properties: ConnAckProperties::default(),
    }
}
