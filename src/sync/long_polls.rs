//! How many `/sync` and sliding sync requests are waiting for news right now, for the
//! metrics: a counter each, up while a request waits and down when it stops (a guard, so an
//! answer, an error or a dropped connection all count it out).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct LongPolls {
    sync: AtomicU64,
    sliding: AtomicU64,
}

impl LongPolls {
    /// Counts a `/sync` as waiting until the guard is dropped.
    pub(crate) fn sync_waits(&self) -> Waiting<'_> {
        Waiting::enter(&self.sync)
    }

    /// Counts a sliding sync request as waiting until the guard is dropped.
    pub(crate) fn sliding_waits(&self) -> Waiting<'_> {
        Waiting::enter(&self.sliding)
    }

    /// `/sync` and sliding sync requests waiting now.
    pub(crate) fn waiting(&self) -> (u64, u64) {
        (
            self.sync.load(Ordering::Relaxed),
            self.sliding.load(Ordering::Relaxed),
        )
    }
}

/// One waiting request, counted until dropped.
pub(crate) struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicU64) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_while_it_waits() {
        let polls = LongPolls::default();
        let first = polls.sync_waits();
        let second = polls.sliding_waits();
        let third = polls.sync_waits();
        assert_eq!(polls.waiting(), (2, 1));
        drop(first);
        drop(second);
        assert_eq!(polls.waiting(), (1, 0));
        drop(third);
        assert_eq!(polls.waiting(), (0, 0));
    }
}
