//! Other servers' media, for our users: fetched once through the authenticated federation
//! endpoint (`/_matrix/federation/v1/media/download`, its `multipart/mixed` answer split as
//! it streams to disk), or, for a server that does not know that endpoint (it answers
//! `404`/`405 M_UNRECOGNIZED`), through the unauthenticated `/_matrix/media/v3/download`
//! the spec lets servers fall back to. Kept in a cache of at most `media.remote_cache_bytes`,
//! evicting the least recently used; each read marks its media used.

use std::time::Duration;

use super::files::Incoming;
use super::multipart::SplitWriter;
use super::{Media, MediaRecord, io_error};
use crate::error::{Error, ErrorKind};
use crate::federation::transport::encode;
use crate::matrix::time::now_ms;

/// A read marks cached media used at most this often (a write per download otherwise).
const ACCESS_GRANULARITY_MS: u64 = 60_000;

/// Room for the answer's JSON part and part headers around the media.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

impl Media {
    /// Another server's media record: from the cache, or fetched into it.
    pub(super) async fn remote_record(
        &self,
        server: &str,
        media_id: &str,
        wait: Duration,
    ) -> Result<MediaRecord, Error> {
        let key = (server.to_owned(), media_id.to_owned());
        if let Some(record) = self.storage.mediaid_record.get(&key)? {
            self.mark_used(&key, &record)?;
            return Ok(record);
        }
        if !self.federation.config.federation.enabled {
            return Err(Error::not_found(
                "Federation is disabled: other servers' media cannot be fetched",
            ));
        }
        let _slot = self
            .fetching
            .acquire()
            .await
            .map_err(|_| Error::internal("media fetches closed"))?;
        // Another request may have fetched it while this one waited for a slot.
        if let Some(record) = self.storage.mediaid_record.get(&key)? {
            return Ok(record);
        }
        let record = self.fetch(server, media_id, wait).await?;
        self.evict_over_cap(record.size).await?;
        Ok(record)
    }

    fn mark_used(&self, key: &(String, String), record: &MediaRecord) -> Result<(), Error> {
        let now = now_ms();
        if now.saturating_sub(record.last_access_ms) < ACCESS_GRANULARITY_MS {
            return Ok(());
        }
        self.storage.mediaid_record.update(key, |current| {
            current.map(|mut record| {
                record.last_access_ms = now;
                record
            })
        })?;
        Ok(())
    }

    /// Fetches `server`'s media into the cache and records it.
    async fn fetch(
        &self,
        server: &str,
        media_id: &str,
        wait: Duration,
    ) -> Result<MediaRecord, Error> {
        let cap = self.config.max_upload_size;
        let timeout_ms = wait.as_millis();
        let path = format!(
            "/_matrix/federation/v1/media/download/{}?timeout_ms={timeout_ms}",
            encode(media_id)
        );
        let transport = &self.federation.transport;
        let incoming = self
            .files
            .incoming(cap)
            .await
            .map_err(|err| io_error(&err))?;
        let mut writer = SplitWriter::new(incoming);
        let answer = transport
            .get_to_writer(server, &path, true, &mut writer, cap + MULTIPART_OVERHEAD)
            .await
            .map_err(|err| fetch_error(server, &err))?;
        let (incoming, content_type, filename) = if answer.status == 200 {
            let head = writer
                .splitter
                .finish()
                .map_err(|err| invalid_answer(server, &err))?;
            if head.location.is_some() {
                tracing::info!(
                    server,
                    "remote media answered with a redirect, not followed"
                );
                return Err(Error::new(
                    ErrorKind::RemoteUnavailable,
                    format!("{server} sent a redirect for this media, which is not supported"),
                ));
            }
            let filename = head
                .content_disposition
                .as_deref()
                .and_then(disposition_filename);
            (writer.inner, head.content_type, filename)
        } else if lacks_authenticated_media(answer.status, &answer.error_body) {
            drop(writer);
            self.fetch_unauthenticated(server, media_id, timeout_ms, cap)
                .await?
        } else {
            return Err(remote_refusal(server, answer.status, &answer.error_body));
        };
        let now = now_ms();
        let record = MediaRecord {
            sha256: String::new(),
            size: 0,
            content_type: super::clean_content_type(content_type.as_deref()),
            filename: super::clean_filename(filename.as_deref()),
            uploader: None,
            created_ms: now,
            pending_until_ms: None,
            last_access_ms: now,
        };
        self.keep(server, media_id, record, incoming).await?;
        let key = (server.to_owned(), media_id.to_owned());
        self.storage
            .mediaid_record
            .get(&key)?
            .ok_or_else(|| Error::internal("a media record vanished as it was written"))
    }

