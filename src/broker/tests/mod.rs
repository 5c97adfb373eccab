use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::mailbox::{DropReason, Mailbox, Source, Streamed};
use super::retained::RetainedStream;
use super::router::{Router, Subscriber};
use crate::protocol::{Publish, PublishProperties, QoS, SubscriptionOptions};
use crate::session::{Delivery, Message, Seq};

fn message(topic: &str, qos: QoS, retain: bool, payload: &'static [u8]) -> Arc<Message> {
    let publish = Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        pkid: 0,
        payload: Bytes::from_static(payload),
        properties: PublishProperties::default().into(),
    };
    Arc::new(Message::new(publish, Some("pub".into()), Instant::now()))
}

/// A delivery on `t` at `qos`, not stored, nothing else set.
fn delivery(qos: QoS, payload: &'static [u8]) -> Delivery {
    Delivery::new(message("t", qos, false, payload), qos, false)
}

fn online_mailbox() -> Arc<Mailbox> {
    let m = Arc::new(Mailbox::new(100, false));
    m.set_online(true);
    m
}

fn sub(client: &str, mailbox: &Arc<Mailbox>, qos: QoS, id: Option<u32>) -> Subscriber {
    Subscriber {
        client_id: client.into(),
        mailbox: Arc::clone(mailbox),
        options: SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        },
        id,
    }
}

/// Reads stored messages back through its function; has no retained streams to step.
pub(super) struct Loads<F>(pub F);

impl<F: FnMut(u64) -> Option<Delivery>> Source for Loads<F> {
    fn load(&mut self, seq: u64) -> Option<Delivery> {
        (self.0)(seq)
    }

    fn stream_retained(
        &mut self,
        _: &mut RetainedStream,
        _: &mut Vec<Delivery>,
        _: usize,
        _: usize,
    ) -> Streamed {
        unreachable!("no retained stream queued in this test")
    }
}

fn drain(m: &Mailbox) -> Vec<Delivery> {
    let mut out = Vec::new();
    m.drain_into(&mut out, 1000, 1000, &mut Loads(|_| None));
    out
}

/// [MQTT-3.3.4-2] Overlapping subscriptions: one delivery, highest QoS, every identifier.
#[test]
fn overlapping_subscriptions_deliver_once() {
    let router = Router::default();
    let m = online_mailbox();
    router.subscribe("a/#", sub("c", &m, QoS::AtMostOnce, Some(1)));
    router.subscribe("a/+", sub("c", &m, QoS::ExactlyOnce, Some(2)));
    route(
        &router,
        &message("a/b", QoS::ExactlyOnce, false, b"x"),
        None,
    );
    let got = drain(&m);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let mut ids = got[0].sub_ids().to_vec();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
}

/// Delivered QoS is min(published, granted) [MQTT-3.8.4-8].
#[test]
fn qos_is_downgraded() {
    let router = Router::default();
    let m = online_mailbox();
    router.subscribe("t", sub("c", &m, QoS::AtLeastOnce, None));
    route(&router, &message("t", QoS::ExactlyOnce, false, b"x"), None);
    assert_eq!(drain(&m)[0].qos, QoS::AtLeastOnce);
}

/// No Local: a client's own messages are not sent back to it [MQTT-3.8.3-3].
#[test]
fn no_local_skips_publisher() {
    let router = Router::default();
    let m = online_mailbox();
    let mut s = sub("pub", &m, QoS::AtMostOnce, None);
    s.options.no_local = true;
    router.subscribe("t", s);
    route(&router, &message("t", QoS::AtMostOnce, false, b"x"), None);
    assert!(drain(&m).is_empty());
}

/// Unsubscribe stops delivery and reports whether the subscription existed.
#[test]
fn unsubscribe_stops_delivery() {
    let router = Router::default();
    let m = online_mailbox();
    router.subscribe("t", sub("c", &m, QoS::AtMostOnce, None));
    assert!(router.unsubscribe("t", "c"));
    assert!(!router.unsubscribe("t", "c"));
    route(&router, &message("t", QoS::AtMostOnce, false, b"x"), None);
    assert!(drain(&m).is_empty());
}

