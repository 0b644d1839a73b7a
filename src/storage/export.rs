//! The whole database as one flat file, and back: what `hearth backup` stores and
//! `hearth restore` reads.
//!
//! The file is ours, not sled's on-disk layout, so a backup outlives a change of sled
//! version or of storage engine. Layout (integers big-endian):
//!
//! ```text
//! "HEARTH-DB 1\n"                          magic and format version
//! b'T' u32 name_len name                   a tree begins (every tree, `meta` included)
//! b'E' u32 key_len key u32 value_len value one entry of the current tree, in key order
//! b'Z' u64 trees u64 entries               the end: a cut file has no end and is refused
//! ```

use std::io::{Read, Write};
use std::path::Path;

use super::{Storage, StorageError, StorageResult};

const MAGIC: &[u8] = b"HEARTH-DB 1\n";
/// No sled key or value of ours comes near this; a length beyond it is a corrupt file.
const MAX_ITEM_BYTES: u32 = 256 * 1024 * 1024;
/// Entries written per sled batch while importing (bounds the batch's memory).
const IMPORT_BATCH: usize = 5_000;

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Exported {
    pub(crate) trees: u64,
    pub(crate) entries: u64,
}

/// What an import read (the same figures, for checking against the manifest).
pub(crate) type Imported = Exported;

impl Storage {
    /// Runs `read` with every write held at the gate: the database does not change
    /// meanwhile (see `gate`). `read` must not write, or it waits for ever.
    pub(crate) fn frozen<R>(&self, read: impl FnOnce() -> R) -> R {
        let _closed = self.gate.close();
        read()
    }

    /// Writes every tree to `out` in the format above. Call it inside [`Storage::frozen`]
    /// on a running server, or the copy mixes moments. `label` names `out` in errors.
    pub(crate) fn export(&self, out: &mut dyn Write, label: &Path) -> StorageResult<Exported> {
        let io = |source| StorageError::Io {
            path: label.to_owned(),
            source,
        };
        let mut names = self.db.tree_names();
        names.sort();
        out.write_all(MAGIC).map_err(io)?;
        let mut done = Exported::default();
        for name in names {
            let tree = self.db.open_tree(&name)?;
            write_item(out, b'T', &name).map_err(io)?;
            done.trees += 1;
            for entry in tree.iter() {
                let (key, value) = entry?;
                write_item(out, b'E', &key).map_err(io)?;
                write_len(out, &value).map_err(io)?;
                out.write_all(&value).map_err(io)?;
                done.entries += 1;
            }
        }
        out.write_all(b"Z").map_err(io)?;
        out.write_all(&done.trees.to_be_bytes()).map_err(io)?;
        out.write_all(&done.entries.to_be_bytes()).map_err(io)?;
        out.flush().map_err(io)?;
        Ok(done)
    }
}

fn write_len(out: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    out.write_all(&len.to_be_bytes())
}

fn write_item(out: &mut dyn Write, tag: u8, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&[tag])?;
    write_len(out, bytes)?;
    out.write_all(bytes)
}

