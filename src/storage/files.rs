//! Writing files that must never be found half-written (the signing key, the config, TLS
//! keys): the contents go to a temporary file in the same directory, are synced, and only
//! then take the final name, and the directory is synced so the name survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Writes a new file; fails with `AlreadyExists` (and changes nothing) if `path` exists.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let temporary = write_temporary(path, contents, mode)?;
    // A hard link never replaces an existing name: the check and the write are one step.
    let linked = fs::hard_link(&temporary, path);
    let _ = fs::remove_file(&temporary);
    linked?;
    sync_directory(path)
}

/// Writes `path`, replacing any existing file in one step.
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let temporary = write_temporary(path, contents, mode)?;
    if let Err(err) = fs::rename(&temporary, path) {
        let _ = fs::remove_file(&temporary);
        return Err(err);
    }
    sync_directory(path)
}

fn write_temporary(path: &Path, contents: &[u8], mode: u32) -> io::Result<PathBuf> {
    let directory = parent(path);
    fs::create_dir_all(directory)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("not a file path"))?;
    let temporary = directory.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&temporary);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        // The umask may have narrowed `mode` on creation; the file gets exactly `mode`.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&temporary);
        return Err(err);
    }
    Ok(temporary)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn sync_directory(path: &Path) -> io::Result<()> {
    sync_dir(parent(path))
}

/// Makes the entries of directory `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/key");
        write_new(&path, b"first", 0o600).expect("write");
        let err = write_new(&path, b"second", 0o600).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(
            fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let leftovers = fs::read_dir(dir.path().join("sub")).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn replace_swaps_contents_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        replace(&path, b"one", 0o644).expect("write");
        replace(&path, b"two", 0o640).expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(
            fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o640
        );
    }
}
