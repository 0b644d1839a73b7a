//! Hearth: zstd contexts kept for reuse by the one-shot functions of this crate
//! ([`super::compress`], [`super::decompress`], [`crate::stream::decode_all`]).
//!
//! sled 0.34 compresses every page it writes and decompresses every page it reads with
//! these functions, and upstream they create and free a zstd context each time: the
//! allocation (a decompression context is about 160 KiB, a compression context's tables
//! grow with the input) and the clearing of its tables cost more than compressing a page
//! of a few KiB itself. A context reused keeps its tables (zstd then only moves its index
//! on), so it also compresses identically (a page compressed by a reused context is the
//! same bytes as by a new one: zstd's output does not depend on earlier inputs without a
//! dictionary).
//!
//! A few contexts are kept, shared by every thread: enough for the two or four cores of
//! the machines Hearth runs on; a caller finding none free makes a new one, used once and
//! then kept or dropped, so memory stays bounded at [`KEPT`] contexts of each kind, each
//! of at most [`KEPT_BYTES`]: a context's tables grow with the largest input it has
//! worked on (several MiB after a large page), and one that grew is dropped rather than
//! kept, or four of them would hold tens of MiB for good.

use std::sync::Mutex;

use super::{Compressor, Decompressor};

/// Contexts of each kind kept between calls.
pub(crate) const KEPT: usize = 4;

/// The largest context kept: a compression context sized for pages of tens of KiB, or a
/// decompression context (about 160 KiB).
pub(crate) const KEPT_BYTES: usize = 1 << 20;

static COMPRESSORS: Mutex<Vec<Compressor>> = Mutex::new(Vec::new());
static DECOMPRESSORS: Mutex<Vec<Decompressor>> = Mutex::new(Vec::new());

/// Runs `work` with a compressor from the pool (or a new one), then gives it back.
pub(crate) fn with_compressor<T>(work: impl FnOnce(&mut Compressor) -> T) -> T {
    with_pooled(&COMPRESSORS, Compressor::new, Compressor::memory, work)
}

/// Runs `work` with a decompressor from the pool (or a new one), then gives it back.
pub(crate) fn with_decompressor<T>(
    work: impl FnOnce(&mut Decompressor) -> T,
) -> T {
    with_pooled(&DECOMPRESSORS, Decompressor::new, Decompressor::memory, work)
}

fn with_pooled<C, T>(
    pool: &Mutex<Vec<C>>,
    new: impl FnOnce() -> C,
    memory: impl FnOnce(&C) -> usize,
    work: impl FnOnce(&mut C) -> T,
) -> T {
    let taken = lock(pool).pop();
    let mut context = taken.unwrap_or_else(new);
    let result = work(&mut context);
    if memory(&context) > KEPT_BYTES {
        return result;
    }
    let mut kept = lock(pool);
    if kept.len() < KEPT {
        kept.push(context);
    }
    result
}

fn lock<C>(pool: &Mutex<Vec<C>>) -> std::sync::MutexGuard<'_, Vec<C>> {
    // A panic while the lock was held left a list of whole contexts: still usable.
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
