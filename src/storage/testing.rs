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

/// Writes `value` under `key` in the tree `name` as raw bytes, and sets the schema version:
/// a database as an older Hearth left it, for migration tests.
pub(crate) fn write_raw(storage: &Storage, name: &str, key: &[u8], value: &[u8]) {
    storage
        .db
        .open_tree(name)
        .and_then(|tree| tree.insert(key, value))
        .expect("raw write");
}

/// Records `version` as the database's schema version, as an older Hearth would have.
pub(crate) fn set_schema_version(storage: &Storage, version: u64) {
    storage.set_schema_version(version).expect("set version");
    storage.flush_blocking().expect("flush");
}

/// The raw bytes under `key` in the tree `name`.
pub(crate) fn read_raw(storage: &Storage, name: &str, key: &[u8]) -> Option<Vec<u8>> {
    storage
        .db
        .open_tree(name)
        .and_then(|tree| tree.get(key))
        .expect("raw read")
        .map(|value| value.to_vec())
}
