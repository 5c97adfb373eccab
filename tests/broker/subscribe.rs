//! Topic matching and subscription management: `+` and `#`, `$`-topics, overlapping
//! subscriptions (v5 Subscription Identifiers), UNSUBSCRIBE and invalid filters.
//! Shared subscriptions are in shared.rs, retained messages in retain.rs.

use crate::harness::TestBroker;
use crate::support::*;
use crate::wire::*;

const FENCE: &[u8] = b"fence";
const FENCE_TOPIC: &str = "zz/fence/x/y";

/// Subscribes one client per filter (plus [`FENCE_TOPIC`]), publishes every topic in `topics` and
/// the fence, and returns for each filter the topics it received, in order.
async fn deliveries(b: &TestBroker, v: u8, filters: &[&str], topics: &[&str]) -> Vec<Vec<String>> {
    let mut subs = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let mut s = RawClient::connected(b.addr, v, &format!("m{v}-{i}")).await;
        sub_all(&mut s, v, &[f, FENCE_TOPIC], 1).await;
        subs.push(s);
    }
    let mut publ = RawClient::connected(b.addr, v, &format!("mp{v}")).await;
    for t in topics {
        pub_msg(&mut publ, v, t, 1, t.as_bytes()).await;
    }
    pub_msg(&mut publ, v, FENCE_TOPIC, 1, FENCE).await;
    let mut out = Vec::new();
    for s in &mut subs {
        let got = collect_until(s, v, FENCE).await;
        out.push(got.into_iter().map(|r| r.topic).collect());
    }
    out
}

/// [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.7.1-3] `+` matches exactly one (possibly empty) level,
/// `#` any number of trailing levels including the parent (`a/#` matches `a`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_levels() {
    let b = TestBroker::start().await;
    let topics = [
        "a", "a/b", "a/b/c", "a/x/c", "a//c", "a/b/c/d", "ab", "b/a", "/a", "a/",
    ];
    let cases: [(&str, &[&str]); 6] = [
        ("a/+/c", &["a/b/c", "a/x/c", "a//c"]),
        (
            "a/#",
            &["a", "a/b", "a/b/c", "a/x/c", "a//c", "a/b/c/d", "a/"],
        ),
        ("+/+", &["a/b", "b/a", "/a", "a/"]),
        ("+", &["a", "ab"]),
        ("a/b/c", &["a/b/c"]),
        ("+/b/#", &["a/b", "a/b/c", "a/b/c/d"]),
    ];
    for v in VERSIONS {
        let filters: Vec<&str> = cases.iter().map(|c| c.0).collect();
        let got = deliveries(&b, v, &filters, &topics).await;
        for ((filter, want), got) in cases.iter().zip(got) {
            assert_eq!(&got, want, "{}: filter {filter}", vname(v));
        }
    }
    b.stop().await;
}

/// [MQTT-4.7.2-1] Filters starting with a wildcard do not match topics starting with `$`; a filter
/// starting with the same `$` level does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_topics_not_matched_by_leading_wildcards() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let got = deliveries(
            &b,
            v,
            &["#", "+/x", "+/+/x/y", "$foo/#", "$foo/+"],
            &["$foo/x", "bar/x"],
        )
        .await;
        assert_eq!(got[0], ["bar/x"], "{}: #", vname(v));
        assert_eq!(got[1], ["bar/x"], "{}: +/x", vname(v));
        assert!(got[2].is_empty(), "{}: +/+/x/y got {:?}", vname(v), got[2]);
        assert_eq!(got[3], ["$foo/x"], "{}: $foo/#", vname(v));
        assert_eq!(got[4], ["$foo/x"], "{}: $foo/+", vname(v));
    }
    b.stop().await;
}

