//! Record formats and recovery, against the memory engine and a real fjall store.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::protocol::{Publish, PublishProperties};

fn message(expiry: Option<u32>) -> Message {
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "a/b".into(),
        pkid: 9,
        payload: bytes::Bytes::from_static(b"payload"),
        properties: PublishProperties {
            message_expiry_interval: expiry,
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..PublishProperties::default()
        }
        .into(),
    };
    Message::new(publish, None, Instant::now())
}

/// The payload size read from a stored record's framing matches the message, whatever its
/// QoS, properties and size (a multi-byte remaining length); garbage reads as 0.
#[test]
fn payload_len_reads_the_framing() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for len in [0usize, 1, 7, 200, 20_000, 3_000_000] {
            let mut m = message(Some(60));
            m.publish.qos = qos;
            m.publish.payload = bytes::Bytes::from(vec![b'x'; len]);
            let record = encode_message(&m);
            assert_eq!(
                payload_len(&record),
                u32::try_from(len).unwrap(),
                "{qos:?} {len}"
            );
        }
    }
    assert_eq!(payload_len(b""), 0);
    assert_eq!(payload_len(&[MESSAGE_RECORD_V1; 40]), 0);
}

/// A stored message comes back with topic, payload, QoS, retain flag and properties, and
/// with the expiry it had left.
#[test]
fn message_round_trips() {
    let msg = message(Some(3600));
    let back = decode_message(&encode_message(&msg), (Instant::now(), SystemTime::now()))
        .unwrap()
        .unwrap();
    assert_eq!(back.publish, msg.publish);
    let left = back.remaining_expiry(Instant::now()).unwrap();
    assert!((3598..=3600).contains(&left), "{left}");
    let plain = message(None);
    let back = decode_message(&encode_message(&plain), (Instant::now(), SystemTime::now()))
        .unwrap()
        .unwrap();
    assert_eq!(back.expires_at, None);
}

/// A message whose expiry passed while Tern was down is not restored.
#[test]
fn expired_message_is_not_restored() {
    let record = encode_message(&message(Some(1)));
    let later = SystemTime::now() + Duration::from_secs(5);
    assert!(decode_message(&record, (Instant::now(), later))
        .unwrap()
        .is_none());
}

/// Time spent down counts against a session's expiry: one that ran out while Tern was down
/// is forgotten with its subscriptions; others come back with what they have left, and a
/// session that never expires stays. Damaged records are dropped and counted.
#[test]
fn session_expiry_counts_downtime() {
    use crate::store::{Durability, MemoryEngine};
    let ten_s_ago = SystemTime::now() - Duration::from_secs(10);
    let sub = Subscription {
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainHandling::SendIfNew,
        },
        id: Some(42),
    };
    let e = MemoryEngine::new();
    let mut ops = vec![
        session_op("gone", 5, Some(ten_s_ago), None),
        session_op("left", 100, Some(ten_s_ago), None),
        session_op("forever", NEVER_EXPIRES, Some(ten_s_ago), None),
        session_op("connected", 100, None, None),
        Op::Put(Space::Sessions, client_key("bad"), vec![7, 7]),
    ];
    for id in ["gone", "left"] {
        let key = client_key_with(id, b"a/#");
        ops.push(Op::Put(
            Space::Subscriptions,
            key,
            encode_subscription(&sub),
        ));
    }
    e.apply(&ops, Durability::Process).unwrap();
    let (recovered, cleanup) = recover(&e).unwrap();
    let mut got: Vec<(&str, u32)> = recovered
        .sessions
        .iter()
        .map(|s| (s.client_id.as_str(), s.remaining))
        .collect();
    got.sort();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], ("connected", 100));
    assert_eq!(got[1], ("forever", NEVER_EXPIRES));
    assert_eq!(got[2].0, "left");
    assert!((89..=90).contains(&got[2].1), "{:?}", got[2]);
    let left = recovered
        .sessions
        .iter()
        .find(|s| s.client_id == "left")
        .unwrap();
    assert_eq!(left.subscriptions.len(), 1);
    assert_eq!(left.subscriptions[0].0, "a/#");
    assert_eq!(left.subscriptions[0].1.id, Some(42));
    assert!(left.subscriptions[0].1.options.no_local);
    assert_eq!(recovered.unreadable, 1);
    // The expired session and the damaged record are deleted.
    e.apply(&cleanup, Durability::Process).unwrap();
    assert_eq!(e.get(Space::Sessions, &client_key("gone")).unwrap(), None);
    assert_eq!(e.get(Space::Sessions, &client_key("bad")).unwrap(), None);
    let mut subs = 0;
    e.scan(Space::Subscriptions, &client_key("gone"), &mut |_, _| {
        subs += 1;
        true
    })
    .unwrap();
    assert_eq!(subs, 0);
}

