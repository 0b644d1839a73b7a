//! Giving memory back to the system. glibc keeps freed heap memory for reuse; after a burst
//! of many small allocations (the state of a large room, joined over federation) that can
//! leave the process hundreds of MB larger for good. `malloc_trim` returns the free pages.

/// Returns freed heap memory to the system (glibc); a no-op elsewhere.
#[allow(unsafe_code)]
pub(crate) fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's free lists; it takes its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What glibc's allocator holds (`mallinfo2`, summed over its arenas), in MiB.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Heap {
    /// In use: small blocks in the arenas and large blocks mapped on their own.
    pub(crate) used: f64,
    /// Freed but kept in the arenas: counted in the RSS where its pages were touched and
    /// not given back (`malloc_trim` returns only whole free pages).
    pub(crate) free: f64,
    /// Large blocks mapped on their own (in `used` too): resident only where touched.
    pub(crate) mapped: f64,
}

/// [`Heap`] now; zeros on other allocators.
#[allow(unsafe_code)]
pub(crate) fn heap() -> Heap {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        let mib = |bytes: usize| bytes as f64 / 1_048_576.0;
        Heap {
            used: mib(info.uordblks + info.hblkhd),
            free: mib(info.fordblks),
            mapped: mib(info.hblkhd),
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    Heap::default()
}

/// The resident set size, in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / 1_048_576.0)
}

/// Logs [`heap`] and the RSS at debug level, naming the step (nothing is measured when
/// debug logging is off).
pub(crate) fn log_usage(step: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let heap = heap();
    tracing::debug!(
        step,
        heap_mib = format!("{:.1}", heap.used),
        free_mib = format!("{:.1}", heap.free),
        mapped_mib = format!("{:.1}", heap.mapped),
        rss_mib = format!("{:.1}", rss_mib()),
        "memory"
    );
}

/// Hands this thread's deferred frees (the database's replaced pages, kept until no reader
/// can hold them) to the queue every thread collects from. Each thread keeps up to 64 of
/// them for itself until its list is full or it exits: a thread that wrote and then went
/// idle (the blocking pool's) would keep them, and what they hold, for as long as it lives.
pub(crate) fn hand_over_deferred() {
    sled::pin().flush();
}

