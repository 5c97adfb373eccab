//! How fast one listener lets CONNECTs through to authentication (`limits.max_connect_rate`,
//! `limits.connect_burst`): a token bucket per listener, asked once a CONNECT is read (so the
//! refusal can speak the client's version) and before its password is checked (the expensive
//! part a reconnect storm must not reach). The rate is read from the settings at each check,
//! so a reload applies at once.

use std::time::Instant;

use parking_lot::Mutex;

/// One listener's token bucket. It starts full: a broker that just started lets a burst in.
#[derive(Debug, Default)]
pub struct ConnectRate {
    bucket: Mutex<Bucket>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Tokens left; one per CONNECT let through.
    tokens: f64,
    /// When `tokens` was last brought up to date; `None`: never used (full).
    last: Option<Instant>,
}

impl ConnectRate {
    /// Whether a CONNECT at `now` may go on, at `rate` per second with a bucket of `burst`
    /// (`None`: the rate); `rate` `None` lets everything through and leaves the bucket alone.
    pub fn admit(&self, rate: Option<u32>, burst: Option<u32>, now: Instant) -> bool {
        let Some(rate) = rate else {
            return true;
        };
        let mut b = self.bucket.lock();
        b.tokens = b.at(rate, burst, now);
        b.last = Some(b.last.map_or(now, |last| last.max(now)));
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether [`ConnectRate::admit`] at `now` would refuse, without taking a token.
    pub fn exhausted(&self, rate: Option<u32>, burst: Option<u32>, now: Instant) -> bool {
        rate.is_some_and(|rate| self.bucket.lock().at(rate, burst, now) < 1.0)
    }
}

impl Bucket {
    /// Tokens at `now`, refilled at `rate` per second up to `burst` (`None`: the rate); a
    /// bucket never used is full, and an instant before the last one (another thread's) adds
    /// nothing.
    fn at(&self, rate: u32, burst: Option<u32>, now: Instant) -> f64 {
        let size = f64::from(burst.unwrap_or(rate).max(1));
        match self.last {
            None => size,
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_secs_f64();
                (self.tokens + elapsed * f64::from(rate)).min(size)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::ConnectRate;

    /// A burst goes through at once, the next CONNECT waits for a token, and tokens come back
    /// at the rate, never more than the burst.
    #[test]
    fn bucket_lets_a_burst_through_then_the_rate() {
        let r = ConnectRate::default();
        let t0 = Instant::now();
        let admitted = (0..10).filter(|_| r.admit(Some(2), Some(5), t0)).count();
        assert_eq!(admitted, 5);
        assert!(!r.admit(Some(2), Some(5), t0 + Duration::from_millis(400)));
        assert!(r.admit(Some(2), Some(5), t0 + Duration::from_millis(500)));
        // A long quiet spell refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        let admitted = (0..10).filter(|_| r.admit(Some(2), Some(5), later)).count();
        assert_eq!(admitted, 5);
    }

    /// `exhausted` foretells `admit` without taking a token.
    #[test]
    fn exhausted_asks_without_taking() {
        let r = ConnectRate::default();
        let t0 = Instant::now();
        assert!(!r.exhausted(Some(2), Some(2), t0), "a new bucket is full");
        assert!(!r.exhausted(None, None, t0), "no rate, nothing exhausted");
        assert!(r.admit(Some(2), Some(2), t0));
        assert!(!r.exhausted(Some(2), Some(2), t0));
        assert!(!r.exhausted(Some(2), Some(2), t0), "asking took nothing");
        assert!(r.admit(Some(2), Some(2), t0));
        assert!(r.exhausted(Some(2), Some(2), t0));
        assert!(!r.admit(Some(2), Some(2), t0));
        let later = t0 + Duration::from_millis(500);
        assert!(!r.exhausted(Some(2), Some(2), later));
        assert!(r.admit(Some(2), Some(2), later));
    }

    /// Without a burst the bucket holds one second's worth; without a rate nothing is counted.
    #[test]
    fn burst_defaults_to_the_rate_and_no_rate_admits_all() {
        let r = ConnectRate::default();
        let t0 = Instant::now();
        assert_eq!((0..10).filter(|_| r.admit(Some(3), None, t0)).count(), 3);
        let open = ConnectRate::default();
        assert!((0..10_000).all(|_| open.admit(None, None, t0)));
    }
}