/// A stored message is queued at start for each recipient that still has a session and has
/// not acknowledged it; one nobody is owed any more is deleted with its acknowledgements.
#[test]
fn stored_messages_go_to_recipients_still_owed() {
    use crate::store::{Durability, MemoryEngine};
    let msg = Arc::new(message(None));
    let delivery = |qos| Delivery::new(Arc::clone(&msg), qos, false).with_sub_ids([3]);
    let log = |recipients: &[&str]| {
        let mut v = vec![LOG_RECORD_V1];
        v.extend_from_slice(&u16::try_from(recipients.len()).unwrap().to_be_bytes());
        for r in recipients {
            encode_recipient(&mut v, r, &delivery(QoS::AtLeastOnce));
        }
        v.extend_from_slice(&encode_message(&msg));
        v
    };
    let e = MemoryEngine::new();
    e.apply(
        &[
            session_op("a", NEVER_EXPIRES, None, None),
            session_op("b", NEVER_EXPIRES, None, None),
            Op::Put(
                Space::Queue,
                7u64.to_be_bytes().to_vec(),
                log(&["a", "b", "gone"]),
            ),
            Op::Put(Space::Acks, ack_key(7, "b"), Vec::new()),
            Op::Put(Space::Queue, 8u64.to_be_bytes().to_vec(), log(&["b"])),
            Op::Put(Space::Acks, ack_key(8, "b"), Vec::new()),
        ],
        Durability::Process,
    )
    .unwrap();
    let (recovered, cleanup) = recover(&e).unwrap();
    let queue_of = |id: &str| {
        recovered
            .sessions
            .iter()
            .find(|s| s.client_id == id)
            .map(|s| s.queue.clone())
            .unwrap()
    };
    // With its payload size, read from the record's framing.
    let size = u32::try_from(msg.publish.payload.len()).unwrap();
    assert!(size > 0);
    assert_eq!(queue_of("a"), vec![(7, size)]);
    let now = (Instant::now(), SystemTime::now());
    let d = delivery_for(&log(&["a", "b", "gone"]), "a", 7, now)
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.seq, d.sub_ids(), d.qos),
        (Seq::new(7), &[3][..], QoS::AtLeastOnce)
    );
    assert!(delivery_for(&log(&["b"]), "a", 8, now).is_err());
    assert!(queue_of("b").is_empty());
    assert_eq!(recovered.pending.get(&7), Some(&1));
    assert_eq!(recovered.max_seq, 8);
    e.apply(&cleanup, Durability::Process).unwrap();
    assert!(e.get(Space::Queue, &7u64.to_be_bytes()).unwrap().is_some());
    assert!(e.get(Space::Queue, &8u64.to_be_bytes()).unwrap().is_none());
    assert!(e.get(Space::Acks, &ack_key(8, "b")).unwrap().is_none());
}

/// A recipient fast enough to acknowledge before the publisher's batch is submitted still
/// releases the message: it is stored and deleted in that batch, and nothing stays owed.
#[tokio::test]
async fn acknowledgement_before_submit_releases_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = PersistenceConfig {
        enabled: true,
        path: dir.path().join("data"),
        ..PersistenceConfig::default()
    };
    let (durable, _) = Durable::open(&config).unwrap();
    let msg = Arc::new(message(None));
    let mut batch = durable.batch();
    let seq = batch.next_seq();
    let d = Delivery::new(Arc::clone(&msg), QoS::AtLeastOnce, false).with_seq(Seq::new(seq));
    batch.record("fast", &d);
    durable.delivered("fast", seq);
    batch.submit().unwrap().wait().await.unwrap();
    assert_eq!(durable.pending_len(), 0);
    let mut left = 0;
    durable
        .committer
        .scan(Space::Queue, b"", &mut |_, _| {
            left += 1;
            true
        })
        .unwrap();
    assert_eq!(left, 0, "message kept though its only recipient has it");
}

