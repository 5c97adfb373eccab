//! An MQTT message as it travels between nodes: the payload as NATS payload (so native NATS
//! applications read it as it is), and what MQTT carries besides in headers. Versions of
//! Tern that share a cluster must agree on these names.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::{Publish, PublishProperties, QoS};
use crate::session::Message;

/// The node that published the message into NATS.
pub(super) const ORIGIN: &str = "Tern-Origin";
/// The origin's sequence number for core (QoS 0) messages, for dropping the copies that
/// overlapping NATS subscriptions bring.
pub(super) const SEQ: &str = "Tern-Seq";
/// A QoS 0 message in the stream for queues and groups only (its subscribers had it through
/// core NATS): the nodes' own routing passes it over.
pub(super) const FOR_QUEUES: &str = "Tern-For-Queues";

/// Whether a stream message is one for queues and groups only.
pub(super) fn for_queues_only(headers: Option<&HeaderMap>) -> bool {
    headers.is_some_and(|h| h.get(FOR_QUEUES).is_some())
}
const QOS: &str = "Tern-Qos";
const RETAIN: &str = "Tern-Retain";
const PROPS: &str = "Tern-Props";
/// The publishing client's id (base64url): No Local holds on every node.
const PUBLISHER: &str = "Tern-Publisher";

/// v5 properties, only those present; `exp` is the absolute expiry in Unix milliseconds, so
/// the time a message spends in the stream counts against it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Props {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pfi: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ct: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    up: Vec<(String, String)>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The headers for `msg` from node `origin`.
pub(super) fn headers(msg: &Message, origin: &str) -> HeaderMap {
    let p = &msg.publish;
    let mut h = HeaderMap::new();
    h.insert(ORIGIN, origin);
    h.insert(QOS, (p.qos as u8).to_string().as_str());
    if p.retain {
        h.insert(RETAIN, "1");
    }
    let props = &p.properties;
    let exp = msg.expires_at.map(|at| {
        let left = at.saturating_duration_since(Instant::now());
        unix_ms(SystemTime::now() + left)
    });
    let any = props.payload_format_indicator.is_some()
        || exp.is_some()
        || props.response_topic.is_some()
        || props.correlation_data.is_some()
        || props.content_type.is_some()
        || !props.user_properties.is_empty();
    if any {
        let wire = Props {
            pfi: props.payload_format_indicator,
            exp,
            rt: props.response_topic.clone(),
            cd: props
                .correlation_data
                .as_ref()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d)),
            ct: props.content_type.clone(),
            up: props.user_properties.clone(),
        };
        if let Ok(json) = serde_json::to_string(&wire) {
            h.insert(PROPS, json.as_str());
        }
    }
    h
}

/// Names the publishing client (stream messages: they come back to its own node too).
pub(super) fn set_publisher(h: &mut HeaderMap, client_id: &str) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(client_id);
    h.insert(PUBLISHER, b64.as_str());
}

/// A will as the cluster keeps it: topic, payload (base64) and the headers a message carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeptMessage {
    topic: String,
    payload: String,
    headers: Vec<(String, String)>,
}

impl KeptMessage {
    /// `msg`, published by `client_id`, for keeping.
    pub(super) fn of(msg: &Message, client_id: &str) -> KeptMessage {
        // Like a will on a single node, it names no publisher: the ACL checked its topic at
        // CONNECT, where the client's user name is known.
        let _ = client_id;
        let h = headers(msg, "");
        let headers = h
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.to_string(), v.as_str().to_string()))
            })
            .collect();
        KeptMessage {
            topic: msg.topic().to_string(),
            payload: base64::engine::general_purpose::STANDARD.encode(&msg.publish.payload),
            headers,
        }
    }

    /// The message back.
    pub(super) fn message(&self) -> Result<Arc<Message>, Undecodable> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .map_err(|_| Undecodable::Malformed("payload"))?;
        let mut h = HeaderMap::new();
        for (name, value) in &self.headers {
            h.append(name.as_str(), value.as_str());
        }
        message(self.topic.clone(), payload.into(), Some(&h), false)
    }
}

/// Why a NATS message is not an MQTT message for us.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Undecodable {
    /// Its Message Expiry Interval ran out on the way.
    Expired,
    /// A header is missing or malformed.
    Malformed(&'static str),
}

