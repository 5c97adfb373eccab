//! Retained messages: store, replace, delete, delivery on subscribe with RETAIN=1, RETAIN cleared
//! on live delivery (v5: Retain As Published), v5 Retain Handling, and v5 No Local.
//! Retained wills are in will.rs.

use crate::harness::TestBroker;
use crate::support::*;
use crate::wire::*;

const FENCE: &[u8] = b"fence";

/// Publishes a retained fence message on `fence/{tag}` so [`on_subscribe`] can tell when the
/// retained messages for a subscription have all arrived.
async fn retain_fence(publ: &mut RawClient, v: u8, tag: &str) {
    send_flow(
        publ,
        Publish::new(v, &format!("fence/{tag}"), FENCE)
            .qos(1, 0)
            .retain(true),
    )
    .await;
}

/// Subscribes `c` to `filter` with `opts`, then to `fence/{tag}`, and returns the PUBLISHes that
/// arrived before the fence: the retained messages sent for the subscription. Retained messages may
/// arrive before or after each SUBACK.
async fn on_subscribe(
    c: &mut RawClient,
    v: u8,
    filter: &str,
    opts: u8,
    tag: &str,
) -> Vec<Received> {
    c.send(&subscribe(v, 101, &[(filter, opts)], &[])).await;
    c.send(&subscribe(v, 102, &[(&format!("fence/{tag}"), 1)], &[]))
        .await;
    let mut subacks = Vec::new();
    let mut got = Vec::new();
    let mut fenced = false;
    while !fenced || subacks.len() < 2 {
        let (first, body) = c.recv_packet().await;
        if first == SUBACK {
            let (pkid, reasons) = parse_suback(v, &body);
            assert!(
                reasons[0] < 0x80,
                "subscription {pkid} refused: {reasons:02x?}"
            );
            subacks.push(pkid);
            continue;
        }
        let r = parse_publish(v, first, &body);
        assert!(r.qos < 2, "helper only acks QoS 0/1");
        if r.qos == 1 {
            c.send(&puback(r.pkid)).await;
        }
        if r.payload == FENCE {
            fenced = true;
        } else {
            assert!(!fenced, "retained message after the fence: {r:?}");
            got.push(r);
        }
    }
    assert_eq!(subacks, [101, 102], "SUBACKs in order");
    got
}

async fn publish_retained(publ: &mut RawClient, v: u8, topic: &str, payload: &[u8]) {
    send_flow(publ, Publish::new(v, topic, payload).qos(1, 0).retain(true)).await;
}

/// [MQTT-3.3.1-5] [MQTT-3.3.1-8] (v3.1.1) / [MQTT-3.3.1-5] [MQTT-3.3.1-9] (v5) A retained message
/// is stored, replaced by the next retained message on the topic, and sent with RETAIN=1 to new
/// subscribers; [MQTT-3.3.1-10] [MQTT-3.3.1-11] (v3.1.1) / [MQTT-3.3.1-6] [MQTT-3.3.1-7] (v5) an empty
/// retained payload deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_stored_replaced_and_deleted() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("rt/{v}");
        let tag = format!("{v}");
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        retain_fence(&mut publ, v, &tag).await;

        publish_retained(&mut publ, v, &topic, b"one").await;
        let mut s1 = RawClient::connected(b.addr, v, &format!("s1-{v}")).await;
        let got = on_subscribe(&mut s1, v, &topic, 1, &tag).await;
        assert_eq!(payloads(&got), ["one"], "{}", vname(v));
        assert!(got[0].retain, "{}: RETAIN=1 on subscribe", vname(v));
        assert_eq!(got[0].topic, topic);

        publish_retained(&mut publ, v, &topic, b"two").await;
        let live = recv_acked(&mut s1, v).await;
        assert_eq!(live.payload, b"two");
        let mut s2 = RawClient::connected(b.addr, v, &format!("s2-{v}")).await;
        let got = on_subscribe(&mut s2, v, &topic, 1, &tag).await;
        assert_eq!(payloads(&got), ["two"], "{}: replaced", vname(v));
        assert!(got[0].retain);

        publish_retained(&mut publ, v, &topic, b"").await;
        let live = recv_acked(&mut s1, v).await;
        assert!(
            live.payload.is_empty(),
            "{}: the empty message is still delivered",
            vname(v)
        );
        let mut s3 = RawClient::connected(b.addr, v, &format!("s3-{v}")).await;
        let got = on_subscribe(&mut s3, v, &topic, 1, &tag).await;
        assert!(got.is_empty(), "{}: deleted, got {got:?}", vname(v));
    }
    b.stop().await;
}