/// Damaged records are errors, never panics.
#[test]
fn damaged_records_are_refused() {
    let record = encode_message(&message(None));
    for cut in 0..record.len() {
        assert!(decode_message(&record[..cut], (Instant::now(), SystemTime::now())).is_err());
    }
    let mut extra = record.clone();
    extra.push(0);
    assert!(decode_message(&extra, (Instant::now(), SystemTime::now())).is_err());
    let mut other = record;
    other[0] = 9;
    assert!(decode_message(&other, (Instant::now(), SystemTime::now())).is_err());
}

/// A delivery deferred to an offline mailbox is queued by sequence number only, and can be read
/// back both before its batch is applied (from the unsettled records) and after (from the
/// engine), with the recipient's own options.
#[tokio::test]
async fn deferred_delivery_is_queued_by_number_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = PersistenceConfig {
        enabled: true,
        path: dir.path().join("data"),
        ..PersistenceConfig::default()
    };
    let (durable, _) = Durable::open(&config).unwrap();
    let mailbox = Arc::new(Mailbox::new(10, false));
    mailbox.set_stored(true);
    assert!(mailbox.keeps_stored_only(), "offline: stored only");
    let msg = Arc::new(message(None));
    let mut batch = durable.batch();
    let seq = batch.next_seq();
    let d = Delivery::new(Arc::clone(&msg), QoS::ExactlyOnce, true)
        .with_sub_ids([42])
        .with_seq(Seq::new(seq));
    let id: Arc<str> = "sleeper".into();
    batch.record(&id, &d);
    batch.defer(&id, &mailbox);
    drop(d);
    let ticket = batch.submit().unwrap();
    assert_eq!(Arc::strong_count(&msg), 1, "the mailbox holds no message");
    // Whether or not the batch has landed yet, the message can be read.
    let early = durable.read("sleeper", seq).unwrap();
    ticket.wait().await.unwrap();
    assert!(durable.unsettled.lock().is_empty());
    let mut out = Vec::new();
    let mut load = crate::broker::tests::Loads(|s| durable.load("sleeper", s));
    mailbox.drain_into(&mut out, 10, 10, &mut load);
    assert_eq!(out.len(), 1);
    for got in [&early, &out[0]] {
        assert_eq!(got.seq, Seq::new(seq));
        assert_eq!(got.qos, QoS::ExactlyOnce);
        assert!(got.retain);
        assert_eq!(got.sub_ids(), [42]);
        assert_eq!(got.msg.publish.payload, msg.publish.payload);
    }
    assert!(durable.read("someone-else", seq).is_none());
}

/// Before its batch is submitted to the committer, a deferred message is held as an unsettled
/// record, so a reader racing the commit never misses it.
#[tokio::test]
async fn unsettled_records_are_readable_until_applied() {
    let dir = tempfile::tempdir().unwrap();
    let config = PersistenceConfig {
        enabled: true,
        path: dir.path().join("data"),
        batch_wait_us: 200_000,
        batch_max_operations: 1_000_000,
        ..PersistenceConfig::default()
    };
    let (durable, _) = Durable::open(&config).unwrap();
    // Occupy the committer so the next batch waits behind this one's gathering window.
    let first = durable
        .committer
        .submit(vec![Op::Put(Space::Meta, b"x".to_vec(), Vec::new())]);
    let mailbox = Arc::new(Mailbox::new(10, false));
    mailbox.set_stored(true);
    let mut batch = durable.batch();
    let seq = batch.next_seq();
    let d = Delivery::new(Arc::new(message(None)), QoS::AtLeastOnce, false).with_seq(Seq::new(seq));
    batch.record("late", &d);
    batch.defer(&"late".into(), &mailbox);
    let ticket = batch.submit().unwrap();
    let in_engine = durable
        .committer
        .engine()
        .get(Space::Queue, &seq.to_be_bytes())
        .unwrap();
    if in_engine.is_none() {
        assert!(durable.unsettled.lock().contains_key(&seq));
    }
    assert!(durable.read("late", seq).is_some());
    first.wait().await.unwrap();
    ticket.wait().await.unwrap();
    assert!(durable.read("late", seq).is_some());
}
