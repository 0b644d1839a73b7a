//! URL previews (spec: client-server "Content repository", `GET /media/preview_url`): the
//! OpenGraph properties of a page a user pasted. Off unless `[url_preview] enabled`; when
//! on, pages are fetched by [`super::preview_fetch`] with a client of their own, which
//! refuses private and loopback addresses whatever `federation.allow_private_addresses`
//! says. Answers (empty ones too) are remembered for `cache_seconds`, at most
//! [`CACHE_ENTRIES`] of them; at most [`CONCURRENT_FETCHES`] pages are fetched at once.
//!
//! `og:image` is left out: the spec wants an `mxc://` URI there, which would mean storing
//! other sites' images in our media store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use url::Url;

use super::preview_fetch::fetch_open_graph;
use crate::config::UrlPreviewConfig;
use crate::error::{Error, ErrorKind};
use crate::federation::FederationError;
use crate::federation::cache::ExpiringMap;
use crate::federation::client::HttpsClient;
use crate::federation::dns::Dns;

/// Previews remembered at once.
const CACHE_ENTRIES: usize = 512;
/// Pages fetched at once; more requests wait their turn (within their time limit).
const CONCURRENT_FETCHES: usize = 4;
/// The longest URL previewed.
const MAX_URL_LENGTH: usize = 2048;

/// The URL preview service.
pub(crate) struct Previews {
    config: UrlPreviewConfig,
    /// `None` when previews are off.
    fetcher: Option<Fetcher>,
    cache: ExpiringMap<String, Arc<Map<String, Value>>>,
    turns: Semaphore,
}

struct Fetcher {
    client: HttpsClient,
    dns: Dns,
}

impl Previews {
    /// The service as configured; its client trusts the system's roots only.
    pub(crate) fn new(config: &UrlPreviewConfig) -> Result<Previews, FederationError> {
        let fetcher = if config.enabled {
            Some(Fetcher {
                client: HttpsClient::new(None, config.allow_private_addresses)?,
                dns: Dns::from_system(),
            })
        } else {
            None
        };
        Ok(Previews {
            config: config.clone(),
            fetcher,
            cache: ExpiringMap::new(CACHE_ENTRIES),
            turns: Semaphore::new(CONCURRENT_FETCHES),
        })
    }

    /// The preview of `url`. `ts` (milliseconds) asks for the page as it was then; the spec
    /// lets a server answer with a newer version, and we keep only the latest, so it is
    /// checked and otherwise unused. Off: `404 M_UNRECOGNIZED`, as for any endpoint not
    /// offered.
    pub(crate) async fn preview(
        &self,
        url: Option<&str>,
        ts: Option<&str>,
    ) -> Result<Arc<Map<String, Value>>, Error> {
        let Some(fetcher) = &self.fetcher else {
            return Err(Error::unrecognized());
        };
        let url = parse_url(url)?;
        if let Some(ts) = ts
            && ts.parse::<u64>().is_err()
        {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "ts must be a timestamp in milliseconds",
            ));
        }
        let key = url.as_str().to_owned();
        if let Some(found) = self.cache.get(&key, Instant::now()) {
            return Ok(found);
        }
        let limit = Duration::from_secs(self.config.timeout_seconds);
        let work = async {
            let _turn = self.turns.acquire().await.ok();
            fetch_open_graph(&fetcher.client, &fetcher.dns, url, self.config.max_bytes).await
        };
        let found = match tokio::time::timeout(limit, work).await {
            Ok(Ok(found)) => Arc::new(found),
            Ok(Err(err)) => {
                tracing::info!(url = key, "no preview: {err}");
                return Err(could_not_fetch());
            }
            Err(_) => {
                tracing::info!(url = key, "no preview: the page took too long");
                return Err(could_not_fetch());
            }
        };
        let now = Instant::now();
        let until = now + Duration::from_secs(self.config.cache_seconds);
        self.cache.insert(key, found.clone(), until, now);
        Ok(found)
    }
}

/// The same answer whatever went wrong (unreachable, refused private address, slow, not
/// 200): the detail is logged, not told, or previews would map the owner's network.
fn could_not_fetch() -> Error {
    Error::new(
        ErrorKind::RemoteUnavailable,
        "Could not fetch a preview of this URL",
    )
}

fn parse_url(url: Option<&str>) -> Result<Url, Error> {
    let url = url.ok_or_else(|| Error::new(ErrorKind::MissingParam, "url is required"))?;
    let invalid = || Error::new(ErrorKind::InvalidParam, "url must be an http or https URL");
    if url.len() > MAX_URL_LENGTH {
        return Err(invalid());
    }
    let mut parsed = Url::parse(url).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid());
    }
    parsed.set_fragment(None);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_previewed() {
        assert!(parse_url(Some("https://example.org/page#x")).is_ok());
        assert!(parse_url(Some("http://10.0.0.1:8080/")).is_ok());
        for bad in [
            "ftp://example.org/",
            "file:///etc/passwd",
            "not a url",
            "https://",
        ] {
            assert!(parse_url(Some(bad)).is_err(), "{bad}");
        }
        assert!(parse_url(None).is_err());
        let long = format!("https://example.org/{}", "a".repeat(MAX_URL_LENGTH));
        assert!(parse_url(Some(&long)).is_err());
    }
}
