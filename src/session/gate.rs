//! "Send this only once that is durable", without blocking the task and without reordering:
//! one [`Gate`] per kind of packet a carrier sends (acknowledgements keep their order
//! [MQTT-4.6.0-2] [MQTT-4.6.0-3], and so do PUBLISHes). An item behind a store ticket waits for
//! it; an item behind a waiting item waits for that one, whatever its own ticket.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use crate::store::{StoreError, Ticket};

/// Items held until store writes they depend on are durable, released in the order given.
#[derive(Debug)]
pub struct Gate<T> {
    /// Boxed, and only while something is held: without persistence nothing ever is, and every
    /// connection has two gates (memory per connection).
    #[allow(clippy::box_collection)]
    held: Option<Box<VecDeque<Held<T>>>>,
}

#[derive(Debug)]
struct Held<T> {
    /// `None`: nothing to wait for but the items before it.
    ticket: Option<Ticket>,
    item: T,
}

impl<T> Default for Gate<T> {
    fn default() -> Self {
        Gate { held: None }
    }
}

impl<T> Gate<T> {
    /// Passes `item` through at once (returned) when it waits for nothing and nothing is held;
    /// holds it otherwise.
    pub fn pass(&mut self, ticket: Option<Ticket>, item: T) -> Option<T> {
        if ticket.is_none() && self.held.is_none() {
            return Some(item);
        }
        self.held
            .get_or_insert_with(Box::default)
            .push_back(Held { ticket, item });
        None
    }

    /// Hands every item that may go now to `send`, in order. A failed store write is returned
    /// (and the items behind it stay held): what depended on it must never go out.
    pub fn release(&mut self, mut send: impl FnMut(T)) -> Result<(), StoreError> {
        let Some(held) = &mut self.held else {
            return Ok(());
        };
        while let Some(front) = held.front_mut() {
            if let Some(t) = &mut front.ticket {
                match t.result() {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(())) => {}
                }
            }
            if let Some(h) = held.pop_front() {
                send(h.item);
            }
        }
        self.held = None;
        Ok(())
    }

    /// Takes out the first held item (the one whose write failed, after [`Gate::release`]
    /// returned the failure).
    pub fn take_front(&mut self) -> Option<T> {
        let held = self.held.as_mut()?;
        let item = held.pop_front().map(|h| h.item);
        if held.is_empty() {
            self.held = None;
        }
        item
    }

    /// Ready when the first held item may be released (or nothing is held: never ready then).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.held.as_mut().and_then(|h| h.front_mut()) {
            None => Poll::Pending,
            Some(Held { ticket: None, .. }) => Poll::Ready(()),
            Some(Held {
                ticket: Some(t), ..
            }) => t.poll_ready(cx),
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_none()
    }
}
