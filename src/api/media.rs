//! What the media endpoints share: reading an upload's body as a stream ([`UploadBody`]) and
//! shaping a download ([`serve`], [`serve_multipart`]) with the spec's safe headers.
//!
//! An upload's body is never read into memory: [`UploadBody`] hands it to the media service
//! chunk by chunk. Like `api::json`'s reader it refuses a declared `Content-Length` over the
//! cap (`media.max_upload_size`, which for these routes replaces
//! `limits.max_request_body_bytes`) before reading anything, stops at the cap, and gives up
//! (`408`) when the body is late: it has `limits.body_timeout_seconds` for every 8 MiB it
//! may carry, the rate the server's other bodies must keep. Every upload needs an access
//! token, checked before its body is read, so no upload counts against the budget of
//! unauthenticated bytes.

use std::future::{Ready, ready};
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use futures_util::{Stream, StreamExt as _};
use tokio::io::AsyncReadExt as _;

use crate::api::app::Services;
use crate::error::{Error, ErrorKind};
use crate::media::Served;

/// The body size whose arrival `limits.body_timeout_seconds` covers; larger uploads get that
/// time for each such slice.
const BODY_TIMEOUT_SLICE: u64 = 8 * 1024 * 1024;

/// How much of a file is read per chunk when serving it.
const SERVE_CHUNK: usize = 64 * 1024;

/// The types a browser may show inline (the spec's "serving inline content" list); others
/// are served as attachments.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Paths whose bodies are uploads (for `api::middleware::limit_body`).
pub(crate) fn is_upload_path(path: &str) -> bool {
    path.starts_with("/_matrix/media/v3/upload") || path.starts_with("/_matrix/media/r0/upload")
}

/// An upload's body, to be streamed (see the module's doc).
pub(crate) struct UploadBody {
    payload: Payload,
    cap: u64,
    deadline: tokio::time::Instant,
    timeout: Duration,
    /// The `Content-Type` the client sent.
    pub(crate) content_type: Option<String>,
}

impl FromRequest for UploadBody {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready(UploadBody::new(req, payload.take()))
    }
}

impl UploadBody {
    fn new(req: &HttpRequest, payload: Payload) -> Result<UploadBody, Error> {
        let app = req
            .app_data::<web::Data<Services>>()
            .ok_or_else(|| Error::internal("no application state"))?;
        let cap = app.media.max_upload_size();
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > cap) {
            return Err(too_large(cap));
        }
        let slices = declared.unwrap_or(cap).div_ceil(BODY_TIMEOUT_SLICE).max(1);
        let timeout = app
            .strangers
            .body_timeout
            .saturating_mul(u32::try_from(slices).unwrap_or(u32::MAX));
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok(UploadBody {
            payload,
            cap,
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
            content_type,
        })
    }

    /// The body's chunks, ending in an error at the cap or the deadline.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Bytes, Error>> {
        let UploadBody {
            payload,
            cap,
            deadline,
            timeout,
            ..
        } = self;
        futures_util::stream::unfold(
            (payload, 0u64, false),
            move |(mut payload, received, done)| async move {
                if done {
                    return None;
                }
                let next = tokio::time::timeout_at(deadline, payload.next()).await;
                let item = match next {
                    Err(_) => Err(Error::new(
                        ErrorKind::RequestTimeout,
                        format!(
                            "The upload did not arrive within {} seconds",
                            timeout.as_secs()
                        ),
                    )),
                    Ok(None) => return None,
                    Ok(Some(Err(err))) => Err(crate::api::json::payload_error(err)),
                    Ok(Some(Ok(chunk))) if received + chunk.len() as u64 > cap => {
                        Err(too_large(cap))
                    }
                    Ok(Some(Ok(chunk))) => {
                        let received = received + chunk.len() as u64;
                        return Some((Ok(chunk), (payload, received, false)));
                    }
                };
                Some((item, (payload, received, true)))
            },
        )
    }
}

fn too_large(cap: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("The upload is larger than the limit of {cap} bytes"),
    )
}

/// Whether a content type may be shown inline.
fn is_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

/// `Content-Disposition` for a file: `inline` for the safe types, `attachment` otherwise,
/// with its name (RFC 6266; RFC 5987 `filename*` for names that are not plain ASCII).
pub(crate) fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let Some(name) = filename else {
        return kind.to_owned();
    };
    let plain = name
        .bytes()
        .all(|byte| (0x20..0x7f).contains(&byte) && byte != b'"' && byte != b'\\');
    if plain {
        format!("{kind}; filename=\"{name}\"")
    } else {
        let encoded: String = name
            .bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => {
                    (byte as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        format!("{kind}; filename*=utf-8''{encoded}")
    }
}

/// What keeps a file served to a browser from acting as a page of ours.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// The chunks of `file`, read as they are sent.
fn file_chunks(file: tokio::fs::File) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = BytesMut::zeroed(SERVE_CHUNK);
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(buffer.freeze()), Some(file)))
            }
            Err(err) => Some((Err(actix_web::error::ErrorInternalServerError(err)), None)),
        }
    })
}

/// A download: the file streamed with its type, a safe disposition and the headers that
/// keep a browser from running it.
pub(crate) fn serve(served: Served, filename: Option<&str>) -> HttpResponse {
    let filename = filename.or(served.filename.as_deref());
    let disposition = content_disposition(&served.content_type, filename);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, served.content_type.as_str()))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header(("Cross-Origin-Resource-Policy", "cross-origin"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "private, max-age=86400"))
        .body(SizedStream::new(served.size, file_chunks(served.file)))
}

/// A federation download: `multipart/mixed`, the metadata part then the file, streamed.
pub(crate) fn serve_multipart(served: Served) -> HttpResponse {
    let boundary = crate::media::multipart::new_boundary();
    let disposition = content_disposition(&served.content_type, served.filename.as_deref());
    let (head, tail) =
        crate::media::multipart::framing(&boundary, &served.content_type, &disposition);
    let size = head.len() as u64 + served.size + tail.len() as u64;
    let body = futures_util::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(file_chunks(served.file))
        .chain(futures_util::stream::once(
            async move { Ok(Bytes::from(tail)) },
        ));
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={boundary}"),
        ))
        .body(SizedStream::new(size, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_types_are_inline() {
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(
            content_disposition("IMAGE/JPEG; x=y", Some("a.jpg")),
            "inline; filename=\"a.jpg\""
        );
        assert_eq!(
            content_disposition("text/html", Some("x.html")),
            "attachment; filename=\"x.html\""
        );
        assert_eq!(content_disposition("image/svg+xml", None), "attachment");
    }

    #[test]
    fn unusual_names_are_percent_encoded() {
        assert_eq!(
            content_disposition("text/plain", Some("café \"x\".txt")),
            "inline; filename*=utf-8''caf%C3%A9%20%22x%22.txt"
        );
    }
}
