//! The data directory's lock: an advisory lock on `<data_dir>/hearth.lock`, held by the one
//! process that uses the database. The operating system drops it when the process dies, so a
//! crash never leaves a stale lock behind. The file holds the owner's pid, for the message a
//! second process prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use super::{StorageError, StorageResult};

pub(super) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub(super) fn acquire(data_dir: &Path) -> StorageResult<DataDirLock> {
        let path = data_dir.join("hearth.lock");
        let io_error = |source| StorageError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(StorageError::InUse {
                    path: data_dir.to_owned(),
                    pid: (!pid.is_empty()).then(|| pid.to_owned()),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        file.set_len(0).map_err(io_error)?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(DataDirLock { _file: file })
    }
}
