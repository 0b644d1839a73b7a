//! Giving memory back to the system. glibc keeps freed heap memory for reuse; after a burst
//! of many small allocations (the state of a large room, joined over federation) that can
//! leave the process hundreds of MB larger for good. `malloc_trim` returns the free pages.

/// Returns freed heap memory to the system (glibc); a no-op elsewhere.
#[allow(unsafe_code)]
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's free lists; it takes its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
