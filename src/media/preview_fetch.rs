//! Fetching the page of a URL preview: `http` and `https` only, every address checked by the
//! outbound client right before it is dialled (so a name resolving to the owner's network,
//! or a redirect to one, is refused like any other), redirects followed a few times and
//! each one resolved and checked anew, at most `max_bytes` of the page read, and only until
//! its `<head>` ended.

use std::net::{IpAddr, SocketAddr};

use rustls::pki_types::ServerName;
use serde_json::{Map, Value};
use url::Url;

use super::opengraph::Scanner;
use crate::federation::FederationError;
use crate::federation::client::{Endpoint, HttpsClient, Request, Scheme};
use crate::federation::dns::{Dns, dns_tls_name};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// Why a page gave no preview. Never shown to the client as it is: it would tell which
/// addresses around us answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("not an http(s) URL")]
    Scheme,
    #[error("too many redirects")]
    Redirects,
    #[error("the page answered {0}")]
    Status(u16),
    #[error(transparent)]
    Outbound(#[from] FederationError),
}

/// The OpenGraph properties of the page at `url`, following redirects; an empty map for
/// what is not HTML.
pub(crate) async fn fetch_open_graph(
    client: &HttpsClient,
    dns: &Dns,
    url: Url,
    max_bytes: usize,
) -> Result<Map<String, Value>, FetchError> {
    let mut url = url;
    for _ in 0..=MAX_REDIRECTS {
        let (scheme, endpoint) = endpoint_of(dns, &url).await?;
        let request = Request {
            method: "GET",
            path: target_of(&url),
            body: None,
            authorization: None,
        };
        let (head, mut body) = client.open(&endpoint, &request, scheme).await?;
        if matches!(head.status, 301 | 302 | 303 | 307 | 308) {
            let location = head
                .header("location")
                .ok_or(FetchError::Status(head.status))?;
            url = url.join(location).map_err(|_| FetchError::Scheme)?;
            continue;
        }
        if head.status != 200 {
            return Err(FetchError::Status(head.status));
        }
        if !is_html(head.header("content-type")) {
            return Ok(Map::new());
        }
        let mut scanner = Scanner::default();
        while !scanner.is_done() {
            match body.chunk(max_bytes).await {
                Ok(Some(chunk)) => scanner.feed(&chunk),
                Ok(None) | Err(FederationError::TooLarge(_)) => break,
                Err(err) => return Err(err.into()),
            }
        }
        return Ok(scanner.finish());
    }
    Err(FetchError::Redirects)
}

/// Where `url` goes: its addresses (an IP literal as it is, a name through DNS), the name
/// its certificate must carry, and its `Host` header.
async fn endpoint_of(dns: &Dns, url: &Url) -> Result<(Scheme, Endpoint), FetchError> {
    let scheme = match url.scheme() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        _ => return Err(FetchError::Scheme),
    };
    let port = url.port_or_known_default().ok_or(FetchError::Scheme)?;
    let (addresses, tls_name) = match url.host().ok_or(FetchError::Scheme)? {
        url::Host::Ipv4(ip) => ip_endpoint(IpAddr::V4(ip), port),
        url::Host::Ipv6(ip) => ip_endpoint(IpAddr::V6(ip), port),
        url::Host::Domain(name) => (dns.lookup_ip(name, port).await?, dns_tls_name(name)?),
    };
    let host = url.host_str().ok_or(FetchError::Scheme)?;
    let host_header = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    Ok((
        scheme,
        Endpoint {
            addresses,
            tls_name,
            host_header,
        },
    ))
}

fn ip_endpoint(ip: IpAddr, port: u16) -> (Vec<SocketAddr>, ServerName<'static>) {
    (
        vec![SocketAddr::new(ip, port)],
        ServerName::IpAddress(ip.into()),
    )
}

/// The request target: path and query, never the fragment.
fn target_of(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

fn is_html(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "text/html" || essence == "application/xhtml+xml"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_keeps_the_query_and_drops_the_fragment() {
        let url = Url::parse("https://example.org/a/b?c=d&e#frag").expect("url");
        assert_eq!(target_of(&url), "/a/b?c=d&e");
        let bare = Url::parse("http://example.org").expect("url");
        assert_eq!(target_of(&bare), "/");
    }

    #[test]
    fn only_html_is_scanned() {
        assert!(is_html(Some("text/html; charset=utf-8")));
        assert!(is_html(Some("TEXT/HTML")));
        assert!(is_html(Some("application/xhtml+xml")));
        assert!(!is_html(Some("image/png")));
        assert!(!is_html(None));
    }
}
