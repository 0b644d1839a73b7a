//! Memory at rest (issue 14): the allocator settings made before any thread starts, and
//! giving freed heap back to the system once a burst of requests is over.
//!
//! glibc gives each thread that allocates while another holds the lock an arena of its own
//! (up to 8 per core, each a 64 MiB reservation), and freed memory stays in the arena that
//! held it. A server this size runs a handful of threads that allocate (the HTTP worker,
//! sled's I/O threads, the blocking pool's password hashes), so a small arena count costs
//! no measurable speed and keeps their freed pages together, where the trim below finds them.

use std::ffi::{OsStr, OsString};
use std::time::Duration;

/// Most malloc arenas: the main one and one more for the other threads to share.
const ARENAS: i32 = 2;

/// How often the server looks for freed heap to return.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Freed heap worth returning, in MiB: below this the trim is not worth its walk of the free
/// lists.
const TRIM_ABOVE_MIB: f64 = 1.0;

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

/// The largest allocation glibc keeps in a thread's own cache of freed blocks (its
/// "tcache"; glibc's default is 1,032 bytes, 7 blocks per size). Each thread that frees
/// holds on to such blocks, where neither other threads nor a trim can reach them; a server
/// with a dozen mostly idle threads (sled's seven I/O threads, the blocking pool) kept
/// 2 MiB that way after the workload benchmark (16.8 → 15.0 MiB with it). The small blocks
/// that most allocations are keep their fast path.
const THREAD_CACHE_MAX_BYTES: u32 = 128;

/// `GLIBC_TUNABLES` with [`THREAD_CACHE_MAX_BYTES`] added to what is already there, or
/// `None` when it already sets the thread cache (the owner's choice, or this process
/// after [`small_thread_caches`] started it again).
fn tunables_with_small_thread_caches(current: Option<&OsStr>) -> Option<OsString> {
    let setting = format!("glibc.malloc.tcache_max={THREAD_CACHE_MAX_BYTES}");
    match current {
        Some(current) if current.to_string_lossy().contains("glibc.malloc.tcache") => None,
        Some(current) if !current.is_empty() => {
            let mut tunables = current.to_owned();
            tunables.push(":");
            tunables.push(setting);
            Some(tunables)
        }
        _ => Some(setting.into()),
    }
}

/// Starts this program again with small per-thread malloc caches ([`THREAD_CACHE_MAX_BYTES`]),
/// unless `GLIBC_TUNABLES` already sets them. glibc reads that setting only from the
/// environment a program starts with (there is no `mallopt` for it), so setting it means
/// one more `exec` of the same file at start, about a millisecond. Call first thing in
/// `main`, before any thread starts. Where it cannot (no `/proc`, another libc), the
/// program simply goes on with the allocator's defaults. Profilers that follow a program
/// only up to an `exec` (valgrind, heaptrack) should set `GLIBC_TUNABLES` themselves.
pub fn small_thread_caches() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let Some(tunables) =
        tunables_with_small_thread_caches(std::env::var_os("GLIBC_TUNABLES").as_deref())
    else {
        return;
    };
    let arguments: Vec<OsString> = std::env::args_os().collect();
    let mut environment: Vec<OsString> = std::env::vars_os()
        .filter(|(key, _)| key != "GLIBC_TUNABLES")
        .map(|(key, value)| {
            [key.as_os_str(), OsStr::new("="), value.as_os_str()].join(OsStr::new(""))
        })
        .collect();
    environment.push([OsStr::new("GLIBC_TUNABLES="), tunables.as_os_str()].join(OsStr::new("")));
    // Returns only when it failed; then this process goes on as it is.
    exec_self(&arguments, &environment);
}

/// `execve` of `/proc/self/exe`. Not `std::process::Command::exec`: that goes through
/// `execvp`, which on `ENOEXEC` (an emulator such as qemu-user without binfmt_misc) runs
/// the file with `/bin/sh` instead of failing.
#[allow(unsafe_code)]
fn exec_self(arguments: &[OsString], environment: &[OsString]) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    let c_strings = |items: &[OsString]| -> Option<Vec<CString>> {
        items
            .iter()
            .map(|item| CString::new(item.as_bytes()).ok())
            .collect()
    };
    let (Some(arguments), Some(environment)) = (c_strings(arguments), c_strings(environment))
    else {
        return;
    };
    let pointers = |items: &[CString]| -> Vec<*const libc::c_char> {
        items
            .iter()
            .map(|item| item.as_ptr())
            .chain([std::ptr::null()])
            .collect()
    };
    let (argv, envp) = (pointers(&arguments), pointers(&environment));
    // SAFETY: the path, argv and envp are NUL-terminated strings in NULL-terminated arrays
    // that live until the call returns (it returns only on failure).
    unsafe {
        libc::execve(c"/proc/self/exe".as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
}

/// Every [`TRIM_EVERY`], returns the freed heap to the system when there is more than
/// [`TRIM_ABOVE_MIB`] of it (freed but kept by the allocator,
/// [`crate::storage::memory::Heap::free`]): after a burst (a busy `/sync`, a join, many
/// sends) the process goes back to its size at rest instead of keeping the burst's peak.
/// Runs on the current runtime until the server stops.
pub(crate) fn spawn_trimmer() {
    actix_web::rt::spawn(async {
        let mut ticks = tokio::time::interval(TRIM_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if crate::storage::memory::heap().free > TRIM_ABOVE_MIB {
                crate::storage::memory::release_freed();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_caches_are_made_small_once() {
        let set = |current: Option<&str>| {
            tunables_with_small_thread_caches(current.map(OsStr::new))
                .map(|tunables| tunables.to_string_lossy().into_owned())
        };
        assert_eq!(set(None).as_deref(), Some("glibc.malloc.tcache_max=128"));
        assert_eq!(
            set(Some("")).as_deref(),
            Some("glibc.malloc.tcache_max=128")
        );
        assert_eq!(
            set(Some("glibc.malloc.arena_max=1")).as_deref(),
            Some("glibc.malloc.arena_max=1:glibc.malloc.tcache_max=128")
        );
        // Already started again, or the owner chose: left as it is.
        assert_eq!(set(Some("glibc.malloc.tcache_max=128")), None);
        assert_eq!(set(Some("glibc.malloc.tcache_count=7")), None);
    }
}
