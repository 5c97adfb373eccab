//! What the replies of the flows are on the wire in MQTT 3.1.1 and 5.0: the same effects, the
//! reason code only where the version has one.

use bytes::BytesMut;

use super::*;
use crate::protocol::{encode, ProtocolVersion};

fn wire(r: Reply, v: ProtocolVersion) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(&r.packet(), v, &mut b).unwrap();
    b.to_vec()
}

/// PUBREL 0x92 for an unknown PUBREC: v5 says why, 3.1.1 sends the plain PUBREL its client
/// expects.
#[test]
fn unknown_pubrec_answered_in_both_versions() {
    let mut s = session(ROLES[0], 10);
    let mut out = Vec::new();
    s.on_pubrec(id(0x0102), ReasonCode::Success, &mut out);
    let Some(Effect::Reply(r)) = out.pop() else {
        panic!("no reply");
    };
    assert_eq!(wire(r, ProtocolVersion::V311), [0x62, 2, 1, 2]);
    assert_eq!(wire(r, ProtocolVersion::V5), [0x62, 3, 1, 2, 0x92]);
}

/// Every reply of a complete QoS 1 and QoS 2 flow, in both versions: success needs no reason
/// byte in v5 either.
#[test]
fn flow_replies_in_both_versions() {
    let mut s = session(ROLES[0], 10);
    let mut out = Vec::new();
    s.acknowledge(QoS::AtLeastOnce, Some(id(1)), ReasonCode::Success, &mut out);
    s.on_publish_qos2(id(2), 10, &mut out);
    s.acknowledge(QoS::ExactlyOnce, Some(id(2)), ReasonCode::Success, &mut out);
    s.on_pubrel(id(2), &mut out);
    let replies: Vec<Reply> = out
        .drain(..)
        .filter_map(|e| match e {
            Effect::Reply(r) => Some(r),
            _ => None,
        })
        .collect();
    let firsts: Vec<u8> = replies
        .iter()
        .map(|r| wire(*r, ProtocolVersion::V311)[0])
        .collect();
    assert_eq!(firsts, [0x40, 0x50, 0x70]);
    for r in replies {
        let v3 = wire(r, ProtocolVersion::V311);
        let v5 = wire(r, ProtocolVersion::V5);
        assert_eq!(v3.len(), 4);
        assert!(v5 == v3 || v5.len() == 5 && v5[4] == 0, "{v5:02x?}");
    }
    // A refusal says why in v5 only.
    s.acknowledge(
        QoS::AtLeastOnce,
        Some(id(3)),
        ReasonCode::NotAuthorized,
        &mut out,
    );
    let Some(Effect::Reply(r)) = out.pop() else {
        panic!("no reply");
    };
    assert_eq!(wire(r, ProtocolVersion::V311), [0x40, 2, 0, 3]);
    assert_eq!(wire(r, ProtocolVersion::V5), [0x40, 3, 0, 3, 0x87]);
}
