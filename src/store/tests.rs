//! One contract, two engines: every test runs against [`MemoryEngine`] and [`FjallEngine`]
//! (fresh directory each), and the durable one is also reopened to check what survives.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use super::*;

/// Runs `test` on a memory engine and on a fjall engine in a fresh directory.
fn both(test: impl Fn(&dyn Engine)) {
    test(&MemoryEngine::new());
    let dir = tempdir();
    test(&FjallEngine::open(dir.path()).unwrap());
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn all(e: &dyn Engine, space: Space, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    e.scan(space, prefix, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    out
}

fn put(space: Space, k: &[u8], v: &[u8]) -> Op {
    Op::Put(space, k.to_vec(), v.to_vec())
}

#[test]
fn put_get_delete() {
    both(|e| {
        e.apply(&[put(Space::Retained, b"a/b", b"1")], Durability::Process)
            .unwrap();
        assert_eq!(e.get(Space::Retained, b"a/b").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            e.get(Space::Sessions, b"a/b").unwrap(),
            None,
            "spaces are separate"
        );
        e.apply(
            &[Op::Delete(Space::Retained, b"a/b".to_vec())],
            Durability::Fsync,
        )
        .unwrap();
        assert_eq!(e.get(Space::Retained, b"a/b").unwrap(), None);
        // Deleting what is absent is fine.
        e.apply(
            &[Op::Delete(Space::Retained, b"zz".to_vec())],
            Durability::Fsync,
        )
        .unwrap();
    });
}

/// Ops in one batch apply in order: the last write to a key wins, and a prefix delete removes
/// keys put earlier in the same batch as well as stored ones.
#[test]
fn batch_applies_in_order() {
    both(|e| {
        let a = client_key_with("a", &1u64.to_be_bytes());
        let a2 = client_key_with("a", &2u64.to_be_bytes());
        let b = client_key_with("b", &1u64.to_be_bytes());
        e.apply(&[put(Space::Queue, &a, b"old")], Durability::Process)
            .unwrap();
        e.apply(
            &[
                put(Space::Queue, &a, b"new"),
                put(Space::Queue, &a2, b"x"),
                put(Space::Queue, &b, b"b"),
                Op::DeletePrefix(Space::Queue, client_key("a")),
                put(Space::Queue, &a2, b"again"),
            ],
            Durability::Process,
        )
        .unwrap();
        assert_eq!(
            all(e, Space::Queue, b""),
            vec![(a2.clone(), b"again".to_vec()), (b.clone(), b"b".to_vec())]
        );
    });
}

/// A client's prefix never covers another client's keys, even one whose id extends it.
#[test]
fn client_prefixes_are_unambiguous() {
    both(|e| {
        let ops: Vec<Op> = ["c", "c1", "cc", ""]
            .iter()
            .flat_map(|id| {
                (1u64..=3).map(move |seq| {
                    put(
                        Space::Queue,
                        &client_key_with(id, &seq.to_be_bytes()),
                        id.as_bytes(),
                    )
                })
            })
            .collect();
        e.apply(&ops, Durability::Process).unwrap();
        let got = all(e, Space::Queue, &client_key("c"));
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(_, v)| v == b"c"));
        // In sequence order (big-endian keys).
        let seqs: Vec<u8> = got.iter().map(|(k, _)| k[k.len() - 1]).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        e.apply(
            &[Op::DeletePrefix(Space::Queue, client_key("c"))],
            Durability::Process,
        )
        .unwrap();
        assert_eq!(all(e, Space::Queue, b"").len(), 9);
    });
}

#[test]
fn scan_stops_when_told() {
    both(|e| {
        let ops: Vec<Op> = (0u8..10)
            .map(|i| put(Space::Retained, &[b't', i], b"v"))
            .collect();
        e.apply(&ops, Durability::Process).unwrap();
        let mut n = 0;
        e.scan(Space::Retained, b"t", &mut |_, _| {
            n += 1;
            n < 4
        })
        .unwrap();
        assert_eq!(n, 4);
    });
}

fn reopen(dir: &Path) -> FjallEngine {
    FjallEngine::open(dir).unwrap()
}

