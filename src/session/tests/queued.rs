//! A declared queue's deliveries: every way a flow ends is reported to the queue, once.

use super::*;

fn linked(qos: QoS, n: u8, id: u64) -> Delivery {
    delivery(qos, n, 0).with_link(Some(Link {
        queue: 0,
        id: std::num::NonZeroU64::new(id).unwrap(),
    }))
}

/// QoS 0 is consumed once written; QoS 1 at PUBACK; QoS 2 is received at PUBREC and consumed
/// at PUBCOMP.
#[test]
fn each_flow_reports_its_end() {
    let mut s = session("worker", 10);
    let mut out = Vec::new();
    s.start(linked(QoS::AtMostOnce, 1, 1), Instant::now(), &mut out);
    assert_eq!(
        took(&mut out),
        [E::Publish(1, 0, false), E::Settle(1, Settled::Consumed)]
    );
    let p = start(&mut s, linked(QoS::AtLeastOnce, 2, 2), &mut out);
    out.clear();
    assert_eq!(s.on_puback(id(p), &mut out), AckOutcome::Done);
    assert_eq!(took(&mut out), [E::Settle(2, Settled::Consumed)]);
    let p = start(&mut s, linked(QoS::ExactlyOnce, 3, 3), &mut out);
    out.clear();
    s.on_pubrec(id(p), ReasonCode::Success, &mut out);
    assert_eq!(
        took(&mut out),
        [
            E::Settle(3, Settled::Received),
            E::Reply(ReplyKind::PubRel, p, ReasonCode::Success)
        ]
    );
    s.on_pubcomp(id(p), &mut out);
    assert_eq!(
        took(&mut out),
        [
            E::Settle(3, Settled::Consumed),
            E::Store(StoreOp::Completed(id(p)))
        ]
    );
}

/// A refusal ends the flow as an acknowledgement does; an expired or undeliverable one is
/// reported dropped with its reason.
#[test]
fn refusals_and_drops_are_reported() {
    let mut s = session("worker", 10);
    let mut out = Vec::new();
    let p = start(&mut s, linked(QoS::ExactlyOnce, 1, 7), &mut out);
    out.clear();
    s.on_pubrec(id(p), ReasonCode::QuotaExceeded, &mut out);
    assert_eq!(took(&mut out), [E::Settle(7, Settled::Consumed)]);
    s.drop_delivery(&linked(QoS::AtLeastOnce, 2, 8), "too_large", &mut out);
    assert_eq!(
        took(&mut out),
        [
            E::Dropped("too_large"),
            E::Settle(8, Settled::Dropped("too_large"))
        ]
    );
}

/// On leaving, unacknowledged QoS 1 goes back (DUP set); at session end a QoS 2 message the
/// receiver has counts as consumed, one it may not have is dropped, never sent to another.
#[test]
fn leaving_and_ending() {
    let mut s = session("worker", 10);
    let mut out = Vec::new();
    start(&mut s, linked(QoS::AtLeastOnce, 1, 1), &mut out);
    let p2 = start(&mut s, linked(QoS::ExactlyOnce, 2, 2), &mut out);
    start(&mut s, linked(QoS::ExactlyOnce, 3, 3), &mut out);
    out.clear();
    s.on_pubrec(id(p2), ReasonCode::Success, &mut out);
    out.clear();
    let back = s.take_unreceived();
    assert_eq!(back.len(), 1);
    assert!(back[0].dup);
    assert_eq!(back[0].link().map(|l| l.id.get()), Some(1));
    s.settle_ended(&mut out);
    assert_eq!(
        took(&mut out),
        [
            E::Settle(2, Settled::Consumed),
            E::Settle(3, Settled::Dropped("session_ended"))
        ]
    );
}
