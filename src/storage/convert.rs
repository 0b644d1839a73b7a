//! The database's on-disk format, and the conversion of one written in an older format.
//!
//! sled fixes some parameters when it creates a database (whether pages are compressed, the
//! segment size) and refuses to open it with others. Hearth writes its pages
//! zstd-compressed since issue 14 (a third of the bytes on disk); a database created before
//! is uncompressed. [`open`] notices that from sled's `conf` file and copies every tree into
//! a new database in the current format, then swaps the directories, so an owner's data
//! comes along on the first start of the new version.
//!
//! A crash at any point leaves a database that opens: the copy is made in `db.new` and only
//! a complete copy is renamed into place (`db` → `db.old`, `db.new` → `db`, `db.old`
//! removed); [`open`] finishes or discards what an interrupted conversion left.

use std::path::{Path, PathBuf};

use super::{StorageError, StorageResult};

/// sled's zstd level for pages: 3 compresses these JSON pages almost as well as higher
/// levels at a fraction of the CPU (and is not persisted: it may change freely).
const COMPRESSION_FACTOR: i32 = 3;

/// Entries copied per batch while converting: bounds the memory a batch holds.
const BATCH: usize = 2000;

/// The storage parameters a database is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Format {
    pub(super) compressed: bool,
}

/// The format new databases are written in.
pub(super) const CURRENT: Format = Format { compressed: true };

/// The format of Hearth's databases before issue 14: sled's defaults.
#[cfg(test)]
pub(super) const UNCOMPRESSED: Format = Format { compressed: false };

/// sled's settings for `path` in `format`. The cache capacity is memory: the vendored sled
/// counts each cached page at its decoded size (vendor/sled/PATCH.md, change 4), where
/// sled as published counted its compressed size on disk and so held several times the
/// capacity (about 12 times, for the state of a room of 100,000 events).
fn config(path: &Path, cache_capacity_bytes: u64, format: Format) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        .use_compression(format.compressed)
        .compression_factor(COMPRESSION_FACTOR)
}

/// Opens `path` with sled in `format` (no conversion): for [`open`] and for tests that
/// write a database the way an older Hearth did.
///
/// The caller holds the data directory's lock, which proves no other process has the
/// database open; so a sled file lock still held can only be this process's previous
/// database, dropped an instant ago: sled's background threads let go of the file a little
/// after the last handle is dropped (sled waits for it in its own tests). Wait for them,
/// briefly, rather than fail a restart in the same process.
pub(super) fn open_as(
    path: &Path,
    cache_capacity_bytes: u64,
    format: Format,
) -> StorageResult<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config(path, cache_capacity_bytes, format).open() {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < SLED_LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return Ok(result?),
        }
    }
}

/// How long [`open_as`] waits for sled's own file lock to be let go.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The format of the database at `path`, from sled's `conf` file (`None`: no database yet).
fn format_on_disk(path: &Path) -> StorageResult<Option<Format>> {
    let conf = path.join("conf");
    let bytes = match std::fs::read(&conf) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StorageError::Io { path: conf, source }),
    };
    // `key: value` lines, then a 4-byte checksum sled checks itself when it opens.
    let text = String::from_utf8_lossy(&bytes);
    let compressed = text
        .lines()
        .find_map(|line| line.strip_prefix("use_compression: "))
        .map(|value| value.starts_with("true"));
    Ok(compressed.map(|compressed| Format { compressed }))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

fn remove_dir(path: &Path) -> StorageResult<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Renames `from` to `to` and makes the rename durable (the parent directory synced): a
/// power cut after this returns cannot bring the old name back.
fn rename(from: &Path, to: &Path) -> StorageResult<()> {
    let failed = |source| StorageError::Io {
        path: from.to_owned(),
        source,
    };
    std::fs::rename(from, to).map_err(failed)?;
    let parent = to.parent().unwrap_or_else(|| Path::new("."));
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(failed)
}

/// Opens the database at `path` in the [`CURRENT`] format, converting one written in an
/// older format first (see the module's documentation).
pub(super) fn open(path: &Path, cache_capacity_bytes: u64) -> StorageResult<sled::Db> {
    let new = sibling(path, ".new");
    let old = sibling(path, ".old");
    // Finish or undo an interrupted conversion.
    if !path.exists() && new.exists() {
        // Only a complete copy is ever renamed; the original was already moved aside.
        rename(&new, path)?;
    } else if !path.exists() && old.exists() {
        // Never the case after a conversion of ours; keep the data rather than remove it.
        rename(&old, path)?;
    }
    remove_dir(&new)?;
    remove_dir(&old)?;

    match format_on_disk(path)? {
        Some(format) if format != CURRENT => {
            tracing::info!(
                path = %path.display(),
                "converting the database to the compressed format (once; it may take a minute)"
            );
            let started = std::time::Instant::now();
            let copied = copy(path, &new, cache_capacity_bytes, format)?;
            rename(path, &old)?;
            rename(&new, path)?;
            remove_dir(&old)?;
            tracing::info!(
                entries = copied,
                seconds = started.elapsed().as_secs_f64(),
                "database converted"
            );
        }
        _ => {}
    }
    open_as(path, cache_capacity_bytes, CURRENT)
}

