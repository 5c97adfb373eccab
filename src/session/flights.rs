//! The outbound flows of one session, in the order they were sent, found by packet id in O(1):
//! so no step of sending or acknowledging costs more with 60,000 messages in flight than with
//! 20.
//!
//! Entries sit in a `VecDeque` in sending order (the order of the resend on resume
//! [MQTT-4.4.0-1]); each has a serial number, its place counted from the first ever pushed
//! (wrapping `u32`), and an index maps its packet id to that serial. An entry acknowledged out
//! of order leaves a tombstone in its place, so no other entry moves and the serials stay
//! true; tombstones at the front are popped as they appear. When tombstones outnumber live
//! entries the queue is compacted (live entries renumbered, index rebuilt): its cost, linear in
//! what is held, is paid for by the removals that made the tombstones, and a first message the
//! receiver never acknowledges cannot make the queue grow past about twice the window.
//!
//! A free packet id is found from where the last one was given: one lookup while ids are free.
//! With many in flight (from [`DENSE`] on) a bitmap of the ids in use, with a summary of its
//! full words, finds the next free id in a bounded number of word operations however few are
//! left, so even a window of 65,535 acknowledged out of order costs O(1) per send.
//!
//! An idle session pays one pointer: nothing is allocated until a flow starts, and a burst's
//! room is given back once every flow has ended.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::outbound::Inflight;
use crate::protocol::PacketId;

/// Below this many entries the queue is never compacted (a few tombstones cost less than the
/// renumbering), and its room is kept once empty (no allocation per message for a client that
/// keeps a few messages in flight).
const SMALL: usize = 32;

/// A packet id's hash: one multiplication by an odd constant (Fibonacci hashing). The low bits
/// the table indexes by are a bijection of the id's low bits, so consecutive ids never collide;
/// the high bits hashbrown tags entries with are well mixed. No SipHash per packet.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u16` keys are hashed (`write_u16`); kept correct for anything else.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Index = HashMap<u16, u32, BuildHasherDefault<IdHasher>>;

/// From this many flows in flight on, free ids are found through [`Used`] (8 KiB, next to at
/// least 4,096 entries of about 100 bytes each).
const DENSE: usize = 4096;

/// The packet ids in use, one bit each (bit 0, no id, always set), and which of its words are
/// full: the next free id is at most 16 + 2 word tests away.
struct Used {
    words: [u64; 1024],
    full: [u64; 16],
}

impl Used {
    fn new<'a>(ids: impl Iterator<Item = &'a u16>) -> Box<Used> {
        let mut u = Box::new(Used {
            words: [0; 1024],
            full: [0; 16],
        });
        u.set(0);
        for id in ids {
            u.set(*id);
        }
        u
    }

    fn set(&mut self, id: u16) {
        let w = usize::from(id / 64);
        self.words[w] |= 1 << (id % 64);
        if self.words[w] == u64::MAX {
            self.full[w / 64] |= 1 << (w % 64);
        }
    }

    fn clear(&mut self, id: u16) {
        let w = usize::from(id / 64);
        self.words[w] &= !(1 << (id % 64));
        self.full[w / 64] &= !(1 << (w % 64));
    }

    /// The first id not in use at or after `from`, wrapping; `None` when all are.
    fn free_from(&self, from: u16) -> Option<u16> {
        let w = usize::from(from / 64);
        let here = !self.words[w] & (u64::MAX << (from % 64));
        if here != 0 {
            return Some((w * 64) as u16 + here.trailing_zeros() as u16);
        }
        // The next word with a free bit after `w`, wrapping round to `w` itself (whose free
        // bits, if any, are then below `from`).
        let next = w + 1;
        for k in 0..=16 {
            let at = (next / 64 + k) % 16;
            let mut free = !self.full[at];
            if k == 0 {
                free &= u64::MAX.checked_shl((next % 64) as u32).unwrap_or(0);
            }
            if free != 0 {
                let word = at * 64 + free.trailing_zeros() as usize;
                let bits = !self.words[word];
                return Some((word * 64) as u16 + bits.trailing_zeros() as u16);
            }
        }
        None
    }
}

impl std::fmt::Debug for Used {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Used")
    }
}

/// What a session with flows in progress holds.
#[derive(Debug, Default)]
struct Inner {
    /// In sending order; `None` is a tombstone (ended out of order).
    entries: VecDeque<Option<Inflight>>,
    /// Serial of `entries[0]`.
    base: u32,
    /// Packet id → serial, for every live entry.
    index: Index,
    /// The ids in use as bits, once [`DENSE`] were in flight at once.
    used: Option<Box<Used>>,
}

impl Inner {
    fn slot(&self, serial: u32) -> usize {
        serial.wrapping_sub(self.base) as usize
    }

    fn live(&self) -> usize {
        self.index.len()
    }

    /// Pops tombstones off the front; compacts once they outnumber live entries.
    fn tidy(&mut self) {
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.base = self.base.wrapping_add(1);
        }
        let dead = self.entries.len() - self.live();
        if dead > self.live() && self.entries.len() > SMALL {
            self.compact();
        }
    }

    /// Drops every tombstone and renumbers the live entries: O(entries), once per as many
    /// removals.
    fn compact(&mut self) {
        self.entries.retain(Option::is_some);
        if self.entries.capacity() > 4 * self.entries.len().max(SMALL) {
            self.entries.shrink_to(2 * self.entries.len().max(SMALL));
        }
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(e) = e {
                let serial = self.base.wrapping_add(i as u32);
                self.index.insert(e.pkid.get(), serial);
            }
        }
    }
}

