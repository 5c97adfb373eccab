//! What an idle client costs is mostly these records (docs/architecture.md, memory): a change
//! that grows them should be a deliberate one.

use std::mem::size_of;

#[test]
fn dormant_records_stay_small() {
    // A bed in the dormitory's slab is the record itself (its generation sits beside the
    // socket's 4 bytes).
    assert!(
        size_of::<super::Dormant>() <= 80,
        "{}",
        size_of::<super::Dormant>()
    );

    // What the admin API shows of a connection: 48 + 16 bytes of counts, a 64-byte class.
    assert!(size_of::<crate::broker::ClientInfo>() <= 48);
    // Boxed alone: 64 bytes are jemalloc's 64-byte class (72 took the 80-byte one).
    let n = size_of::<crate::session::Session>();
    assert!(n <= 64, "{n}");
    // Held in an Arc (16 bytes of counts): 48 + 16 is jemalloc's 64-byte class (with its
    // queue inline it was 80 + 16, the 96-byte one).
    let n = size_of::<crate::broker::Mailbox>();
    assert!(n <= 48, "{n}");
}

/// An awake connection's own record (boxed): the carrier's gates cost a pointer each
/// until something is held. (328: the pointer to what the admin API shows of it.)
#[test]
fn awake_record_stays_small() {
    assert_eq!(size_of::<crate::broker::Carrier>(), 16);
    let n = size_of::<super::Connection>();
    assert!(n <= 328, "{n}");
}

/// A PUBLISH moves through decode and routing by value, and waits in queues inside its
/// message: its rarely set v5 properties are boxed (224-byte packets cost about 10% of a QoS
/// 1 message's CPU in copies), as are CONNECT, CONNACK and AUTH.
#[test]
fn packets_stay_small() {
    let n = size_of::<crate::protocol::Publish>();
    assert!(n <= 72, "{n}");
    let n = size_of::<crate::protocol::Packet>();
    assert!(n <= 96, "{n}");
    let n = size_of::<crate::session::Message>();
    assert!(n <= 128, "{n}");
}