/// [MQTT-3.3.5-1] (v3.1.1) / [MQTT-3.3.4-2] (v5) A message matching several subscriptions of one
/// client is delivered once, at the highest granted QoS (Tern sends one copy; the spec allows more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_delivered_once_at_highest_qos() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let mut s = RawClient::connected(b.addr, v, &format!("ov{v}")).await;
        sub_raw(&mut s, v, &[("ov/+", 0), ("ov/b", 2), ("ov/#", 1)], &[]).await;
        sub_all(&mut s, v, &[FENCE_TOPIC], 0).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("ovp{v}")).await;
        pub_msg(&mut publ, v, "ov/b", 2, b"x").await;
        pub_msg(&mut publ, v, "ov/c", 2, b"y").await;
        pub_msg(&mut publ, v, FENCE_TOPIC, 0, FENCE).await;
        let got = collect_until(&mut s, v, FENCE).await;
        assert_eq!(payloads(&got), ["x", "y"], "{}: one copy each", vname(v));
        assert_eq!(got[0].qos, 2, "{}: max of 0, 2, 1", vname(v));
        assert_eq!(got[1].qos, 1, "{}: max of 0, 1", vname(v));
    }
    b.stop().await;
}

/// [MQTT-3.3.4-4] The single copy sent for overlapping subscriptions carries the Subscription
/// Identifier of every matching subscription that has one; a subscription without
/// one adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_overlapping_delivery_carries_every_subscription_identifier() {
    let b = TestBroker::start().await;
    let mut s = RawClient::connected(b.addr, V5, "sid").await;
    sub_raw(
        &mut s,
        V5,
        &[("sid/+", 1)],
        &prop_varint(SUBSCRIPTION_ID, 1),
    )
    .await;
    sub_raw(
        &mut s,
        V5,
        &[("sid/b", 1)],
        &prop_varint(SUBSCRIPTION_ID, 300),
    )
    .await;
    sub_raw(&mut s, V5, &[("sid/#", 1)], &[]).await;
    let mut publ = RawClient::connected(b.addr, V5, "sidp").await;
    pub_msg(&mut publ, V5, "sid/b", 1, b"both").await;
    pub_msg(&mut publ, V5, "sid/c", 1, b"one").await;
    pub_msg(&mut publ, V5, "sid/c/d", 1, FENCE).await;
    let got = collect_until(&mut s, V5, FENCE).await;
    assert_eq!(payloads(&got), ["both", "one"]);
    let mut ids: Vec<u32> = all_props(&got[0].props, SUBSCRIPTION_ID)
        .iter()
        .map(PropValue::int)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 300]);
    let ids: Vec<u32> = all_props(&got[1].props, SUBSCRIPTION_ID)
        .iter()
        .map(PropValue::int)
        .collect();
    assert_eq!(ids, [1]);
    b.stop().await;
}

/// [MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-4] UNSUBSCRIBE stops delivery and is answered by
/// UNSUBACK with the same packet id; v5 reports 0x11 for a filter that had no subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let mut s = RawClient::connected(b.addr, v, &format!("un{v}")).await;
        sub_all(&mut s, v, &["un/a", "un/b"], 1).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("unp{v}")).await;
        pub_msg(&mut publ, v, "un/a", 1, b"a1").await;
        assert_eq!(recv_acked(&mut s, v).await.payload, b"a1");

        s.send(&unsubscribe(v, 42, &["un/a", "un/none"], &[])).await;
        let (pkid, reasons) = parse_unsuback(v, &s.recv_expect(UNSUBACK).await);
        assert_eq!(pkid, 42, "{}", vname(v));
        if v == V5 {
            assert_eq!(reasons, [0x00, 0x11], "v5 UNSUBACK reasons");
        } else {
            assert!(reasons.is_empty(), "v3.1.1 UNSUBACK has no payload");
        }
        pub_msg(&mut publ, v, "un/a", 1, b"a2").await;
        pub_msg(&mut publ, v, "un/b", 1, b"b").await;
        let r = recv_acked(&mut s, v).await;
        assert_eq!(r.payload, b"b", "{}: un/a no longer delivered", vname(v));
        expect_nothing(&mut s).await;
    }
    b.stop().await;
}