/// A client going dormant gives back its mailbox's room once it is drained (nothing kept from
/// a burst); what is still queued stays, in order, and is rung for.
#[test]
fn a_dormant_mailbox_keeps_no_room() {
    let bell = super::Bell::new();
    let m = online_mailbox();
    for p in [&b"a"[..], b"b"] {
        m.push(delivery(QoS::AtLeastOnce, p)).expect("room");
    }
    let mut out = Vec::new();
    m.drain_into(&mut out, 1, 10, &mut Loads(|_| None));
    assert!(m.wake_through(&bell, 1));
    assert!(m.holds_room(), "one is still queued");
    let mut rung = Vec::new();
    bell.take_rung(&mut rung);
    assert!(rung.contains(&1), "a pending signal rings at once");
    let left: Vec<_> = drain(&m)
        .iter()
        .map(|d| d.msg.publish.payload.clone())
        .collect();
    assert_eq!(left, [&b"b"[..]]);
    assert!(m.wake_through(&bell, 1));
    assert!(!m.holds_room());
    m.push(delivery(QoS::AtLeastOnce, b"c"))
        .expect("room again");
    assert_eq!(drain(&m).len(), 1);
}

/// The queue bound: QoS 0 goes first, then new messages are refused; offline QoS 0 is not queued.
#[test]
fn mailbox_bound_drops_qos0_first() {
    let m = Mailbox::new(2, false);
    let d = |qos| delivery(qos, b"x");
    assert_eq!(m.push(d(QoS::AtMostOnce)), Err(DropReason::Offline));
    m.set_online(true);
    m.push(d(QoS::AtMostOnce)).expect("room");
    m.push(d(QoS::AtLeastOnce)).expect("room");
    assert_eq!(m.push(d(QoS::AtMostOnce)), Err(DropReason::QueueFull));
    m.push(d(QoS::AtLeastOnce))
        .expect("evicts the QoS 0 message");
    assert_eq!(m.push(d(QoS::AtLeastOnce)), Err(DropReason::QueueFull));
    assert!(drain(&m).iter().all(|d| d.qos == QoS::AtLeastOnce));
}

/// A full queue of QoS 1 messages refuses more without looking for a QoS 0 message to drop
/// each time; one queued after such a refusal is still the one dropped to make room.
#[test]
fn a_full_queue_remembers_it_holds_no_qos0() {
    let m = Mailbox::new(3, false);
    m.set_online(true);
    let d = |qos, p: &'static [u8]| delivery(qos, p);
    for _ in 0..3 {
        m.push(d(QoS::AtLeastOnce, b"a")).expect("room");
    }
    for _ in 0..1000 {
        assert_eq!(
            m.push(d(QoS::AtLeastOnce, b"x")),
            Err(DropReason::QueueFull)
        );
    }
    let mut out = Vec::new();
    m.drain_into(&mut out, 1, 1, &mut Loads(|_| None));
    assert_eq!(out.len(), 1);
    m.push(d(QoS::AtMostOnce, b"0")).expect("room");
    m.push(d(QoS::AtLeastOnce, b"b"))
        .expect("evicts the QoS 0 message");
    let left: Vec<_> = drain(&m)
        .iter()
        .map(|d| d.msg.publish.payload.clone())
        .collect();
    assert_eq!(left, [&b"a"[..], b"a", b"b"]);
}

/// A queue's delivery is for a connected member: once the mailbox is offline (the connection
/// ended) it is refused, so the queue hands it to another member instead of leaving it in the
/// mailbox of a session that is ending; before, it is queued and taken back with the rest.
#[test]
fn queue_deliveries_are_refused_once_offline() {
    let m = Mailbox::new(10, false);
    m.set_online(true);
    let linked = || {
        delivery(QoS::AtLeastOnce, b"job").with_link(Some(crate::session::Link {
            queue: 0,
            id: std::num::NonZeroU64::MIN,
        }))
    };
    m.push(linked()).expect("online: queued");
    m.set_online(false);
    assert_eq!(m.push(linked()), Err(DropReason::Offline));
    m.push(delivery(QoS::AtLeastOnce, b"direct"))
        .expect("a direct QoS 1 delivery still waits for the session");
    assert_eq!(m.take_all().len(), 2);
}

