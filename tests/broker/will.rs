//! Will messages: published when the connection ends without DISCONNECT (or with v5 reason 0x04),
//! discarded on normal DISCONNECT, QoS and RETAIN honoured, v5 Will Delay Interval against
//! reconnection and session expiry, v5 will properties forwarded. Takeover is in takeover.rs.

use std::time::{Duration, Instant};

use crate::harness::{TestBroker, WAIT};
use crate::support::*;
use crate::wire::*;

/// A subscriber to `topic` at QoS 1.
async fn watcher(b: &TestBroker, v: u8, id: &str, topic: &str) -> RawClient {
    let mut s = RawClient::connected(b.addr, v, id).await;
    sub_all(&mut s, v, &[topic], 1).await;
    s
}

/// [MQTT-3.1.2-8] (v3.1.1) / [MQTT-3.1.2-8] (v5) The will is published when the network
/// connection closes without a DISCONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_published_on_abnormal_close() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("will/{v}");
        let mut s = watcher(&b, v, &format!("w{v}"), &topic).await;
        let c = Connect::new(v, &format!("dying{v}")).will(Will::new(&topic, b"gone"));
        let (client, _) = RawClient::handshake(b.addr, v, &c).await;
        drop(client);
        let r = recv_acked(&mut s, v).await;
        assert_eq!(r.topic, topic, "{}", vname(v));
        assert_eq!(r.payload, b"gone", "{}", vname(v));
        assert_eq!(r.qos, 0, "{}: will QoS 0", vname(v));
        assert!(!r.retain);
    }
    b.stop().await;
}

/// [MQTT-3.1.2-10] (v3.1.1) / [MQTT-3.14.4-3] (v5) A normal DISCONNECT discards the will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_not_published_on_normal_disconnect() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("will/{v}");
        let mut s = watcher(&b, v, &format!("w{v}"), &topic).await;
        let c = Connect::new(v, &format!("polite{v}")).will(Will::new(&topic, b"gone"));
        let (mut client, _) = RawClient::handshake(b.addr, v, &c).await;
        client.send(&disconnect()).await;
        drop(client);
        expect_nothing(&mut s).await;
    }
    b.stop().await;
}

/// v5 3.14.2.1: DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_with_will_message_publishes_will() {
    let b = TestBroker::start().await;
    let mut s = watcher(&b, V5, "w", "will/x").await;
    let c = Connect::new(V5, "leaver").will(Will::new("will/x", b"bye"));
    let (mut client, _) = RawClient::handshake(b.addr, V5, &c).await;
    client.send(&disconnect_v5(0x04, &[])).await;
    let r = recv_acked(&mut s, V5).await;
    assert_eq!(r.payload, b"bye");
    drop(client);
    expect_nothing(&mut s).await;
    b.stop().await;
}

/// [MQTT-3.1.2-14] [MQTT-3.1.2-15] [MQTT-3.1.2-17] (v3.1.1) / [MQTT-3.1.2-15] (v5) The will is
/// published at its QoS, and with Will Retain it is stored as a retained message that later
/// subscribers receive with RETAIN=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_qos_and_retain_honoured() {
    let b = TestBroker::start().await;
    for v in VERSIONS {
        let topic = format!("willr/{v}");
        let mut s = RawClient::connected(b.addr, v, &format!("w{v}")).await;
        sub_all(&mut s, v, &[&topic], 2).await;
        let mut will = Will::new(&topic, b"retained-will");
        will.qos = 1;
        will.retain = true;
        let c = Connect::new(v, &format!("dying{v}")).will(will);
        let (client, _) = RawClient::handshake(b.addr, v, &c).await;
        drop(client);
        let r = recv_acked(&mut s, v).await;
        assert_eq!(r.payload, b"retained-will");
        assert_eq!(r.qos, 1, "{}: will QoS 1", vname(v));
        assert!(!r.retain, "{}: live delivery has RETAIN=0", vname(v));

        let mut later = RawClient::connected(b.addr, v, &format!("later{v}")).await;
        later.send(&subscribe(v, 5, &[(&topic, 1)], &[])).await;
        let mut got = None;
        while got.is_none() {
            let (first, body) = later.recv_packet().await;
            if first != SUBACK {
                got = Some(parse_publish(v, first, &body));
            }
        }
        let r = got.expect("loop ends with a PUBLISH");
        assert_eq!(r.payload, b"retained-will", "{}", vname(v));
        assert!(r.retain, "{}: retained will has RETAIN=1", vname(v));
        assert_eq!(r.qos, 1);
    }
    b.stop().await;
}

/// A v5 CONNECT with a will carrying `will_props`, Session Expiry `expiry` and Clean Start `clean`.
fn delayed_will_connect(
    id: &str,
    topic: &str,
    will_delay: u32,
    expiry: u32,
    clean: bool,
) -> Connect {
    let mut will = Will::new(topic, b"late");
    will.props = prop_u32(WILL_DELAY, will_delay);
    Connect::new(V5, id)
        .clean(clean)
        .will(will)
        .props(prop_u32(SESSION_EXPIRY, expiry))
}