/// Makes the database of the new data directory `data_dir` from an export read from
/// `input`, holding the directory's lock meanwhile, and flushes it. The caller checked that
/// `data_dir` holds no database; [`Storage::open`] afterwards runs any migration the
/// exported schema needs (or refuses a newer one). A malformed or cut input is
/// [`StorageError::Corrupt`], with what was written so far left for the caller to remove.
pub(crate) fn import(
    data_dir: &Path,
    cache_capacity_bytes: u64,
    input: &mut dyn Read,
    label: &Path,
) -> StorageResult<Imported> {
    let _lock = super::lock_data_dir(data_dir)?;
    // In the format `Storage::open` writes, so the restored database is not converted again
    // at the server's first start.
    let db = super::convert::open(&data_dir.join("db"), cache_capacity_bytes)?;
    let mut reader = Reader { input, label };
    let mut magic = vec![0; MAGIC.len()];
    reader.exact(&mut magic)?;
    if magic != MAGIC {
        return Err(reader.corrupt("not a Hearth database export (or a newer format)"));
    }
    let mut done = Imported::default();
    let mut tree: Option<sled::Tree> = None;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    loop {
        let tag = reader.byte()?;
        if matches!(tag, b'T' | b'Z')
            && let Some(tree) = &tree
            && pending > 0
        {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
        match tag {
            b'T' => {
                let name = reader.item()?;
                tree = Some(db.open_tree(name)?);
                done.trees += 1;
            }
            b'E' => {
                let Some(current) = &tree else {
                    return Err(reader.corrupt("an entry before any tree"));
                };
                let key = reader.item()?;
                let value = reader.item()?;
                batch.insert(key, value);
                done.entries += 1;
                pending += 1;
                if pending == IMPORT_BATCH {
                    current.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            b'Z' => {
                let trees = reader.u64()?;
                let entries = reader.u64()?;
                if (trees, entries) != (done.trees, done.entries) {
                    return Err(reader.corrupt("its end does not match what it holds"));
                }
                let mut rest = [0u8; 1];
                if reader.input.read(&mut rest).map_err(|e| reader.io(e))? != 0 {
                    return Err(reader.corrupt("bytes after its end"));
                }
                break;
            }
            _ => return Err(reader.corrupt("an unknown record")),
        }
    }
    db.flush()?;
    Ok(done)
}

struct Reader<'a> {
    input: &'a mut dyn Read,
    label: &'a Path,
}

impl Reader<'_> {
    fn io(&self, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: self.label.to_owned(),
            source,
        }
    }

    fn corrupt(&self, what: &str) -> StorageError {
        StorageError::Corrupt(format!("{}: {what}", self.label.display()))
    }

    fn exact(&mut self, buffer: &mut [u8]) -> StorageResult<()> {
        self.input.read_exact(buffer).map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt("cut short")
            } else {
                self.io(err)
            }
        })
    }

    fn byte(&mut self) -> StorageResult<u8> {
        let mut byte = [0u8; 1];
        self.exact(&mut byte)?;
        Ok(byte[0])
    }

    fn u64(&mut self) -> StorageResult<u64> {
        let mut bytes = [0u8; 8];
        self.exact(&mut bytes)?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn item(&mut self) -> StorageResult<Vec<u8>> {
        let mut len = [0u8; 4];
        self.exact(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_ITEM_BYTES {
            return Err(self.corrupt("an entry larger than any Hearth writes"));
        }
        let mut item = vec![0; len as usize];
        self.exact(&mut item)?;
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_imports_to_the_same_database() {
        let (_dir, storage) = crate::storage::testing::temporary();
        for position in 0..12_000u64 {
            storage
                .stream_room
                .insert(&position, &format!("!r{position}:x"))
                .expect("insert");
        }
        storage.next_id("test").expect("counter");
        let mut file = Vec::new();
        let exported = storage
            .frozen(|| storage.export(&mut file, Path::new("export")))
            .expect("export");
        let target = tempfile::tempdir().expect("tempdir");
        let imported =
            import(target.path(), 1 << 20, &mut file.as_slice(), Path::new("x")).expect("import");
        assert_eq!(exported, imported);
        let restored = Storage::open(target.path(), 1 << 20).expect("open");
        assert_eq!(
            restored.stream_room.get(&11_999).expect("get").as_deref(),
            Some("!r11999:x")
        );
        assert_eq!(restored.counter("test").expect("counter"), Some(1));
        assert_eq!(restored.stream_room.iter().count(), 12_000);
    }

    #[test]
    fn a_cut_or_altered_export_is_refused() {
        let (_dir, storage) = crate::storage::testing::temporary();
        storage
            .stream_room
            .insert(&1, &"!r:x".to_owned())
            .expect("insert");
        let mut file = Vec::new();
        storage.export(&mut file, Path::new("e")).expect("export");
        for bad in [
            file[..file.len() - 3].to_vec(),
            [b"HEARTH-DB 9\n".as_slice(), &file[MAGIC.len()..]].concat(),
            [file.as_slice(), b"x"].concat(),
        ] {
            let target = tempfile::tempdir().expect("tempdir");
            let err = import(target.path(), 1 << 20, &mut bad.as_slice(), Path::new("f"))
                .expect_err("refused");
            assert!(matches!(err, StorageError::Corrupt(_)), "{err}");
        }
    }
}
