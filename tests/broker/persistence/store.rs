//! The store itself: damaged files never stop Tern from starting; `tern store check` reports
//! what a stopped broker's store holds.

use super::*;

/// Bytes of garbage appended to the journal (a torn last write) lose nothing that was
/// acknowledged; a store whose files cannot be read at all is moved aside, not fatal: Tern logs
/// it, starts with an empty store and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_store_never_stops_tern_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let mut c = RawClient::connected(broker.addr, V311, "p").await;
    retain(&mut c, V311, "kept", 1, b"x", Vec::new()).await;
    broker.kill9();

    // A torn tail: garbage after the last complete write.
    let journal = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jnl"))
        .expect("a journal file");
    let mut bytes = std::fs::read(&journal).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end);
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&journal, &bytes).unwrap();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let mut sub = RawClient::connected(broker.addr, V311, "s").await;
    sub.subscribe(V311, "kept", 1).await;
    assert_eq!(
        recv_acked(&mut sub, V311).await.payload,
        b"x",
        "lost to a torn tail"
    );
    broker.kill9();

    // Every keyspace manifest unreadable: the store cannot be opened.
    for entry in walk(&data) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name == "current" || (name.starts_with('v') && name[1..].parse::<u32>().is_ok()) {
            std::fs::write(&entry, b"junk").unwrap();
        }
    }
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "damaged store not moved aside: {aside:?}");
    let mut c = RawClient::connected(broker.addr, V311, "p2").await;
    retain(&mut c, V311, "new", 1, b"y", Vec::new()).await;
    broker.kill9();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let mut sub = RawClient::connected(broker.addr, V311, "s2").await;
    sub.subscribe(V311, "new", 1).await;
    assert_eq!(recv_acked(&mut sub, V311).await.payload, b"y");
    broker.kill9();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `tern store check` reports what a stopped broker's store holds, changes nothing, and refuses a
/// store another Tern has open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_check_reports_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut s, _) = connect_persistent(broker.addr, V5, "chk", false).await;
    sub_all(&mut s, V5, &["c/#", "d/#"], 1).await;
    s.send(&disconnect()).await;
    let mut c = RawClient::connected(broker.addr, V311, "cp").await;
    retain(&mut c, V311, "c/r", 1, b"x", Vec::new()).await;
    for i in 0..3u8 {
        pub_msg(&mut c, V311, "d/x", 1, &[i]).await;
    }
    let (code, _) = store_check(dir.path());
    assert_eq!(code, 2, "a store in use must be refused");
    broker.kill9();

    for _ in 0..2 {
        let (code, out) = store_check(dir.path());
        assert_eq!(code, 0, "{out}");
        let line = |name: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .map(str::to_string)
        };
        assert_eq!(line("retained messages:").as_deref(), Some("1"), "{out}");
        assert_eq!(line("persistent sessions:").as_deref(), Some("1"), "{out}");
        assert_eq!(line("subscriptions:").as_deref(), Some("2"), "{out}");
        // The retained message went to chk too (c/#): four deliveries.
        assert_eq!(line("queued deliveries:").as_deref(), Some("4"), "{out}");
        assert!(out.contains("store OK"), "{out}");
    }
    // Read-only: the broker still finds everything.
    let broker = ChildBroker::start(dir.path(), true, "fsync");
    let (mut s, present) = connect_persistent(broker.addr, V5, "chk", false).await;
    assert!(present);
    let mut fence = RawClient::connected(broker.addr, V5, "chkf").await;
    pub_msg(&mut fence, V5, "d/fence", 0, b"fence").await;
    assert_eq!(collect_until(&mut s, V5, b"fence").await.len(), 4);
    broker.kill9();
}
