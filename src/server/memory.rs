//! Memory at rest (issue 14): the allocator settings made before any thread starts, and
//! giving freed heap back to the system once a burst of requests is over.
//!
//! glibc gives each thread that allocates while another holds the lock an arena of its own
//! (up to 8 per core, each a 64 MiB reservation), and freed memory stays in the arena that
//! held it. A server this size runs a handful of threads that allocate (the HTTP worker,
//! sled's I/O threads, the blocking pool's password hashes), so a small arena count costs
//! no measurable speed and keeps their freed pages together, where the trim below finds them.

use std::time::Duration;

/// Most malloc arenas: the main one and one more for the other threads to share.
const ARENAS: i32 = 2;

/// How often the server looks for freed heap to return.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Freed heap worth returning: below this the trim is not worth its walk of the free lists.
const TRIM_ABOVE_BYTES: usize = 1024 * 1024;

/// Caps glibc's malloc arenas at [`ARENAS`]. Call first thing in `main`, before any thread
/// starts; a no-op on other allocators. `MALLOC_ARENA_MAX` in the environment still wins
/// (glibc reads it at the first allocation, and `mallopt` here would override it, so we
/// leave it alone when it is set).
#[allow(unsafe_code)]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Freed bytes held by the allocator in all arenas (glibc's `mallinfo2().fordblks`): what a
/// trim could return, at most. Zero on other allocators.
#[allow(unsafe_code)]
fn freed_bytes() -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        unsafe { libc::mallinfo2() }.fordblks
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// Every [`TRIM_EVERY`], returns the freed heap to the system when there is more than
/// [`TRIM_ABOVE_BYTES`] of it: after a burst (a busy `/sync`, a join, many sends) the
/// process goes back to its size at rest instead of keeping the burst's peak. Runs on the
/// current runtime until the server stops.
pub(crate) fn spawn_trimmer() {
    actix_web::rt::spawn(async {
        let mut ticks = tokio::time::interval(TRIM_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if freed_bytes() > TRIM_ABOVE_BYTES {
                crate::storage::memory::release_freed();
            }
        }
    });
}
