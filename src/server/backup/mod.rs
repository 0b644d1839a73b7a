//! `hearth backup DIR` and `hearth restore DIR`: the database, the signing key and the media
//! files, copied so that a restored server is the same server.
//!
//! A backup directory holds:
//!
//! ```text
//! database.hdb            every tree of the database at one instant (`storage::export`)
//! signing.key             the signing key, and signing.key.old (rotated keys) if any
//! media/content/ab/abcd…  each content file a media record refers to, named by its SHA-256
//! manifest.json           written last: format version, server name, counts and SHA-256s
//! ```
//!
//! On a running server the backup is made by the server itself (it holds the database's
//! lock), asked through the control socket like `hearth user`; with the server stopped the
//! CLI opens the database and does the same work ([`take`]). The database is exported with
//! every write held at the storage layer's gate, so it is one instant of the database (see
//! `storage::gate`); media content files never change once written (their name is their
//! hash), so they are copied after the gate opens again. A file deleted in between (its
//! media deleted meanwhile) is counted as missing in the manifest.
//!
//! Every file is synced as it is written, and the manifest is written last, under a
//! temporary name and then linked into place: a backup cut short by a crash has no
//! manifest, and [`restore`](restore::restore) refuses it.

mod manifest;
pub(crate) mod restore;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read as _, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use manifest::{FileEntry, Manifest, MediaEntry};

use crate::config::Config;
use crate::matrix::crypto::rotation::old_keys_path;
use crate::media::files::MediaFiles;
use crate::storage::Storage;

/// The database export's file name in a backup.
const DATABASE: &str = "database.hdb";
const SIGNING_KEY: &str = "signing.key";
const OLD_KEYS: &str = "signing.key.old";
const MEDIA: &str = "media/content";

/// What a finished backup holds, for the line the CLI prints.
pub(crate) struct Summary {
    pub(crate) manifest: Manifest,
    pub(crate) millis: u128,
    /// How long writes waited at the gate while the database was exported.
    pub(crate) held_millis: u128,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.manifest;
        write!(
            f,
            "backed up {} entries of {} trees ({} bytes), the signing key{}, and {} media \
             file(s) ({} bytes) in {} ms",
            m.database.entries,
            m.database.trees,
            m.database.file.bytes,
            if m.old_keys.is_some() {
                " with its old keys"
            } else {
                ""
            },
            m.media.files,
            m.media.bytes,
            self.millis,
        )?;
        write!(f, " (writes held for {} ms)", self.held_millis)?;
        if m.media.missing > 0 {
            write!(
                f,
                "; {} media file(s) were deleted while the backup ran and are not in it",
                m.media.missing
            )?;
        }
        Ok(())
    }
}

/// Makes a backup of the open database `storage` (and the key and media files of the data
/// directory `config` names) in `dir`, which must be absent or empty.
pub(crate) fn take(storage: &Storage, config: &Config, dir: &Path) -> Result<Summary, String> {
    let started = Instant::now();
    prepare(dir)?;
    let database_path = dir.join(DATABASE);
    let held_millis;
    let mut database = HashingWriter::new(create(&database_path)?);
    let (exported, hashes) = {
        let mut out = BufWriter::with_capacity(256 * 1024, &mut database);
        let holding = Instant::now();
        let frozen = storage.frozen(|| {
            let exported = storage.export(&mut out, &database_path)?;
            let hashes = crate::media::admin::content_hashes(storage)?;
            Ok::<_, crate::storage::StorageError>((exported, hashes))
        });
        held_millis = holding.elapsed().as_millis();
        let done = frozen.map_err(|err| format!("database: {err}"))?;
        out.flush().map_err(failed(&database_path))?;
        done
    };
    let database = database.finish(&database_path)?;

    let key_path = &config.server.signing_key;
    let signing_key = copy_file(key_path, &dir.join(SIGNING_KEY))?;
    let old_keys_source = old_keys_path(key_path);
    let old_keys = match fs::metadata(&old_keys_source) {
        Ok(_) => Some(copy_file(&old_keys_source, &dir.join(OLD_KEYS))?),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(failed(&old_keys_source)(err)),
    };

    let files = MediaFiles::at(&config.database.path);
    let mut media = MediaEntry::default();
    let mut made_dirs = std::collections::BTreeSet::new();
    for sha256 in &hashes {
        let source = files.content_path(sha256);
        let target = media_path(dir, sha256);
        if let Some(parent) = target.parent()
            && made_dirs.insert(parent.to_owned())
        {
            make_dir(parent)?;
        }
        match copy_checked(&source, &target, sha256) {
            Ok(bytes) => {
                media.files += 1;
                media.bytes += bytes;
            }
            Err(Missing::Gone) => media.missing += 1,
            Err(Missing::Failed(err)) => return Err(err),
        }
    }
    if !made_dirs.is_empty() {
        for made in made_dirs
            .iter()
            .chain([&dir.join(MEDIA), &dir.join("media")])
        {
            sync_dir(made)?;
        }
    }

    let manifest = Manifest::new(
        config.server.server_name.as_str(),
        FileEntry {
            path: DATABASE.to_owned(),
            ..database
        },
        exported,
        FileEntry {
            path: SIGNING_KEY.to_owned(),
            ..signing_key
        },
        old_keys.map(|entry| FileEntry {
            path: OLD_KEYS.to_owned(),
            ..entry
        }),
        media,
    );
    manifest.write(dir)?;
    Ok(Summary {
        manifest,
        millis: started.elapsed().as_millis(),
        held_millis,
    })
}

