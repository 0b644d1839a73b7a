//! The content repository: photos, voice notes and files, ours and other servers'.
//!
//! [`Media`] is the service. Bytes live as files under the data directory ([`files`]:
//! content-addressed by SHA-256, streamed to a temporary file, flushed and renamed before an
//! upload is acknowledged, never whole in memory); the database holds only the records
//! (`mediaid_record`, `usermedia_size`, `sha256_refs`, all written here). Uploads are capped
//! by `media.max_upload_size` and the optional per-user quota; asynchronous uploads
//! ([`pending`]) reserve an ID first. Other servers' media are fetched through the
//! authenticated federation endpoints ([`remote`], the `multipart/mixed` answer taken apart
//! by [`multipart`] as it streams) into a cache with a size cap and least-recently-used
//! eviction; our own media are never evicted. Thumbnails ([`thumbnail`]) are made on demand,
//! one at a time, and kept as files. [`admin`] has what the `hearth media` commands and a
//! future admin API call. URL previews ([`preview::Previews`]) are off by default: a page a
//! user pasted, fetched by [`preview_fetch`] (through the outbound client's private-address
//! refusal, redirects re-checked, bytes and time bounded) and read by [`opengraph`] (the
//! `<head>` only), remembered for a while.

pub(crate) mod admin;
pub(crate) mod files;
pub(crate) mod multipart;
pub(crate) mod opengraph;
mod pending;
pub(crate) mod preview;
pub(crate) mod preview_fetch;
mod remote;
pub(crate) mod thumbnail;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt as _};
use ruma::OwnedServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Notify, Semaphore};

use crate::config::MediaConfig;
use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::matrix::time::now_ms;
use crate::storage::Storage;
pub(crate) use crate::storage::records::MediaRecord;
use files::{Incoming, MediaFiles};
pub(crate) use thumbnail::{Method, ThumbnailRequest, check_request};

/// The longest a download waits for an asynchronous upload to complete (`timeout_ms` above
/// it is cut to this).
const MAX_WAIT: Duration = Duration::from_secs(120);
/// The wait when a client gives no `timeout_ms` (the spec's default).
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// The content repository service.
pub(crate) struct Media {
    storage: Arc<Storage>,
    files: MediaFiles,
    config: MediaConfig,
    our_server: OwnedServerName,
    /// Other servers' media are fetched through its signed transport.
    federation: Arc<Federation>,
    /// Woken whenever an upload completes: downloads waiting for an asynchronous upload.
    uploaded: Notify,
    /// Thumbnails are decoded one at a time: each may need tens of MiB.
    decoding: Semaphore,
    /// Held while a content's reference count changes together with its file.
    refs: tokio::sync::Mutex<()>,
    /// Bytes of other servers' media in the cache, counted at the first fetch.
    remote_bytes: std::sync::Mutex<Option<u64>>,
    /// Remote fetches in flight at once (each holds a connection and a temporary file).
    fetching: Semaphore,
}

/// A file ready to be served: its bytes, and what to say about them.
pub(crate) struct Served {
    pub(crate) file: tokio::fs::File,
    pub(crate) size: u64,
    pub(crate) content_type: String,
    pub(crate) filename: Option<String>,
}

/// What a client may see of an upload: `mxc://server/id`.
pub(crate) fn content_uri(server: &str, media_id: &str) -> String {
    format!("mxc://{server}/{media_id}")
}

/// A media ID as Hearth makes them and accepts them from anyone: 1 to 255 of `A-Za-z0-9_-`
/// (the spec's grammar), so no `/`, `..` or NUL ever reaches a path or a key.
pub(crate) fn check_media_id(media_id: &str) -> Result<(), Error> {
    let valid = !media_id.is_empty()
        && media_id.len() <= 255
        && media_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::InvalidParam, "Invalid media ID"))
    }
}

/// A server name from a path, checked.
pub(crate) fn check_server_name(server: &str) -> Result<OwnedServerName, Error> {
    OwnedServerName::try_from(server)
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid server name"))
}

/// A new media ID: 24 random letters and digits.
fn new_media_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    crate::matrix::crypto::random_bytes::<24>()
        .iter()
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect()
}

/// A client's content type, kept only if it looks like one (`type/subtype`, printable).
fn clean_content_type(content_type: Option<&str>) -> Option<String> {
    let value = content_type?.trim();
    let valid = value.len() <= 255
        && value.contains('/')
        && value.bytes().all(|byte| (0x20..0x7f).contains(&byte));
    valid.then(|| value.to_owned())
}

