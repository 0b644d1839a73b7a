//! The HTTP/1.1 wire format for our outbound requests: one request per connection
//! (`Connection: close`), the answer read with a hard size limit. Kept this small on purpose:
//! federation requests are plain JSON over HTTPS, and a full HTTP client library would cost a
//! Raspberry Pi minutes of build time for features we do not use.

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _};

use super::FederationError;

/// The largest status line plus headers we read.
const MAX_HEAD: usize = 32 * 1024;
const MAX_HEADERS: usize = 64;

/// An answer as read off the wire.
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
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The bytes of a request. `host` is the `Host` header; `extra` headers follow it.
pub(crate) fn encode_request(
    method: &str,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}/{}\r\nConnection: close\r\n",
        crate::SERVER_SOFTWARE,
        crate::VERSION
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Reads one answer, refusing bodies over `limit` bytes.
pub(crate) async fn read_response<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<RawResponse, FederationError> {
    let head = read_head(reader).await?;
    let (status, headers) = parse_head(&head)?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let no_body = status / 100 == 1 || status == 204 || status == 304;
    let chunked = header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    let body = if no_body {
        Vec::new()
    } else if chunked {
        read_chunked(reader, limit).await?
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .trim()
            .parse()
            .map_err(|_| FederationError::Http("bad Content-Length".into()))?;
        if length > limit {
            return Err(FederationError::TooLarge(limit));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        body
    } else {
        read_to_end_limited(reader, limit).await?
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// An answer whose body went to a writer: its status and headers, and, when the status is
/// not `200`, the start of its body (an error's JSON) instead.
#[derive(Debug, Clone)]
pub(crate) struct StreamedResponse {
    pub(crate) status: u16,
    /// Header names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    /// A non-`200` answer's body (at most [`MAX_ERROR_BODY`] bytes); empty after a `200`.
    pub(crate) error_body: Vec<u8>,
}

impl StreamedResponse {
    /// The first header of that (lower-case) name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The most of a non-`200` answer's body read when streaming: an error's JSON.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;

/// Reads one answer, copying a `200`'s body into `writer` as it arrives (at most `limit`
/// bytes, then [`FederationError::TooLarge`]), never holding more than a read buffer of it.
pub(crate) async fn read_response_into<R, W>(
    reader: &mut R,
    writer: &mut W,
    limit: u64,
) -> Result<StreamedResponse, FederationError>
where
    R: AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let head = read_head(reader).await?;
    let (status, headers) = parse_head(&head)?;
    if status != 200 {
        let error_body = read_body_after(reader, status, &headers, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        return Ok(StreamedResponse {
            status,
            headers,
            error_body,
        });
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let chunked = header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        copy_chunked(reader, writer, limit).await?;
    } else if let Some(length) = header("content-length") {
        let length: u64 = length
            .trim()
            .parse()
            .map_err(|_| FederationError::Http("bad Content-Length".into()))?;
        if length > limit {
            return Err(FederationError::TooLarge(
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
        }
        copy_exactly(reader, writer, length).await?;
    } else {
        let copied = tokio::io::copy(&mut reader.take(limit + 1), writer).await?;
        if copied > limit {
            return Err(FederationError::TooLarge(
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
        }
    }
    tokio::io::AsyncWriteExt::flush(writer).await?;
    Ok(StreamedResponse {
        status,
        headers,
        error_body: Vec::new(),
    })
}

/// A body read into memory after its head was (an error's, small).
async fn read_body_after<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    status: u16,
    headers: &[(String, String)],
    limit: usize,
) -> Result<Vec<u8>, FederationError> {
    let mut wire = Vec::new();
    for (name, value) in headers {
        wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let head = [
        format!("HTTP/1.1 {status} X\r\n").as_bytes(),
        &wire,
        b"\r\n",
    ]
    .concat();
    let mut chained = tokio::io::BufReader::new(head.as_slice().chain(reader));
    Ok(read_response(&mut chained, limit).await?.body)
}

async fn copy_exactly<R, W>(
    reader: &mut R,
    writer: &mut W,
    length: u64,
) -> Result<(), FederationError>
where
    R: AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let copied = tokio::io::copy(&mut reader.take(length), writer).await?;
    if copied != length {
        return Err(FederationError::Http("the body ended early".into()));
    }
    Ok(())
}

/// Copies a `Transfer-Encoding: chunked` body into `writer`, stopping at `limit` bytes.
async fn copy_chunked<R, W>(
    reader: &mut R,
    writer: &mut W,
    limit: u64,
) -> Result<(), FederationError>
where
    R: AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let mut total: u64 = 0;
    loop {
        let line = read_line(reader, 1024).await?;
        let text = std::str::from_utf8(&line)
            .map_err(|_| FederationError::Http("bad chunk size".into()))?;
        let size_text = text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| FederationError::Http("bad chunk size".into()))?;
        if size == 0 {
            loop {
                let trailer = read_line(reader, 8 * 1024).await?;
                if trailer.is_empty() || trailer == b"\r\n" || trailer == b"\n" {
                    return Ok(());
                }
            }
        }
        total = total.saturating_add(size);
        if total > limit {
            return Err(FederationError::TooLarge(
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
        }
        copy_exactly(reader, writer, size).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(FederationError::Http("chunk not followed by CRLF".into()));
        }
    }
}

/// The bytes up to and including the blank line that ends the head.
async fn read_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, FederationError> {
    let mut head = Vec::new();
    loop {
        let line = read_line(reader, MAX_HEAD - head.len().min(MAX_HEAD)).await?;
        if line.is_empty() {
            return Err(FederationError::Http(
                "connection closed in the head".into(),
            ));
        }
        let blank = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if blank {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(FederationError::Http("the head is too large".into()));
        }
    }
}

fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), FederationError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(FederationError::Http("incomplete head".into()));
        }
        Err(err) => return Err(FederationError::Http(err.to_string())),
    }
    let status = response
        .code
        .ok_or_else(|| FederationError::Http("no status".into()))?;
    let headers = response
        .headers
        .iter()
        .map(|header| {
            (
                header.name.to_ascii_lowercase(),
                String::from_utf8_lossy(header.value).into_owned(),
            )
        })
        .collect();
    Ok((status, headers))
}

/// One line, at most `limit` bytes (an over-long line is an error, not a buffer).
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Vec<u8>, FederationError> {
    let mut line = Vec::new();
    let mut bounded = reader.take(limit as u64 + 1);
    bounded.read_until(b'\n', &mut line).await?;
    if line.len() > limit {
        return Err(FederationError::Http("a line is too long".into()));
    }
    Ok(line)
}

/// Decodes `Transfer-Encoding: chunked`, stopping at `limit` bytes of body.
async fn read_chunked<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Vec<u8>, FederationError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader, 1024).await?;
        let text = std::str::from_utf8(&line)
            .map_err(|_| FederationError::Http("bad chunk size".into()))?;
        let size_text = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| FederationError::Http("bad chunk size".into()))?;
        if size == 0 {
            // Trailers, if any, until the blank line; they are of no use to us.
            loop {
                let trailer = read_line(reader, 8 * 1024).await?;
                if trailer.is_empty() || trailer == b"\r\n" || trailer == b"\n" {
                    return Ok(body);
                }
            }
        }
        if body.len().saturating_add(size) > limit {
            return Err(FederationError::TooLarge(limit));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(FederationError::Http("chunk not followed by CRLF".into()));
        }
    }
}

