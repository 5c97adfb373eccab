//! "Only once that is durable": the gate that holds packets behind store writes, in order, and
//! what a failed store write means for the flows.

use super::*;
use crate::store::{StoreError, Ticket};

fn failed() -> StoreError {
    StoreError::Closed
}

/// Nothing to wait for and nothing held: through at once. Behind a ticket: held, and so is
/// everything after it, until the ticket completes; then released in order.
#[test]
fn items_wait_for_their_ticket_and_for_each_other() {
    let mut gate = Gate::default();
    assert_eq!(gate.pass(None, 1), Some(1));
    let (t, done) = Ticket::manual();
    assert_eq!(gate.pass(Some(t), 2), None);
    assert_eq!(gate.pass(None, 3), None, "behind a held item");
    let mut sent = Vec::new();
    gate.release(|i| sent.push(i)).unwrap();
    assert!(sent.is_empty());
    done.send(Ok(())).unwrap();
    gate.release(|i| sent.push(i)).unwrap();
    assert_eq!(sent, [2, 3]);
    assert!(gate.is_empty());
    assert_eq!(gate.pass(None, 4), Some(4));
}

/// Two tickets in a row: the second item waits for its own ticket even once the first is done.
#[test]
fn each_ticket_holds_its_item() {
    let mut gate = Gate::default();
    let (t1, d1) = Ticket::manual();
    let (t2, d2) = Ticket::manual();
    gate.pass(Some(t1), 'a');
    gate.pass(Some(t2), 'b');
    let mut sent = Vec::new();
    d1.send(Ok(())).unwrap();
    gate.release(|i| sent.push(i)).unwrap();
    assert_eq!(sent, ['a']);
    d2.send(Ok(())).unwrap();
    gate.release(|i| sent.push(i)).unwrap();
    assert_eq!(sent, ['a', 'b']);
}

/// A failed store write is reported, and what waited for it never goes out.
#[test]
fn a_failed_write_releases_nothing_behind_it() {
    let mut gate = Gate::default();
    let (t, done) = Ticket::manual();
    gate.pass(Some(t), 1);
    gate.pass(None, 2);
    done.send(Err(failed())).unwrap();
    let mut sent = Vec::new();
    assert!(gate.release(|i| sent.push(i)).is_err());
    assert!(sent.is_empty());
    // A ticket whose store went away counts as failed too.
    let mut gate = Gate::default();
    let (t, done) = Ticket::manual();
    gate.pass(Some(t), 3);
    drop(done);
    assert!(gate.release(|i| sent.push(i)).is_err());
    assert!(sent.is_empty());
}

/// Carries `out` the way a connection does, with the store's write failing: a packet after a
/// `Durable` operation is held and, the write failed, never sent. Returns what was sent.
fn carry_with_failing_store(out: &mut Vec<Effect>) -> Vec<E> {
    let mut gate = Gate::default();
    let mut ticket = None;
    let mut done = None;
    for e in took(out) {
        match e {
            E::Durable(_) => {
                let (t, d) = Ticket::manual();
                ticket = Some(t);
                done = Some(d);
            }
            E::Store(_) | E::Dropped(_) => {}
            packet => {
                let _ = gate
                    .pass(ticket.take(), packet)
                    .map(|p| panic!("{p:?} sent"));
            }
        }
    }
    if let Some(d) = done {
        d.send(Err(failed())).unwrap();
    }
    let mut sent = Vec::new();
    assert!(gate.release(|p| sent.push(p)).is_err());
    sent
}

/// A stored QoS 2 PUBLISH whose packet id could not be stored is never sent; the session keeps
/// the flow, so the resumed connection sends it (with DUP: harmless for a first sending).
#[test]
fn failed_sent_write_holds_the_publish_until_resume() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        s.start(delivery(QoS::ExactlyOnce, 6, 60), Instant::now(), &mut out);
        assert_eq!(carry_with_failing_store(&mut out), []);
        s.resend(&mut out);
        assert_eq!(took(&mut out), [E::Publish(6, 1, true)]);
    }
}

/// A PUBREL whose flow state could not be stored is never sent (after PUBREL the PUBLISH may
/// never go again, so PUBREL must not precede the record); on resume PUBREL goes again.
#[test]
fn failed_released_write_holds_the_pubrel_until_resume() {
    for role in ROLES {
        let mut s = session(role, 10);
        let mut out = Vec::new();
        s.start(delivery(QoS::ExactlyOnce, 7, 70), Instant::now(), &mut out);
        out.clear();
        s.on_pubrec(id(1), ReasonCode::Success, &mut out);
        assert_eq!(carry_with_failing_store(&mut out), []);
        s.resend(&mut out);
        assert_eq!(
            took(&mut out),
            [E::Reply(ReplyKind::PubRel, 1, ReasonCode::Success)]
        );
    }
}
