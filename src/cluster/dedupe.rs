//! Drops the extra copies of a core (QoS 0) message that overlapping NATS subscriptions bring
//! (`a/+/c` and `a/b/+` both match `a/b/c`, and NATS delivers once per subscription). Each
//! origin numbers its messages; a window of the last [`WINDOW`] numbers per origin says which
//! were seen. The first copy wins, so per-topic order survives the merge of subscriptions.

use std::collections::HashMap;

/// Sequence numbers remembered per origin. A copy older than this is dropped as seen: copies
/// of one message arrive within a few messages of each other, never 64 k apart.
pub(super) const WINDOW: u64 = 1 << 16;
const WORDS: usize = (WINDOW / 64) as usize;
/// Origins (node runs) remembered, 8 KiB each.
const MAX_ORIGINS: usize = 256;

/// One origin's window: bit `seq % WINDOW` says whether `seq` was seen, for seqs in
/// `(top - WINDOW, top]`.
struct Window {
    top: u64,
    bits: Box<[u64; WORDS]>,
}

impl Window {
    fn new() -> Window {
        Window {
            top: 0,
            bits: Box::new([0; WORDS]),
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// True the first time `seq` is offered.
    fn first(&mut self, seq: u64) -> bool {
        if seq > self.top {
            if seq - self.top >= WINDOW {
                self.bits.fill(0);
            } else {
                for s in self.top + 1..seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            self.top = seq;
            let (w, b) = Self::bit(seq);
            self.bits[w] |= b;
            return true;
        }
        if self.top - seq >= WINDOW {
            return false;
        }
        let (w, b) = Self::bit(seq);
        let seen = self.bits[w] & b != 0;
        self.bits[w] |= b;
        !seen
    }
}

/// Windows per origin: a node's run (its id and a number drawn at start), so a restarted
/// node numbering from 1 again is a new origin.
#[derive(Default)]
pub(super) struct Dedupe {
    origins: HashMap<String, Window>,
}

impl Dedupe {
    /// True the first time (`origin`, `seq`) is offered; false for a copy.
    pub(super) fn first(&mut self, origin: &str, seq: u64) -> bool {
        match self.origins.get_mut(origin) {
            Some(w) => w.first(seq),
            None => {
                if self.origins.len() >= MAX_ORIGINS {
                    // Origins are node runs (a restart is a new one): old runs are long silent.
                    self.origins.clear();
                }
                let mut w = Window::new();
                let first = w.first(seq);
                self.origins.insert(origin.to_string(), w);
                first
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_dropped_in_any_interleaving() {
        let mut d = Dedupe::default();
        assert!(d.first("a", 1));
        assert!(d.first("a", 2));
        assert!(!d.first("a", 1));
        assert!(d.first("b", 1), "origins are separate");
        assert!(d.first("a", 5));
        assert!(d.first("a", 3), "late but unseen");
        assert!(!d.first("a", 3));
        assert!(!d.first("a", 5));
        assert!(d.first("a", 4));
    }

    #[test]
    fn the_window_slides_and_wraps() {
        let mut d = Dedupe::default();
        for s in 1..=3 * WINDOW {
            assert!(d.first("a", s));
        }
        for s in 2 * WINDOW + 1..=3 * WINDOW {
            assert!(!d.first("a", s), "{s}");
        }
        assert!(
            !d.first("a", WINDOW),
            "older than the window counts as seen"
        );
        assert!(d.first("a", 10 * WINDOW), "a jump clears the window");
        assert!(d.first("a", 10 * WINDOW - 1));
        for o in 0..MAX_ORIGINS {
            d.first(&o.to_string(), 1);
        }
        assert!(
            d.first("a", 1),
            "the oldest runs are forgotten past the cap"
        );
    }
}
