//! Thumbnails, made on demand and kept as files beside the content they come from
//! (`media/thumbnails/ab/<sha256>/<w>x<h>-<method>[-animated].<ext>`).
//!
//! A request is served at the smallest of the spec's recommended sizes that covers it
//! (32×32 and 96×96 cropped, 320×240, 640×480 and 800×600 scaled; the method asked for is
//! applied at that size), so one source has at most ten thumbnails. JPEG, PNG, GIF and WebP
//! are read, recognised by their bytes, not by what the uploader said; the image's header is
//! read first and more than `media.max_thumbnail_pixels` is refused before any decoding
//! (decompression bombs). JPEGs are decoded already scaled down (by ½, ¼ or ⅛ in the DCT),
//! so a 12-megapixel photo never exists in memory at full size. One decode runs at a time,
//! on the blocking pool. Out: JPEG, or PNG for images with transparency; an animated GIF
//! asked for with `animated=true` stays an animated GIF (at most [`MAX_FRAMES`] frames).

use std::io::{BufReader, BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};

use image::{AnimationDecoder as _, DynamicImage, ImageDecoder as _, ImageFormat};
use serde::Deserialize;

use super::{Media, MediaRecord, Served, io_error};
use crate::error::{Error, ErrorKind};

/// How a thumbnail fits its box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Method {
    /// Exactly the box, the image's middle cut to its shape.
    Crop,
    /// Within the box, the whole image, its shape kept.
    Scale,
}

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThumbnailRequest {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) method: Method,
    pub(crate) animated: bool,
}

/// The spec's recommended sizes, smallest first.
const SIZES: [(u32, u32); 5] = [(32, 32), (96, 96), (320, 240), (640, 480), (800, 600)];

/// The most frames of an animated thumbnail.
const MAX_FRAMES: usize = 100;

/// The most memory the PNG, GIF and WebP decoders may allocate for one image.
const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;

/// The image formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Jpeg,
    Png,
    Gif,
    WebP,
}

/// The format of an image file, from its first bytes.
fn sniff(magic: &[u8]) -> Option<Source> {
    match magic {
        [0xFF, 0xD8, 0xFF, ..] => Some(Source::Jpeg),
        [0x89, b'P', b'N', b'G', ..] => Some(Source::Png),
        [b'G', b'I', b'F', b'8', ..] => Some(Source::Gif),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some(Source::WebP),
        _ => None,
    }
}

/// The size a request is served at: the smallest recommended one covering it, or the
/// largest.
fn target_size(request: &ThumbnailRequest) -> (u32, u32) {
    SIZES
        .iter()
        .copied()
        .find(|&(width, height)| width >= request.width && height >= request.height)
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Checks a request's numbers (the spec's `400` for nonsense sizes).
pub(crate) fn check_request(width: i64, height: i64) -> Result<(u32, u32), Error> {
    let valid = |value: i64| u32::try_from(value).ok().filter(|&v| v > 0);
    match (valid(width), valid(height)) {
        (Some(width), Some(height)) => Ok((width, height)),
        _ => Err(Error::new(
            ErrorKind::InvalidParam,
            "width and height must be positive integers",
        )),
    }
}

/// A made thumbnail: its format's content type and file extension.
#[derive(Debug, Clone, Copy)]
struct Made {
    content_type: &'static str,
    extension: &'static str,
}

const JPEG: Made = Made {
    content_type: "image/jpeg",
    extension: "jpg",
};
const PNG: Made = Made {
    content_type: "image/png",
    extension: "png",
};
const GIF: Made = Made {
    content_type: "image/gif",
    extension: "gif",
};

