use super::*;
use crate::protocol::{Publish, PublishProperties};
use bytes::Bytes;
use std::time::Duration;

fn delivery(qos: QoS, n: u8) -> Delivery {
    let publish = Publish {
        dup: false,
        qos,
        retain: false,
        topic: "t".into(),
        pkid: 0,
        payload: Bytes::from(vec![n]),
        properties: PublishProperties::default(),
    };
    Delivery {
        msg: Arc::new(Message::new(publish, None, Instant::now())),
        qos,
        retain: false,
        sub_ids: Vec::new(),
        shared: None,
        seq: 0,
    }
}

fn session(window: u16) -> Session {
    Session::new("c".into(), 0, window)
}

/// [MQTT-4.3.2-1] QoS 1 messages get distinct non-zero packet ids and are released by PUBACK.
#[test]
fn qos1_flow_allocates_and_releases_ids() {
    let mut s = session(10);
    let now = Instant::now();
    let (a, _) = s.start(delivery(QoS::AtLeastOnce, 1), now).unwrap();
    let (b, _) = s.start(delivery(QoS::AtLeastOnce, 2), now).unwrap();
    assert_ne!(a, 0);
    assert_ne!(a, b);
    assert_eq!(s.inflight_len(), 2);
    assert_eq!(s.puback(a), Ok(0));
    assert_eq!(
        s.puback(a),
        Err(Unexpected::Unknown),
        "a second PUBACK for the same id is unknown"
    );
    assert_eq!(s.inflight_len(), 1);
}

/// QoS 0 never occupies the window.
#[test]
fn qos0_takes_no_packet_id() {
    let mut s = session(1);
    let (id, _) = s
        .start(delivery(QoS::AtMostOnce, 1), Instant::now())
        .unwrap();
    assert_eq!(id, 0);
    assert_eq!(s.window_free(), 1);
}

/// [MQTT-4.3.3-4] [MQTT-4.3.3-5] QoS 2 outbound: PUBREC → PUBREL, PUBCOMP ends; a refused PUBREC ends at once.
#[test]
fn qos2_flow() {
    let mut s = session(10);
    let now = Instant::now();
    let (id, _) = s.start(delivery(QoS::ExactlyOnce, 1), now).unwrap();
    assert_eq!(
        s.pubcomp(id),
        Err(Unexpected::WrongFlow),
        "PUBCOMP before PUBREL is a flow violation"
    );
    assert_eq!(
        s.puback(id),
        Err(Unexpected::WrongFlow),
        "PUBACK of a QoS 2 flow"
    );
    assert_eq!(
        s.pubrec(id, ReasonCode::Success),
        PubRecOutcome::SendPubRel { seq: 0 }
    );
    assert_eq!(
        s.pubrec(id, ReasonCode::Success),
        PubRecOutcome::SendPubRel { seq: 0 }
    );
    assert!(matches!(s.resend().next(), Some(Resend::PubRel(x)) if x == id));
    assert_eq!(s.pubcomp(id), Ok(()));
    assert_eq!(s.pubcomp(id), Err(Unexpected::Unknown));
    assert_eq!(s.inflight_len(), 0);
    let (id, _) = s.start(delivery(QoS::ExactlyOnce, 2), now).unwrap();
    assert_eq!(
        s.pubrec(id, ReasonCode::QuotaExceeded),
        PubRecOutcome::Ended { seq: 0 }
    );
    assert_eq!(s.inflight_len(), 0);
}

/// [MQTT-4.4.0-1] Unacknowledged messages are resent in their original order.
#[test]
fn resend_keeps_order() {
    let mut s = session(10);
    let now = Instant::now();
    let ids: Vec<u16> = (0..5)
        .map(|n| s.start(delivery(QoS::AtLeastOnce, n), now).unwrap().0)
        .collect();
    assert_eq!(s.puback(ids[2]), Ok(0));
    let again: Vec<u16> = s
        .resend()
        .map(|r| match r {
            Resend::Publish { pkid, .. } => pkid,
            Resend::PubRel(p) => p,
        })
        .collect();
    assert_eq!(again, vec![ids[0], ids[1], ids[3], ids[4]]);
}

/// The window counts inflight QoS 1/2 messages.
#[test]
fn window_limits_inflight() {
    let mut s = session(2);
    let now = Instant::now();
    s.start(delivery(QoS::AtLeastOnce, 1), now).unwrap();
    assert_eq!(s.window_free(), 1);
    s.start(delivery(QoS::AtLeastOnce, 2), now).unwrap();
    assert_eq!(s.window_free(), 0);
    s.set_window(3);
    assert_eq!(s.window_free(), 1);
}

/// Packet ids wrap from 65535 to 1, skipping ids still in use.
#[test]
fn packet_ids_wrap_and_skip_in_use() {
    let mut s = session(100);
    let now = Instant::now();
    let (first, _) = s.start(delivery(QoS::AtLeastOnce, 0), now).unwrap();
    s.next_pkid = u16::MAX;
    let (last, _) = s.start(delivery(QoS::AtLeastOnce, 1), now).unwrap();
    assert_eq!(last, u16::MAX);
    let (next, _) = s.start(delivery(QoS::AtLeastOnce, 2), now).unwrap();
    assert_ne!(next, first, "id {first} is still inflight");
    assert_ne!(next, 0);
}

/// [MQTT-4.3.3-10] An inbound QoS 2 packet id is forwarded once until PUBREL.
#[test]
fn inbound_qos2_dedupe() {
    let mut s = session(10);
    assert!(s.inbound_qos2_begin(7));
    assert!(!s.inbound_qos2_begin(7));
    assert!(s.inbound_qos2_release(7));
    assert!(!s.inbound_qos2_release(7));
    assert!(s.inbound_qos2_begin(7));
}

/// [MQTT-3.3.2-5] An expired message is not delivered; the forwarded interval is what remains.
#[test]
fn expired_messages_are_not_started() {
    let mut s = session(10);
    let now = Instant::now();
    let mut d = delivery(QoS::AtLeastOnce, 1);
    let mut p = d.msg.publish.clone();
    p.properties.message_expiry_interval = Some(10);
    d.msg = Arc::new(Message::new(p, None, now));
    assert_eq!(
        d.msg.remaining_expiry(now + Duration::from_millis(2500)),
        Some(8)
    );
    assert!(s.start(d.clone(), now + Duration::from_secs(11)).is_none());
    assert!(s.start(d, now + Duration::from_secs(1)).is_some());
}
