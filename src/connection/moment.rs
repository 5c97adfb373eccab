//! [`Moment`]: an instant in 8 bytes, for what a dormant connection keeps.

use std::time::Duration;

use tokio::time::Instant;

/// A moment, in whole microseconds (rounded up: a deadline reckoned from it is never early)
/// after a point well before the process started: 8 bytes where an `Instant` takes 16, in
/// every dormant connection's bed (memory per idle client).
#[derive(Debug, Clone, Copy)]
pub(super) struct Moment(u64);

/// What [`Moment`]s count from: about 12 days before the first is taken (so one taken under
/// a clock that lags, as tokio's paused clock in tests may, still lands after it).
static MOMENT_ZERO: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(|| {
    let now = std::time::Instant::now();
    now.checked_sub(Duration::from_secs(1 << 20)).unwrap_or(now)
});

impl Moment {
    pub(super) fn of(at: Instant) -> Moment {
        let since = at.into_std().saturating_duration_since(*MOMENT_ZERO);
        Moment(u64::try_from(since.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX))
    }

    pub(super) fn instant(self) -> Instant {
        Instant::from_std(*MOMENT_ZERO + Duration::from_micros(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keep-alive deadline reckoned from a [`Moment`] is never early, and late by under a
    /// microsecond.
    #[test]
    fn a_moment_rounds_up_by_less_than_a_microsecond() {
        let now = Instant::now();
        for later in [0, 1, 999, 1_000, 1_001, 123_456_789] {
            let at = now + Duration::from_nanos(later);
            let back = Moment::of(at).instant();
            assert!(back >= at, "{later} ns: early");
            assert!(back - at < Duration::from_micros(1), "{later} ns: late");
        }
    }
}
