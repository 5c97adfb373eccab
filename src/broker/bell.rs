//! How a mailbox wakes a dormant connection. A dormant client's mailbox holds one word, its
//! bell's slot and its bed's token, instead of a `Waker` of its own: a `Waker` would need an
//! allocation per client to carry the token (32 bytes per idle client, docs/architecture.md,
//! memory). Ringing looks the bell up by slot in a table of the process's bells.

use std::num::NonZeroU64;
use std::sync::{Arc, Weak};
use std::task::Waker;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

/// Every live bell, by slot - 1. A slot whose bell is gone is reused; a word left in a mailbox
/// of a broker that is gone then rings the bell that took its slot: a spurious wake-up for one
/// bed at most, which its owner checks (its tokens carry a generation) and may ignore.
static BELLS: RwLock<Vec<Weak<Bell>>> = RwLock::new(Vec::new());

/// Bells live at once in one process (one per broker); the slot takes a word's top 8 bits.
const SLOTS: usize = 255;

/// Bits of a word left for a bed's token.
const TOKEN_BITS: u32 = 56;

/// Tokens a bell can carry: below 2^56.
pub const MAX_TOKEN: usize = (1 << TOKEN_BITS) - 1;

/// Where a dormitory hears which of its beds were rung. One per dormitory.
#[derive(Debug)]
pub struct Bell {
    /// Its place in [`BELLS`] plus one; `None` when every slot was taken (its owner then keeps
    /// its connections awake).
    slot: Option<u64>,
    /// Tokens rung since the owner last looked. Locked with nothing else held but, while a
    /// connection goes dormant, the dormitory's own lock.
    rung: Mutex<Vec<usize>>,
    notify: Notify,
}

impl Bell {
    /// A bell in a free slot, if there is one.
    pub fn new() -> Arc<Bell> {
        let mut bells = BELLS.write();
        let index = match bells.iter().position(|b| b.strong_count() == 0) {
            Some(i) => Some(i),
            None if bells.len() < SLOTS => {
                bells.push(Weak::new());
                Some(bells.len() - 1)
            }
            None => None,
        };
        let bell = Arc::new(Bell {
            slot: index.map(|i| i as u64 + 1),
            rung: Mutex::new(Vec::new()),
            notify: Notify::new(),
        });
        if let Some(i) = index {
            bells[i] = Arc::downgrade(&bell);
        }
        bell
    }

    /// Whether beds can be rung through this bell (it got a slot).
    pub fn has_slot(&self) -> bool {
        self.slot.is_some()
    }

    /// The word a mailbox keeps to ring bed `token` (at most [`MAX_TOKEN`]).
    pub(super) fn word(&self, token: usize) -> Option<NonZeroU64> {
        let token = u64::try_from(token)
            .ok()
            .filter(|t| *t <= MAX_TOKEN as u64)?;
        NonZeroU64::new((self.slot? << TOKEN_BITS) | token)
    }

    /// Records `token` as rung and wakes the owner.
    pub fn ring(&self, token: usize) {
        self.rung.lock().push(token);
        self.notify.notify_one();
    }

    /// Wakes the owner with no token (it has something else to look at).
    pub fn nudge(&self) {
        self.notify.notify_one();
    }

    /// Waits for a ring or a nudge.
    pub async fn heard(&self) {
        self.notify.notified().await;
    }

    /// Moves the tokens rung so far into `into`.
    pub fn take_rung(&self, into: &mut Vec<usize>) {
        into.append(&mut self.rung.lock());
    }
}

/// Who a mailbox wakes on its next signal: a running connection's task, or a dormant one's
/// bed. 16 bytes, as an `Option<Waker>`: `Bed(None)` is nobody.
#[derive(Debug)]
pub(super) enum Waiter {
    Task(Waker),
    Bed(Option<NonZeroU64>),
}

impl Default for Waiter {
    fn default() -> Waiter {
        Waiter::Bed(None)
    }
}

impl Waiter {
    /// Whether it is `waker`'s task already.
    pub fn wakes(&self, waker: &Waker) -> bool {
        matches!(self, Waiter::Task(w) if w.will_wake(waker))
    }

    /// Wakes it (nobody: nothing happens).
    pub fn wake(self) {
        match self {
            Waiter::Task(w) => w.wake(),
            Waiter::Bed(Some(word)) => ring(word),
            Waiter::Bed(None) => {}
        }
    }
}

fn ring(word: NonZeroU64) {
    let word = word.get();
    let Ok(index) = usize::try_from((word >> TOKEN_BITS) - 1) else {
        return;
    };
    let bell = BELLS.read().get(index).and_then(Weak::upgrade);
    if let (Some(bell), Ok(token)) = (bell, usize::try_from(word & MAX_TOKEN as u64)) {
        bell.ring(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_is_as_small_as_an_optional_waker() {
        assert_eq!(
            std::mem::size_of::<Waiter>(),
            std::mem::size_of::<Option<Waker>>()
        );
    }

    #[test]
    fn a_word_rings_its_own_bell_with_its_token() {
        let a = Bell::new();
        let b = Bell::new();
        let word = b.word(MAX_TOKEN).expect("a slot");
        Waiter::Bed(Some(word)).wake();
        let (mut heard_a, mut heard_b) = (Vec::new(), Vec::new());
        a.take_rung(&mut heard_a);
        b.take_rung(&mut heard_b);
        // (Other tests' words may ring a bell that took their gone bell's slot: only this
        // word's token is looked for.)
        assert!(!heard_a.contains(&MAX_TOKEN));
        assert!(heard_b.contains(&MAX_TOKEN));
        assert!(a.word(MAX_TOKEN + 1).is_none());
    }

    #[test]
    fn a_word_outliving_its_bell_rings_nobody() {
        let gone = Bell::new();
        let word = gone.word(7).expect("a slot");
        drop(gone);
        Waiter::Bed(Some(word)).wake();
        assert!(Bell::new().has_slot(), "the slot is free again");
    }
}
