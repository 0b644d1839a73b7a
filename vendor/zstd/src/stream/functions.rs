use std::convert::TryFrom;
use std::io;

use super::{Decoder, Encoder};

/// Decompress from the given source as if using a `Decoder`.
///
/// The input data must be in the zstd frame format.
///
/// Hearth: one frame whose header gives its size (as every frame `block::compress`
/// writes, sled's pages) is decompressed in one call with a pooled context
/// ([`crate::block::pool`]) rather than a new streaming decoder and its buffers per call;
/// anything else (several frames, no size, a size past [`ONE_CALL_LIMIT`]) is streamed as
/// before.
pub fn decode_all<R: io::Read>(mut source: R) -> io::Result<Vec<u8>> {
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    if let Some(size) = single_frame_size(&input) {
        let mut result = Vec::with_capacity(size);
        let decompressed = crate::block::pool::with_decompressor(|decompressor| {
            decompressor.decompress_to_buffer(&input, &mut result)
        });
        if decompressed.is_ok() && result.len() == size {
            return Ok(result);
        }
    }
    let mut result = Vec::new();
    copy_decode(&input[..], &mut result)?;
    Ok(result)
}

/// The largest frame [`decode_all`] decompresses in one call (a larger one is streamed, so
/// a size in a header is never allocated unchecked).
const ONE_CALL_LIMIT: u64 = 16 * 1024 * 1024;

/// The decompressed size of `input` if it is exactly one frame whose header states a size
/// of at most [`ONE_CALL_LIMIT`].
fn single_frame_size(input: &[u8]) -> Option<usize> {
    let frame = zstd_safe::find_frame_compressed_size(input).ok()?;
    if frame != input.len() {
        return None;
    }
    let size = zstd_safe::get_frame_content_size(input);
    if size > ONE_CALL_LIMIT {
        // Also ZSTD_CONTENTSIZE_UNKNOWN and ZSTD_CONTENTSIZE_ERROR (the largest u64s).
        return None;
    }
    usize::try_from(size).ok()
}

/// Decompress from the given source as if using a `Decoder`.
///
/// Decompressed data will be appended to `destination`.
pub fn copy_decode<R, W>(source: R, mut destination: W) -> io::Result<()>
where
    R: io::Read,
    W: io::Write,
{
    let mut decoder = Decoder::new(source)?;
    io::copy(&mut decoder, &mut destination)?;
    Ok(())
}

/// Compress all data from the given source as if using an `Encoder`.
///
/// Result will be in the zstd frame format.
///
/// A level of `0` uses zstd's default (currently `3`).
pub fn encode_all<R: io::Read>(source: R, level: i32) -> io::Result<Vec<u8>> {
    let mut result = Vec::<u8>::new();
    copy_encode(source, &mut result, level)?;
    Ok(result)
}

/// Compress all data from the given source as if using an `Encoder`.
///
/// Compressed data will be appended to `destination`.
///
/// A level of `0` uses zstd's default (currently `3`).
pub fn copy_encode<R, W>(
    mut source: R,
    destination: W,
    level: i32,
) -> io::Result<()>
where
    R: io::Read,
    W: io::Write,
{
    let mut encoder = Encoder::new(destination, level)?;
    io::copy(&mut source, &mut encoder)?;
    encoder.finish()?;
    Ok(())
}

#[cfg(tests)]
mod tests {}