/// A file name as a client gave it: no path, no control characters, at most 255 bytes.
fn clean_filename(filename: Option<&str>) -> Option<String> {
    let name = filename?.trim();
    let name = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let valid = !name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control);
    valid.then(|| name.to_owned())
}

fn io_error(err: &std::io::Error) -> Error {
    if err.kind() == std::io::ErrorKind::FileTooLarge {
        return Error::new(ErrorKind::TooLarge, err.to_string());
    }
    Error::internal(format!("media file: {err}"))
}

impl Media {
    /// The service, with its files under `data_dir/media` (created if missing).
    pub(crate) fn new(
        storage: Arc<Storage>,
        data_dir: &std::path::Path,
        config: MediaConfig,
        our_server: OwnedServerName,
        federation: Arc<Federation>,
    ) -> Media {
        Media {
            storage,
            files: MediaFiles::open(data_dir),
            config,
            our_server,
            federation,
            uploaded: Notify::new(),
            decoding: Semaphore::new(1),
            refs: tokio::sync::Mutex::new(()),
            remote_bytes: std::sync::Mutex::new(None),
            fetching: Semaphore::new(4),
        }
    }

    /// A local user's media, newest first (the administration API's list).
    pub(crate) fn user_media(&self, user: &str) -> Result<Vec<(String, MediaRecord)>, Error> {
        Ok(admin::user_media(
            &self.storage,
            self.our_server.as_str(),
            user,
        )?)
    }

    /// Deletes everything a local user uploaded; the media IDs deleted.
    pub(crate) async fn delete_user_media(&self, user: &str) -> Result<Vec<String>, Error> {
        let ids: Vec<String> = self
            .user_media(user)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let _refs = self.refs.lock().await;
        admin::delete_user_media(&self.storage, &self.files, self.our_server.as_str(), user)
            .await?;
        Ok(ids)
    }

    /// Deletes one piece of media, ours or a cached one of another server; whether it was
    /// there.
    pub(crate) async fn delete_media(&self, server: &str, media_id: &str) -> Result<bool, Error> {
        check_media_id(media_id)?;
        let key = (server.to_owned(), media_id.to_owned());
        if self.storage.mediaid_record.get(&key)?.is_none() {
            return Ok(false);
        }
        let _refs = self.refs.lock().await;
        admin::remove_record(&self.storage, &self.files, server, media_id).await?;
        self.storage.flush().await?;
        Ok(true)
    }

    /// `m.upload.size` for `/media/config`.
    pub(crate) fn max_upload_size(&self) -> u64 {
        self.config.max_upload_size
    }

    fn is_ours(&self, server: &str) -> bool {
        server == self.our_server.as_str()
    }