/// The flows in progress of one session (see the module's comment).
#[derive(Debug, Default)]
pub(super) struct Flights {
    inner: Option<Box<Inner>>,
}

impl Flights {
    /// Flows in progress.
    pub(super) fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.live())
    }

    /// Whether a flow is in progress under `pkid`.
    pub(super) fn contains(&self, pkid: PacketId) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.index.contains_key(&pkid.get()))
    }

    /// The first packet id not in use at or after `from`, wrapping from 65,535 to 1; `None`
    /// when every id is in use. One lookup while ids are free; bounded word operations once
    /// [`DENSE`] are in flight; below that, at most 65,535 / (65,535 - 4,096) lookups
    /// amortized (an id is looked past at most once per turn of the ids).
    pub(super) fn free_from(&self, from: PacketId) -> Option<PacketId> {
        let Some(inner) = self.inner.as_ref() else {
            return Some(from);
        };
        if let Some(used) = &inner.used {
            return used.free_from(from.get()).and_then(PacketId::new);
        }
        let mut id = from;
        for _ in 0..u16::MAX {
            if !inner.index.contains_key(&id.get()) {
                return Some(id);
            }
            id = id.next();
        }
        None
    }

    /// The flow under `pkid`.
    pub(super) fn get(&self, pkid: PacketId) -> Option<&Inflight> {
        let inner = self.inner.as_ref()?;
        let serial = *inner.index.get(&pkid.get())?;
        inner.entries.get(inner.slot(serial))?.as_ref()
    }

    /// The flow under `pkid`, to change its state.
    pub(super) fn get_mut(&mut self, pkid: PacketId) -> Option<&mut Inflight> {
        let inner = self.inner.as_mut()?;
        let serial = *inner.index.get(&pkid.get())?;
        let at = inner.slot(serial);
        inner.entries.get_mut(at)?.as_mut()
    }

    /// Appends a flow, the newest sent. Its packet id must not be in use
    /// ([`Flights::contains`]).
    pub(super) fn push_back(&mut self, e: Inflight) {
        let inner = self.inner.get_or_insert_with(Box::default);
        let serial = inner.base.wrapping_add(inner.entries.len() as u32);
        let old = inner.index.insert(e.pkid.get(), serial);
        debug_assert!(old.is_none(), "packet id {} in use", e.pkid);
        match &mut inner.used {
            Some(used) => used.set(e.pkid.get()),
            None if inner.index.len() >= DENSE => {
                inner.used = Some(Used::new(inner.index.keys()));
            }
            None => {}
        }
        inner.entries.push_back(Some(e));
    }

    /// Ends the flow under `pkid`: O(1) amortized, whatever its place.
    pub(super) fn remove(&mut self, pkid: PacketId) -> Option<Inflight> {
        let inner = self.inner.as_mut()?;
        let serial = inner.index.remove(&pkid.get())?;
        if let Some(used) = &mut inner.used {
            used.clear(pkid.get());
        }
        let at = inner.slot(serial);
        let e = inner.entries.get_mut(at)?.take();
        inner.tidy();
        if inner.live() == 0 && inner.entries.capacity() > SMALL {
            // A burst's room is not kept once every flow has ended.
            self.inner = None;
        }
        e
    }

    /// The flows in sending order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Inflight> + '_ {
        self.inner
            .iter()
            .flat_map(|i| i.entries.iter())
            .filter_map(Option::as_ref)
    }

    /// Keeps the flows `keep` says to, in order; O(entries) (for a session's end, not per
    /// message).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Inflight) -> bool) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        for slot in inner.entries.iter_mut() {
            if slot.as_ref().is_some_and(|e| !keep(e)) {
                if let Some(e) = slot.take() {
                    inner.index.remove(&e.pkid.get());
                    if let Some(used) = &mut inner.used {
                        used.clear(e.pkid.get());
                    }
                }
            }
        }
        inner.compact();
        inner.tidy();
        if inner.live() == 0 {
            self.inner = None;
        }
    }

    /// Entries held, tombstones included (for tests: memory stays bounded).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.entries.len())
    }
}

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdHasher")
    }
}

#[cfg(test)]
mod tests {
    use super::Used;

    /// The bitmap's next free id is the naive scan's, for random sets of ids in use, dense and
    /// sparse, from every kind of place (inside a full word, at a word's end, past 65,535).
    #[test]
    fn next_free_id_matches_a_scan() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for density in [0u64, 50, 99, 100] {
            let mut used = Used::new([].iter());
            let mut set = vec![false; 65536];
            set[0] = true;
            for id in 1..=u16::MAX {
                if next() % 100 < density {
                    used.set(id);
                    set[usize::from(id)] = true;
                }
            }
            // Leave exactly one free id in the full case, and clear some to exercise `clear`.
            if density == 100 {
                used.clear(40_000);
                set[40_000] = false;
            }
            for _ in 0..2_000 {
                let from = (next() % 65_535 + 1) as u16;
                let naive = (0..65_535u32)
                    .map(|k| ((u32::from(from) - 1 + k) % 65_535 + 1) as u16)
                    .find(|id| !set[usize::from(*id)]);
                assert_eq!(
                    used.free_from(from),
                    naive,
                    "from {from}, density {density}"
                );
            }
        }
        let mut all = Used::new([].iter());
        for id in 1..=u16::MAX {
            all.set(id);
        }
        assert_eq!(all.free_from(1), None);
        assert_eq!(all.free_from(u16::MAX), None);
    }
}
