//! Answers of the outbound client: the head ([`Head`]), the body as it arrives
//! ([`BodyReader`], chunk by chunk, each wait bounded, the total capped), and the whole
//! answer in memory for the small JSON ones ([`RawResponse`]). A body read to its end gives
//! its HTTP/1.1 connection back to the pool; one abandoned half-way closes it.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Incoming};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::FederationError;
use super::pool::{Key, Pool, Sender};

/// How long the peer may leave us waiting for the next piece of a body.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer's status and headers (names lower-cased).
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    pub(crate) fn from_parts(parts: &hyper::http::response::Parts) -> Head {
        Head {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// The first header of that (lower-case) name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// The announced body length, if any: refused at once when over `limit`.
    fn check_length(&self, limit: usize) -> Result<(), FederationError> {
        match self.header("content-length").map(str::trim) {
            Some(length) => match length.parse::<u64>() {
                Ok(length) if length > limit as u64 => Err(FederationError::TooLarge(limit)),
                Ok(_) => Ok(()),
                Err(_) => Err(FederationError::Http("bad Content-Length".into())),
            },
            None => Ok(()),
        }
    }
}

/// The most of an error answer's body kept when the body itself was to be streamed.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;

/// The answer to a request whose `200` body went into a writer: the head, and another
/// status's body (at most [`MAX_ERROR_BODY`] bytes; empty after a `200`).
#[derive(Debug, Clone)]
pub(crate) struct StreamedResponse {
    pub(crate) status: u16,
    /// Header names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) error_body: Vec<u8>,
}

impl StreamedResponse {
    /// The first header of that (lower-case) name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }
}

/// A whole answer, its body in memory.
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    /// Header names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that (lower-case) name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }
}

fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A body being received. Its connection goes back to the pool once the body ended.
pub(crate) struct BodyReader {
    body: Incoming,
    /// The connection to give back (HTTP/1.1 only: HTTP/2 ones never left the pool).
    connection: Option<(Arc<Pool>, Key, Sender)>,
    /// Bytes received so far.
    received: usize,
}

impl BodyReader {
    pub(crate) fn new(body: Incoming, connection: Option<(Arc<Pool>, Key, Sender)>) -> BodyReader {
        BodyReader {
            body,
            connection,
            received: 0,
        }
    }

    /// The next piece of the body, `None` at its end; an error once more than `limit` bytes
    /// came in all, or when the peer is silent for [`BODY_IDLE_TIMEOUT`].
    pub(crate) async fn chunk(&mut self, limit: usize) -> Result<Option<Bytes>, FederationError> {
        loop {
            let frame = tokio::time::timeout(BODY_IDLE_TIMEOUT, self.body.frame())
                .await
                .map_err(|_| FederationError::Timeout("the body of an answer".into()))?;
            let Some(frame) = frame else {
                self.give_back();
                return Ok(None);
            };
            let frame = frame.map_err(|err| FederationError::Http(err.to_string()))?;
            // Trailers (HTTP/2) carry nothing we use.
            if let Ok(data) = frame.into_data() {
                self.received = self.received.saturating_add(data.len());
                if self.received > limit {
                    return Err(FederationError::TooLarge(limit));
                }
                return Ok(Some(data));
            }
        }
    }

    /// The whole body, at most `limit` bytes.
    pub(crate) async fn read_to_end(
        mut self,
        head: &Head,
        limit: usize,
    ) -> Result<Vec<u8>, FederationError> {
        head.check_length(limit)?;
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk(limit).await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The body's first `limit` bytes (an error answer's explanation); the rest is left
    /// unread, and the connection is closed rather than given back.
    pub(crate) async fn read_prefix(mut self, limit: usize) -> Result<Vec<u8>, FederationError> {
        let mut prefix = Vec::new();
        while prefix.len() < limit {
            match self.chunk(usize::MAX).await? {
                Some(chunk) => {
                    let room = limit - prefix.len();
                    prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                None => break,
            }
        }
        Ok(prefix)
    }

    /// Writes the body into `writer` as it arrives (never more than `limit` bytes: past it,
    /// an error, and what was written is the caller's to discard) and flushes it.
    pub(crate) async fn copy_to<W: AsyncWrite + Unpin>(
        mut self,
        head: &Head,
        writer: &mut W,
        limit: usize,
    ) -> Result<u64, FederationError> {
        head.check_length(limit)?;
        while let Some(chunk) = self.chunk(limit).await? {
            writer.write_all(&chunk).await?;
        }
        writer.flush().await?;
        Ok(self.received as u64)
    }

    fn give_back(&mut self) {
        if let Some((pool, key, sender)) = self.connection.take() {
            pool.put(key, sender);
        }
    }
}