    /// How many bytes `user` may still upload: the upload cap, or less under a quota.
    fn upload_allowance(&self, user: &str) -> Result<u64, Error> {
        let Some(quota) = self.config.user_quota_bytes else {
            return Ok(self.config.max_upload_size);
        };
        let used = admin::user_usage(&self.storage, user)?.1;
        let left = quota.saturating_sub(used);
        if left == 0 {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You have used all of your media quota",
            ));
        }
        Ok(left.min(self.config.max_upload_size))
    }

    /// `POST /upload`: receives `body` into a new piece of media of `user`'s. Returns its
    /// `mxc://` URI once the file is on disk.
    pub(crate) async fn upload(
        &self,
        user: &str,
        content_type: Option<&str>,
        filename: Option<&str>,
        body: impl Stream<Item = Result<Bytes, Error>>,
    ) -> Result<String, Error> {
        let cap = self.upload_allowance(user)?;
        let incoming = self.receive(body, cap).await?;
        let media_id = new_media_id();
        let record = MediaRecord {
            sha256: String::new(),
            size: 0,
            content_type: clean_content_type(content_type),
            filename: clean_filename(filename),
            uploader: Some(user.to_owned()),
            created_ms: now_ms(),
            pending_until_ms: None,
            last_access_ms: 0,
        };
        self.keep(self.our_server.as_str(), &media_id, record, incoming)
            .await?;
        Ok(content_uri(self.our_server.as_str(), &media_id))
    }

    /// Streams `body` into a temporary file of at most `cap` bytes.
    async fn receive(
        &self,
        body: impl Stream<Item = Result<Bytes, Error>>,
        cap: u64,
    ) -> Result<Incoming, Error> {
        let mut incoming = self
            .files
            .incoming(cap)
            .await
            .map_err(|err| io_error(&err))?;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if incoming.size().saturating_add(chunk.len() as u64) > cap {
                return Err(too_large(cap));
            }
            incoming
                .write_all(&chunk)
                .await
                .map_err(|err| io_error(&err))?;
        }
        Ok(incoming)
    }

    /// Finishes `incoming` (flushed and renamed to its hash) and writes `record` for it
    /// under `server`/`media_id`, counting the reference to its content.
    async fn keep(
        &self,
        server: &str,
        media_id: &str,
        mut record: MediaRecord,
        incoming: Incoming,
    ) -> Result<(), Error> {
        let _refs = self.refs.lock().await;
        let key = (server.to_owned(), media_id.to_owned());
        // An asynchronous upload's ID takes content once, whichever request comes first.
        if record.uploader.is_some() {
            let current = self.storage.mediaid_record.get(&key)?;
            if current.is_some_and(|current| current.pending_until_ms.is_none()) {
                return Err(Error::new(
                    ErrorKind::CannotOverwriteMedia,
                    "This media has already been uploaded",
                ));
            }
        }
        let stored = incoming.finish().await.map_err(|err| io_error(&err))?;
        record.sha256 = stored.sha256.clone();
        record.size = stored.size;
        self.storage.sha256_refs.update(&stored.sha256, |count| {
            Some(count.unwrap_or(0).saturating_add(1))
        })?;
        self.storage.mediaid_record.insert(&key, &record)?;
        if let Some(user) = &record.uploader {
            self.storage
                .usermedia_size
                .insert(&(user.clone(), media_id.to_owned()), &record.size)?;
        }
        self.storage.flush().await?;
        self.uploaded.notify_waiters();
        Ok(())
    }

    /// `GET /download`: our media, or another server's through the cache. Waits up to
    /// `wait` for an asynchronous upload still to come.
    pub(crate) async fn download(
        &self,
        server: &str,
        media_id: &str,
        wait: Duration,
    ) -> Result<Served, Error> {
        check_media_id(media_id)?;
        let record = if self.is_ours(server) {
            self.local_record(media_id, wait).await?
        } else {
            check_server_name(server)?;
            self.remote_record(server, media_id, wait).await?
        };
        self.open(&record).await
    }

    /// What another server asked for: our own media only.
    pub(crate) async fn download_local(
        &self,
        media_id: &str,
        wait: Duration,
    ) -> Result<Served, Error> {
        check_media_id(media_id)?;
        let record = self.local_record(media_id, wait).await?;
        self.open(&record).await
    }

    async fn open(&self, record: &MediaRecord) -> Result<Served, Error> {
        let path = self.files.content_path(&record.sha256);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|err| io_error(&err))?;
        Ok(Served {
            file,
            size: record.size,
            content_type: record
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            filename: record.filename.clone(),
        })
    }

    /// `GET /thumbnail`: a thumbnail of our media or another server's (made from the cached
    /// original).
    pub(crate) async fn thumbnail(
        &self,
        server: &str,
        media_id: &str,
        request: ThumbnailRequest,
        wait: Duration,
    ) -> Result<Served, Error> {
        check_media_id(media_id)?;
        let record = if self.is_ours(server) {
            self.local_record(media_id, wait).await?
        } else {
            check_server_name(server)?;
            self.remote_record(server, media_id, wait).await?
        };
        self.thumbnail_of(&record, request).await
    }

    /// A thumbnail of our own media, for another server.
    pub(crate) async fn thumbnail_local(
        &self,
        media_id: &str,
        request: ThumbnailRequest,
        wait: Duration,
    ) -> Result<Served, Error> {
        check_media_id(media_id)?;
        let record = self.local_record(media_id, wait).await?;
        self.thumbnail_of(&record, request).await
    }
}

fn too_large(cap: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("The file is larger than the limit of {cap} bytes"),
    )
}

/// `timeout_ms` as a client gave it, bounded.
pub(crate) fn wait_from_millis(timeout_ms: Option<u64>) -> Duration {
    timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_WAIT)
        .min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_with_path_tricks_are_refused() {
        for bad in [
            "",
            "..",
            "a/b",
            "a%2Fb",
            "a\0",
            "é",
            &"a".repeat(256),
            "a.b",
        ] {
            assert!(check_media_id(bad).is_err(), "{bad:?}");
        }
        for good in ["abc", "A-b_9", &new_media_id()] {
            assert!(check_media_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn file_names_lose_their_paths() {
        assert_eq!(
            clean_filename(Some("../../etc/passwd")).as_deref(),
            Some("passwd")
        );
        assert_eq!(clean_filename(Some("a\nb")), None);
        assert_eq!(clean_filename(Some("cat.jpg")).as_deref(), Some("cat.jpg"));
    }
}