/// [MQTT-4.7.1-1] [MQTT-4.7.1-2] (v5 3.9.3) A filter with a wildcard not alone in its level or
/// `#` not last makes the SUBSCRIBE malformed (DISCONNECT 0x81); a well-formed filter the
/// broker declines (more levels than `max_topic_levels`) is refused with SUBACK 0x8F while
/// the other filters of the same SUBSCRIBE are granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_invalid_filters_refused_per_filter() {
    let b = TestBroker::start_with(|c| c.limits.max_topic_levels = 3).await;
    for bad in ["a/b+", "a/#/b", "a/+x/c"] {
        let mut s = RawClient::connected(b.addr, V5, "inv").await;
        s.send(&subscribe(V5, 1, &[("ok/t", 1), (bad, 1)], &[]))
            .await;
        s.expect_disconnect(0x81).await;
    }
    let mut s = RawClient::connected(b.addr, V5, "inv").await;
    let reasons = sub_raw(
        &mut s,
        V5,
        &[("a/b/c/d", 1), ("ok/t", 1), ("+/+/+/#", 0), ("ok/#", 2)],
        &[],
    )
    .await;
    assert_eq!(reasons, [0x8F, 0x01, 0x8F, 0x02]);
    let mut publ = RawClient::connected(b.addr, V5, "invp").await;
    pub_msg(&mut publ, V5, "ok/t", 1, b"granted").await;
    let r = recv_acked(&mut s, V5).await;
    assert_eq!(r.payload, b"granted");
    assert_eq!(r.qos, 1);
    s.ping().await;
    b.stop().await;
}

/// [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-4.8.0-1] A v3.1.1 SUBSCRIBE with an invalid filter is
/// malformed: the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_invalid_filter_refused_or_closed() {
    let b = TestBroker::start().await;
    for filter in ["a/b+", "a/#/b", "#/a", "a+/b"] {
        let mut s = RawClient::connected(b.addr, V311, "inv3").await;
        s.send(&subscribe(V311, 3, &[(filter, 1)], &[])).await;
        s.expect_disconnect_or_close(V311, 0).await;
    }
    b.stop().await;
}

/// [MQTT-3.8.4-3] A SUBSCRIBE with a filter identical to an existing subscription replaces it: the
/// new QoS applies to later deliveries and the message is not duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribe_replaces_subscription_qos() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("re/{v}");
        let mut s = RawClient::connected(b.addr, v, &format!("re{v}")).await;
        sub_all(&mut s, v, &[&topic], 2).await;
        sub_all(&mut s, v, &[&topic], 0).await;
        let mut publ = RawClient::connected(b.addr, v, &format!("rep{v}")).await;
        pub_msg(&mut publ, v, &topic, 2, b"m").await;
        pub_msg(&mut publ, v, &topic, 2, FENCE).await;
        let got = collect_until(&mut s, v, FENCE).await;
        assert_eq!(payloads(&got), ["m"], "{}: one subscription", vname(v));
        assert_eq!(got[0].qos, 0, "{}: the new QoS applies", vname(v));
    }
    b.stop().await;
}

/// (v5 3.8.2.1.2) A retained message sent because of a new subscription carries that
/// subscription's Subscription Identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retained_on_subscribe_carries_subscription_identifier() {
    let b = TestBroker::start().await;
    let mut publ = RawClient::connected(b.addr, V5, "sidr-p").await;
    send_flow(
        &mut publ,
        Publish::new(V5, "sidr/t", b"kept").qos(1, 0).retain(true),
    )
    .await;
    let mut s = RawClient::connected(b.addr, V5, "sidr").await;
    s.send(&subscribe(
        V5,
        8,
        &[("sidr/#", 1)],
        &prop_varint(SUBSCRIPTION_ID, 77),
    ))
    .await;
    let mut got = None;
    while got.is_none() {
        let (first, body) = s.recv_packet().await;
        if first != SUBACK {
            got = Some(parse_publish(V5, first, &body));
        }
    }
    let r = got.expect("loop ends with a PUBLISH");
    assert_eq!(r.payload, b"kept");
    assert!(r.retain);
    assert_eq!(r.prop(SUBSCRIPTION_ID), Some(&PropValue::Varint(77)));
    b.stop().await;
}