/// Why a thumbnail could not be made.
#[derive(Debug)]
pub(crate) enum ThumbnailError {
    /// More pixels than allowed.
    TooManyPixels(u64),
    /// Not an image we read, or a broken one.
    Unreadable(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for ThumbnailError {
    fn from(err: std::io::Error) -> Self {
        ThumbnailError::Io(err)
    }
}

impl From<image::ImageError> for ThumbnailError {
    fn from(err: image::ImageError) -> Self {
        match err {
            image::ImageError::IoError(io) => ThumbnailError::Io(io),
            other => ThumbnailError::Unreadable(other.to_string()),
        }
    }
}

impl Media {
    /// A thumbnail of `record`'s content: kept from before, or made now.
    pub(super) async fn thumbnail_of(
        &self,
        record: &MediaRecord,
        request: ThumbnailRequest,
    ) -> Result<Served, Error> {
        let (width, height) = target_size(&request);
        let dir = self.files.thumbnail_dir(&record.sha256);
        let method = match request.method {
            Method::Crop => "crop",
            Method::Scale => "scale",
        };
        let animated = if request.animated { "-animated" } else { "" };
        let stem = format!("{width}x{height}-{method}{animated}");
        for made in [JPEG, PNG, GIF] {
            if let Some(served) = open_made(&dir, &stem, made).await {
                return Ok(served);
            }
        }
        let source = self.files.content_path(&record.sha256);
        let _permit = self
            .decoding
            .acquire()
            .await
            .map_err(|_| Error::internal("thumbnailing closed"))?;
        // Made by a request that held the permit before this one?
        for made in [JPEG, PNG, GIF] {
            if let Some(served) = open_made(&dir, &stem, made).await {
                return Ok(served);
            }
        }
        let temp = self.files.temp_path();
        let job = Job {
            source,
            temp: temp.clone(),
            width,
            height,
            method: request.method,
            animated: request.animated,
            max_pixels: self.config.max_thumbnail_pixels,
        };
        let made = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|err| Error::internal(format!("thumbnail task: {err}")))?;
        let made = match made {
            Ok(made) => made,
            Err(err) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(thumbnail_error(err));
            }
        };
        let target = dir.join(format!("{stem}.{}", made.extension));
        self.files
            .publish(&temp, &target)
            .await
            .map_err(|err| io_error(&err))?;
        open_made(&dir, &stem, made)
            .await
            .ok_or_else(|| Error::internal("a thumbnail vanished as it was made"))
    }
}

fn thumbnail_error(err: ThumbnailError) -> Error {
    match err {
        ThumbnailError::TooManyPixels(pixels) => Error::new(
            ErrorKind::TooLarge,
            format!("The image has too many pixels ({pixels}) to be thumbnailed"),
        ),
        ThumbnailError::Unreadable(reason) => {
            tracing::debug!("cannot thumbnail: {reason}");
            Error::new(ErrorKind::BadRequest, "This media cannot be thumbnailed")
        }
        ThumbnailError::Io(err) => io_error(&err),
    }
}

async fn open_made(dir: &Path, stem: &str, made: Made) -> Option<Served> {
    let path = dir.join(format!("{stem}.{}", made.extension));
    let file = tokio::fs::File::open(&path).await.ok()?;
    let size = file.metadata().await.ok()?.len();
    Some(Served {
        file,
        size,
        content_type: made.content_type.to_owned(),
        filename: Some(format!("thumbnail.{}", made.extension)),
    })
}

/// One thumbnail to make, on the blocking pool.
struct Job {
    source: PathBuf,
    temp: PathBuf,
    width: u32,
    height: u32,
    method: Method,
    animated: bool,
    max_pixels: u64,
}

impl Job {
    fn run(&self) -> Result<Made, ThumbnailError> {
        let mut magic = [0u8; 16];
        let mut file = std::fs::File::open(&self.source)?;
        let read = file.read(&mut magic)?;
        let source = sniff(&magic[..read])
            .ok_or_else(|| ThumbnailError::Unreadable("not a JPEG, PNG, GIF or WebP".into()))?;
        if source == Source::Gif && self.animated {
            return self.animated_gif();
        }
        let image = match source {
            Source::Jpeg => self.decode_jpeg()?,
            Source::Png => self.decode(ImageFormat::Png)?,
            Source::Gif => self.decode(ImageFormat::Gif)?,
            Source::WebP => self.decode(ImageFormat::WebP)?,
        };
        let thumbnail = self.resize(&image);
        drop(image);
        self.write_still(&thumbnail)
    }

