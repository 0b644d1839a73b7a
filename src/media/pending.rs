//! Asynchronous uploads: an ID reserved first (`POST /_matrix/media/v1/create`), its content
//! uploaded later by the same user (`PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`),
//! and downloads that wait for it (`timeout_ms`, then `504 M_NOT_YET_UPLOADED`). A user holds
//! at most `media.max_pending_uploads` unused IDs; each expires after
//! `media.pending_upload_seconds` and is removed when next seen.

use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::Stream;

use super::{Media, MediaRecord, check_media_id, clean_content_type, clean_filename, content_uri};
use crate::error::{Error, ErrorKind};
use crate::matrix::time::now_ms;

/// A reserved ID: its `mxc://` URI and when it expires (ms since the epoch).
pub(crate) struct Reserved {
    pub(crate) content_uri: String,
    pub(crate) expires_at_ms: u64,
}

impl Media {
    /// `POST /create`: reserves a media ID for `user` to upload to later.
    pub(crate) fn create_pending(&self, user: &str) -> Result<Reserved, Error> {
        let waiting = self.pending_count(user)?;
        if waiting >= self.config.max_pending_uploads {
            return Err(Error::new(
                ErrorKind::LimitExceeded {
                    retry_after_ms: 60_000,
                },
                "Too many upload IDs are waiting for their content; use or let expire some first",
            ));
        }
        let now = now_ms();
        let expires_at_ms = now.saturating_add(self.config.pending_upload_seconds * 1000);
        let media_id = super::new_media_id();
        let record = MediaRecord {
            sha256: String::new(),
            size: 0,
            content_type: None,
            filename: None,
            uploader: Some(user.to_owned()),
            created_ms: now,
            pending_until_ms: Some(expires_at_ms),
            last_access_ms: 0,
        };
        let key = (self.our_server.to_string(), media_id.clone());
        self.storage.mediaid_record.insert(&key, &record)?;
        self.storage
            .usermedia_size
            .insert(&(user.to_owned(), media_id.clone()), &0)?;
        Ok(Reserved {
            content_uri: content_uri(self.our_server.as_str(), &media_id),
            expires_at_ms,
        })
    }

    /// The user's unused, unexpired upload IDs (expired ones are removed on the way).
    fn pending_count(&self, user: &str) -> Result<usize, Error> {
        let prefix = crate::storage::pair_prefix(user);
        let now = now_ms();
        let mut count = 0;
        for entry in self.storage.usermedia_size.scan_prefix(&prefix) {
            let ((_, media_id), size) = entry?;
            if size != 0 {
                continue;
            }
            let key = (self.our_server.to_string(), media_id.clone());
            match self.storage.mediaid_record.get(&key)? {
                Some(record) if record.pending_until_ms.is_some_and(|until| until > now) => {
                    count += 1
                }
                Some(record) if record.pending_until_ms.is_some() => {
                    self.storage.mediaid_record.remove(&key)?;
                    self.storage
                        .usermedia_size
                        .remove(&(user.to_owned(), media_id))?;
                }
                _ => {}
            }
        }
        Ok(count)
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the content of a reserved ID. Only the user who
    /// reserved it may upload, once.
    pub(crate) async fn upload_pending(
        &self,
        user: &str,
        server: &str,
        media_id: &str,
        content_type: Option<&str>,
        filename: Option<&str>,
        body: impl Stream<Item = Result<Bytes, Error>>,
    ) -> Result<(), Error> {
        check_media_id(media_id)?;
        if !self.is_ours(server) {
            return Err(Error::not_found("No such upload ID on this server"));
        }
        let key = (server.to_owned(), media_id.to_owned());
        let record = self.pending_record(&key, user)?;
        let cap = self.upload_allowance(user)?;
        let incoming = self.receive(body, cap).await?;
        // Checked again: another request for the same ID may have finished meanwhile.
        let mut record = self.pending_record(&key, user).map(|_| record)?;
        record.pending_until_ms = None;
        record.content_type = clean_content_type(content_type);
        record.filename = clean_filename(filename);
        self.keep(server, media_id, record, incoming).await
    }

    /// The reserved, unused record under `key`, if `user` may upload to it.
    fn pending_record(&self, key: &(String, String), user: &str) -> Result<MediaRecord, Error> {
        let record = self
            .storage
            .mediaid_record
            .get(key)?
            .ok_or_else(|| Error::not_found("No such upload ID"))?;
        if record.uploader.as_deref() != Some(user) {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "This upload ID was reserved by another user",
            ));
        }
        match record.pending_until_ms {
            None => Err(Error::new(
                ErrorKind::CannotOverwriteMedia,
                "This media has already been uploaded",
            )),
            Some(until) if until <= now_ms() => Err(Error::not_found("This upload ID expired")),
            Some(_) => Ok(record),
        }
    }

    /// Our media's record, waiting up to `wait` for an asynchronous upload to complete.
    pub(super) async fn local_record(
        &self,
        media_id: &str,
        wait: Duration,
    ) -> Result<MediaRecord, Error> {
        let key = (self.our_server.to_string(), media_id.to_owned());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before reading, so an upload finishing in between still wakes us.
            let notified = self.uploaded.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let record = self
                .storage
                .mediaid_record
                .get(&key)?
                .ok_or_else(|| Error::not_found("No such media"))?;
            match record.pending_until_ms {
                None => return Ok(record),
                Some(until) if until <= now_ms() => {
                    return Err(Error::not_found("No such media"));
                }
                Some(_) => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new(
                    ErrorKind::NotYetUploaded,
                    "The media has not been uploaded yet",
                ));
            }
        }
    }
}
