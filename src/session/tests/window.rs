//! A window as large as the packet id space: ids stay unique, acknowledgements in any order
//! end the right flows, the resend keeps sending order, and what the session holds stays
//! bounded by what is in flight (a first message never acknowledged included).

use std::collections::HashSet;

use super::*;

/// Starts `n` QoS 1 deliveries; their packet ids in sending order.
fn send(s: &mut Session, n: usize, out: &mut Vec<Effect>) -> Vec<u16> {
    (0..n)
        .map(|i| {
            let pkid = start(s, delivery(QoS::AtLeastOnce, i as u8, 0), out);
            out.clear();
            pkid
        })
        .collect()
}

/// The packet ids a resend sends, in its order.
fn resent(s: &Session) -> Vec<u16> {
    let mut out = Vec::new();
    s.resend(&mut out);
    out.iter()
        .map(|e| match e {
            Effect::Publish { pkid, dup, .. } => {
                assert!(dup, "a resent PUBLISH has DUP set");
                pkid.map_or(0, PacketId::get)
            }
            other => panic!("not a PUBLISH: {other:?}"),
        })
        .collect()
}

fn ack(s: &mut Session, pkid: u16, out: &mut Vec<Effect>) {
    assert_eq!(
        s.on_puback(id(pkid), out),
        AckOutcome::Done,
        "PUBACK {pkid}"
    );
}

/// [MQTT-2.2.1-3] 60,000 in flight through a window of 65,535: every id non-zero and unique,
/// the window's room counted right.
#[test]
fn sixty_thousand_in_flight_have_unique_ids() {
    let mut s = session(ROLES[0], u16::MAX);
    let mut out = Vec::new();
    let ids = send(&mut s, 60_000, &mut out);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 60_000);
    assert!(!ids.contains(&0));
    assert_eq!(s.inflight_len(), 60_000);
    assert_eq!(s.window_free(), 5_535);
    assert!(ids.iter().all(|&p| s.in_flight(id(p))));
}

/// Acknowledgements in any order end exactly their flows; what is left resends in sending
/// order [MQTT-4.4.0-1]; an id acknowledged twice is unknown the second time.
#[test]
fn out_of_order_acks_keep_the_resend_order() {
    let mut s = session(ROLES[0], u16::MAX);
    let mut out = Vec::new();
    let ids = send(&mut s, 60_000, &mut out);
    // Every third, from the back; then every third but one, from the front.
    for p in ids.iter().step_by(3).rev() {
        ack(&mut s, *p, &mut out);
    }
    for p in ids.iter().skip(1).step_by(3) {
        ack(&mut s, *p, &mut out);
    }
    assert_eq!(
        s.on_puback(id(ids[0]), &mut out),
        AckOutcome::Unknown,
        "acknowledged twice"
    );
    let left: Vec<u16> = ids.iter().skip(2).step_by(3).copied().collect();
    assert_eq!(s.inflight_len(), 20_000);
    assert_eq!(resent(&s), left);
    assert!(out.is_empty(), "nothing stored, nothing settled");
}

/// Ids wrap past 65,535 to 1 and skip the ones still in use: a flow never shares its id.
#[test]
fn ids_wrap_around_past_those_in_use() {
    let mut s = session(ROLES[0], u16::MAX);
    let mut out = Vec::new();
    let first = send(&mut s, 60_000, &mut out);
    // The first 30,000 acknowledged, except every hundredth: those stay in use.
    let stuck: Vec<u16> = first[..30_000].iter().step_by(100).copied().collect();
    for (i, p) in first[..30_000].iter().enumerate() {
        if i % 100 != 0 {
            ack(&mut s, *p, &mut out);
        }
    }
    let room = s.window_free();
    let more = send(&mut s, room, &mut out);
    assert!(
        more.iter().any(|&p| p < first[0] + 1_000),
        "wrapped to low ids"
    );
    let all: HashSet<u16> = stuck
        .iter()
        .chain(&first[30_000..])
        .chain(&more)
        .copied()
        .collect();
    assert_eq!(all.len(), stuck.len() + 30_000 + more.len(), "ids unique");
    assert_eq!(s.inflight_len(), usize::from(u16::MAX));
    assert_eq!(s.window_free(), 0);
    // Resend: the stuck ones first, then the rest, in sending order.
    let order: Vec<u16> = stuck
        .iter()
        .chain(&first[30_000..])
        .chain(&more)
        .copied()
        .collect();
    assert_eq!(resent(&s), order);
    // With every id in use, one acknowledged out of order is the next one given.
    ack(&mut s, first[45_000], &mut out);
    assert_eq!(send(&mut s, 1, &mut out), [first[45_000]]);
}

/// A first message never acknowledged while 200,000 more go through a window of 100: the
/// session holds about the window, not everything sent since (tombstones are compacted).
#[test]
fn a_stuck_first_message_does_not_grow_memory() {
    let mut s = session(ROLES[0], 100);
    let mut out = Vec::new();
    let stuck = send(&mut s, 1, &mut out)[0];
    let mut most = 0;
    for _ in 0..2_000 {
        let room = s.window_free();
        for p in send(&mut s, room, &mut out) {
            ack(&mut s, p, &mut out);
        }
        most = most.max(s.inflight.held());
    }
    assert!(
        most <= 2 * 100 + 32,
        "held {most} entries for 100 in flight"
    );
    assert_eq!(resent(&s), [stuck]);
    ack(&mut s, stuck, &mut out);
    assert_eq!((s.inflight_len(), s.inflight.held()), (0, 0));
}

/// Flows that end in a random order against a model: the right flow ends, the rest keep
/// their order, over many turns of the id counter.
#[test]
fn random_acks_match_a_model() {
    let mut s = session(ROLES[0], 5_000);
    let mut out = Vec::new();
    let mut model: Vec<u16> = Vec::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..100 {
        let room = s.window_free();
        model.extend(send(&mut s, room, &mut out));
        for _ in 0..(next() % 5_000) {
            let at = (next() % model.len() as u64) as usize;
            ack(&mut s, model.remove(at), &mut out);
        }
        assert_eq!(s.inflight_len(), model.len());
    }
    assert_eq!(resent(&s), model);
}

/// An idle session pays one pointer for its flows and allocates nothing for them.
#[test]
fn no_flows_cost_one_pointer() {
    assert_eq!(
        std::mem::size_of::<flights::Flights>(),
        std::mem::size_of::<usize>()
    );
    let mut s = session(ROLES[0], 10);
    assert_eq!(s.inflight.held(), 0);
    let mut out = Vec::new();
    let p = send(&mut s, 1, &mut out)[0];
    ack(&mut s, p, &mut out);
    assert_eq!(s.inflight.held(), 0);
}