/// Frees the deferred frees queued so far, in at most `rounds` rounds of pin and collect,
/// and says after how many rounds a marker queued behind them ran (the queue is in order:
/// everything queued before it was freed too), or `None` if it did not run (a thread still
/// pinned in an old epoch holds them back).
pub(crate) fn collect_deferred(rounds: usize) -> Option<usize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static MARKERS_RUN: AtomicUsize = AtomicUsize::new(0);
    let before = MARKERS_RUN.load(Ordering::SeqCst);
    {
        let guard = sled::pin();
        guard.defer(|| MARKERS_RUN.fetch_add(1, Ordering::SeqCst));
        guard.flush();
    }
    for round in 0..rounds {
        sled::pin().flush();
        if MARKERS_RUN.load(Ordering::SeqCst) > before {
            return Some(round + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    /// A thread that queues a deferred free and stays alive idle, as a blocking-pool thread
    /// does after a write; returns once the free is queued, and the sender that ends it.
    fn idle_thread_with_deferred_free(
        freed: &Arc<AtomicUsize>,
        hand_over: bool,
    ) -> mpsc::Sender<()> {
        let (queued, wait_queued) = mpsc::channel();
        let (stop, wait_stop) = mpsc::channel::<()>();
        let freed = freed.clone();
        std::thread::spawn(move || {
            sled::pin().defer(move || freed.fetch_add(1, Ordering::SeqCst));
            if hand_over {
                super::hand_over_deferred();
            }
            queued.send(()).expect("queued");
            let _ = wait_stop.recv();
        });
        wait_queued.recv().expect("the thread queued its free");
        stop
    }

    #[test]
    fn an_idle_thread_keeps_its_deferred_frees_until_it_hands_them_over() {
        let kept = Arc::new(AtomicUsize::new(0));
        let stop_kept = idle_thread_with_deferred_free(&kept, false);
        let handed = Arc::new(AtomicUsize::new(0));
        let stop_handed = idle_thread_with_deferred_free(&handed, true);

        assert!(super::collect_deferred(4096).is_some());
        assert_eq!(
            kept.load(Ordering::SeqCst),
            0,
            "still in the idle thread's bag"
        );
        assert_eq!(
            handed.load(Ordering::SeqCst),
            1,
            "handed over, then collected"
        );

        drop((stop_kept, stop_handed));
    }

    /// The next of a xorshift sequence: test data that neither repeats nor needs a crate.
    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// `words` × 16 hex digits: about as compressible as event JSON, not trivially so.
    fn hex_text(seed: &mut u64, words: usize) -> String {
        (0..words)
            .map(|_| format!("{:016x}", xorshift(seed)))
            .collect()
    }

    /// Whether this test has its process to itself (nextest runs one process per test), so
    /// that heap figures are its own. Under `cargo test` other tests allocate beside it,
    /// and the heap tests only log.
    fn under_nextest() -> bool {
        std::env::var_os("NEXTEST").is_some()
    }

    /// sled compresses each page through vendor/zstd's pooled contexts, whose tables grow
    /// with the largest input they have worked on: a context grown on a large page is
    /// dropped, not kept for good. Kept, it holds 1.2 MiB more here, and four of them held
    /// a server at 92 MiB after the join of a 50,000-state room (59 without them).
    #[test]
    fn a_compression_context_grown_on_a_large_page_is_not_kept() {
        let page = hex_text(&mut 0x2545_F491_4F6C_DD1D, 1 << 20);
        let _warm = zstd::block::compress(b"a small page", 3).expect("compress");
        let before = super::heap().used;
        let compressed = zstd::block::compress(page.as_bytes(), 3).expect("compress");
        drop(compressed);
        let kept = super::heap().used - before;
        eprintln!("after compressing 16 MiB, the heap holds {kept:.1} MiB more");
        if under_nextest() {
            assert!(kept < 0.5, "a grown context was kept: {kept:.1} MiB");
        }
    }

    /// Writes `count` rows made by `row` (from one xorshift `seed`) into the tree `tree` of
    /// a new database, flushes, frees what the writes deferred, and checks how much the
    /// heap grew, in MiB, against `limit`: asserted only under nextest (see
    /// [`under_nextest`]), logged always.
    fn heap_grown_writing(
        (tree, count, mut seed): (&str, usize, u64),
        mut row: impl FnMut(&mut u64) -> (Vec<u8>, Vec<u8>),
        limit: f64,
    ) {
        let (_dir, storage) = crate::storage::testing::temporary();
        let before = super::heap().used;
        for _ in 0..count {
            let (key, value) = row(&mut seed);
            crate::storage::testing::write_raw(&storage, tree, &key, &value);
        }
        storage.flush_blocking().expect("flush");
        super::collect_deferred(64);
        let grown = super::heap().used - before;
        eprintln!("heap grew {grown:.1} MiB for {count} rows in {tree}");
        if under_nextest() {
            assert!(grown < limit, "the heap grew {grown:.1} MiB");
        }
    }

    /// sled's cache capacity bounds the memory of the pages it has touched: writing 40,000
    /// rows under random keys (the shape of a large room's events, stored under their IDs)
    /// leaves the heap holding about what the cache allows, not every page written. sled
    /// 0.34.7 as published grew the heap 20.6 MiB here (vendor/sled/PATCH.md); patched, 4.4
    /// (2.8 when the 1 MiB was divided by 3 before change 4 counted pages decoded).
    #[test]
    fn the_cache_capacity_bounds_the_memory_of_pages_touched() {
        let rows = ("rows", 40_000, 0x9E37_79B9_7F4A_7C15_u64);
        heap_grown_writing(
            rows,
            |seed| {
                let id = xorshift(seed).to_be_bytes().to_vec();
                (id, hex_text(seed, 38).into_bytes())
            },
            10.0,
        );
    }

    /// The cache counts a page at what it holds in memory, not at its compressed size on
    /// disk: an index whose keys repeat a room ID and an event type (a large room's state)
    /// compresses to a small fraction of its decoded size, and sled as published then kept
    /// several times the capacity decoded. 40,000 such rows (cache of 1 MiB) grew the heap
    /// by 7.4 MiB with pages counted on disk, and by 3.9 counted decoded
    /// (vendor/sled/PATCH.md, change 4).
    #[test]
    fn the_cache_counts_compressible_pages_at_their_decoded_size() {
        let rows = ("state", 40_000, 0x5851_F42D_4C95_7F2D_u64);
        heap_grown_writing(
            rows,
            |seed| {
                let user = xorshift(seed) % 1_000_000;
                let key = format!(
                    "!aroomofmanymembers:example.org\u{0}m.room.member\u{0}@member{user}:elsewhere.example"
                );
                (
                    key.into_bytes(),
                    format!("${}", hex_text(seed, 3)).into_bytes(),
                )
            },
            6.0,
        );
    }

    /// An index of small rows (a large room's short IDs, positions and memberships) is kept
    /// in few pages, and each page costs bookkeeping for as long as the database is open.
    /// With sled's 16-item leaves, 300,000 rows of 24 bytes grew the heap by 11.3 MiB here;
    /// with leaves of up to 64 small items (vendor/sled/PATCH.md), by 4.9.
    #[test]
    fn an_index_of_small_rows_keeps_little_page_bookkeeping() {
        let rows = ("index", 300_000, 0x2545_F491_4F6C_DD1D_u64);
        heap_grown_writing(
            rows,
            |seed| {
                let mut key = xorshift(seed).to_be_bytes().to_vec();
                key.extend(xorshift(seed).to_be_bytes());
                (key, xorshift(seed).to_be_bytes().to_vec())
            },
            8.0,
        );
    }
}
