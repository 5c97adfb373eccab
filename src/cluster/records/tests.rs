//! Record keys, the refusal verdict, floors and what a record keeps.

use super::*;

#[test]
fn keys_are_fixed_length_and_allowed_for_any_client_id() {
    for id in ["", "a", "a.b", "ü/ñ €", "\n\t*>", &"x".repeat(65535)] {
        let k = key(id);
        assert_eq!(k.len(), 66);
        assert!(k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)));
    }
    assert_ne!(key("a"), key("b"));
}

#[test]
fn a_session_expires_only_once_disconnected_for_its_interval() {
    let mut s = KeptSession {
        expiry: 10,
        ..KeptSession::default()
    };
    assert!(!s.expired(u64::MAX), "connected: never");
    s.gone = Some(1_000);
    assert!(!s.expired(10_999));
    assert!(s.expired(11_000));
    s.expiry = NEVER_EXPIRES;
    assert!(!s.expired(u64::MAX));
}

fn seq(n: u64) -> crate::session::Seq {
    crate::session::Seq::new(n).expect("not 0")
}

fn pid(n: u16) -> crate::protocol::PacketId {
    crate::protocol::PacketId::new(n).expect("not 0")
}

#[test]
fn outbound_qos2_flows_move_sent_then_at_pubrel_then_done() {
    let mut q = Vec::new();
    q2out_moved(&mut q, StoreOp::Sent(pid(5), seq(100)));
    q2out_moved(&mut q, StoreOp::Sent(pid(6), seq(101)));
    assert_eq!(q, vec![(5, 100, SENT), (6, 101, SENT)]);
    q2out_moved(&mut q, StoreOp::Released(pid(5), seq(100)));
    assert_eq!(q[0], (5, 100, AT_PUBREL));
    // PUBCOMP names the packet id only: the flow at PUBREL under it ends.
    q2out_moved(&mut q, StoreOp::Completed(pid(5)));
    assert_eq!(q[0], (5, 100, DONE));
    // The id is used again for a later message: the done flow stays apart.
    q2out_moved(&mut q, StoreOp::Sent(pid(5), seq(102)));
    q2out_moved(&mut q, StoreOp::Completed(pid(5)));
    assert_eq!(q, vec![(5, 100, DONE), (6, 101, SENT), (5, 102, SENT)]);
    // Refused at PUBREC: over.
    q2out_moved(&mut q, StoreOp::Acked(pid(6), seq(101)));
    assert_eq!(q[1], (6, 101, DONE));
    // Sent again (a resend under a new id after a resume) replaces it.
    q2out_moved(&mut q, StoreOp::Sent(pid(9), seq(102)));
    assert_eq!(q, vec![(5, 100, DONE), (6, 101, DONE), (9, 102, SENT)]);
}

#[test]
fn the_floor_stays_below_the_oldest_unreleased_message() {
    let mut pending = BTreeMap::new();
    assert_eq!(
        floor_of(&pending, 500),
        500,
        "nothing owed: where routing stands"
    );
    pending.insert(120, 1);
    pending.insert(130, 1);
    assert_eq!(floor_of(&pending, 500), 119);
    // A release noted before its queueing (a count below 0) holds the floor too.
    pending.insert(110, -1);
    assert_eq!(floor_of(&pending, 500), 109);
}

#[test]
fn a_refused_write_is_lost_only_to_a_later_write_not_its_own() {
    let mine = br#"{"node":"p1","client_id":"c"}"#.to_vec();
    let theirs = br#"{"node":"p2","client_id":"c"}"#.to_vec();
    let tried = vec![Some(mine.clone())];
    // The refusing server, or the one read, has not got revision 8 yet: a former leader
    // back from a partition with revision 1 for the key.
    assert_eq!(
        refusal(8, Some((1, Some(&theirs))), &tried),
        Refusal::Behind
    );
    assert_eq!(refusal(8, Some((8, Some(&mine))), &tried), Refusal::Behind);
    assert_eq!(refusal(8, None, &tried), Refusal::Behind);
    // Written over after 8 by another node.
    assert_eq!(refusal(8, Some((9, Some(&theirs))), &tried), Refusal::Lost);
    assert_eq!(refusal(8, Some((9, None)), &tried), Refusal::Lost);
    assert_eq!(refusal(8, Some((9, Some(&theirs))), &[]), Refusal::Lost);
    // The real leader took the attempt the former one refused.
    assert_eq!(
        refusal(8, Some((9, Some(&mine))), &tried),
        Refusal::Ours(9, false)
    );
    assert_eq!(refusal(8, Some((9, None)), &[None]), Refusal::Ours(9, true));
}

#[test]
fn subscriptions_keep_their_options() {
    let sub = Subscription {
        options: SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::SendIfNew,
        },
        id: Some(7),
    };
    let kept = KeptSub::of("$share/g/a/+", &sub);
    let json = serde_json::to_string(&kept).unwrap_or_default();
    let back: KeptSub = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back.subscription(), Some(("$share/g/a/+".to_string(), sub)));
}