    /// The legacy download, for servers without authenticated media.
    async fn fetch_unauthenticated(
        &self,
        server: &str,
        media_id: &str,
        timeout_ms: u128,
        cap: u64,
    ) -> Result<(Incoming, Option<String>, Option<String>), Error> {
        let path = format!(
            "/_matrix/media/v3/download/{}/{}?allow_remote=false&timeout_ms={timeout_ms}",
            encode(server),
            encode(media_id)
        );
        let mut incoming = self
            .files
            .incoming(cap)
            .await
            .map_err(|err| io_error(&err))?;
        let answer = self
            .federation
            .transport
            .get_to_writer(server, &path, false, &mut incoming, cap)
            .await
            .map_err(|err| fetch_error(server, &err))?;
        if answer.status != 200 {
            return Err(remote_refusal(server, answer.status, &answer.error_body));
        }
        let content_type = answer.header("content-type").map(str::to_owned);
        let filename = answer
            .header("content-disposition")
            .and_then(disposition_filename);
        Ok((incoming, content_type, filename))
    }

    /// Evicts the least recently used remote media until the cache, with `added` bytes
    /// more, fits its cap.
    async fn evict_over_cap(&self, added: u64) -> Result<(), Error> {
        let total = {
            let mut counted = self
                .remote_bytes
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let total = match *counted {
                Some(total) => total.saturating_add(added),
                None => super::admin::remote_bytes(&self.storage, self.our_server.as_str())?,
            };
            *counted = Some(total);
            total
        };
        let cap = self.config.remote_cache_bytes;
        if total <= cap {
            return Ok(());
        }
        let victims = super::admin::least_recently_used(
            &self.storage,
            self.our_server.as_str(),
            total - cap,
        )?;
        let _refs = self.refs.lock().await;
        let mut freed = 0;
        for (server, media_id) in victims {
            freed +=
                super::admin::remove_record(&self.storage, &self.files, &server, &media_id).await?;
        }
        let mut counted = self
            .remote_bytes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *counted = counted.map(|total| total.saturating_sub(freed));
        Ok(())
    }
}

/// Whether an answer says the server does not know the authenticated media endpoints.
fn lacks_authenticated_media(status: u16, body: &[u8]) -> bool {
    let errcode = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value["errcode"].as_str().map(str::to_owned));
    matches!(status, 404 | 405) && errcode.as_deref() == Some("M_UNRECOGNIZED")
        || (status == 404 && errcode.is_none())
}

/// The `filename` of a `Content-Disposition` (plain or RFC 5987 `filename*`).
pub(crate) fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    for param in value.split(';').map(str::trim) {
        if let Some(encoded) = param.strip_prefix("filename*=") {
            let (_, text) = encoded.split_once("''")?;
            return Some(percent_decode(text));
        }
        if let Some(name) = param.strip_prefix("filename=") {
            plain = Some(name.trim_matches('"').to_owned());
        }
    }
    plain
}

/// `%XX` escapes decoded (invalid ones kept as they are), as UTF-8.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fetch_error(server: &str, err: &crate::federation::FederationError) -> Error {
    if let crate::federation::FederationError::TooLarge(_) = err {
        return Error::new(
            ErrorKind::TooLarge,
            format!("The media on {server} is larger than this server accepts"),
        );
    }
    if let crate::federation::FederationError::Io(io) = err
        && io.kind() == std::io::ErrorKind::FileTooLarge
    {
        return Error::new(
            ErrorKind::TooLarge,
            format!("The media on {server} is larger than this server accepts"),
        );
    }
    crate::federation::transport::unreachable(server, err)
}

fn invalid_answer(server: &str, err: &std::io::Error) -> Error {
    tracing::info!(server, "remote media answer: {err}");
    Error::new(
        ErrorKind::RemoteUnavailable,
        format!("{server} sent an invalid media answer"),
    )
}

/// A remote server's refusal, passed on: its `404` is ours; other failures are a `502`.
fn remote_refusal(server: &str, status: u16, body: &[u8]) -> Error {
    let errcode = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value["errcode"].as_str().map(str::to_owned));
    match (status, errcode.as_deref()) {
        (404, _) => Error::not_found(format!("{server} has no such media")),
        (504, Some("M_NOT_YET_UPLOADED")) => Error::new(
            ErrorKind::NotYetUploaded,
            "The media has not been uploaded yet",
        ),
        (413, _) | (502, Some("M_TOO_LARGE")) => Error::new(
            ErrorKind::TooLarge,
            format!("The media on {server} is too large"),
        ),
        _ => Error::new(
            ErrorKind::RemoteUnavailable,
            format!("{server} answered {status} for this media"),
        ),
    }
}