/// [MQTT-3.1.3-9] If the client reconnects to its session before the Will Delay Interval passes,
/// the will is not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_not_sent_if_client_reconnects_within_delay() {
    let b = TestBroker::start().await;
    let mut s = watcher(&b, V5, "w", "wd/t").await;
    let c = delayed_will_connect("delayed", "wd/t", 2, 60, true);
    let (client, _) = RawClient::handshake(b.addr, V5, &c).await;
    drop(client);
    // Reconnect at once to the same session (no will this time).
    let again = Connect::new(V5, "delayed")
        .clean(false)
        .props(prop_u32(SESSION_EXPIRY, 60));
    let (client, ack) = RawClient::handshake(b.addr, V5, &again).await;
    assert!(ack.session_present);
    // Well past the 2 s delay.
    s.expect_silence(Duration::from_secs(3)).await;
    drop(client);
    b.stop().await;
}

/// (v5 3.1.3.2.2) The will is published once the Will Delay Interval has passed,
/// not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_sent_after_delay() {
    let b = TestBroker::start().await;
    let mut s = watcher(&b, V5, "w", "wd/t").await;
    let c = delayed_will_connect("delayed", "wd/t", 2, 60, true);
    let (client, _) = RawClient::handshake(b.addr, V5, &c).await;
    let dropped = Instant::now();
    drop(client);
    let r = tokio::time::timeout(WAIT + Duration::from_secs(2), recv_acked(&mut s, V5))
        .await
        .expect("will within the delay plus WAIT");
    let waited = dropped.elapsed();
    assert_eq!(r.payload, b"late");
    assert!(
        waited >= Duration::from_millis(1800),
        "will sent after {waited:?}, before the 2 s delay"
    );
    b.stop().await;
}

/// v5 3.1.3.2.2: the will is published when the session ends if that comes before the Will Delay
/// Interval (Session Expiry 1 s < Will Delay 30 s; Session Expiry 0 ends it at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_sent_at_session_end_when_expiry_shorter_than_delay() {
    let b = TestBroker::start().await;
    let mut s = watcher(&b, V5, "w", "wd/t").await;
    for expiry in [1u32, 0] {
        let c = delayed_will_connect(&format!("short{expiry}"), "wd/t", 30, expiry, true);
        let (client, _) = RawClient::handshake(b.addr, V5, &c).await;
        let dropped = Instant::now();
        drop(client);
        let r = tokio::time::timeout(WAIT + Duration::from_secs(1), recv_acked(&mut s, V5))
            .await
            .expect("will at session end");
        assert_eq!(r.payload, b"late");
        let waited = dropped.elapsed();
        assert!(
            waited < Duration::from_secs(1 + u64::from(expiry)) + WAIT,
            "session expiry {expiry}: will after {waited:?}"
        );
        if expiry == 1 {
            assert!(
                waited >= Duration::from_millis(800),
                "will sent after {waited:?}, before the session ended"
            );
        }
    }
    b.stop().await;
}

/// [MQTT-3.1.3-10] [MQTT-3.3.2-4] [MQTT-3.3.2-20] Will properties (Payload Format Indicator,
/// Content Type, Response Topic, Correlation Data, User Properties in order) are forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_properties_forwarded() {
    let b = TestBroker::start().await;
    let mut s = watcher(&b, V5, "w", "wp/t").await;
    let mut will = Will::new("wp/t", b"{\"gone\":true}");
    will.props = [
        prop_u8(PAYLOAD_FORMAT, 1),
        prop_str(CONTENT_TYPE, "application/json"),
        prop_str(RESPONSE_TOPIC, "wp/reply"),
        prop_bin(CORRELATION_DATA, b"\x00\x01corr"),
        prop_user("k", "v1"),
        prop_user("k", "v2"),
        prop_user("a", "b"),
    ]
    .concat();
    let (client, _) =
        RawClient::handshake(b.addr, V5, &Connect::new(V5, "propsy").will(will)).await;
    drop(client);
    let r = recv_acked(&mut s, V5).await;
    assert_eq!(r.prop(PAYLOAD_FORMAT), Some(&PropValue::Byte(1)));
    assert_eq!(
        r.prop(CONTENT_TYPE),
        Some(&PropValue::Str("application/json".into()))
    );
    assert_eq!(
        r.prop(RESPONSE_TOPIC),
        Some(&PropValue::Str("wp/reply".into()))
    );
    assert_eq!(
        r.prop(CORRELATION_DATA),
        Some(&PropValue::Bin(b"\x00\x01corr".to_vec()))
    );
    let users = all_props(&r.props, USER_PROPERTY);
    let pair = |k: &str, v: &str| PropValue::Pair(k.into(), v.into());
    assert_eq!(users, [pair("k", "v1"), pair("k", "v2"), pair("a", "b")]);
    assert_eq!(
        r.prop(WILL_DELAY),
        None,
        "Will Delay is not a PUBLISH property"
    );
    b.stop().await;
}
