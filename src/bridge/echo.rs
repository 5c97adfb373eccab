//! MQTT 3.1.1 has no No Local: a bridge subscribed on a 3.1.1 remote to topics it also sends
//! there gets its own messages back. It remembers what it sent recently (topic and payload
//! hashed) and drops a message from the remote that matches one, once. A remote client that
//! publishes exactly the same within the window is dropped too: the price of 3.1.1.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::time::Instant;

/// How long, and how many, sent messages are remembered.
const MEMORY: Duration = Duration::from_secs(30);
const MAX: usize = 10_000;

/// What a 3.1.1 link sent recently.
#[derive(Default)]
pub(super) struct Echoes {
    sent: VecDeque<(u64, Instant)>,
}

impl Echoes {
    /// Remembers a message sent at `now`, forgetting what is too old or too many.
    pub(super) fn remember(&mut self, topic: &str, payload: &[u8], now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) > MEMORY)
            || self.sent.len() >= MAX
        {
            self.sent.pop_front();
        }
        self.sent.push_back((key(topic, payload), now));
    }

    /// Whether the message is one we sent (then forgotten, so a second copy passes).
    pub(super) fn take(&mut self, topic: &str, payload: &[u8]) -> bool {
        let key = key(topic, payload);
        match self.sent.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                self.sent.remove(i);
                true
            }
            None => false,
        }
    }
}

fn key(topic: &str, payload: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sent message is recognised once; one older than the window is not.
    #[test]
    fn echoes_are_recognised_once_within_the_window() {
        let mut e = Echoes::default();
        let t0 = Instant::now();
        e.remember("a/b", b"1", t0);
        assert!(!e.take("a/b", b"2"));
        assert!(!e.take("a/c", b"1"));
        assert!(e.take("a/b", b"1"));
        assert!(!e.take("a/b", b"1"), "a second copy is not an echo");
        e.remember("old", b"x", t0);
        e.remember("new", b"y", t0 + MEMORY + Duration::from_secs(1));
        assert!(!e.take("old", b"x"), "forgotten after the window");
        assert!(e.take("new", b"y"));
    }
}
