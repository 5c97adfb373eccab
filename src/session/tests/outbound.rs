//! The session as sender (to its client, or a bridge's to its remote): every event of the QoS
//! 1/2 flows, stored and not, with the effects each gives.

use super::*;

/// QoS 0: sent without a packet id; a stored one (queued while offline) is done with once sent.
#[test]
fn qos0_is_sent_and_released() {
    for role in ROLES {
        let mut s = session(role, 1);
        let mut out = Vec::new();
        s.start(delivery(QoS::AtMostOnce, 1, 0), Instant::now(), &mut out);
        assert_eq!(took(&mut out), [E::Publish(1, 0, false)]);
        s.start(delivery(QoS::AtMostOnce, 2, 4), Instant::now(), &mut out);
        assert_eq!(
            took(&mut out),
            [
                E::Publish(2, 0, false),
                E::Store(StoreOp::Delivered(seq(4)))
            ]
        );
        assert_eq!(s.window_free(), 1, "QoS 0 never takes the window");
    }
}

/// [MQTT-4.3.2-1] QoS 1: distinct non-zero packet ids, no store write at sending (a QoS 1
/// message may arrive twice anyway), PUBACK ends the flow and releases a stored message.
#[test]
fn qos1_flow() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        let a = start(&mut s, delivery(QoS::AtLeastOnce, 1, 0), &mut out);
        let b = start(&mut s, delivery(QoS::AtLeastOnce, 2, 7), &mut out);
        assert_eq!(
            took(&mut out),
            [E::Publish(1, a, false), E::Publish(2, b, false)]
        );
        assert!(a != 0 && a != b);
        assert_eq!(s.inflight_len(), 2);
        assert_eq!(s.on_puback(id(a), &mut out), AckOutcome::Done);
        assert_eq!(took(&mut out), []);
        assert_eq!(s.on_puback(id(b), &mut out), AckOutcome::Done);
        assert_eq!(took(&mut out), [E::Store(StoreOp::Acked(id(b), seq(7)))]);
        assert_eq!(
            s.on_puback(id(b), &mut out),
            AckOutcome::Unknown,
            "acknowledged twice"
        );
        assert_eq!(took(&mut out), []);
        assert_eq!(s.inflight_len(), 0);
    }
}

/// [MQTT-4.3.3-3] [MQTT-4.3.3-4] [MQTT-4.3.3-5] QoS 2, stored: the PUBLISH waits for the store
/// to know its packet id; PUBREC stores the flow at PUBREL and PUBREL waits for that; a
/// PUBREC again gets PUBREL again; PUBCOMP ends the flow.
#[test]
fn qos2_flow_stored() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        let p = start(&mut s, delivery(QoS::ExactlyOnce, 3, 11), &mut out);
        assert_eq!(
            took(&mut out),
            [
                E::Durable(StoreOp::Sent(id(p), seq(11))),
                E::Publish(3, p, false)
            ]
        );
        assert_eq!(
            s.on_pubrec(id(p), ReasonCode::Success, &mut out),
            AckOutcome::Done
        );
        assert_eq!(
            took(&mut out),
            [
                E::Durable(StoreOp::Released(id(p), seq(11))),
                E::Reply(ReplyKind::PubRel, p, ReasonCode::Success)
            ]
        );
        assert_eq!(
            s.on_pubrec(id(p), ReasonCode::Success, &mut out),
            AckOutcome::Done
        );
        assert_eq!(
            took(&mut out),
            [E::Reply(ReplyKind::PubRel, p, ReasonCode::Success)],
            "nothing stored again"
        );
        assert_eq!(s.on_pubcomp(id(p), &mut out), AckOutcome::Done);
        assert_eq!(took(&mut out), [E::Store(StoreOp::Completed(id(p)))]);
        assert_eq!(s.on_pubcomp(id(p), &mut out), AckOutcome::Unknown);
        assert_eq!(s.inflight_len(), 0);
    }
}

/// QoS 2 not stored: the same flow with no store operation but PUBCOMP's (a no-op for a
/// session the store does not keep).
#[test]
fn qos2_flow_not_stored() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        let p = start(&mut s, delivery(QoS::ExactlyOnce, 3, 0), &mut out);
        assert_eq!(took(&mut out), [E::Publish(3, p, false)]);
        s.on_pubrec(id(p), ReasonCode::Success, &mut out);
        assert_eq!(
            took(&mut out),
            [E::Reply(ReplyKind::PubRel, p, ReasonCode::Success)]
        );
        s.on_pubcomp(id(p), &mut out);
        assert_eq!(took(&mut out), [E::Store(StoreOp::Completed(id(p)))]);
    }
}

