//! The `multipart/mixed` answer of the federation media endpoints: a JSON part (metadata,
//! today always `{}`), then the media's bytes with their `Content-Type` and
//! `Content-Disposition` (or a `Location` to fetch them from, which Hearth never sends and
//! does not follow). [`framing`] makes what goes around the bytes when we serve;
//! [`SplitWriter`] takes another server's answer apart while it streams, passing only the
//! second part's bytes to the file behind it, never holding more than one part's head.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// The most bytes of preamble, JSON part and second part's head we read before the media's
/// bytes begin.
const MAX_HEAD: usize = 64 * 1024;

/// The bytes before and after the media in an answer with `boundary`.
pub(crate) fn framing(boundary: &str, content_type: &str, disposition: &str) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n\
         --{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    (head.into_bytes(), tail.into_bytes())
}

/// A new random boundary.
pub(crate) fn new_boundary() -> String {
    crate::matrix::crypto::random_bytes::<16>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The headers of the media's part, as the other server sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartHead {
    pub(crate) content_type: Option<String>,
    pub(crate) content_disposition: Option<String>,
    pub(crate) location: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary line.
    Preamble,
    /// The JSON part, up to the second boundary.
    Metadata,
    /// The media part's headers.
    MediaHead,
    /// The media's bytes, until the closing boundary.
    Media,
    Done,
}

/// Splits a `multipart/mixed` stream (see the module's doc).
#[derive(Debug)]
pub(crate) struct Splitter {
    state: State,
    buffer: Vec<u8>,
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    head: PartHead,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed multipart answer: {what}"),
    )
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            state: State::Preamble,
            buffer: Vec::new(),
            delimiter: Vec::new(),
            head: PartHead::default(),
        }
    }
}

impl Splitter {
    /// Takes `input`, appending the media's bytes found in it to `out`.
    pub(crate) fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.state == State::Done {
            return Ok(());
        }
        self.buffer.extend_from_slice(input);
        loop {
            let progressed = match self.state {
                State::Preamble => self.read_boundary_line()?,
                State::Metadata => self.skip_metadata(),
                State::MediaHead => self.read_media_head()?,
                State::Media => {
                    self.pass_media(out);
                    return Ok(());
                }
                State::Done => return Ok(()),
            };
            if !progressed {
                if self.buffer.len() > MAX_HEAD {
                    return Err(malformed("the parts before the media are too large"));
                }
                return Ok(());
            }
        }
    }

    fn read_boundary_line(&mut self) -> io::Result<bool> {
        let Some(end) = find(&self.buffer, b"\n") else {
            return Ok(false);
        };
        let line = self.buffer[..end]
            .strip_suffix(b"\r")
            .unwrap_or(&self.buffer[..end]);
        if let Some(boundary) = line.strip_prefix(b"--").filter(|b| !b.is_empty()) {
            if boundary.len() > 200 {
                return Err(malformed("the boundary is too long"));
            }
            self.delimiter = [b"\r\n--".as_slice(), boundary].concat();
            self.state = State::Metadata;
        }
        self.buffer.drain(..=end);
        Ok(true)
    }

    fn skip_metadata(&mut self) -> bool {
        let Some(at) = find(&self.buffer, &self.delimiter) else {
            return false;
        };
        self.buffer.drain(..at + self.delimiter.len());
        self.state = State::MediaHead;
        true
    }

    fn read_media_head(&mut self) -> io::Result<bool> {
        let Some(end) = find(&self.buffer, b"\r\n\r\n") else {
            return Ok(false);
        };
        let text = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        if text.starts_with("--") {
            return Err(malformed("the media part is missing"));
        }
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = Some(value.trim().to_owned());
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => self.head.content_type = value,
                "content-disposition" => self.head.content_disposition = value,
                "location" => self.head.location = value,
                _ => {}
            }
        }
        self.buffer.drain(..end + 4);
        self.state = State::Media;
        Ok(true)
    }

    /// Passes on all but what could be the start of the closing delimiter.
    fn pass_media(&mut self, out: &mut Vec<u8>) {
        if let Some(at) = find(&self.buffer, &self.delimiter) {
            out.extend_from_slice(&self.buffer[..at]);
            self.buffer = Vec::new();
            self.state = State::Done;
            return;
        }
        let keep = self.delimiter.len() - 1;
        if self.buffer.len() > keep {
            let cut = self.buffer.len() - keep;
            out.extend_from_slice(&self.buffer[..cut]);
            self.buffer.drain(..cut);
        }
    }

    /// The media part's head, once the whole answer has been read.
    pub(crate) fn finish(&self) -> io::Result<PartHead> {
        match self.state {
            State::Done => Ok(self.head.clone()),
            _ if self.head.location.is_some() => Ok(self.head.clone()),
            _ => Err(malformed("the answer ended early")),
        }
    }
}

/// An [`AsyncWrite`] that takes a `multipart/mixed` stream and writes only the media's bytes
/// to `inner`.
pub(crate) struct SplitWriter<W> {
    pub(crate) inner: W,
    pub(crate) splitter: Splitter,
    pending: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> SplitWriter<W> {
    pub(crate) fn new(inner: W) -> SplitWriter<W> {
        SplitWriter {
            inner,
            splitter: Splitter::default(),
            pending: Vec::new(),
        }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => {
                    self.pending.drain(..written);
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SplitWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => return Poll::Pending,
        }
        let mut out = std::mem::take(&mut this.pending);
        let result = this.splitter.push(buf, &mut out);
        this.pending = out;
        Poll::Ready(result.map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(wire: &[u8], chunk: usize) -> io::Result<(PartHead, Vec<u8>)> {
        let mut splitter = Splitter::default();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            splitter.push(piece, &mut out)?;
        }
        Ok((splitter.finish()?, out))
    }

    #[test]
    fn our_framing_splits_back_at_any_chunk_size() {
        let (head, tail) = framing("b0undary", "image/png", "inline; filename=\"a.png\"");
        let media: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let wire = [head, media.clone(), tail].concat();
        for chunk in [1, 2, 7, 64, 4096, wire.len()] {
            let (part, out) = split(&wire, chunk).expect("split");
            assert_eq!(out, media, "chunk {chunk}");
            assert_eq!(part.content_type.as_deref(), Some("image/png"));
        }
    }

    #[test]
    fn media_holding_boundary_like_bytes_survives() {
        let (head, tail) = framing("xyz", "text/plain", "inline");
        let media = b"--xyz\r\n--xy\r\n-".to_vec();
        let (_, out) = split(&[head, media.clone(), tail].concat(), 3).expect("split");
        assert_eq!(out, media);
    }

    #[test]
    fn truncated_and_endless_answers_are_errors() {
        let (head, _) = framing("xyz", "text/plain", "inline");
        assert!(split(&[head, b"abc".to_vec()].concat(), 2).is_err());
        assert!(split(&vec![b'a'; MAX_HEAD + 10], 1000).is_err());
    }
}
