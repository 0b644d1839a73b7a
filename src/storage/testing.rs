//! Databases for unit tests: a real [`Storage`] in a temporary directory, removed when the
//! returned directory guard is dropped (keep it alive as long as the database).

use std::path::Path;

use super::Storage;

/// The cache size unit tests open databases with: small, like a Pi's.
const TEST_CACHE_BYTES: u64 = 1 << 20;

/// A new, empty database in a new temporary directory.
pub(crate) fn temporary() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let storage = open(dir.path());
    (dir, storage)
}

/// The database in `dir`, opened (again) as the server would: to see what survived.
pub(crate) fn open(dir: &Path) -> Storage {
    Storage::open(dir, TEST_CACHE_BYTES).expect("open the test database")
}
