//! A subscription's retained messages queued as one mailbox marker and walked, in its place,
//! through the broker's [`crate::broker::Feed`] as the mailbox drains.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::message;
use crate::broker::{BrokerState, Mailbox, Queued, RetainedStream, SubscribeResult, Wanted};
use crate::config::Config;
use crate::protocol::{QoS, SubscriptionOptions};
use crate::session::{Delivery, Session};
use crate::topic::TopicFilter;

fn broker(retained: &[&str], qos: QoS) -> BrokerState {
    let state = BrokerState::new(Config::default());
    for t in retained {
        state.publish(message(t, qos, true, b"r"), None);
    }
    state
}

fn client(limit: usize) -> (Session, Arc<Mailbox>) {
    let m = Arc::new(Mailbox::new(limit, false));
    m.set_online(true);
    (Session::new("c".into(), 0, 100), m)
}

fn subscribe(
    state: &BrokerState,
    session: &mut Session,
    m: &Arc<Mailbox>,
    filter: &str,
    qos: QoS,
) -> RetainedStream {
    let options = SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    };
    match state.subscribe(session, m, wanted(&filter.into(), options, Some(7)), true) {
        SubscribeResult::Granted(_, Some(crate::broker::After::Retained(s))) => s,
        other => panic!("expected retained messages: {other:?}"),
    }
}

fn drain(
    state: &BrokerState,
    session: &Session,
    m: &Mailbox,
    max: usize,
    window: usize,
) -> Vec<Delivery> {
    let mut out = Vec::new();
    m.drain_into(&mut out, max, window, &mut state.feed(session));
    out
}

/// Topic, RETAIN flag and QoS of each delivery.
fn seen(got: &[Delivery]) -> Vec<(String, bool, u8)> {
    got.iter()
        .map(|d| (d.msg.topic().to_string(), d.retain, d.qos as u8))
        .collect()
}

/// Whether the mailbox is signalled (consumes the signal).
fn signalled(m: &Mailbox) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(m.notified()).poll(&mut cx) == Poll::Ready(())
}

fn wanted(filter: &TopicFilter, options: SubscriptionOptions, id: Option<u32>) -> Wanted<'_> {
    Wanted {
        filter,
        options,
        id,
        weight: None,
    }
}

fn plain(topic: &str) -> Delivery {
    Delivery::new(
        message(topic, QoS::AtMostOnce, false, b"d"),
        QoS::AtMostOnce,
        false,
    )
}

/// [MQTT-3.3.1-6] (v3.1.1) / [MQTT-3.3.1-9] (v5) Every matching retained message goes out,
/// whatever the queue limit, in the place of the SUBACK: what was queued before goes first,
/// what is published after waits behind, and a message retained after the stream began comes
/// only live (once, after the retained ones).
#[test]
fn retained_marker_keeps_its_place_and_ignores_the_limit() {
    let topics: Vec<String> = (0..10).map(|i| format!("a/{i}")).collect();
    let state = broker(
        &topics.iter().map(String::as_str).collect::<Vec<_>>(),
        QoS::AtMostOnce,
    );
    let (mut session, m) = client(4);
    m.push(plain("before")).expect("room");
    let stream = subscribe(&state, &mut session, &m, "a/#", QoS::AtLeastOnce);
    m.push_retained(stream);
    assert_eq!(m.len(), 2, "ten retained messages are one entry");
    state.publish(message("a/2", QoS::AtMostOnce, false, b"live"), None);
    state.publish(message("a/new", QoS::AtMostOnce, true, b"live"), None);
    let mut got = Vec::new();
    while !m.is_empty() {
        let step = drain(&state, &session, &m, 3, 100);
        assert!(!step.is_empty(), "progress on every drain");
        got.extend(step);
    }
    let mut want = vec![("before".to_string(), false, 0)];
    want.extend(topics.iter().map(|t| (t.clone(), true, 0)));
    want.push(("a/2".into(), false, 0));
    want.push(("a/new".into(), false, 0));
    assert_eq!(seen(&got), want);
    assert!(got[1..11]
        .iter()
        .all(|d| d.sub_ids() == [7] && d.seq.is_none()));
}

/// A full window holds the stream before a QoS 1 message without signalling (the client's
/// acknowledgements bring the connection back); a stream stopped by the batch size keeps the
/// mailbox signalled so the connection comes back on its own.
#[test]
fn stream_waits_for_the_window_and_comes_back_after_a_batch() {
    let state = broker(&["q/1", "q/2", "q/3", "q/4", "q/5"], QoS::ExactlyOnce);
    let (mut session, m) = client(100);
    let stream = subscribe(&state, &mut session, &m, "q/+", QoS::AtLeastOnce);
    m.push_retained(stream);
    assert!(signalled(&m));
    let got = drain(&state, &session, &m, 100, 2);
    assert_eq!(
        seen(&got),
        [("q/1".into(), true, 1), ("q/2".into(), true, 1)],
        "QoS min(2, granted 1), within the window"
    );
    assert!(
        !signalled(&m),
        "blocked by the window: nothing to come back for"
    );
    assert!(drain(&state, &session, &m, 100, 0).is_empty());
    assert!(!m.is_empty(), "the stream is still queued");
    assert_eq!(
        seen(&drain(&state, &session, &m, 1, 10)),
        [("q/3".into(), true, 1)]
    );
    assert!(signalled(&m), "stopped by the batch: come back");
    assert_eq!(drain(&state, &session, &m, 100, 10).len(), 2);
    assert!(m.is_empty());
}

/// A stream taken out with everything queued (a session handed over, or resumed without the
/// store) and put back keeps its place and its cursor.
#[test]
fn take_all_and_push_front_all_keep_the_stream() {
    let state = broker(&["t/1", "t/2", "t/3"], QoS::AtMostOnce);
    let (mut session, m) = client(100);
    m.push(plain("first")).expect("room");
    let stream = subscribe(&state, &mut session, &m, "t/#", QoS::AtMostOnce);
    m.push_retained(stream);
    m.push(plain("last")).expect("room");
    assert_eq!(
        seen(&drain(&state, &session, &m, 2, 10)),
        [("first".into(), false, 0), ("t/1".into(), true, 0)]
    );
    let taken = m.take_all();
    assert!(matches!(taken[..], [Queued::Retained(_), Queued::Ready(_)]));
    assert!(m.is_empty());
    m.push_front_all(taken);
    assert_eq!(
        seen(&drain(&state, &session, &m, 100, 10)),
        [
            ("t/2".into(), true, 0),
            ("t/3".into(), true, 0),
            ("last".into(), false, 0)
        ]
    );
    assert!(m.is_empty());
}

/// Nothing retained matches: no marker at all.
#[test]
fn no_match_no_stream() {
    let state = broker(&["a/1"], QoS::AtMostOnce);
    let (mut session, m) = client(10);
    let options = SubscriptionOptions::default();
    for filter in ["b/#", "a/2", "a/1/+"] {
        let r = state.subscribe(
            &mut session,
            &m,
            wanted(&filter.into(), options, None),
            true,
        );
        assert!(matches!(r, SubscribeResult::Granted(_, None)), "{filter}");
    }
}
