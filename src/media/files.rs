//! Media files on disk. Under the data directory:
//!
//! ```text
//! media/content/ab/abcdef…          a file's bytes, named by their SHA-256 (hex), so the same
//!                                   file uploaded twice (or cached from two servers) is kept once
//! media/thumbnails/ab/abcdef…/320x240-scale.jpg
//!                                   thumbnails of that content, made on demand and kept
//! media/tmp/…                       files being received; renamed into content/ once complete
//! ```
//!
//! A file is received through [`Incoming`]: streamed to a temporary file while it is hashed,
//! stopped at its size cap, flushed to disk (`fsync`) and only then renamed to its hash, so
//! a crash leaves either the whole file or none (stray temporary files are removed at start).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// The `media/` folder of the data directory.
#[derive(Debug, Clone)]
pub(crate) struct MediaFiles {
    root: PathBuf,
}

/// What [`Incoming::finish`] stored: the content's hash and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

impl MediaFiles {
    /// The media folder of `data_dir` (its folders are made when first needed); leftovers
    /// of interrupted uploads are removed.
    pub(crate) fn open(data_dir: &Path) -> MediaFiles {
        let root = data_dir.join("media");
        if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        MediaFiles { root }
    }

    /// The media folder of `data_dir`, touching nothing: for a backup or an operator's
    /// command while the server may be receiving uploads into `tmp/`.
    pub(crate) fn at(data_dir: &Path) -> MediaFiles {
        MediaFiles {
            root: data_dir.join("media"),
        }
    }

    /// Where the content with this hash lives. `sha256` is our own hex digest, never a
    /// client's word.
    pub(crate) fn content_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("content")
            .join(sha256.get(..2).unwrap_or("00"))
            .join(sha256)
    }

    /// The folder of the thumbnails made from the content with this hash.
    pub(crate) fn thumbnail_dir(&self, sha256: &str) -> PathBuf {
        self.root
            .join("thumbnails")
            .join(sha256.get(..2).unwrap_or("00"))
            .join(sha256)
    }

    /// A new temporary file's path (a random name: two uploads never share one).
    pub(crate) fn temp_path(&self) -> PathBuf {
        let bytes = crate::matrix::crypto::random_bytes::<12>();
        let name: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        self.root.join("tmp").join(name)
    }

    /// Starts receiving a file of at most `cap` bytes.
    pub(crate) async fn incoming(&self, cap: u64) -> io::Result<Incoming> {
        let path = self.temp_path();
        tokio::fs::create_dir_all(self.root.join("tmp")).await?;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(Incoming {
            files: self.clone(),
            path,
            file: Some(file),
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
            cap,
        })
    }

    /// Removes the content with this hash and its thumbnails (its last record is gone).
    pub(crate) async fn remove_content(&self, sha256: &str) {
        let _ = tokio::fs::remove_file(self.content_path(sha256)).await;
        let _ = tokio::fs::remove_dir_all(self.thumbnail_dir(sha256)).await;
    }

    /// Writes a finished temporary file to `target` (flushed first), replacing nothing that
    /// is there already: content with the same hash is the same content.
    pub(crate) async fn publish(&self, temp: &Path, target: &Path) -> io::Result<()> {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        if tokio::fs::try_exists(target).await.unwrap_or(false) {
            tokio::fs::remove_file(temp).await?;
            return Ok(());
        }
        tokio::fs::rename(temp, target).await?;
        // The rename is durable only once its folder is, and a folder just made (the hash's
        // shard, or `content/` itself on the first upload) only once its own parent is: sync
        // `content/ab/`, `content/`, `media/` and the data directory, before the upload is
        // acknowledged (a power cut would otherwise lose an acknowledged file).
        let folders: Vec<PathBuf> = target
            .ancestors()
            .skip(1)
            .take(4)
            .map(Path::to_owned)
            .collect();
        tokio::task::spawn_blocking(move || {
            folders
                .iter()
                .try_for_each(|dir| std::fs::File::open(dir).and_then(|dir| dir.sync_all()))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }
}

/// A file being received: written to a temporary file and hashed as it comes. Dropped
/// before [`Incoming::finish`], it removes its temporary file.
pub(crate) struct Incoming {
    files: MediaFiles,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    digest: ring::digest::Context,
    size: u64,
    cap: u64,
}

/// The error an [`Incoming`] write fails with when the file grows past its cap.
pub(crate) fn over_cap(cap: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("the file is larger than the limit of {cap} bytes"),
    )
}

impl Incoming {
    /// Bytes received so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the file to disk and moves it to its content path. Returns its hash and size.
    pub(crate) async fn finish(mut self) -> io::Result<Stored> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("already finished"))?;
        file.sync_all().await?;
        drop(file);
        let digest = std::mem::replace(
            &mut self.digest,
            ring::digest::Context::new(&ring::digest::SHA256),
        )
        .finish();
        let sha256: String = digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let target = self.files.content_path(&sha256);
        let result = self.files.publish(&self.path, &target).await;
        if result.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        // Published or removed: nothing for `drop` to clean.
        self.path = PathBuf::new();
        result?;
        Ok(Stored {
            sha256,
            size: self.size,
        })
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl AsyncWrite for Incoming {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.size.saturating_add(buf.len() as u64) > this.cap {
            return Poll::Ready(Err(over_cap(this.cap)));
        }
        let Some(file) = this.file.as_mut() else {
            return Poll::Ready(Err(io::Error::other("already finished")));
        };
        match Pin::new(file).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                this.digest.update(&buf[..written]);
                this.size += written as u64;
                Poll::Ready(Ok(written))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().file.as_mut() {
            Some(file) => Pin::new(file).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().file.as_mut() {
            Some(file) => Pin::new(file).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[actix_web::test]
    async fn files_are_named_by_their_hash_and_stored_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = MediaFiles::open(dir.path());
        let mut first = files.incoming(100).await.expect("incoming");
        first.write_all(b"hello").await.expect("write");
        let stored = first.finish().await.expect("finish");
        assert_eq!(
            stored.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let mut second = files.incoming(100).await.expect("incoming");
        second.write_all(b"hello").await.expect("write");
        assert_eq!(second.finish().await.expect("finish"), stored);
        let bytes = std::fs::read(files.content_path(&stored.sha256)).expect("read");
        assert_eq!(bytes, b"hello");
        let leftovers = std::fs::read_dir(dir.path().join("media/tmp")).expect("tmp");
        assert_eq!(leftovers.count(), 0);
    }

    #[actix_web::test]
    async fn a_file_over_its_cap_is_refused_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = MediaFiles::open(dir.path());
        let mut incoming = files.incoming(4).await.expect("incoming");
        assert!(incoming.write_all(b"hello").await.is_err());
        drop(incoming);
        let leftovers = std::fs::read_dir(dir.path().join("media/tmp")).expect("tmp");
        assert_eq!(leftovers.count(), 0);
    }
}