/// Copies every tree of the database at `from` (in `format`) into a new database at `to` in
/// the current format, flushed: the number of entries copied.
fn copy(from: &Path, to: &Path, cache_capacity_bytes: u64, format: Format) -> StorageResult<u64> {
    let source = open_as(from, cache_capacity_bytes, format)?;
    let target = open_as(to, cache_capacity_bytes, CURRENT)?;
    let mut copied = 0;
    for name in source.tree_names() {
        let from_tree = source.open_tree(&name)?;
        let to_tree = target.open_tree(&name)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in from_tree.iter() {
            let (key, value) = entry?;
            batch.insert(key, value);
            in_batch += 1;
            copied += 1;
            if in_batch == BATCH {
                to_tree.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        to_tree.apply_batch(batch)?;
    }
    target.flush()?;
    drop(target);
    make_durable(to)?;
    Ok(copied)
}

/// Syncs a closed sled database's files and folders (sled's flush leaves its settings file,
/// its folders and, on Linux, the log's size to the kernel), so that the rename that puts
/// the copy in place can only ever expose a complete database.
fn make_durable(path: &Path) -> StorageResult<()> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StorageError::Io { path, source }
    };
    for file in [path.join("conf"), path.join("db")] {
        std::fs::File::open(&file)
            .and_then(|file| file.sync_all())
            .map_err(io(&file))?;
    }
    for dir in [path.join("blobs"), path.to_owned()] {
        super::files::sync_dir(&dir).map_err(io(&dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_old(path: &Path) {
        let db = open_as(path, 1 << 20, UNCOMPRESSED).expect("old database");
        let tree = db.open_tree("eventid_pdu").expect("tree");
        for i in 0..5000u32 {
            tree.insert(format!("$event{i}"), format!("{{\"n\":{i}}}").as_bytes())
                .expect("insert");
        }
        db.insert(b"in the default tree", b"kept").expect("insert");
        db.flush().expect("flush");
    }

    fn check(db: &sled::Db) {
        let tree = db.open_tree("eventid_pdu").expect("tree");
        assert_eq!(tree.len(), 5000);
        assert_eq!(
            tree.get("$event4321").expect("get").as_deref(),
            Some(&b"{\"n\":4321}"[..])
        );
        assert_eq!(
            db.get(b"in the default tree").expect("get").as_deref(),
            Some(&b"kept"[..])
        );
    }

    #[test]
    fn an_uncompressed_database_is_converted_with_all_its_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        write_old(&path);
        assert_eq!(format_on_disk(&path).expect("conf"), Some(UNCOMPRESSED));
        let db = open(&path, 1 << 20).expect("converted");
        check(&db);
        drop(db);
        assert_eq!(format_on_disk(&path).expect("conf"), Some(CURRENT));
        assert!(!sibling(&path, ".new").exists() && !sibling(&path, ".old").exists());
        // And it opens again as it is.
        check(&open(&path, 1 << 20).expect("reopened"));
    }

    #[test]
    fn a_conversion_interrupted_before_the_swap_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        write_old(&path);
        // A half-written copy left by a crash.
        std::fs::create_dir_all(sibling(&path, ".new")).expect("mkdir");
        std::fs::write(sibling(&path, ".new").join("conf"), b"garbage").expect("write");
        check(&open(&path, 1 << 20).expect("converted"));
    }

    #[test]
    fn a_conversion_interrupted_between_the_renames_is_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        write_old(&path);
        let new = sibling(&path, ".new");
        copy(&path, &new, 1 << 20, UNCOMPRESSED).expect("copy");
        rename(&path, &sibling(&path, ".old")).expect("rename");
        check(&open(&path, 1 << 20).expect("finished"));
        assert!(!sibling(&path, ".old").exists());
    }

    /// sled's pages go through zstd contexts shared by all threads (vendor/zstd's pool):
    /// threads writing and reading at once, with a cache too small to hold the pages (so
    /// they are read back from the log and decompressed), each find what they wrote, before
    /// and after a restart.
    #[test]
    fn compressed_pages_written_and_read_by_many_threads_read_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let value = |thread: u32, i: u32| {
            format!(
                "{{\"thread\":{thread},\"i\":{i},\"pad\":\"{}\"}}",
                "x".repeat((i % 300) as usize)
            )
        };
        let db = open_as(&path, 64 * 1024, CURRENT).expect("database");
        std::thread::scope(|scope| {
            for thread in 0..6u32 {
                let tree = db.open_tree(format!("tree{thread}")).expect("tree");
                scope.spawn(move || {
                    for i in 0..3000u32 {
                        tree.insert(format!("key{i:05}"), value(thread, i).as_bytes())
                            .expect("insert");
                        if i % 7 == 0 {
                            let back = tree.get(format!("key{:05}", i / 2)).expect("get");
                            assert_eq!(back.as_deref(), Some(value(thread, i / 2).as_bytes()));
                        }
                    }
                });
            }
        });
        drop(db);
        let db = open_as(&path, 64 * 1024, CURRENT).expect("reopened");
        for thread in 0..6u32 {
            let tree = db.open_tree(format!("tree{thread}")).expect("tree");
            assert_eq!(tree.len(), 3000);
            for (i, entry) in tree.iter().enumerate() {
                let (_, stored) = entry.expect("entry");
                let i = u32::try_from(i).expect("small");
                assert_eq!(&*stored, value(thread, i).as_bytes());
            }
        }
    }
}