    fn check_pixels(&self, width: u32, height: u32) -> Result<(), ThumbnailError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(ThumbnailError::TooManyPixels(pixels));
        }
        Ok(())
    }

    /// A JPEG, decoded at the smallest DCT scale that still covers the box.
    fn decode_jpeg(&self) -> Result<DynamicImage, ThumbnailError> {
        let file = BufReader::new(std::fs::File::open(&self.source)?);
        let mut decoder = jpeg_decoder::Decoder::new(file);
        let unreadable = |err: jpeg_decoder::Error| ThumbnailError::Unreadable(err.to_string());
        decoder.read_info().map_err(unreadable)?;
        let info = decoder
            .info()
            .ok_or_else(|| ThumbnailError::Unreadable("no JPEG header".into()))?;
        self.check_pixels(u32::from(info.width), u32::from(info.height))?;
        let clamp = |value: u32| u16::try_from(value).unwrap_or(u16::MAX);
        let (width, height) = decoder
            .scale(clamp(self.width), clamp(self.height))
            .map_err(unreadable)?;
        let pixels = decoder.decode().map_err(unreadable)?;
        let (width, height) = (u32::from(width), u32::from(height));
        let broken = || ThumbnailError::Unreadable("JPEG pixels do not match its size".into());
        Ok(match info.pixel_format {
            jpeg_decoder::PixelFormat::L8 => DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(width, height, pixels).ok_or_else(broken)?,
            ),
            jpeg_decoder::PixelFormat::L16 => {
                let gray: Vec<u8> = pixels.chunks_exact(2).map(|pair| pair[0]).collect();
                DynamicImage::ImageLuma8(
                    image::GrayImage::from_raw(width, height, gray).ok_or_else(broken)?,
                )
            }
            jpeg_decoder::PixelFormat::RGB24 => DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(width, height, pixels).ok_or_else(broken)?,
            ),
            jpeg_decoder::PixelFormat::CMYK32 => {
                let rgb: Vec<u8> = pixels
                    .chunks_exact(4)
                    .flat_map(|cmyk| {
                        let k = u16::from(cmyk[3]);
                        let channel = |c: u8| u8::try_from(u16::from(c) * k / 255).unwrap_or(255);
                        [channel(cmyk[0]), channel(cmyk[1]), channel(cmyk[2])]
                    })
                    .collect();
                DynamicImage::ImageRgb8(
                    image::RgbImage::from_raw(width, height, rgb).ok_or_else(broken)?,
                )
            }
        })
    }

    /// A PNG, GIF (first frame) or WebP, its size checked from the header first.
    fn decode(&self, format: ImageFormat) -> Result<DynamicImage, ThumbnailError> {
        let file = BufReader::new(std::fs::File::open(&self.source)?);
        let mut reader = image::ImageReader::with_format(file, format);
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_DECODE_ALLOC);
        reader.limits(limits);
        let decoder = reader.into_decoder()?;
        let (width, height) = decoder.dimensions();
        self.check_pixels(width, height)?;
        Ok(DynamicImage::from_decoder(decoder)?)
    }

    /// The image fitted to the box (never made larger than it is).
    fn resize(&self, image: &DynamicImage) -> DynamicImage {
        let (width, height) = (image.width().max(1), image.height().max(1));
        match self.method {
            Method::Scale => {
                if width <= self.width && height <= self.height {
                    image.clone()
                } else {
                    image.thumbnail(self.width, self.height)
                }
            }
            Method::Crop => {
                // The largest piece of the image with the box's shape, from its middle.
                let ratio = f64::from(self.width) / f64::from(self.height);
                let (crop_w, crop_h) = if f64::from(width) / f64::from(height) > ratio {
                    (to_u32(f64::from(height) * ratio).max(1), height)
                } else {
                    (width, to_u32(f64::from(width) / ratio).max(1))
                };
                let piece =
                    image.crop_imm((width - crop_w) / 2, (height - crop_h) / 2, crop_w, crop_h);
                if crop_w <= self.width {
                    piece
                } else {
                    piece.thumbnail_exact(self.width, self.height)
                }
            }
        }
    }

    fn write_still(&self, image: &DynamicImage) -> Result<Made, ThumbnailError> {
        let file = std::fs::File::create(&self.temp)?;
        let mut out = BufWriter::new(file);
        let made = if image.color().has_alpha() {
            image.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))?;
            PNG
        } else {
            let rgb = image.to_rgb8();
            let too_big = || ThumbnailError::Unreadable("thumbnail too large".into());
            let width = u16::try_from(rgb.width()).map_err(|_| too_big())?;
            let height = u16::try_from(rgb.height()).map_err(|_| too_big())?;
            jpeg_encoder::Encoder::new(&mut out, 80)
                .encode(rgb.as_raw(), width, height, jpeg_encoder::ColorType::Rgb)
                .map_err(|err| ThumbnailError::Unreadable(err.to_string()))?;
            JPEG
        };
        let file = out.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        Ok(made)
    }

    /// An animated GIF, each frame resized (at most [`MAX_FRAMES`]).
    fn animated_gif(&self) -> Result<Made, ThumbnailError> {
        let file = BufReader::new(std::fs::File::open(&self.source)?);
        let decoder = image::codecs::gif::GifDecoder::new(file)?;
        let (width, height) = decoder.dimensions();
        self.check_pixels(width, height)?;
        let out = std::fs::File::create(&self.temp)?;
        let mut out = BufWriter::new(out);
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
            encoder.set_repeat(image::codecs::gif::Repeat::Infinite)?;
            for frame in decoder.into_frames().take(MAX_FRAMES) {
                let frame = frame?;
                let delay = frame.delay();
                let still = DynamicImage::ImageRgba8(frame.into_buffer());
                let small = self.resize(&still).to_rgba8();
                encoder.encode_frame(image::Frame::from_parts(small, 0, 0, delay))?;
            }
        }
        out.flush()?;
        let file = out.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        Ok(GIF)
    }
}

