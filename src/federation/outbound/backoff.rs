//! How long to leave a server alone after it failed to take a transaction. Kept in memory
//! only: after a restart every server gets a fresh try, which is what an operator who
//! restarts expects.

use std::time::{Duration, Instant};

/// The longest wait between two tries.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(3600);

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

    pub(crate) fn is_over(&self, now: Instant) -> bool {
        now >= self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_an_hour() {
        let now = Instant::now();
        let initial = Duration::from_secs(30);
        let mut backoff = Backoff::after_failure(None, initial, now);
        assert_eq!(backoff.delay, initial);
        assert!(!backoff.is_over(now));
        assert!(backoff.is_over(now + initial));
        let mut delays = vec![backoff.delay.as_secs()];
        for _ in 0..10 {
            backoff = Backoff::after_failure(Some(backoff), initial, now);
            delays.push(backoff.delay.as_secs());
        }
        assert_eq!(
            delays,
            [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]
        );
    }

    #[test]
    fn an_initial_wait_above_the_maximum_is_capped() {
        let backoff = Backoff::first(Duration::from_secs(10_000), Instant::now());
        assert_eq!(backoff.delay, MAX_DELAY);
    }
}
