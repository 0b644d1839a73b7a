//! The one way a notification leaves the server: `POST` of a JSON body to a pusher's
//! gateway URL (spec: push gateway API, `/_matrix/push/v1/notify`). HTTPS goes through the
//! federation client ([`HttpsClient`]: system roots, time limits, the private-address
//! check right before connecting); plain HTTP only when `push.allow_http` is set (tests).
//! Every try has one overall time limit, so a gateway that hangs costs one delivery slot
//! for at most [`GATEWAY_TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::config::PushConfig;
use crate::federation::client::{Endpoint, HttpsClient, RawResponse, Request, Scheme};
use crate::federation::private_address::is_private;

/// The longest one delivery may take, connection included.
pub(crate) const GATEWAY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest gateway answer read (it is `{"rejected": [...]}`).
const ANSWER_LIMIT: usize = 64 * 1024;

/// The path the spec requires of every gateway URL.
pub(crate) const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// Why a delivery did not happen.
#[derive(Debug)]
pub(crate) enum GatewayError {
    /// Trying again will not help (a URL we may not use, a 4xx answer): the item goes.
    Permanent(String),
    /// The gateway is down, slow or failing: try again later.
    Temporary(String),
}

/// The gateway's answer to a delivered notification.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// The pushkeys the gateway says are no longer valid.
    pub(crate) rejected: Vec<String>,
}

/// Where notifications go, with the rules of `[push]`.
pub(crate) struct Gateway {
    https: HttpsClient,
    allow_private_addresses: bool,
    allow_http: bool,
}

impl Gateway {
    pub(crate) fn new(
        config: &PushConfig,
        extra_ca_file: Option<&std::path::Path>,
    ) -> Result<Gateway, crate::federation::FederationError> {
        Ok(Gateway {
            https: HttpsClient::new(extra_ca_file, config.allow_private_addresses)?,
            allow_private_addresses: config.allow_private_addresses,
            allow_http: config.allow_http,
        })
    }

    /// Posts `body` to the gateway at `url`: the entry point every delivery goes through.
    pub(crate) async fn notify(&self, url: &str, body: &Value) -> Result<Delivered, GatewayError> {
        let target = GatewayUrl::parse(url).map_err(GatewayError::Permanent)?;
        if !target.https && !self.allow_http {
            return Err(GatewayError::Permanent(format!(
                "{url}: plain http gateways are refused (push.allow_http is off)"
            )));
        }
        let bytes = serde_json::to_vec(body)
            .map_err(|err| GatewayError::Permanent(format!("notification: {err}")))?;
        let attempt = self.post(&target, bytes);
        let response = tokio::time::timeout(GATEWAY_TIMEOUT, attempt)
            .await
            .map_err(|_| GatewayError::Temporary(format!("{url}: no answer in time")))??;
        match response.status {
            200..=299 => Ok(Delivered {
                rejected: rejected_pushkeys(&response.body),
            }),
            429 | 500.. => Err(GatewayError::Temporary(format!(
                "{url}: status {}",
                response.status
            ))),
            status => Err(GatewayError::Permanent(format!("{url}: status {status}"))),
        }
    }

    async fn post(&self, target: &GatewayUrl, body: Vec<u8>) -> Result<RawResponse, GatewayError> {
        let temporary = |err: &dyn std::fmt::Display| {
            GatewayError::Temporary(format!("{}: {err}", target.host_header))
        };
        let addresses = self.addresses(target).await?;
        let tls_name = ServerName::try_from(target.host.clone())
            .map_err(|err| GatewayError::Permanent(format!("{}: {err}", target.host)))?;
        let endpoint = Endpoint {
            addresses,
            tls_name,
            host_header: target.host_header.clone(),
        };
        let request = Request {
            method: "POST",
            path: target.path.clone(),
            body: Some(body),
            authorization: None,
        };
        let scheme = if target.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let (head, answer) = self
            .https
            .open(&endpoint, &request, scheme)
            .await
            .map_err(|err| temporary(&err))?;
        let body = answer
            .read_to_end(&head, ANSWER_LIMIT)
            .await
            .map_err(|err| temporary(&err))?;
        Ok(RawResponse {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// The gateway's addresses, private ones left out unless allowed (checked here for
    /// plain HTTP; the HTTPS client checks again before connecting).
    async fn addresses(&self, target: &GatewayUrl) -> Result<Vec<SocketAddr>, GatewayError> {
        let found: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .map_err(|err| GatewayError::Temporary(format!("{}: {err}", target.host)))?
                .collect(),
        };
        let allowed: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|address| self.allow_private_addresses || !is_private(address.ip()))
            .collect();
        if allowed.is_empty() {
            let reason = if found.is_empty() {
                "no address"
            } else {
                "a private address (push.allow_private_addresses is off)"
            };
            return Err(GatewayError::Permanent(format!(
                "{}: {reason}",
                target.host
            )));
        }
        Ok(allowed)
    }
}

/// The `rejected` pushkeys of a gateway's answer (none if it has no such list).
fn rejected_pushkeys(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|answer| answer.get("rejected").cloned())
        .and_then(|rejected| serde_json::from_value(rejected).ok())
        .unwrap_or_default()
}

/// A gateway URL taken apart: `http(s)://host[:port]/_matrix/push/v1/notify`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GatewayUrl {
    pub(crate) https: bool,
    /// The host name or IP address (no brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) host_header: String,
    pub(crate) path: String,
}

impl GatewayUrl {
    pub(crate) fn parse(url: &str) -> Result<GatewayUrl, String> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url}: not an http(s) URL"));
        };
        let (authority, path) = rest
            .find('/')
            .map_or((rest, "/"), |slash| (&rest[..slash], &rest[slash..]));
        if path != NOTIFY_PATH {
            return Err(format!("{url}: the path must be {NOTIFY_PATH}"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| format!("{url}: no valid host and port"))?;
        if host.is_empty() || authority.contains('@') {
            return Err(format!("{url}: no valid host"));
        }
        Ok(GatewayUrl {
            https,
            host,
            port,
            host_header: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_taken_apart() {
        let url = GatewayUrl::parse("https://push.example.org/_matrix/push/v1/notify").expect("ok");
        assert_eq!(
            (url.https, url.host.as_str(), url.port),
            (true, "push.example.org", 443)
        );
        let url = GatewayUrl::parse("http://[::1]:8080/_matrix/push/v1/notify").expect("ok");
        assert_eq!(
            (url.https, url.host.as_str(), url.port),
            (false, "::1", 8080)
        );
        assert_eq!(url.host_header, "[::1]:8080");
        for bad in [
            "ftp://x/_matrix/push/v1/notify",
            "https://x/other",
            "https://x:99999/_matrix/push/v1/notify",
            "https://user@x/_matrix/push/v1/notify",
            "https:///_matrix/push/v1/notify",
        ] {
            assert!(GatewayUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejected_pushkeys_are_read_leniently() {
        assert_eq!(
            rejected_pushkeys(br#"{"rejected":["a"]}"#),
            vec!["a".to_owned()]
        );
        assert!(rejected_pushkeys(b"{}").is_empty());
        assert!(rejected_pushkeys(b"not json").is_empty());
    }
}