/// [MQTT-4.3.3-9] A PUBREC with a reason of 0x80 or more ends the flow: no PUBREL, the stored
/// message released.
#[test]
fn refusing_pubrec_ends_the_flow() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        let p = start(&mut s, delivery(QoS::ExactlyOnce, 4, 12), &mut out);
        out.clear();
        assert_eq!(
            s.on_pubrec(id(p), ReasonCode::QuotaExceeded, &mut out),
            AckOutcome::Done
        );
        assert_eq!(took(&mut out), [E::Store(StoreOp::Acked(id(p), seq(12)))]);
        assert_eq!(s.inflight_len(), 0);
    }
}

/// An acknowledgement of the wrong flow changes nothing and is reported: PUBACK for QoS 2,
/// PUBREC for QoS 1, PUBCOMP before PUBREL [MQTT-4.3.2-1] [MQTT-4.3.3-1].
#[test]
fn acknowledgements_of_the_wrong_flow() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        let q1 = start(&mut s, delivery(QoS::AtLeastOnce, 1, 1), &mut out);
        let q2 = start(&mut s, delivery(QoS::ExactlyOnce, 2, 2), &mut out);
        out.clear();
        assert_eq!(s.on_puback(id(q2), &mut out), AckOutcome::WrongFlow);
        assert_eq!(
            s.on_pubrec(id(q1), ReasonCode::Success, &mut out),
            AckOutcome::WrongFlow
        );
        assert_eq!(s.on_pubcomp(id(q2), &mut out), AckOutcome::WrongFlow);
        assert_eq!(s.on_pubcomp(id(q1), &mut out), AckOutcome::WrongFlow);
        assert_eq!(took(&mut out), []);
        assert_eq!(s.inflight_len(), 2);
        // After PUBREC, a PUBACK for it is still of the wrong flow.
        s.on_pubrec(id(q2), ReasonCode::Success, &mut out);
        out.clear();
        assert_eq!(s.on_puback(id(q2), &mut out), AckOutcome::WrongFlow);
    }
}

/// [MQTT-4.3.3-4] A PUBREC for an unknown packet id is answered with PUBREL 0x92, so the
/// receiver can end its side; one that refuses needs no answer.
#[test]
fn pubrec_for_an_unknown_id() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        assert_eq!(
            s.on_pubrec(id(40), ReasonCode::Success, &mut out),
            AckOutcome::Unknown
        );
        assert_eq!(
            took(&mut out),
            [E::Reply(
                ReplyKind::PubRel,
                40,
                ReasonCode::PacketIdentifierNotFound
            )]
        );
        assert_eq!(
            s.on_pubrec(id(41), ReasonCode::UnspecifiedError, &mut out),
            AckOutcome::Unknown
        );
        assert_eq!(took(&mut out), []);
    }
}

/// Inflight stays within the window; a wider window lets more go at once.
#[test]
fn window_limits_inflight() {
    for role in ROLES {
        let mut s = session(role, 2);
        let mut out = Vec::new();
        start(&mut s, delivery(QoS::AtLeastOnce, 1, 0), &mut out);
        assert_eq!(s.window_free(), 1);
        start(&mut s, delivery(QoS::ExactlyOnce, 2, 0), &mut out);
        assert_eq!(s.window_free(), 0);
        s.set_window(3);
        assert_eq!(s.window_free(), 1);
        s.set_window(0);
        assert_eq!(s.window_free(), 0, "a window is at least 1, never negative");
    }
}

/// Packet ids wrap from 65535 to 1 and skip ids still in flight.
#[test]
fn packet_ids_wrap_and_skip_in_use() {
    for role in ROLES {
        let mut s = session(role, 100);
        let mut out = Vec::new();
        let first = start(&mut s, delivery(QoS::AtLeastOnce, 0, 0), &mut out);
        s.next_pkid = id(u16::MAX);
        assert_eq!(
            start(&mut s, delivery(QoS::AtLeastOnce, 1, 0), &mut out),
            u16::MAX
        );
        let next = start(&mut s, delivery(QoS::AtLeastOnce, 2, 0), &mut out);
        assert!(next != first && next != 0, "{first} is still in flight");
    }
}