async fn read_to_end_limited<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Vec<u8>, FederationError> {
    let mut body = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut body).await?;
    if body.len() > limit {
        return Err(FederationError::TooLarge(limit));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(wire: &[u8], limit: usize) -> Result<RawResponse, FederationError> {
        let mut reader = tokio::io::BufReader::new(wire);
        read_response(&mut reader, limit).await
    }

    #[actix_web::test]
    async fn content_length_bodies() {
        let wire =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let response = read(wire, 100).await.expect("response");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.body, b"{}");
        assert!(matches!(
            read(wire, 1).await,
            Err(FederationError::TooLarge(1))
        ));
    }

    #[actix_web::test]
    async fn chunked_bodies() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let response = read(wire, 100).await.expect("response");
        assert_eq!(response.body, b"{\"a\":1}");
        assert!(matches!(
            read(wire, 5).await,
            Err(FederationError::TooLarge(5))
        ));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(read(bad, 100).await.is_err());
    }

    #[actix_web::test]
    async fn bodies_until_close_are_limited() {
        let wire = b"HTTP/1.1 404 Not Found\r\n\r\nnot here";
        assert_eq!(read(wire, 100).await.expect("response").body, b"not here");
        assert!(read(wire, 3).await.is_err());
    }

    #[actix_web::test]
    async fn hostile_heads_are_errors() {
        assert!(read(b"", 10).await.is_err());
        assert!(read(b"garbage\r\n\r\n", 10).await.is_err());
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD * 2));
        assert!(read(&long, 10).await.is_err());
    }

    #[actix_web::test]
    async fn streamed_bodies_go_to_the_writer_within_the_limit() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut out = Vec::new();
        let mut reader = tokio::io::BufReader::new(&wire[..]);
        let response = read_response_into(&mut reader, &mut out, 100)
            .await
            .expect("ok");
        assert_eq!((response.status, out.as_slice()), (200, &b"abcde"[..]));
        let mut reader = tokio::io::BufReader::new(&wire[..]);
        assert!(
            read_response_into(&mut reader, &mut Vec::new(), 4)
                .await
                .is_err()
        );
        let wire = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
        let mut out = Vec::new();
        let mut reader = tokio::io::BufReader::new(&wire[..]);
        let response = read_response_into(&mut reader, &mut out, 100)
            .await
            .expect("ok");
        assert_eq!(
            (response.status, response.error_body.as_slice()),
            (404, &b"{}"[..])
        );
        assert!(out.is_empty());
    }

    #[test]
    fn requests_carry_host_and_length() {
        let bytes = encode_request(
            "PUT",
            "/_matrix/x?a=b",
            "example.org:8448",
            &[("Authorization", "X-Matrix origin=a")],
            Some(b"{}"),
        );
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.starts_with("PUT /_matrix/x?a=b HTTP/1.1\r\nHost: example.org:8448\r\n"));
        assert!(text.contains("Authorization: X-Matrix origin=a\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
    }
}