/// [MQTT-3.3.1-5] A wildcard subscription receives every matching retained message, each with
/// RETAIN=1, at min(stored QoS, granted QoS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscription_receives_all_matching_retained() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let tag = format!("w{v}");
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        retain_fence(&mut publ, v, &tag).await;
        for (t, qos) in [("a", 0), ("b/c", 1), ("d", 2)] {
            let topic = format!("rw{v}/{t}");
            send_flow(
                &mut publ,
                Publish::new(v, &topic, t.as_bytes())
                    .qos(qos, 0)
                    .retain(true),
            )
            .await;
        }
        publish_retained(&mut publ, v, "other/a", b"no").await;
        let mut s = RawClient::connected(b.addr, v, &format!("s{v}")).await;
        let mut got = on_subscribe(&mut s, v, &format!("rw{v}/#"), 1, &tag).await;
        got.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert_eq!(payloads(&got), ["a", "b/c", "d"], "{}", vname(v));
        assert!(got.iter().all(|r| r.retain));
        let qos: Vec<u8> = got.iter().map(|r| r.qos).collect();
        assert_eq!(qos, [0, 1, 1], "{}: min(stored, granted)", vname(v));
    }
    b.stop().await;
}

/// [MQTT-3.3.1-9] (v3.1.1) / [MQTT-3.3.1-12] (v5) A retained PUBLISH forwarded to an existing
/// subscription has RETAIN=0; v5 [MQTT-3.3.1-13] with Retain As Published it keeps RETAIN=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_delivery_clears_retain_unless_retain_as_published() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("rl/{v}");
        let mut plain = RawClient::connected(b.addr, v, &format!("plain{v}")).await;
        sub_all(&mut plain, v, &[&topic], 1).await;
        let mut rap = RawClient::connected(b.addr, v, &format!("rap{v}")).await;
        if v == V5 {
            let r = sub_raw(&mut rap, v, &[(&topic, 0x08 | 1)], &[]).await;
            assert_eq!(r, [1]);
        }
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        publish_retained(&mut publ, v, &topic, b"r").await;
        pub_msg(&mut publ, v, &topic, 1, b"n").await;
        let got = [
            recv_acked(&mut plain, v).await,
            recv_acked(&mut plain, v).await,
        ];
        assert_eq!(payloads(&got), ["r", "n"]);
        assert!(
            !got[0].retain && !got[1].retain,
            "{}: RETAIN cleared",
            vname(v)
        );
        if v == V5 {
            let got = [recv_acked(&mut rap, v).await, recv_acked(&mut rap, v).await];
            assert_eq!(payloads(&got), ["r", "n"]);
            assert!(got[0].retain, "Retain As Published keeps RETAIN=1");
            assert!(!got[1].retain, "a non-retained message stays RETAIN=0");
        }
        publish_retained(&mut publ, v, &topic, b"").await;
    }
    b.stop().await;
}

