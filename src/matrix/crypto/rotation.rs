//! Signing key rotation (spec: server-server API, "Retrieving server keys"): a new key
//! replaces the current one, which is kept, with the time it stopped, in a file beside it
//! (`<signing key>.old`), and published as `old_verify_keys` so that other servers can still
//! check what it signed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SigningKey;

/// A key no longer used: its public half and when it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OldKey {
    /// Unpadded base64 of the 32-byte public key.
    pub(crate) key: String,
    pub(crate) expired_ts: u64,
}

/// Where the old keys of the signing key at `path` are kept.
pub(crate) fn old_keys_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".old");
    PathBuf::from(name)
}

/// The old keys kept beside the signing key at `path` (none if there is no file).
pub(crate) fn load_old_keys(path: &Path) -> Result<BTreeMap<String, OldKey>, String> {
    let old = old_keys_path(path);
    match std::fs::read_to_string(&old) {
        Ok(text) => serde_json::from_str(&text).map_err(|err| format!("{}: {err}", old.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(err) => Err(format!("{}: {err}", old.display())),
    }
}

/// Replaces the signing key at `path` with a new one, keeping the current one as old (the
/// old keys first, so a crash in between loses no key). Returns the new key.
pub(crate) fn rotate(path: &Path, now_ms: u64) -> Result<SigningKey, String> {
    let current = SigningKey::load(path)?;
    let mut old = load_old_keys(path)?;
    old.insert(
        current.key_id().to_string(),
        OldKey {
            key: current.public_key_base64(),
            expired_ts: now_ms,
        },
    );
    let text = serde_json::to_string_pretty(&old).map_err(|err| err.to_string())?;
    crate::storage::files::replace(&old_keys_path(path), text.as_bytes(), 0o600)
        .map_err(|err| err.to_string())?;
    let new = SigningKey::generate();
    crate::storage::files::replace(path, new.to_file_line().as_bytes(), 0o600)
        .map_err(|err| err.to_string())?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_every_old_key_with_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.key");
        let first = SigningKey::generate();
        first.write_new(&path).expect("write");
        let second = rotate(&path, 1000).expect("rotate");
        let third = rotate(&path, 2000).expect("rotate again");
        assert_eq!(
            SigningKey::load(&path).expect("load").key_id(),
            third.key_id()
        );
        let old = load_old_keys(&path).expect("old keys");
        assert_eq!(old.len(), 2);
        assert_eq!(old[first.key_id().as_str()].expired_ts, 1000);
        assert_eq!(
            old[second.key_id().as_str()].key,
            second.public_key_base64()
        );
        assert_ne!(second.key_id(), third.key_id());
    }
}