/// A bridge's byte bound: the payload bytes queued stay exact as entries come and go (in
/// memory, by sequence number, read back at start, taken away); at the bound QoS 0 goes
/// first, then new messages are refused and counted; draining makes room again.
#[test]
fn mailbox_byte_bound() {
    let m = Mailbox::new(1000, false);
    m.set_online(true);
    m.restore(vec![(1, 10)]);
    m.set_bounds(1000, Some(100));
    assert_eq!(
        m.queued_bytes(),
        10,
        "what was queued before the bounds counts"
    );
    let d = delivery;
    let forty = &[b'x'; 40];
    m.push(d(QoS::AtMostOnce, forty)).expect("room");
    m.push_stored(2, 40).expect("room");
    assert_eq!(m.queued_bytes(), 90);
    assert_eq!(
        m.push(d(QoS::AtMostOnce, b"0123456789x")),
        Err(DropReason::QueueFull)
    );
    // A QoS 1 message evicts the QoS 0 one to fit.
    m.push(d(QoS::AtLeastOnce, b"0123456789x"))
        .expect("room after eviction");
    assert_eq!(m.queued_bytes(), 61);
    assert_eq!(m.push_stored(3, 40), Err(DropReason::QueueFull));
    assert_eq!(m.take_dropped(), 2);
    assert_eq!(m.take_dropped(), 0);
    let mut out = Vec::new();
    let mut load = |seq: u64| {
        let mut got = d(QoS::AtLeastOnce, b"").with_seq(Seq::new(seq));
        got.dup = false;
        Some(got)
    };
    m.drain_into(&mut out, 2, 10, &mut Loads(&mut load));
    assert_eq!(
        out.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![Seq::new(1), Seq::new(2)]
    );
    assert_eq!(
        m.queued_bytes(),
        11,
        "counted by the size queued, not what loads back"
    );
    m.push_stored(3, 40).expect("room after draining");
    let taken = m.take_all();
    assert_eq!(taken.len(), 2);
    assert_eq!(m.queued_bytes(), 0);
    m.push_front_all(taken);
    assert_eq!(m.queued_bytes(), 51);
    // Without bounds nothing is counted.
    let plain = Mailbox::new(10, false);
    plain.push_stored(1, 40).expect("room");
    assert_eq!((plain.queued_bytes(), plain.take_dropped()), (0, 0));
}

/// A full window holds back QoS 1/2 messages and everything behind them, keeping order.
#[test]
fn drain_respects_window_and_order() {
    let m = online_mailbox();
    for qos in [QoS::AtLeastOnce, QoS::AtLeastOnce, QoS::AtMostOnce] {
        m.push(delivery(qos, b"x")).expect("room");
    }
    let mut out = Vec::new();
    m.drain_into(&mut out, 10, 1, &mut Loads(|_| None));
    assert_eq!(out.len(), 1);
    assert_eq!(m.len(), 2);
}

/// A stored session that ends (here by clean start) releases the stored messages it was owed,
/// so they do not stay in the store until the next restart; one still owed to another session
/// stays.
#[tokio::test]
async fn ended_session_releases_its_stored_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::config::Config::default();
    config.persistence.enabled = true;
    config.persistence.path = dir.path().join("data");
    let state = super::BrokerState::open(config, crate::auth::Auth::permissive()).unwrap();
    let opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..SubscriptionOptions::default()
    };
    for id in ["a", "b"] {
        let client: Arc<str> = id.into();
        let mut attached = state.attach(&client, false, u32::MAX, 10, None).await;
        let r = state.subscribe(
            &mut attached.session,
            &attached.mailbox,
            super::Wanted {
                filter: &"t/#".into(),
                options: opts,
                id: None,
                weight: None,
            },
            false,
        );
        assert!(matches!(r, super::SubscribeResult::Granted(..)));
        state.detach(
            &client,
            attached.generation,
            attached.session,
            &attached.mailbox,
            None,
        );
    }
    let published = state.publish(message("t/1", QoS::AtLeastOnce, false, b"x"), None);
    assert_eq!(published.outcome.delivered, 2);
    published.durable.unwrap().wait().await.unwrap();
    let durable = state.durable.as_ref().unwrap();
    assert_eq!(durable.pending_len(), 1);
    // "a" comes back with a clean start: its session ends; "b" is still owed the message.
    let a: Arc<str> = "a".into();
    let _ = state.attach(&a, true, u32::MAX, 10, None).await;
    assert_eq!(durable.pending_len(), 1);
    let b: Arc<str> = "b".into();
    let _ = state.attach(&b, true, 0, 10, None).await;
    assert_eq!(
        durable.pending_len(),
        0,
        "message kept after every recipient ended"
    );
}

/// With a read check (ACL), only allowed clients get a message.
#[test]
fn read_check_filters_subscribers() {
    let router = Router::default();
    let (a, c) = (online_mailbox(), online_mailbox());
    router.subscribe("t", sub("a", &a, QoS::AtMostOnce, None));
    router.subscribe("t", sub("c", &c, QoS::AtMostOnce, None));
    let only_c = |id: &Arc<str>| &**id == "c";
    for _ in 0..4 {
        let msg = message("t", QoS::AtMostOnce, false, b"x");
        router.route(&msg, None, Some(&only_c), &mut Vec::new());
    }
    assert!(drain(&a).is_empty());
    assert_eq!(drain(&c).len(), 4);
}

/// Routes `msg` without a recorder.
fn route(router: &Router, msg: &Arc<Message>, may_read: Option<super::router::ReadCheck<'_>>) {
    router.route(msg, None, may_read, &mut Vec::new());
}

mod queue;
mod stream;
