//! `hearth restore DIR`: a backup back into a new data directory, checked before and while
//! it is copied. The server must be stopped and its data directory new or empty (or holding
//! only the signing key `hearth init` just made, which the backup's key replaces: that key
//! never signed anything, as there was no database).

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::manifest::{FileEntry, Manifest};
use super::{DATABASE, MEDIA, copy_checked, failed, hash_file, make_dir, sync_dir};
use crate::config::Config;
use crate::matrix::crypto::SigningKey;
use crate::matrix::crypto::rotation::old_keys_path;
use crate::media::files::MediaFiles;
use crate::storage::Storage;

/// Restores the backup in `dir` into the data directory and signing key path of `config`;
/// returns the line to print. Whatever it wrote is removed again if it fails.
pub(crate) fn restore(config: &Config, dir: &Path) -> Result<String, String> {
    let started = Instant::now();
    let manifest = Manifest::read(dir)?;
    if manifest.server_name != config.server.server_name.as_str() {
        return Err(format!(
            "the backup is of the server `{}`, but the config names `{}`: user and room IDs \
             carry the server name, so it is restored only under its own",
            manifest.server_name, config.server.server_name
        ));
    }
    let data_dir = &config.database.path;
    let key_path = &config.server.signing_key;
    check_fresh(data_dir, key_path)?;
    for entry in [&manifest.database.file, &manifest.signing_key]
        .into_iter()
        .chain(manifest.old_keys.as_ref())
    {
        check_file(dir, entry)?;
    }
    let restored = copy_in(config, dir, &manifest);
    if restored.is_err() {
        for made in [
            data_dir.join("db"),
            data_dir.join("media"),
            data_dir.join("hearth.lock"),
        ] {
            let _ = fs::remove_dir_all(&made).or_else(|_| fs::remove_file(&made));
        }
    }
    let media = restored?;
    let key = SigningKey::load(key_path)?;
    Ok(format!(
        "restored {} entries, {media} media file(s) and the signing key {} of {} into {} in \
         {} ms; start the server as usual",
        manifest.database.entries,
        key.key_id(),
        manifest.server_name,
        data_dir.display(),
        started.elapsed().as_millis(),
    ))
}

/// The data directory holds nothing yet but, at most, the signing key files.
fn check_fresh(data_dir: &Path, key_path: &Path) -> Result<(), String> {
    let entries = match fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(failed(data_dir)(err)),
    };
    // Compared as the file system resolves them: the config may spell them differently.
    let allowed: Vec<PathBuf> = [key_path.to_owned(), old_keys_path(key_path)]
        .iter()
        .filter_map(|path| fs::canonicalize(path).ok())
        .collect();
    for entry in entries {
        let path = entry.map_err(failed(data_dir))?.path();
        let resolved = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !allowed.contains(&resolved) {
            return Err(format!(
                "the data directory {} is not empty (it holds {}): stop any server using it \
                 and restore into a new or empty data directory",
                data_dir.display(),
                path.display()
            ));
        }
    }
    Ok(())
}

/// The backup's file matches its manifest entry (size and SHA-256).
fn check_file(dir: &Path, entry: &FileEntry) -> Result<(), String> {
    let path = dir.join(&entry.path);
    let found = hash_file(&path)?;
    if (found.bytes, found.sha256.as_str()) != (entry.bytes, entry.sha256.as_str()) {
        return Err(format!(
            "{} does not match the backup's manifest (damaged or changed since): this backup \
             cannot be trusted",
            path.display()
        ));
    }
    Ok(())
}

/// Imports the database, copies the media in, and puts the signing key in place (last:
/// a failed restore never leaves a key with no data). Returns the media files copied.
fn copy_in(config: &Config, dir: &Path, manifest: &Manifest) -> Result<u64, String> {
    let data_dir = &config.database.path;
    let database = dir.join(DATABASE);
    let mut input = BufReader::with_capacity(
        256 * 1024,
        File::open(&database).map_err(failed(&database))?,
    );
    let imported = crate::storage::import(
        data_dir,
        config.database.cache_capacity_bytes(),
        &mut input,
        &database,
    )
    .map_err(|err| format!("database: {err}"))?;
    if (imported.trees, imported.entries) != (manifest.database.trees, manifest.database.entries) {
        return Err(format!(
            "{} holds {} entries, its manifest says {}: this backup cannot be trusted",
            database.display(),
            imported.entries,
            manifest.database.entries
        ));
    }
    // Opening runs the migrations a backup from an older Hearth needs, and refuses one
    // from a newer Hearth.
    drop(
        Storage::open(data_dir, config.database.cache_capacity_bytes())
            .map_err(|err| format!("database: {err}"))?,
    );

    let copied = copy_media(dir, data_dir)?;
    if copied != manifest.media.files {
        return Err(format!(
            "{} holds {copied} media file(s), its manifest says {}: this backup cannot be \
             trusted",
            dir.join(MEDIA).display(),
            manifest.media.files
        ));
    }

    let key_path = &config.server.signing_key;
    put_key(dir, &manifest.signing_key, key_path)?;
    if let Some(old) = &manifest.old_keys {
        put_key(dir, old, &old_keys_path(key_path))?;
    }
    Ok(copied)
}

/// Copies every `media/content/ab/<sha256>` of the backup, checking each against its name.
fn copy_media(dir: &Path, data_dir: &Path) -> Result<u64, String> {
    let files = MediaFiles::at(data_dir);
    let source_root = dir.join(MEDIA);
    let folders = match fs::read_dir(&source_root) {
        Ok(folders) => folders,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(failed(&source_root)(err)),
    };
    let mut copied = 0;
    let mut made: Vec<PathBuf> = Vec::new();
    for folder in folders {
        let folder = folder.map_err(failed(&source_root))?.path();
        for file in fs::read_dir(&folder).map_err(failed(&folder))? {
            let source = file.map_err(failed(&folder))?.path();
            let name = source
                .file_name()
                .and_then(|name| name.to_str())
                .filter(|name| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| format!("{}: not a media file of a backup", source.display()))?;
            let target = files.content_path(name);
            if let Some(parent) = target.parent()
                && !made.iter().any(|dir| dir == parent)
            {
                make_dir(parent)?;
                made.push(parent.to_owned());
            }
            copy_checked(&source, &target, name).map_err(|missing| match missing {
                super::Missing::Gone => {
                    format!("{}: vanished during the restore", source.display())
                }
                super::Missing::Failed(err) => err,
            })?;
            copied += 1;
        }
    }
    for dir in &made {
        sync_dir(dir)?;
    }
    if let Some(content) = made.first().and_then(|dir| dir.parent()) {
        sync_dir(content)?;
    }
    Ok(copied)
}

/// Writes a key file of the backup (already checked) to `target`, synced, in one step.
fn put_key(dir: &Path, entry: &FileEntry, target: &Path) -> Result<(), String> {
    let source = dir.join(&entry.path);
    let bytes = fs::read(&source).map_err(failed(&source))?;
    crate::storage::files::replace(target, &bytes, 0o600).map_err(failed(target))
}