fn to_u32(value: f64) -> u32 {
    // Pixel counts of a checked image: far below u32::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rounded = value.round().clamp(0.0, f64::from(u32::MAX)) as u32;
    rounded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(width: u32, height: u32, method: Method) -> ThumbnailRequest {
        ThumbnailRequest {
            width,
            height,
            method,
            animated: false,
        }
    }

    #[test]
    fn requests_are_served_at_the_recommended_sizes() {
        assert_eq!(target_size(&request(10, 10, Method::Crop)), (32, 32));
        assert_eq!(target_size(&request(96, 96, Method::Crop)), (96, 96));
        assert_eq!(target_size(&request(300, 200, Method::Scale)), (320, 240));
        assert_eq!(target_size(&request(5000, 5000, Method::Scale)), (800, 600));
    }

    #[test]
    fn formats_are_recognised_by_their_bytes() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Source::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n"), Some(Source::Png));
        assert_eq!(sniff(b"GIF89a"), Some(Source::Gif));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Source::WebP));
        assert_eq!(sniff(b"<svg"), None);
    }

    #[test]
    fn nonsense_sizes_are_refused() {
        assert!(check_request(0, 10).is_err());
        assert!(check_request(-1, 10).is_err());
        assert!(check_request(1 << 40, 10).is_err());
        assert_eq!(check_request(64, 48).expect("fine"), (64, 48));
    }
}