/// Makes `dir` (mode 0700) or checks that it is an empty directory.
fn prepare(dir: &Path) -> Result<(), String> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty: a backup goes into a new or empty directory",
                    dir.display()
                ));
            }
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => make_dir(dir),
        Err(err) => Err(failed(dir)(err)),
    }
}

fn make_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed(dir))
}

/// Where the content `sha256` goes under a backup (or a data directory's media folder).
fn media_path(root: &Path, sha256: &str) -> PathBuf {
    root.join(MEDIA)
        .join(sha256.get(..2).unwrap_or("00"))
        .join(sha256)
}

fn failed(path: &Path) -> impl Fn(io::Error) -> String + '_ {
    move |err| format!("{}: {err}", path.display())
}

/// A new file of mode 0600 (the backup holds password hashes and the signing key).
fn create(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed(path))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(failed(dir))
}

/// Copies `source` to the new file `target`, synced; returns its size and SHA-256.
fn copy_file(source: &Path, target: &Path) -> Result<FileEntry, String> {
    let mut input = File::open(source).map_err(failed(source))?;
    let mut out = HashingWriter::new(create(target)?);
    io::copy(&mut input, &mut out).map_err(failed(target))?;
    out.finish(target)
}

enum Missing {
    Gone,
    Failed(String),
}

/// Copies a media content file, checking that its bytes still hash to its name (a file
/// damaged on disk is an error, not a silent bad copy).
fn copy_checked(source: &Path, target: &Path, sha256: &str) -> Result<u64, Missing> {
    let mut input = match File::open(source) {
        Ok(input) => input,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(Missing::Gone),
        Err(err) => return Err(Missing::Failed(failed(source)(err))),
    };
    let mut out = HashingWriter::new(create(target).map_err(Missing::Failed)?);
    io::copy(&mut input, &mut out).map_err(|err| Missing::Failed(failed(target)(err)))?;
    let copied = out.finish(target).map_err(Missing::Failed)?;
    if copied.sha256 != sha256 {
        return Err(Missing::Failed(format!(
            "{}: its content no longer matches its SHA-256: the file is damaged",
            source.display()
        )));
    }
    Ok(copied.bytes)
}

/// Hashes a file's bytes as they are read, for checking a copy without reading it twice.
fn hash_file(path: &Path) -> Result<FileEntry, String> {
    let mut input = File::open(path).map_err(failed(path))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let read = input.read(&mut buffer).map_err(failed(path))?;
        if read == 0 {
            break;
        }
        context.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok(FileEntry {
        path: String::new(),
        bytes,
        sha256: hex(context.finish().as_ref()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A file being written, with the SHA-256 and size of what went in.
struct HashingWriter {
    file: File,
    context: ring::digest::Context,
    bytes: u64,
}

impl HashingWriter {
    fn new(file: File) -> HashingWriter {
        HashingWriter {
            file,
            context: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        }
    }

    /// Syncs the file to disk and returns what it holds.
    fn finish(self, path: &Path) -> Result<FileEntry, String> {
        self.file.sync_all().map_err(failed(path))?;
        Ok(FileEntry {
            path: String::new(),
            bytes: self.bytes,
            sha256: hex(self.context.finish().as_ref()),
        })
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.context.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
