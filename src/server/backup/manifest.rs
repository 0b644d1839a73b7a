//! `manifest.json`: what a backup holds, written last so that its presence means the
//! backup is complete, and checked by `hearth restore` before anything is copied.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::storage::Exported;

const NAME: &str = "manifest.json";
const FORMAT: &str = "hearth-backup";
/// The newest backup format this Hearth reads and the one it writes.
pub(crate) const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// Always `hearth-backup`.
    pub(crate) format: String,
    pub(crate) version: u32,
    /// The server the data belongs to: user IDs and room IDs carry it, so a backup is
    /// restored only under the same name.
    pub(crate) server_name: String,
    /// The Hearth that wrote it.
    pub(crate) hearth_version: String,
    pub(crate) created_ms: u64,
    pub(crate) database: DatabaseEntry,
    pub(crate) signing_key: FileEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) old_keys: Option<FileEntry>,
    pub(crate) media: MediaEntry,
}

/// A file of the backup: its path in the backup directory, size and SHA-256 (hex).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    pub(crate) path: String,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DatabaseEntry {
    #[serde(flatten)]
    pub(crate) file: FileEntry,
    pub(crate) trees: u64,
    pub(crate) entries: u64,
}

/// The media content files (each named by its SHA-256, so each checks itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MediaEntry {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    /// Referred to by a record but deleted before the copy reached it.
    pub(crate) missing: u64,
}

impl Manifest {
    pub(super) fn new(
        server_name: &str,
        database: FileEntry,
        exported: Exported,
        signing_key: FileEntry,
        old_keys: Option<FileEntry>,
        media: MediaEntry,
    ) -> Manifest {
        Manifest {
            format: FORMAT.to_owned(),
            version: VERSION,
            server_name: server_name.to_owned(),
            hearth_version: crate::VERSION.to_owned(),
            created_ms: crate::matrix::time::now_ms(),
            database: DatabaseEntry {
                file: database,
                trees: exported.trees,
                entries: exported.entries,
            },
            signing_key,
            old_keys,
            media,
        }
    }

    /// Writes the manifest into `dir`, synced, in one step (never half there).
    pub(super) fn write(&self, dir: &Path) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|err| err.to_string())?;
        let path = dir.join(NAME);
        crate::storage::files::write_new(&path, &text, 0o600)
            .map_err(|err| format!("{}: {err}", path.display()))
    }

    /// Reads and checks the manifest of the backup in `dir`.
    pub(super) fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(NAME);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{} has no {NAME}: it is not a Hearth backup, or a backup that did not \
                     finish",
                    dir.display()
                ));
            }
            Err(err) => return Err(format!("{}: {err}", path.display())),
        };
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|err| {
            format!(
                "{} is damaged ({err}): this backup cannot be trusted",
                path.display()
            )
        })?;
        if manifest.format != FORMAT {
            return Err(format!(
                "{} is not a Hearth backup manifest",
                path.display()
            ));
        }
        if manifest.version > VERSION {
            return Err(format!(
                "the backup has format version {}, but this Hearth reads only up to {VERSION}: \
                 it was made by a newer Hearth ({}); restore it with that version",
                manifest.version, manifest.hearth_version
            ));
        }
        for entry in [&manifest.database.file, &manifest.signing_key]
            .into_iter()
            .chain(manifest.old_keys.as_ref())
        {
            // The paths are ours: plain names in the backup directory, nothing else.
            if entry.path.is_empty() || entry.path.contains('/') || entry.path.starts_with('.') {
                return Err(format!(
                    "{} names a file `{}` outside the backup",
                    path.display(),
                    entry.path
                ));
            }
        }
        Ok(manifest)
    }
}