/// [MQTT-4.4.0-1] On resume what was not acknowledged goes again in its original order:
/// PUBLISH with DUP for messages not received, PUBREL for those received.
#[test]
fn resend_on_resume_keeps_order() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        let ids: Vec<u16> = (1..=5)
            .map(|n| {
                let qos = if n % 2 == 0 {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                start(&mut s, delivery(qos, n, 0), &mut out)
            })
            .collect();
        s.on_puback(id(ids[2]), &mut out);
        s.on_pubrec(id(ids[3]), ReasonCode::Success, &mut out);
        out.clear();
        s.resend(&mut out);
        assert_eq!(
            took(&mut out),
            [
                E::Publish(1, ids[0], true),
                E::Publish(2, ids[1], true),
                E::Reply(ReplyKind::PubRel, ids[3], ReasonCode::Success),
                E::Publish(5, ids[4], true),
            ]
        );
        // Resending changes nothing: the same again on the next resume.
        s.resend(&mut out);
        assert_eq!(took(&mut out).len(), 4);
    }
}

/// A session read back from the store resends under the stored packet ids; a delivery whose
/// id was not stored (QoS 1) gets a fresh one clear of every restored id; a flow stored at
/// PUBREL sends PUBREL.
#[test]
fn restored_flows_resend_under_their_ids() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        s.restore_released(id(2));
        s.restore_inflight(vec![
            (None, delivery(QoS::AtLeastOnce, 1, 30)),
            (Some(id(1)), delivery(QoS::ExactlyOnce, 2, 31)),
        ]);
        s.resend(&mut out);
        let got = took(&mut out);
        assert_eq!(got[0], E::Reply(ReplyKind::PubRel, 2, ReasonCode::Success));
        assert_eq!(got[2], E::Publish(2, 1, true));
        let E::Publish(1, fresh, true) = got[1] else {
            panic!("{got:?}");
        };
        assert!(fresh != 1 && fresh != 2 && fresh != 0, "{fresh}");
        // The restored QoS 2 message ends as any other.
        s.on_pubrec(id(1), ReasonCode::Success, &mut out);
        assert_eq!(
            took(&mut out),
            [
                E::Durable(StoreOp::Released(id(1), seq(31))),
                E::Reply(ReplyKind::PubRel, 1, ReasonCode::Success)
            ]
        );
        s.on_pubcomp(id(2), &mut out);
        assert_eq!(took(&mut out), [E::Store(StoreOp::Completed(id(2)))]);
        assert_eq!(
            s.stored_seqs().map(Seq::get).collect::<Vec<_>>(),
            [30],
            "the PUBREL'd message no longer holds its record"
        );
    }
}

/// A flow the carrier cannot send again (its new remote takes less) ends as a refusal would.
#[test]
fn abandoned_flows_end_as_refused() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        let p = start(&mut s, delivery(QoS::ExactlyOnce, 1, 8), &mut out);
        out.clear();
        s.abandon(id(p), "refused_by_remote", &mut out);
        assert_eq!(
            took(&mut out),
            [
                E::Dropped("refused_by_remote"),
                E::Store(StoreOp::Acked(id(p), seq(8)))
            ]
        );
        assert_eq!(s.inflight_len(), 0);
        s.abandon(id(p), "refused_by_remote", &mut out);
        assert_eq!(took(&mut out), [], "nothing left to abandon");
    }
}

/// [MQTT-4.8.2-4] [MQTT-4.8.2-5] QoS 1 messages from a shared subscription's group (or a
/// queue) that the receiver did not acknowledge go back to the group when it leaves, marked DUP; a QoS 2 one
/// stays with the session (sent or past PUBREC), and so do messages of its own subscriptions.
#[test]
fn shared_deliveries_not_received_are_taken_back() {
    let mut s = session(ROLES[0], 10);
    let mut out = Vec::new();
    let shared = |n: u8, qos| {
        delivery(qos, n, 0).with_link(Some(Link {
            queue: 0,
            id: std::num::NonZeroU64::new(u64::from(n)).unwrap(),
        }))
    };
    start(&mut s, shared(1, QoS::AtLeastOnce), &mut out);
    let received = start(&mut s, shared(2, QoS::ExactlyOnce), &mut out);
    start(&mut s, delivery(QoS::AtLeastOnce, 3, 0), &mut out);
    start(&mut s, shared(4, QoS::ExactlyOnce), &mut out);
    s.on_pubrec(id(received), ReasonCode::Success, &mut out);
    let back: Vec<(u8, bool)> = s
        .take_unreceived()
        .iter()
        .map(|d| (d.msg.publish.payload[0], d.dup))
        .collect();
    assert_eq!(back, [(1, true)]);
    assert_eq!(s.inflight_len(), 3);
    // Handed to another member, it goes out with DUP set.
    out.clear();
    let mut other = session(ROLES[0], 10);
    let mut d = delivery(QoS::AtLeastOnce, 5, 0);
    d.dup = true;
    other.start(d, Instant::now(), &mut out);
    assert_eq!(took(&mut out), [E::Publish(5, 1, true)]);
}
