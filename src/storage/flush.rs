//! Group commit: callers of [`super::Storage::flush`] at the same time share one flush.
//!
//! A flush (sled's log written out, then `fdatasync`) makes durable everything written
//! before it began, whoever asked. So a caller whose writes are already applied needs one
//! flush that *begins* after its call, not one of its own: while a flush runs, the callers
//! that arrive wait for it to end, and the first of them then flushes once for all of
//! them. Eight clients sending at once thus cost about two flushes per round instead of
//! eight, and each still returns only once its own writes are on disk.

use std::sync::atomic::{AtomicU64, Ordering};

/// The flushes begun and finished, numbered from 1 in the order they began.
#[derive(Default)]
pub(super) struct FlushGroup {
    /// The number of the last flush begun.
    begun: AtomicU64,
    /// The number of the last flush finished without error: every write applied before
    /// flush `n` began is durable once `finished >= n`.
    finished: AtomicU64,
    /// Held by the one flush running; the callers waiting for it queue here in order.
    running: tokio::sync::Mutex<()>,
}

impl FlushGroup {
    /// How many flushes have begun (for tests that a path flushes, or does not).
    #[cfg(test)]
    pub(super) fn begun(&self) -> u64 {
        self.begun.load(Ordering::SeqCst)
    }

    /// Returns once a flush that began after this call has finished: the caller's writes,
    /// applied before, are durable. `flush` runs at most once per group of callers.
    pub(super) async fn flush<E, F>(&self, flush: F) -> Result<(), E>
    where
        F: AsyncFnOnce() -> Result<(), E>,
    {
        // Any flush numbered past what has begun so far begins after this point.
        let needed = self.begun.load(Ordering::SeqCst) + 1;
        if self.finished.load(Ordering::SeqCst) >= needed {
            return Ok(());
        }
        let _running = self.running.lock().await;
        // The flush that ran while we waited may have begun after our call.
        if self.finished.load(Ordering::SeqCst) >= needed {
            return Ok(());
        }
        let number = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        flush().await?;
        self.finished.fetch_max(number, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    /// A flush that only counts itself.
    fn counted(flushes: &AtomicUsize) -> Result<(), ()> {
        flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[tokio::test]
    async fn callers_during_a_flush_share_the_next_one() {
        let group = Arc::new(FlushGroup::default());
        let flushes = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        // A first flush, held open until released.
        let first = {
            let (group, flushes, mut gate) = (group.clone(), flushes.clone(), gate.clone());
            tokio::spawn(async move {
                group
                    .flush(async || {
                        flushes.fetch_add(1, Ordering::SeqCst);
                        gate.wait_for(|open| *open).await.map_err(|_| ())?;
                        Ok::<(), ()>(())
                    })
                    .await
            })
        };
        while flushes.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Eight callers arrive while it runs: none is served by it, one flush serves all.
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let (group, flushes) = (group.clone(), flushes.clone());
                tokio::spawn(async move { group.flush(async || counted(&flushes)).await })
            })
            .collect();
        // Each reaches the queue behind the running flush before it is released.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        release.send(true).expect("released");
        first.await.expect("first").expect("flushed");
        for caller in waiting {
            caller.await.expect("caller").expect("flushed");
        }
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
        // A caller after them all flushes again.
        group
            .flush(async || counted(&flushes))
            .await
            .expect("flushed");
        assert_eq!(flushes.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_flush_serves_nobody() {
        let group = FlushGroup::default();
        assert!(group.flush(async || Err::<(), _>("disk")).await.is_err());
        let flushed = AtomicUsize::new(0);
        group
            .flush(async || counted(&flushed))
            .await
            .expect("flushed");
        assert_eq!(flushed.load(Ordering::SeqCst), 1);
    }
}
