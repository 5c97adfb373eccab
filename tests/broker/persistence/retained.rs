//! Retained messages across `kill -9`, and without persistence.

use super::*;

/// Every retained message Tern acknowledged is back after `kill -9` and a restart, with its
/// QoS and v5 properties; a retained message deleted (empty payload) before the kill stays
/// deleted. Both durability modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_retained_messages_survive_kill_9() {
    for durability in ["fsync", "process"] {
        let dir = tempfile::tempdir().unwrap();
        let broker = ChildBroker::start(dir.path(), true, durability);
        let mut v3 = RawClient::connected(broker.addr, V311, "pub3").await;
        for i in 0..20 {
            retain(
                &mut v3,
                V311,
                &format!("keep/{i}"),
                1 + i % 2,
                format!("m{i}").as_bytes(),
                Vec::new(),
            )
            .await;
        }
        retain(&mut v3, V311, "gone", 1, b"soon deleted", Vec::new()).await;
        retain(&mut v3, V311, "gone", 1, b"", Vec::new()).await;
        let mut v5 = RawClient::connected(broker.addr, V5, "pub5").await;
        let mut props = prop_str(CONTENT_TYPE, "text/plain");
        props.extend(prop_u32(MESSAGE_EXPIRY, 3600));
        retain(&mut v5, V5, "props/x", 2, b"with props", props).await;
        broker.kill9();

        let broker = ChildBroker::start(dir.path(), true, durability);
        let mut sub = RawClient::connected(broker.addr, V5, "reader").await;
        sub.subscribe(V5, "#", 2).await;
        // Retained messages come at SUBSCRIBE; a live message published afterwards closes them.
        let mut fence = RawClient::connected(broker.addr, V5, "fence").await;
        pub_msg(&mut fence, V5, "zz/fence", 0, b"fence").await;
        let mut got = collect_until(&mut sub, V5, b"fence").await;
        assert_eq!(got.len(), 21, "{durability}: {:?}", payloads(&got));
        assert!(got.iter().all(|r| r.retain));
        got.sort_by(|a, b| a.topic.cmp(&b.topic));
        for i in 0..20 {
            let r = got
                .iter()
                .find(|r| r.topic == format!("keep/{i}"))
                .unwrap_or_else(|| panic!("{durability}: keep/{i} lost"));
            assert_eq!(r.payload, format!("m{i}").as_bytes());
            assert_eq!(r.qos, 1 + i % 2);
        }
        let p = got
            .iter()
            .find(|r| r.topic == "props/x")
            .expect("v5 retained lost");
        assert_eq!(p.payload, b"with props");
        assert_eq!(
            all_props(&p.props, CONTENT_TYPE),
            vec![PropValue::Str("text/plain".into())]
        );
        match all_props(&p.props, MESSAGE_EXPIRY).as_slice() {
            [PropValue::U32(left)] => assert!((3500..=3600).contains(left), "{left}"),
            other => panic!("message expiry: {other:?}"),
        }
        assert!(
            got.iter().all(|r| r.topic != "gone"),
            "deleted retained message came back"
        );
        broker.kill9();
    }
}

/// With persistence off (the default) nothing survives a restart, as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_retained_messages_are_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), false, "fsync");
    let mut c = RawClient::connected(broker.addr, V311, "p").await;
    retain(&mut c, V311, "t", 1, b"x", Vec::new()).await;
    broker.kill9();
    assert!(
        !dir.path().join("data").exists(),
        "persistence off wrote a store"
    );
    let broker = ChildBroker::start(dir.path(), false, "fsync");
    let mut sub = RawClient::connected(broker.addr, V311, "s").await;
    sub.subscribe(V311, "#", 1).await;
    expect_nothing(&mut sub).await;
}
