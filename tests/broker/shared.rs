//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 section 4.8.2; Tern also accepts them
//! from v3.1.1 clients): one member per message, spreading, redistribution of unacknowledged
//! messages when a member's session ends, invalid share names and No Local.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{TestBroker, WAIT};
use crate::support::*;
use crate::wire::*;

/// Reads from every client in turn, acknowledging QoS 1, until `total` PUBLISHes have arrived in
/// all; returns the one-byte payloads each client received. Clients in `no_ack` are not acked.
async fn gather(members: &mut [RawClient], v: u8, total: usize, no_ack: &[usize]) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = vec![Vec::new(); members.len()];
    while got.iter().map(Vec::len).sum::<usize>() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: only {got:?} of {total} arrived",
            vname(v)
        );
        for (i, m) in members.iter_mut().enumerate() {
            if let Event::Packet(first, body) = m.next_event(Duration::from_millis(50)).await {
                let r = parse_publish(v, first, &body);
                if !no_ack.contains(&i) {
                    ack_received(m, &r).await;
                }
                got[i].push(r.payload[0]);
            }
        }
    }
    got
}

/// (v5 4.8.2) Each message published to a shared subscription goes to exactly one member of
/// the group, and successive messages are spread over the members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_delivers_each_message_to_one_member() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let filter = format!("$share/g/sh/{v}");
        let mut members = Vec::new();
        for i in 0..2 {
            let mut m = RawClient::connected(b.addr, v, &format!("m{v}-{i}")).await;
            sub_all(&mut m, v, &[&filter], 1).await;
            members.push(m);
        }
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        for i in 0..20u8 {
            pub_msg(&mut publ, v, &format!("sh/{v}"), 1, &[i]).await;
        }
        let got = gather(&mut members, v, 20, &[]).await;
        for m in &mut members {
            expect_nothing(m).await;
        }
        let mut all: Vec<u8> = got.concat();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<u8>>(), "{}: each once", vname(v));
        assert!(
            got.iter().all(|g| !g.is_empty()),
            "{}: both members get some: {got:?}",
            vname(v)
        );
        for g in &got {
            assert!(
                g.windows(2).all(|w| w[0] < w[1]),
                "{}: order per member",
                vname(v)
            );
        }
    }
    b.stop().await;
}

/// A shared subscription and a normal subscription to the same topic each get their copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_and_normal_subscriptions_both_receive() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let mut shared = RawClient::connected(b.addr, v, &format!("s{v}")).await;
        sub_all(&mut shared, v, &["$share/grp/sn/t"], 1).await;
        let mut normal = RawClient::connected(b.addr, v, &format!("n{v}")).await;
        sub_all(&mut normal, v, &["sn/t"], 1).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        pub_msg(&mut publ, v, "sn/t", 1, b"m").await;
        assert_eq!(recv_acked(&mut shared, v).await.payload, b"m");
        assert_eq!(recv_acked(&mut normal, v).await.payload, b"m");
        expect_nothing(&mut shared).await;
    }
    b.stop().await;
}

/// (v5 4.8.2 "SHOULD send the Application Message to another Client") QoS 1
/// messages in flight to a member whose session ends before acknowledging them are delivered to the
/// remaining member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_unacked_messages_redistributed_when_member_leaves() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let filter = format!("$share/g/rd/{v}");
        let mut members = Vec::new();
        for i in 0..2 {
            // Clean session / no session expiry: the session ends with the connection.
            let mut m = RawClient::connected(b.addr, v, &format!("r{v}-{i}")).await;
            sub_all(&mut m, v, &[&filter], 1).await;
            members.push(m);
        }
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        for i in 0..10u8 {
            pub_msg(&mut publ, v, &format!("rd/{v}"), 1, &[i]).await;
        }
        // Member 0 never acknowledges.
        let got = gather(&mut members, v, 10, &[0]).await;
        assert!(
            !got[0].is_empty(),
            "{}: member 0 got some: {got:?}",
            vname(v)
        );
        let stranded = got[0].clone();
        let mut remaining = members.pop().expect("two members");
        drop(members); // member 0's socket closes without DISCONNECT

        let mut redelivered = Vec::new();
        while redelivered.len() < stranded.len() {
            let r = recv_acked(&mut remaining, v).await;
            redelivered.push(r.payload[0]);
        }
        redelivered.sort_unstable();
        assert_eq!(
            redelivered,
            stranded,
            "{}: stranded messages move",
            vname(v)
        );
        expect_nothing(&mut remaining).await;
    }
    b.stop().await;
}

/// [MQTT-4.8.2-1] [MQTT-4.8.2-2] A share name must be at least one character, contain no wildcard,
/// and be followed by `/` and a filter: a SUBSCRIBE with such a filter is a protocol error
/// (DISCONNECT 0x82, nothing of it granted); a valid share on its own is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_invalid_share_names_refused() {
    let b = TestBroker::start().await;
    for bad in ["$share//t", "$share/g", "$share/g+/t"] {
        let mut c = RawClient::connected(b.addr, V5, "bad-share").await;
        c.send(&subscribe(V5, 1, &[(bad, 1), ("$share/g/t", 1)], &[]))
            .await;
        c.expect_disconnect(0x82).await;
    }
    let mut c = RawClient::connected(b.addr, V5, "good-share").await;
    let reasons = sub_raw(&mut c, V5, &[("$share/g/t", 1)], &[]).await;
    assert_eq!(reasons, [0x01], "the valid share is granted");
    c.ping().await;
    b.stop().await;
}

/// [MQTT-4.8.2-1] [MQTT-4.8.2-2] A v3.1.1 SUBSCRIBE with an invalid share name closes the
/// connection [MQTT-4.8.0-1].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_invalid_share_names_refused_or_closed() {
    let b = TestBroker::start().await;
    for filter in ["$share//t", "$share/g", "$share/g#/t"] {
        let mut s = RawClient::connected(b.addr, V311, "bad-share3").await;
        s.send(&subscribe(V311, 3, &[(filter, 1)], &[])).await;
        s.expect_disconnect_or_close(V311, 0).await;
    }
    b.stop().await;
}

/// [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_local_on_shared_subscription_is_protocol_error() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connected(b.addr, V5, "nl-share").await;
    c.send(&subscribe(V5, 9, &[("$share/g/t", 0x04 | 1)], &[]))
        .await;
    c.expect_disconnect(0x82).await;
    b.stop().await;
}

/// Members of different groups each get every message; counts per group are independent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_share_group_gets_every_message() {
    let b = TestBroker::start().await;
    let v = V5;
    let mut members = Vec::new();
    for (i, g) in ["g1", "g1", "g2"].iter().enumerate() {
        let mut m = RawClient::connected(b.addr, v, &format!("eg{i}")).await;
        sub_all(&mut m, v, &[&format!("$share/{g}/eg/t")], 1).await;
        members.push(m);
    }
    let mut publ = RawClient::connected(b.addr, v, "egp").await;
    for i in 0..6u8 {
        pub_msg(&mut publ, v, "eg/t", 1, &[i]).await;
    }
    let got = gather(&mut members, v, 12, &[]).await;
    let mut per_group: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    per_group.entry("g1").or_default().extend(&got[0]);
    per_group.entry("g1").or_default().extend(&got[1]);
    per_group.entry("g2").or_default().extend(&got[2]);
    for (g, mut all) in per_group {
        all.sort_unstable();
        assert_eq!(all, (0..6).collect::<Vec<u8>>(), "group {g}");
    }
    b.stop().await;
}
