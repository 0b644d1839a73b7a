//! How long to leave a server alone after it failed to take a transaction. The dispatcher
//! keeps it in memory and records it (wall clock) in `destination_state`, so a server down
//! for days is not retried at every restart; one that contacts us is retried at once.

use std::time::{Duration, Instant};

/// The longest wait between two tries: a server down for days is tried once a day, and
/// otherwise only when it contacts us.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// A server's failures so far: the wait before the next try, and when that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) delay: Duration,
    pub(crate) until: Instant,
}

impl Backoff {
    /// After the first failure: wait `initial`.
    pub(crate) fn first(initial: Duration, now: Instant) -> Backoff {
        let delay = initial.min(MAX_DELAY);
        Backoff {
            delay,
            until: now + delay,
        }
    }

    /// After one more failure: twice the last wait, at most [`MAX_DELAY`].
    pub(crate) fn next(self, now: Instant) -> Backoff {
        let delay = self.delay.saturating_mul(2).min(MAX_DELAY);
        Backoff {
            delay,
            until: now + delay,
        }
    }

    /// The backoff after a failure, from the one before it (if any).
    pub(crate) fn after_failure(
        previous: Option<Backoff>,
        initial: Duration,
        now: Instant,
    ) -> Backoff {
        match previous {
            Some(previous) => previous.next(now),
            None => Backoff::first(initial, now),
        }
    }

    /// A backoff recorded as `delay_ms` and a wall-clock `retry_at_ms`, seen at `now` and
    /// `now_ms` (a retry time in the past is due now; one beyond the longest wait, from a
    /// clock set back, waits the longest wait).
    pub(crate) fn recorded(delay_ms: u64, retry_at_ms: u64, now: Instant, now_ms: u64) -> Backoff {
        let left = Duration::from_millis(retry_at_ms.saturating_sub(now_ms)).min(MAX_DELAY);
        Backoff {
            delay: Duration::from_millis(delay_ms).min(MAX_DELAY),
            until: now + left,
        }
    }

    pub(crate) fn is_over(&self, now: Instant) -> bool {
        now >= self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_a_day() {
        let now = Instant::now();
        let initial = Duration::from_secs(30);
        let mut backoff = Backoff::after_failure(None, initial, now);
        assert_eq!(backoff.delay, initial);
        assert!(!backoff.is_over(now));
        assert!(backoff.is_over(now + initial));
        let mut delays = vec![backoff.delay.as_secs()];
        for _ in 0..14 {
            backoff = Backoff::after_failure(Some(backoff), initial, now);
            delays.push(backoff.delay.as_secs());
        }
        assert_eq!(
            delays,
            [
                30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 30720, 61440, 86400, 86400,
                86400
            ]
        );
    }

    #[test]
    fn a_recorded_backoff_resumes_where_it_was() {
        let now = Instant::now();
        let resumed = Backoff::recorded(60_000, 1_030_000, now, 1_000_000);
        assert_eq!(resumed.delay, Duration::from_secs(60));
        assert_eq!(resumed.until, now + Duration::from_secs(30));
        let past = Backoff::recorded(60_000, 10, now, 1_000_000);
        assert!(past.is_over(now));
        let far = Backoff::recorded(u64::MAX, u64::MAX, now, 0);
        assert_eq!((far.delay, far.until), (MAX_DELAY, now + MAX_DELAY));
    }

    #[test]
    fn an_initial_wait_above_the_maximum_is_capped() {
        let backoff = Backoff::first(Duration::from_secs(100_000), Instant::now());
        assert_eq!(backoff.delay, MAX_DELAY);
    }
}