/// The message a NATS message on `topic` carries. A message without Tern's headers (published
/// by a native NATS application) is taken as QoS 0 (core) or QoS 1 (stream), not retained.
pub(super) fn message(
    topic: String,
    payload: Bytes,
    headers: Option<&HeaderMap>,
    stream: bool,
) -> Result<Arc<Message>, Undecodable> {
    let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    let qos = match get(QOS) {
        None if stream => QoS::AtLeastOnce,
        None => QoS::AtMostOnce,
        Some("0") => QoS::AtMostOnce,
        Some("1") => QoS::AtLeastOnce,
        Some("2") => QoS::ExactlyOnce,
        Some(_) => return Err(Undecodable::Malformed(QOS)),
    };
    let mut properties = PublishProperties::default();
    let mut expires_at = None;
    let now = Instant::now();
    if let Some(json) = get(PROPS) {
        let wire: Props = serde_json::from_str(json).map_err(|_| Undecodable::Malformed(PROPS))?;
        if let Some(exp) = wire.exp {
            let left = exp.saturating_sub(unix_ms(SystemTime::now()));
            if left == 0 {
                return Err(Undecodable::Expired);
            }
            let left = Duration::from_millis(left);
            expires_at = Some(now + left);
            // Whole seconds, rounded up: what the subscriber is told is never less than is left.
            let secs = left.as_millis().div_ceil(1000);
            properties.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX));
        }
        properties.payload_format_indicator = wire.pfi;
        properties.response_topic = wire.rt;
        properties.correlation_data = match wire.cd {
            None => None,
            Some(cd) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(cd)
                    .map_err(|_| Undecodable::Malformed(PROPS))?
                    .into(),
            ),
        };
        properties.content_type = wire.ct;
        properties.user_properties = wire.up;
    }
    let publish = Publish {
        dup: false,
        qos,
        retain: get(RETAIN) == Some("1"),
        topic,
        pkid: 0,
        payload,
        properties: properties.into(),
    };
    let publisher = match get(PUBLISHER) {
        None => None,
        Some(b64) => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|_| Undecodable::Malformed(PUBLISHER))?;
            let id = String::from_utf8(bytes).map_err(|_| Undecodable::Malformed(PUBLISHER))?;
            Some(Arc::from(id))
        }
    };
    Ok(Arc::new(Message {
        publish,
        expires_at,
        publisher,
        accepted: now,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn msg(qos: QoS, retain: bool, properties: PublishProperties) -> Message {
        Message::new(
            Publish {
                dup: false,
                qos,
                retain,
                topic: "a/b".into(),
                pkid: 7,
                payload: Bytes::from_static(b"\0\xffpayload"),
                properties: properties.into(),
            },
            Some("c".into()),
            Instant::now(),
        )
    }

    #[test]
    fn every_property_survives_the_trip() {
        let props = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            response_topic: Some("re/ply".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            content_type: Some("text/plain; ü".into()),
            user_properties: vec![("k".into(), "v\nw".into()), ("k".into(), "2".into())],
            ..PublishProperties::default()
        };
        let m = msg(QoS::ExactlyOnce, true, props.clone());
        let mut h = headers(&m, "n1");
        set_publisher(&mut h, "cl/ient ü");
        let back = message("a/b".into(), m.publish.payload.clone(), Some(&h), true).unwrap();
        let p = &back.publish;
        assert_eq!(
            (p.qos, p.retain, p.pkid, p.dup),
            (QoS::ExactlyOnce, true, 0, false)
        );
        assert_eq!(p.payload, m.publish.payload);
        let left = p.properties.message_expiry_interval.unwrap();
        assert!((59..=60).contains(&left), "{left}");
        let mut expected = props;
        expected.message_expiry_interval = Some(left);
        assert_eq!(p.properties, expected.into());
        assert!(back.expires_at.is_some());
        assert_eq!(back.publisher.as_deref(), Some("cl/ient ü"));
        assert_eq!(h.get(ORIGIN).unwrap().as_str(), "n1");
    }

    #[test]
    fn plain_messages_carry_no_properties_header() {
        let m = msg(QoS::AtMostOnce, false, PublishProperties::default());
        let h = headers(&m, "n2");
        assert!(h.get(PROPS).is_none());
        assert!(h.get(RETAIN).is_none());
        let back = message("a/b".into(), Bytes::new(), Some(&h), false).unwrap();
        assert_eq!(back.publish.qos, QoS::AtMostOnce);
        assert_eq!(back.publish.properties, PublishProperties::default().into());
    }

    #[test]
    fn native_nats_messages_and_bad_headers() {
        let core = message("x".into(), Bytes::new(), None, false).unwrap();
        assert_eq!(core.publish.qos, QoS::AtMostOnce);
        let stream = message("x".into(), Bytes::new(), None, true).unwrap();
        assert_eq!(stream.publish.qos, QoS::AtLeastOnce);
        let mut h = HeaderMap::new();
        h.insert(QOS, "3");
        assert_eq!(
            message("x".into(), Bytes::new(), Some(&h), true).unwrap_err(),
            Undecodable::Malformed(QOS)
        );
        let mut h = HeaderMap::new();
        h.insert(PROPS, "{not json");
        assert!(message("x".into(), Bytes::new(), Some(&h), true).is_err());
        let mut h = HeaderMap::new();
        h.insert(PROPS, r#"{"exp":1}"#);
        assert_eq!(
            message("x".into(), Bytes::new(), Some(&h), true).unwrap_err(),
            Undecodable::Expired
        );
    }
}
