//! The queue core without sockets: who gets each message, what waits, what comes back, and
//! the backlog identity after every step.

use std::sync::Arc;

use super::{message, online_mailbox, sub};
use crate::broker::mailbox::Mailbox;
use crate::broker::queue::{Offered, Queue, QueueIo};
use crate::config::Strategy;
use crate::protocol::QoS;
use crate::session::{Delivery, Seq, Settled};

/// No store; `read` decides who may read.
struct Io<F: Fn(&str) -> bool>(F);

impl<F: Fn(&str) -> bool> QueueIo for Io<F> {
    fn load(&self, _: &str, _: Seq) -> Option<Delivery> {
        None
    }
    fn release(&self, _: &str, _: Seq) {}
    fn may_read(&self, client_id: &Arc<str>, _: &str) -> bool {
        (self.0)(client_id)
    }
    fn checks_reads(&self) -> bool {
        true
    }
}

fn anyone() -> Io<impl Fn(&str) -> bool> {
    Io(|_: &str| true)
}

fn group(strategy: Strategy, max: usize) -> Queue {
    Queue::group(0, "g", "t/#", strategy, max)
}

fn join(q: &Queue, id: &str, m: &Arc<Mailbox>, window: u16) {
    q.join(sub(id, m, QoS::AtLeastOnce, None), 1, window);
    q.ready(id, &anyone());
}

fn taken(m: &Mailbox) -> Vec<Delivery> {
    super::drain(m)
}

fn identity(q: &Queue) -> crate::metrics::Backlog {
    let b = q.figures();
    assert_eq!(
        b.produced,
        b.consumed + b.dropped_total() + b.messages + b.inflight,
        "{b:?}"
    );
    b
}

/// Round robin among members with room; a member whose window is full is passed over; with
/// no room anywhere, messages wait in the queue and go out as room frees.
#[test]
fn waits_for_room() {
    let q = group(Strategy::RoundRobin, 100);
    let (a, b) = (online_mailbox(), online_mailbox());
    join(&q, "a", &a, 2);
    join(&q, "b", &b, 2);
    for _ in 0..6 {
        let msg = message("t/1", QoS::AtLeastOnce, false, b"x");
        assert_eq!(q.offer(&msg, None, &anyone()), Offered::Accepted);
        identity(&q);
    }
    let (got_a, got_b) = (taken(&a), taken(&b));
    assert_eq!((got_a.len(), got_b.len()), (2, 2));
    let fig = identity(&q);
    assert_eq!((fig.messages, fig.inflight), (2, 4));
    // b acknowledges one: the next waiting message is its.
    let link = got_b[0].link().unwrap();
    q.settle(link.id, Settled::Consumed, &anyone());
    assert_eq!(taken(&b).len(), 1);
    assert!(taken(&a).is_empty());
    let fig = identity(&q);
    assert_eq!((fig.consumed, fig.messages, fig.inflight), (1, 1, 4));
}

/// What a leaving member did not get comes back to the head, DUP set where it was sent, and
/// goes to another member at once, never back to the one leaving.
#[test]
fn given_back_to_the_head() {
    let q = group(Strategy::RoundRobin, 100);
    let (a, b) = (online_mailbox(), online_mailbox());
    join(&q, "a", &a, 10);
    for i in 0..3u8 {
        let msg = message(&format!("t/{i}"), QoS::AtLeastOnce, false, b"x");
        q.offer(&msg, None, &anyone());
    }
    let held = taken(&a);
    join(&q, "b", &b, 10);
    let ids: Vec<_> = held.iter().map(|d| (d.link().unwrap().id, true)).collect();
    q.give_back("a", &ids, &anyone());
    let got = taken(&b);
    let topics: Vec<&str> = got.iter().map(|d| d.msg.topic()).collect();
    assert_eq!(topics, ["t/0", "t/1", "t/2"]);
    assert!(got.iter().all(|d| d.dup));
    assert!(taken(&a).is_empty());
    identity(&q);
}

/// A member that may not read a message (ACL) is passed over for it.
#[test]
fn read_check() {
    let q = group(Strategy::RoundRobin, 100);
    let (a, c) = (online_mailbox(), online_mailbox());
    join(&q, "a", &a, 10);
    join(&q, "c", &c, 10);
    let only_c = Io(|id: &str| id == "c");
    for _ in 0..4 {
        q.offer(&message("t/1", QoS::AtMostOnce, false, b"x"), None, &only_c);
    }
    assert!(taken(&a).is_empty());
    assert_eq!(taken(&c).len(), 4);
}

/// A member that is not ready (its SUBACK not out) or offline gets nothing; the message
/// waits. At the bound the newest is refused, counted.
#[test]
fn not_ready_offline_and_full() {
    let q = group(Strategy::RoundRobin, 2);
    let a = online_mailbox();
    q.join(sub("a", &a, QoS::AtLeastOnce, None), 1, 10);
    let msg = message("t/1", QoS::AtLeastOnce, false, b"x");
    for _ in 0..3 {
        q.offer(&msg, None, &anyone());
    }
    assert!(taken(&a).is_empty());
    let fig = identity(&q);
    assert_eq!((fig.messages, fig.dropped), (2, vec![("rejected", 1)]));
    a.set_online(false);
    q.ready("a", &anyone());
    assert!(taken(&a).is_empty());
    a.set_online(true);
    q.online("a", 10, &anyone());
    assert_eq!(taken(&a).len(), 2);
    identity(&q);
}
