//! `/.well-known/matrix/server` (spec: "Resolving server names", step 3): fetching it with
//! redirects followed (never to plain HTTP, never in a loop), parsing `m.server`, and how long
//! an answer is remembered: what `Cache-Control`/`Expires` say, 24 hours when they say
//! nothing, never more than 48 hours; failures for an hour.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::FederationError;
use super::client::{Endpoint, HttpsClient, Request};
use super::dns::{Dns, dns_tls_name};
use super::response::RawResponse;
use super::server_name::{Host, ServerAddress};

/// The spec's recommended default when the answer carries no caching headers.
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The spec's recommended upper bound.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(48 * 60 * 60);
/// A lower bound of our own: `no-store` must not turn every request into two.
pub(crate) const MIN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long a failure (no answer, not 200, bad JSON) is remembered.
pub(crate) const ERROR_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// A delegation is a few dozen bytes; anything much larger is not one.
pub(crate) const MAX_BODY: usize = 64 * 1024;
const MAX_REDIRECTS: usize = 5;

/// What a fetch found: the delegated server name, or nothing usable (the spec's "error").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WellKnown {
    pub(crate) delegated: Option<String>,
    /// How long to remember this answer.
    pub(crate) lifetime: Duration,
    /// Why there is no delegation, when the fetch failed (for `hearth check`).
    pub(crate) failure: Option<String>,
}

impl WellKnown {
    fn failed(failure: String) -> WellKnown {
        WellKnown {
            delegated: None,
            lifetime: ERROR_LIFETIME,
            failure: Some(failure),
        }
    }
}

/// Fetches `https://<hostname>:<port>/.well-known/matrix/server` (port 443 but in tests).
/// Never fails: any problem is the spec's "error" outcome, remembered for an hour.
pub(crate) async fn fetch(client: &HttpsClient, dns: &Dns, hostname: &str, port: u16) -> WellKnown {
    match fetch_following_redirects(client, dns, hostname, port).await {
        Ok(response) if response.status == 200 => match parse_body(&response.body) {
            Some(delegated) => WellKnown {
                delegated: Some(delegated),
                lifetime: cache_lifetime(&response, SystemTime::now()),
                failure: None,
            },
            None => {
                tracing::debug!(hostname, "well-known answer is not a valid delegation");
                WellKnown::failed("the answer has no valid `m.server`".to_owned())
            }
        },
        Ok(response) => {
            tracing::debug!(
                hostname,
                status = response.status,
                "no well-known delegation"
            );
            WellKnown::failed(format!("answered {}", response.status))
        }
        Err(err) => {
            tracing::debug!(hostname, "well-known fetch failed: {err}");
            WellKnown::failed(err.to_string())
        }
    }
}

async fn fetch_following_redirects(
    client: &HttpsClient,
    dns: &Dns,
    hostname: &str,
    port: u16,
) -> Result<RawResponse, FederationError> {
    let mut url = Url {
        host: hostname.to_owned(),
        port,
        path: "/.well-known/matrix/server".to_owned(),
    };
    let mut visited = Vec::new();
    loop {
        let response = get(client, dns, &url).await?;
        if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
            return Ok(response);
        }
        visited.push(url.clone());
        let location = response
            .header("location")
            .ok_or_else(|| FederationError::Http("redirect without Location".into()))?;
        let next = url
            .redirect(location)
            .ok_or_else(|| FederationError::Http(format!("unusable redirect to {location}")))?;
        if visited.contains(&next) || visited.len() > MAX_REDIRECTS {
            return Err(FederationError::Http("redirect loop".into()));
        }
        url = next;
    }
}

async fn get(client: &HttpsClient, dns: &Dns, url: &Url) -> Result<RawResponse, FederationError> {
    let server = ServerAddress::parse(&url.host)?;
    let (addresses, tls_name) = match &server.host {
        Host::Ip(ip) => (
            vec![SocketAddr::new(*ip, url.port)],
            rustls::pki_types::ServerName::IpAddress((*ip).into()),
        ),
        Host::Name(name) => (dns.lookup_ip(name, url.port).await?, dns_tls_name(name)?),
    };
    let host_header = if url.port == 443 {
        server.host_text()
    } else {
        format!("{}:{}", server.host_text(), url.port)
    };
    let endpoint = Endpoint {
        addresses,
        tls_name,
        host_header,
    };
    let request = Request {
        method: "GET",
        path: url.path.clone(),
        body: None,
        authorization: None,
    };
    client.send(&endpoint, &request, MAX_BODY).await
}

/// An `https` URL, as far as redirects need one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    host: String,
    port: u16,
    path: String,
}