/// v3.1.1 [MQTT-3.8.4-3] / v5 Retain Handling 0 [MQTT-3.3.1-9]: re-subscribing to an existing
/// subscription sends the retained messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribe_resends_retained_by_default() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("rr/{v}");
        let tag = format!("rr{v}");
        let mut publ = RawClient::connected(b.addr, v, &format!("p{v}")).await;
        retain_fence(&mut publ, v, &tag).await;
        publish_retained(&mut publ, v, &topic, b"kept").await;
        let mut s = RawClient::connected(b.addr, v, &format!("s{v}")).await;
        assert_eq!(
            payloads(&on_subscribe(&mut s, v, &topic, 1, &tag).await),
            ["kept"]
        );
        assert_eq!(
            payloads(&on_subscribe(&mut s, v, &topic, 1, &tag).await),
            ["kept"],
            "{}: re-subscribe",
            vname(v)
        );
    }
    b.stop().await;
}

/// [MQTT-3.3.1-10] Retain Handling 1 sends retained messages only when the subscription is new;
/// [MQTT-3.3.1-11] Retain Handling 2 never sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retain_handling_1_and_2() {
    let b = TestBroker::start().await;
    let v = V5;
    let mut publ = RawClient::connected(b.addr, v, "p").await;
    retain_fence(&mut publ, v, "rh").await;
    publish_retained(&mut publ, v, "rh/t", b"kept").await;

    let mut s = RawClient::connected(b.addr, v, "rh1").await;
    let got = on_subscribe(&mut s, v, "rh/t", 0x10 | 1, "rh").await;
    assert_eq!(payloads(&got), ["kept"], "RH=1, new subscription");
    let got = on_subscribe(&mut s, v, "rh/t", 0x10 | 1, "rh").await;
    assert!(got.is_empty(), "RH=1, existing subscription: {got:?}");

    let mut s = RawClient::connected(b.addr, v, "rh2").await;
    let got = on_subscribe(&mut s, v, "rh/t", 0x20 | 1, "rh").await;
    assert!(got.is_empty(), "RH=2, new subscription: {got:?}");
    let got = on_subscribe(&mut s, v, "rh/#", 0x20 | 1, "rh").await;
    assert!(got.is_empty(), "RH=2, wildcard: {got:?}");
    // The subscription itself works.
    pub_msg(&mut publ, v, "rh/t", 1, b"live").await;
    let got = collect_until(&mut s, v, b"live").await;
    assert!(got.is_empty());
    b.stop().await;
}

/// [MQTT-3.8.3-3] With No Local the server does not send a client its own messages; other
/// clients' messages still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_local_suppresses_own_messages() {
    let b = TestBroker::start().await;
    let mut me = RawClient::connected(b.addr, V5, "me").await;
    let r = sub_raw(&mut me, V5, &[("nl/t", 0x04 | 1)], &[]).await;
    assert_eq!(r, [1]);
    let mut echo = RawClient::connected(b.addr, V5, "echo").await;
    sub_all(&mut echo, V5, &["nl/t"], 1).await;

    // `me` publishes, then `other`: only the latter comes back to `me`.
    send_flow(&mut me, Publish::new(V5, "nl/t", b"mine").qos(1, 0)).await;
    assert_eq!(recv_acked(&mut echo, V5).await.payload, b"mine");
    let mut other = RawClient::connected(b.addr, V5, "other").await;
    pub_msg(&mut other, V5, "nl/t", 1, b"theirs").await;
    let r = recv_acked(&mut me, V5).await;
    assert_eq!(r.payload, b"theirs", "own message not echoed");
    expect_nothing(&mut me).await;
    b.stop().await;
}

/// Without No Local a client receives its own messages (v3.1.1 has no No Local).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_messages_echoed_without_no_local() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let mut me = RawClient::connected(b.addr, v, &format!("me{v}")).await;
        sub_all(&mut me, v, &["echo/t"], 0).await;
        me.send(&publish(v, "echo/t", 0, 0, b"self")).await;
        assert_eq!(me.recv_publish(v).await.payload, b"self", "{}", vname(v));
    }
    b.stop().await;
}
