//! Caps on connections open at once: the broker's (`limits.max_connections`, changed by a
//! reload) and, within it, one per listener. A [`Slot`] holds a connection's place for as long
//! as it lives, awake or dormant, and names the kind of listener it came through (for the
//! connection metrics) without adding a byte to an idle connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::ListenerKind;
use crate::metrics;

/// A cap on connections open at once: the broker's or one listener's, which also counts
/// against the broker's.
pub struct Limit {
    open: AtomicUsize,
    max: AtomicUsize,
    within: Option<Arc<Limit>>,
    /// The listener whose connections take their places directly under this limit.
    listener: ListenerKind,
    /// That listener's place among the broker's (0: the default one), for the admin API.
    index: u16,
}

impl Limit {
    /// The broker-wide cap of `max`. The default listener (plain TCP) has no cap of its own:
    /// its connections take their places directly under this one.
    pub fn broker(max: usize) -> Arc<Limit> {
        Arc::new(Limit {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            within: None,
            listener: ListenerKind::Tcp,
            index: 0,
        })
    }

    /// A `listener`'s (the `index`th, from 1) own cap of `max` (`usize::MAX`: only the
    /// broker's), counted within `broker`.
    pub fn listener(
        listener: ListenerKind,
        index: u16,
        max: usize,
        broker: &Arc<Limit>,
    ) -> Arc<Limit> {
        Arc::new(Limit {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            within: Some(Arc::clone(broker)),
            listener,
            index,
        })
    }

    /// A new cap; connections over it stay, new ones wait for room.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max.load(Ordering::Relaxed) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        match &self.within {
            Some(outer) if !outer.take() => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                false
            }
            _ => true,
        }
    }

    fn give_back(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(outer) = &self.within {
            outer.give_back();
        }
    }
}

/// A listener's name in the admin API: `kind:port`, e.g. `tcp:1883`, `wss:8884`.
pub fn listener_name(kind: ListenerKind, port: u16) -> Arc<str> {
    Arc::from(format!("{}:{port}", kind.as_str()))
}

/// Holds one place under a [`Limit`] for as long as the client is connected, awake or
/// dormant; counts the close when it goes.
pub struct Slot {
    limit: Arc<Limit>,
}

impl Slot {
    /// A place under `limit` (and the limits it is within), if there is room.
    pub fn take(limit: &Arc<Limit>) -> Option<Slot> {
        limit.take().then(|| Slot {
            limit: Arc::clone(limit),
        })
    }

    /// The kind of listener the connection came through.
    pub fn listener_kind(&self) -> ListenerKind {
        self.limit.listener
    }

    /// The place of the listener the connection came through among the broker's.
    pub fn listener_index(&self) -> u16 {
        self.limit.index
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limit.give_back();
        metrics::connection_closed(self.limit.listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener's cap and the broker's both hold; a slot given back frees both, and names its
    /// listener.
    #[test]
    fn listener_limit_counts_within_the_broker_limit() {
        let broker = Limit::broker(2);
        let ws = Limit::listener(ListenerKind::Ws, 1, 1, &broker);
        let a = Slot::take(&ws).expect("room on the ws listener");
        assert_eq!(a.listener_kind(), ListenerKind::Ws);
        assert_eq!(a.listener_index(), 1);
        assert!(Slot::take(&ws).is_none(), "the ws listener is full");
        let b = Slot::take(&broker).expect("room under the broker's limit");
        assert_eq!(b.listener_kind(), ListenerKind::Tcp);
        assert!(Slot::take(&broker).is_none(), "the broker is full");
        drop(a);
        assert!(Slot::take(&ws).is_some(), "a's place is free again");
    }
}