impl Url {
    /// Where a `Location` header points from here: an absolute `https://` URL or an
    /// absolute path on the same host. Plain `http://` is refused: TLS is what makes the
    /// delegation trustworthy.
    fn redirect(&self, location: &str) -> Option<Url> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Some(Url {
                path: location.to_owned(),
                ..self.clone()
            });
        }
        let rest = location.strip_prefix("https://")?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let server = ServerAddress::parse(authority).ok()?;
        Some(Url {
            host: server.host_text(),
            port: server.port.unwrap_or(443),
            path: path.to_owned(),
        })
    }
}

/// The delegated server name of a well-known body, if it is valid JSON with a valid
/// `m.server` (the content type does not matter, as the spec says).
pub(crate) fn parse_body(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let delegated = value.get("m.server")?.as_str()?;
    ServerAddress::parse(delegated).ok()?;
    Some(delegated.to_owned())
}

/// How long to keep an answer, from its `Cache-Control` (`max-age`, `no-store`,
/// `no-cache`) or `Expires` header, bounded by [`MIN_LIFETIME`] and [`MAX_LIFETIME`].
pub(crate) fn cache_lifetime(response: &RawResponse, now: SystemTime) -> Duration {
    let from_headers = response
        .header("cache-control")
        .and_then(cache_control_lifetime)
        .or_else(|| {
            let expires = httpdate::parse_http_date(response.header("expires")?).ok()?;
            Some(expires.duration_since(now).unwrap_or(Duration::ZERO))
        });
    from_headers
        .unwrap_or(DEFAULT_LIFETIME)
        .clamp(MIN_LIFETIME, MAX_LIFETIME)
}

fn cache_control_lifetime(value: &str) -> Option<Duration> {
    let directives: Vec<String> = value
        .split(',')
        .map(|directive| directive.trim().to_ascii_lowercase())
        .collect();
    if directives
        .iter()
        .any(|directive| directive == "no-store" || directive == "no-cache")
    {
        return Some(Duration::ZERO);
    }
    directives.iter().find_map(|directive| {
        let seconds = directive.strip_prefix("max-age=")?.trim_matches('"');
        seconds.parse::<u64>().ok().map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> RawResponse {
        RawResponse {
            status: 200,
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn bodies_need_a_valid_m_server() {
        assert_eq!(
            parse_body(br#"{"m.server": "delegated.example.com:1234"}"#).as_deref(),
            Some("delegated.example.com:1234")
        );
        assert_eq!(
            parse_body(br#"{"m.server": "[::1]"}"#).as_deref(),
            Some("[::1]")
        );
        assert_eq!(parse_body(b"not json"), None);
        assert_eq!(parse_body(br#"{"other": 1}"#), None);
        assert_eq!(parse_body(br#"{"m.server": 5}"#), None);
        assert_eq!(parse_body(br#"{"m.server": "https://x.org"}"#), None);
        assert_eq!(parse_body(br#"["m.server"]"#), None);
    }

    #[test]
    fn lifetime_follows_cache_headers_within_bounds() {
        let now = SystemTime::now();
        assert_eq!(cache_lifetime(&response(&[]), now), DEFAULT_LIFETIME);
        let hour = response(&[("cache-control", "public, max-age=3600")]);
        assert_eq!(cache_lifetime(&hour, now), Duration::from_secs(3600));
        let week = response(&[("cache-control", "max-age=604800")]);
        assert_eq!(cache_lifetime(&week, now), MAX_LIFETIME);
        let none = response(&[("cache-control", "no-store")]);
        assert_eq!(cache_lifetime(&none, now), MIN_LIFETIME);
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(7200));
        let expiring = response(&[("expires", &expires)]);
        let lifetime = cache_lifetime(&expiring, now);
        assert!(lifetime > Duration::from_secs(7100) && lifetime <= Duration::from_secs(7200));
        let past = response(&[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")]);
        assert_eq!(cache_lifetime(&past, now), MIN_LIFETIME);
        let garbage = response(&[("cache-control", "max-age=soon"), ("expires", "never")]);
        assert_eq!(cache_lifetime(&garbage, now), DEFAULT_LIFETIME);
    }

    #[test]
    fn redirects_stay_on_https() {
        let here = Url {
            host: "example.org".into(),
            port: 443,
            path: "/.well-known/matrix/server".into(),
        };
        assert_eq!(
            here.redirect("/elsewhere").expect("relative").path,
            "/elsewhere"
        );
        let moved = here
            .redirect("https://other.org:8443/wk")
            .expect("absolute");
        assert_eq!((moved.host.as_str(), moved.port), ("other.org", 8443));
        assert_eq!(moved.path, "/wk");
        assert!(here.redirect("http://other.org/wk").is_none());
        assert!(here.redirect("//other.org/wk").is_none());
        assert!(here.redirect("https://bad host/").is_none());
    }
}
