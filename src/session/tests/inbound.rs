//! The session as receiver (of its client's messages, or a bridge's of its remote's): the
//! acknowledgement each gets and the QoS 2 ids kept until PUBREL.

use super::*;

/// QoS 1 and 0: acknowledged with the reason the broker chose (QoS 0: nothing).
#[test]
fn qos1_is_acknowledged() {
    let mut s = session(ROLES[0], 10);
    let mut out = Vec::new();
    s.acknowledge(QoS::AtLeastOnce, Some(id(3)), ReasonCode::Success, &mut out);
    s.acknowledge(
        QoS::AtLeastOnce,
        Some(id(4)),
        ReasonCode::NoMatchingSubscribers,
        &mut out,
    );
    s.acknowledge(QoS::AtMostOnce, None, ReasonCode::Success, &mut out);
    assert_eq!(
        took(&mut out),
        [
            E::Reply(ReplyKind::PubAck, 3, ReasonCode::Success),
            E::Reply(ReplyKind::PubAck, 4, ReasonCode::NoMatchingSubscribers)
        ]
    );
}

/// [MQTT-4.3.3-8] [MQTT-4.3.3-10] [MQTT-4.3.3-11] QoS 2: a new message is forwarded once; sent
/// again before PUBREL it is acknowledged again, not forwarded; PUBREL frees the id (in the
/// store too) and gets PUBCOMP; the id is then a new message.
#[test]
fn qos2_is_forwarded_once_until_pubrel() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        assert_eq!(s.on_publish_qos2(id(7), 100, &mut out), Qos2In::New);
        assert_eq!(took(&mut out), []);
        s.acknowledge(QoS::ExactlyOnce, Some(id(7)), ReasonCode::Success, &mut out);
        assert_eq!(
            took(&mut out),
            [E::Reply(ReplyKind::PubRec, 7, ReasonCode::Success)]
        );
        assert_eq!(s.on_publish_qos2(id(7), 100, &mut out), Qos2In::Duplicate);
        assert_eq!(
            took(&mut out),
            [E::Reply(ReplyKind::PubRec, 7, ReasonCode::Success)]
        );
        assert_eq!(s.on_pubrel(id(7), &mut out), AckOutcome::Done);
        assert_eq!(
            took(&mut out),
            [
                E::Store(StoreOp::InboundReleased(id(7))),
                E::Reply(ReplyKind::PubComp, 7, ReasonCode::Success)
            ]
        );
        assert_eq!(s.on_publish_qos2(id(7), 100, &mut out), Qos2In::New);
    }
}

/// A PUBREL for an id not awaiting one gets PUBCOMP 0x92 (Packet Identifier not found).
#[test]
fn pubrel_for_an_unknown_id() {
    let mut s = session(ROLES[0], 10);
    let mut out = Vec::new();
    assert_eq!(s.on_pubrel(id(9), &mut out), AckOutcome::Unknown);
    assert_eq!(
        took(&mut out),
        [E::Reply(
            ReplyKind::PubComp,
            9,
            ReasonCode::PacketIdentifierNotFound
        )]
    );
}

/// [MQTT-3.3.4-7] More new QoS 2 messages awaiting PUBREL than the receive maximum are
/// reported (a violation); one sent again is not new and does not count.
#[test]
fn qos2_beyond_the_receive_maximum() {
    let mut s = session(ROLES[0], 10);
    let mut out = Vec::new();
    assert_eq!(s.on_publish_qos2(id(1), 2, &mut out), Qos2In::New);
    assert_eq!(s.on_publish_qos2(id(2), 2, &mut out), Qos2In::New);
    assert_eq!(s.on_publish_qos2(id(1), 2, &mut out), Qos2In::Duplicate);
    assert_eq!(s.on_publish_qos2(id(3), 2, &mut out), Qos2In::OverLimit);
    assert_eq!(s.inbound_qos2_len(), 2);
}

/// [MQTT-4.3.3-9] A QoS 2 message refused at PUBREC (reason ≥ 0x80) ends its flow: its id
/// next time is a new message.
#[test]
fn refused_qos2_ends_at_pubrec() {
    let mut s = session(ROLES[0], 10);
    let mut out = Vec::new();
    assert_eq!(s.on_publish_qos2(id(5), 10, &mut out), Qos2In::New);
    s.acknowledge(
        QoS::ExactlyOnce,
        Some(id(5)),
        ReasonCode::NotAuthorized,
        &mut out,
    );
    // Its id, stored with the message's batch for a stored session, is freed there too.
    assert_eq!(
        took(&mut out),
        [
            E::Store(StoreOp::InboundReleased(id(5))),
            E::Reply(ReplyKind::PubRec, 5, ReasonCode::NotAuthorized)
        ]
    );
    assert_eq!(s.on_publish_qos2(id(5), 10, &mut out), Qos2In::New);
}

/// Ids read back from the store are still awaited after a restart (a resend is not forwarded
/// twice); a bridge's remote that lost its session frees them all, in the store too.
#[test]
fn stored_ids_survive_and_can_be_forgotten() {
    let mut s = session(ROLES[1], 10);
    let mut out = Vec::new();
    s.restore_inbound_qos2(id(11));
    s.restore_inbound_qos2(id(12));
    assert_eq!(s.on_publish_qos2(id(11), 10, &mut out), Qos2In::Duplicate);
    out.clear();
    s.forget_inbound_qos2(&mut out);
    assert_eq!(
        took(&mut out),
        [
            E::Store(StoreOp::InboundReleased(id(11))),
            E::Store(StoreOp::InboundReleased(id(12)))
        ]
    );
    assert_eq!(s.on_publish_qos2(id(11), 10, &mut out), Qos2In::New);
}
