//! The sections for what reaches beyond chat: media (uploads, the remote cache,
//! thumbnails), URL previews, push gateways, calls and metrics, with their checks.

use serde::{Deserialize, Serialize};

use super::{Invalid, check_range, invalid};

/// URL previews (`/_matrix/client/v1/media/preview_url`): the server fetches pages its
/// users paste, so they are off unless the owner turns them on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct UrlPreviewConfig {
    pub(crate) enabled: bool,
    /// The most bytes of a page read (the scan stops at `</head>` before that).
    pub(crate) max_bytes: usize,
    /// How long fetching one page may take, redirects included.
    pub(crate) timeout_seconds: u64,
    /// How long a preview is remembered.
    pub(crate) cache_seconds: u64,
    /// Let previews fetch loopback, LAN and other non-public addresses (tests only: any
    /// user could read the owner's router pages through it).
    pub(crate) allow_private_addresses: bool,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        UrlPreviewConfig {
            enabled: false,
            max_bytes: 1024 * 1024,
            timeout_seconds: 10,
            cache_seconds: 3600,
            allow_private_addresses: false,
        }
    }
}

/// Prometheus metrics: off unless `address` is set; then a listener of its own serves
/// `GET /metrics` there (keep it on loopback, or behind the scraper's own network: the
/// figures are not secret, but nobody else needs them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    pub(crate) address: Option<std::net::SocketAddr>,
}

/// Push gateways: `allow_private_addresses` and `allow_http` (both for tests, LAN set-ups).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PushConfig {
    pub(crate) allow_private_addresses: bool,
    pub(crate) allow_http: bool,
}

/// Calls: TURN credentials and MatrixRTC (LiveKit) transports. Secrets are never printed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct VoipConfig {
    pub(crate) turn_uris: Vec<String>,
    /// coturn's `static-auth-secret` (its REST API credentials).
    #[serde(skip_serializing)]
    pub(crate) turn_shared_secret: Option<String>,
    pub(crate) turn_username: Option<String>,
    #[serde(skip_serializing)]
    pub(crate) turn_password: Option<String>,
    /// How long shared-secret credentials stay valid: see [`VoipConfig::turn_ttl`].
    pub(crate) turn_ttl_seconds: Option<u64>,
    /// The LiveKit JWT service (`lk-jwt-service`) Element Call uses.
    pub(crate) livekit_url: Option<String>,
}

impl VoipConfig {
    pub(crate) fn turn_ttl(&self) -> u64 {
        self.turn_ttl_seconds.unwrap_or(86_400)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MediaConfig {
    /// The largest upload accepted, in bytes (`413 M_TOO_LARGE` above it); also the largest
    /// remote file fetched for a local user.
    pub(crate) max_upload_size: u64,
    /// The most bytes of media one local user may have uploaded (none: no quota).
    pub(crate) user_quota_bytes: Option<u64>,
    /// The size cap of the cache of other servers' media; the least recently used go first.
    pub(crate) remote_cache_bytes: u64,
    /// Upload IDs (`/_matrix/media/v1/create`) one user may hold unused at once.
    pub(crate) max_pending_uploads: usize,
    /// Seconds an unused upload ID stays valid.
    pub(crate) pending_upload_seconds: u64,
    /// The most pixels (width × height) an image may have to be thumbnailed: its header is
    /// read first, so a decompression bomb is refused before any decoding.
    pub(crate) max_thumbnail_pixels: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_upload_size: 50 * 1024 * 1024,
            user_quota_bytes: None,
            remote_cache_bytes: 1024 * 1024 * 1024,
            max_pending_uploads: 10,
            pending_upload_seconds: 24 * 3600,
            // A 40-megapixel camera's photos pass; a 20000 × 20000 bomb does not.
            max_thumbnail_pixels: 40_000_000,
        }
    }
}

pub(super) fn validate_media(media: &MediaConfig) -> Result<(), Invalid> {
    check_range(
        &["media", "max_upload_size"],
        media.max_upload_size,
        1024,
        1 << 40,
    )?;
    if let Some(quota) = media.user_quota_bytes {
        check_range(&["media", "user_quota_bytes"], quota, 1, u64::MAX)?;
    }
    check_range(
        &["media", "remote_cache_bytes"],
        media.remote_cache_bytes,
        0,
        u64::MAX,
    )?;
    check_range(
        &["media", "max_pending_uploads"],
        media.max_pending_uploads as u64,
        1,
        10_000,
    )?;
    check_range(
        &["media", "pending_upload_seconds"],
        media.pending_upload_seconds,
        60,
        7 * 24 * 3600,
    )?;
    check_range(
        &["media", "max_thumbnail_pixels"],
        media.max_thumbnail_pixels,
        1024,
        1 << 32,
    )
}

/// The `[voip]` rules: one kind of TURN credentials, with URIs; a LiveKit URL.
pub(super) fn validate_voip(voip: &VoipConfig) -> Result<(), Invalid> {
    let secret = voip.turn_shared_secret.is_some();
    let user = voip.turn_username.is_some();
    let uri_ok = |uri: &String| uri.starts_with("turn") || uri.starts_with("stun:");
    let url_ok = |url: &String| url.starts_with("https://") || url.starts_with("http://");
    let (key, message) = if secret && user {
        ("turn_username", "not with turn_shared_secret")
    } else if user != voip.turn_password.is_some() {
        ("turn_password", "goes with turn_username")
    } else if (secret || user) && voip.turn_uris.is_empty() {
        ("turn_uris", "needs a turn: URI")
    } else if !voip.turn_uris.iter().all(uri_ok) {
        ("turn_uris", "URIs start with turn:, turns: or stun:")
    } else if !voip.livekit_url.iter().all(url_ok) {
        ("livekit_url", "must start with https://")
    } else {
        return check_range(&["voip", "turn_ttl_seconds"], voip.turn_ttl(), 60, 604_800);
    };
    Err(invalid(&["voip", key], message))
}

pub(super) fn validate_url_preview(preview: &UrlPreviewConfig) -> Result<(), Invalid> {
    check_range(
        &["url_preview", "max_bytes"],
        preview.max_bytes as u64,
        1024,
        64 * 1024 * 1024,
    )?;
    check_range(
        &["url_preview", "timeout_seconds"],
        preview.timeout_seconds,
        1,
        120,
    )?;
    check_range(
        &["url_preview", "cache_seconds"],
        preview.cache_seconds,
        0,
        7 * 24 * 3600,
    )
}