/// What a committed batch wrote is there after the engine is dropped and reopened.
#[test]
fn durable_engine_keeps_batches_across_reopen() {
    let dir = tempdir();
    {
        let e = reopen(dir.path());
        e.apply(
            &[
                put(Space::Sessions, &client_key("dev-1"), b"session"),
                put(Space::Retained, b"t", b"r"),
            ],
            Durability::Fsync,
        )
        .unwrap();
        e.apply(
            &[put(
                Space::Queue,
                &client_key_with("dev-1", &7u64.to_be_bytes()),
                b"m",
            )],
            Durability::Process,
        )
        .unwrap();
    }
    let e = reopen(dir.path());
    assert_eq!(
        e.get(Space::Sessions, &client_key("dev-1")).unwrap(),
        Some(b"session".to_vec())
    );
    assert_eq!(e.get(Space::Retained, b"t").unwrap(), Some(b"r".to_vec()));
    assert_eq!(all(&e, Space::Queue, &client_key("dev-1")).len(), 1);
}

/// A store of another format version is refused with both versions named, and left as it was.
#[test]
fn other_format_version_is_refused() {
    let dir = tempdir();
    {
        let e = reopen(dir.path());
        e.apply(
            &[put(Space::Meta, VERSION_KEY, &99u32.to_be_bytes())],
            Durability::Fsync,
        )
        .unwrap();
    }
    let err = FjallEngine::open(dir.path()).err().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("99") && msg.contains(&FORMAT_VERSION.to_string()),
        "{msg}"
    );
    assert!(matches!(err, StoreError::Version { found: 99, .. }));
}

fn policy(max_ops: usize, wait_ms: u64, durability: Durability) -> BatchPolicy {
    BatchPolicy {
        max_ops,
        max_wait: Duration::from_millis(wait_ms),
        durability,
    }
}

/// Tickets complete once their batch is applied, in submission order; detached submissions are
/// applied too; closing applies everything submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committer_applies_in_order_and_completes_tickets() {
    for durable in [false, true] {
        let dir = tempdir();
        let engine: std::sync::Arc<dyn Engine> = if durable {
            std::sync::Arc::new(reopen(dir.path()))
        } else {
            std::sync::Arc::new(MemoryEngine::new())
        };
        let c = Committer::start(engine, policy(16, 1, Durability::Fsync)).unwrap();
        let mut tickets = Vec::new();
        for i in 0u64..200 {
            let key = client_key_with("q", &i.to_be_bytes());
            if i % 3 == 0 {
                c.submit_detached(vec![put(Space::Queue, &key, b"d")]);
            } else {
                tickets.push(c.submit(vec![put(Space::Queue, &key, b"t")]));
            }
        }
        for t in tickets {
            t.wait().await.unwrap();
        }
        let mut n = 0;
        c.scan(Space::Queue, &client_key("q"), &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
        assert!(n >= 133, "{n}");
        // Submissions apply in order: the last write to a key wins.
        for v in [b"1", b"2"] {
            c.submit_detached(vec![put(Space::Retained, b"k", v)]);
        }
        c.submit(vec![put(Space::Retained, b"k", b"3")])
            .wait()
            .await
            .unwrap();
        let mut last = Vec::new();
        c.scan(Space::Retained, b"k", &mut |_, v| {
            last = v.to_vec();
            true
        })
        .unwrap();
        assert_eq!(last, b"3");
        c.close();
        if durable {
            assert_eq!(
                all(&reopen(dir.path()), Space::Queue, &client_key("q")).len(),
                200
            );
        }
    }
}

/// An engine that fails its next batch when told to.
struct Flaky {
    inner: MemoryEngine,
    fail_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Engine for Flaky {
    fn apply(&self, ops: &[Op], durability: Durability) -> Result<(), StoreError> {
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(StoreError::Engine {
                path: "flaky".into(),
                message: "disk full".into(),
            });
        }
        self.inner.apply(ops, durability)
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan(space, prefix, f)
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(space, key)
    }
}

/// A failed batch fails its ticket (so nothing is acknowledged on it) and the committer carries
/// on with the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_batch_fails_its_tickets_only() {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let engine = Flaky {
        inner: MemoryEngine::new(),
        fail_next: std::sync::Arc::clone(&fail),
    };
    let c = Committer::start(
        std::sync::Arc::new(engine),
        policy(8, 0, Durability::Process),
    )
    .unwrap();
    let err = c
        .submit(vec![put(Space::Retained, b"x", b"1")])
        .wait()
        .await;
    assert!(matches!(err, Err(StoreError::Engine { .. })), "{err:?}");
    c.submit(vec![put(Space::Retained, b"y", b"2")])
        .wait()
        .await
        .unwrap();
    let mut keys = Vec::new();
    c.scan(Space::Retained, b"", &mut |k, _| {
        keys.push(k.to_vec());
        true
    })
    .unwrap();
    assert_eq!(keys, vec![b"y".to_vec()]);
}
