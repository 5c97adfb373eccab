//! Carrying out a session's [`Effect`]s, the same way for a client's connection and for a
//! bridge's link to its remote: store operations applied (in one batch each way), packets handed
//! to the carrier's writer at once or held until the store has what they promise, in order per
//! kind, without blocking the task. What differs between carriers is only how a packet is
//! written, the `send` they pass in.

use std::task::{Context, Poll};

use super::{After, BrokerState, Mailbox};
use crate::protocol::{Packet, PacketId};
use crate::session::{Delivery, Effect, Gate, Reply, ReplyKind};
use crate::store::{StoreError, Ticket};

/// What a carrier's writer is handed, in order.
#[derive(Debug)]
pub enum Out {
    /// An acknowledgement of a QoS flow.
    Reply(Reply),
    /// A PUBLISH of `delivery` under `pkid` (none at QoS 0), DUP as given.
    Publish {
        /// The flow's packet id.
        pkid: Option<PacketId>,
        /// Sent before.
        dup: bool,
        /// What to send.
        delivery: Delivery,
    },
    /// Another acknowledgement (SUBACK, UNSUBACK), in order with the flow's, and what its
    /// subscriptions start once it is written (retained messages, queues' messages). Boxed:
    /// rare, and a packet is several times the size of the other variants.
    Control(Box<Packet>, Vec<After>),
    /// A delivery not sent, for this reason (to count).
    Dropped(&'static str),
}

impl Out {
    /// What the writer is handed for effect `e`; `None` for a store operation (applied, not
    /// written).
    fn of(e: Effect) -> Option<Out> {
        Some(match e {
            Effect::Store(_) | Effect::Durable(_) | Effect::Settle(..) => return None,
            Effect::Dropped(why) => Out::Dropped(why),
            Effect::Reply(r) => Out::Reply(r),
            Effect::Publish {
                pkid,
                dup,
                delivery,
            } => Out::Publish {
                pkid,
                dup,
                delivery,
            },
        })
    }
}

/// One carrier's held packets (acknowledgements, PUBLISHes: each kind in its own order).
#[derive(Debug, Default)]
pub struct Carrier {
    replies: Gate<Out>,
    publishes: Gate<Out>,
}

/// Which gate an item goes through.
fn is_publish(out: &Out) -> bool {
    matches!(out, Out::Publish { .. })
}

impl Carrier {
    /// Carries out `effects` (drained) of `client_id`'s session, whose mailbox is `mailbox`: its
    /// store operations go to the store (through `state`: a no-op for a session not stored),
    /// the packets after a `Durable` one wait until that is on disk, and every packet here waits
    /// for `after` too (an inbound message's own batch: it is acknowledged only once stored).
    /// What may go now is handed to `send`.
    pub fn carry(
        &mut self,
        state: &BrokerState,
        mailbox: &Mailbox,
        client_id: &str,
        effects: &mut Vec<Effect>,
        after: Option<Ticket>,
        send: &mut dyn FnMut(Out),
    ) {
        // Store operations come with a store write anyway: these lists cost an allocation only
        // then.
        let (mut detached, mut durable) = (Vec::new(), Vec::new());
        for e in effects.iter() {
            match e {
                Effect::Store(op) => detached.push(*op),
                Effect::Durable(op) => durable.push(*op),
                // The queue hears at once: nothing it does waits for this carrier's packets.
                Effect::Settle(link, how) => state.settle(*link, *how),
                _ => {}
            }
        }
        state.apply_store(mailbox, client_id, &detached, false);
        let barrier = state.apply_store(mailbox, client_id, &durable, true);
        if after.is_none() && barrier.is_none() && self.is_empty() {
            // Nothing to wait for and nothing held (the common case): straight to the writer.
            for e in effects.drain(..) {
                if let Some(out) = Out::of(e) {
                    send(out);
                }
            }
            return;
        }
        let mut tickets = Tickets {
            has_after: after.is_some(),
            has_barrier: barrier.is_some(),
            after,
            barrier,
            state,
            handed: [Wait::Nothing; 2],
        };
        let mut past_barrier = false;
        for e in effects.drain(..) {
            past_barrier |= matches!(e, Effect::Durable(_));
            match Out::of(e) {
                Some(Out::Dropped(why)) => send(Out::Dropped(why)),
                Some(out) => {
                    let ticket = tickets.take(is_publish(&out), past_barrier);
                    self.pass(ticket, out, send);
                }
                None => {}
            }
        }
    }

    /// Sends `packet` (SUBACK, UNSUBACK) in order with the acknowledgements, once `after` is
    /// durable; then `then` is queued.
    pub fn control(
        &mut self,
        packet: Packet,
        then: Vec<After>,
        after: Option<Ticket>,
        send: &mut dyn FnMut(Out),
    ) {
        self.pass(after, Out::Control(Box::new(packet), then), send);
    }

    fn pass(&mut self, ticket: Option<Ticket>, out: Out, send: &mut dyn FnMut(Out)) {
        let gate = if is_publish(&out) {
            &mut self.publishes
        } else {
            &mut self.replies
        };
        if let Some(out) = gate.pass(ticket, out) {
            send(out);
        }
    }

    /// Hands what may go now to `send`, in order. A failed store write is returned: what
    /// depended on it never goes out, and the carrier must end its connection.
    pub fn release(&mut self, send: &mut dyn FnMut(Out)) -> Result<(), StoreError> {
        self.replies.release(&mut *send)?;
        self.publishes.release(send)
    }

    /// After [`Carrier::release`] failed: the acknowledgement (PUBACK, PUBREC) that waited
    /// for the failed write, if that is what it was, to refuse the message with instead.
    pub fn failed_reply(&mut self) -> Option<Reply> {
        match self.replies.take_front()? {
            Out::Reply(r) if matches!(r.kind, ReplyKind::PubAck | ReplyKind::PubRec) => Some(r),
            _ => None,
        }
    }

    /// Ready when something held may be released.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.replies.poll_ready(cx).is_ready() {
            return Poll::Ready(());
        }
        self.publishes.poll_ready(cx)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.publishes.is_empty()
    }
}

/// What a packet of a batch of effects waits for, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wait {
    Nothing,
    /// The batch's `after` ticket.
    After,
    /// The batch's own durable store operations (submitted after `after`: it covers both).
    Barrier,
}

/// The tickets one batch of effects hands out. A ticket goes to the first packet of a gate that
/// needs it; later packets of that gate are held behind that one anyway. When the other gate
/// took the ticket already, a flush stands in for it (it completes after everything submitted
/// before it).
struct Tickets<'a> {
    has_after: bool,
    has_barrier: bool,
    after: Option<Ticket>,
    barrier: Option<Ticket>,
    state: &'a BrokerState,
    /// The strongest wait handed to each gate so far: replies, publishes.
    handed: [Wait; 2],
}

impl Tickets<'_> {
    fn take(&mut self, publish: bool, past_barrier: bool) -> Option<Ticket> {
        let need = if past_barrier && self.has_barrier {
            Wait::Barrier
        } else if self.has_after {
            Wait::After
        } else {
            Wait::Nothing
        };
        let handed = &mut self.handed[usize::from(publish)];
        if need <= *handed {
            return None;
        }
        *handed = need;
        let ticket = match need {
            Wait::Barrier => self.barrier.take(),
            _ => self.after.take(),
        };
        ticket.or_else(|| self.state.flush_store())
    }
}
