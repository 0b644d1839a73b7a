//! `hearth check`: what another server and a client see of us, checked from this box. Each
//! step reuses what federation itself uses (discovery, the outbound HTTPS client with its
//! roots and extra CA file, key verification), so a ✓ here means the same code would reach
//! us from elsewhere:
//!
//! 1. resolve our server name by the spec's steps (which step decided is printed);
//! 2. a TLS handshake verified for the name discovery expects, and the certificate's expiry;
//! 3. `/_matrix/key/v2/server` through that connection: self-signed, for our name, still
//!    valid, and the key on disk;
//! 4. `/.well-known/matrix/client` on the name, its `m.homeserver.base_url`, that URL's
//!    `/_matrix/client/versions` and its CORS header;
//! 5. the clock, against the `Date` headers of the answers.
//!
//! The steps' I/O is here; what each answer means and what to tell the owner is `judge`
//! (pure), and `certificate` reads a certificate's expiry.
//!
//! Private addresses are allowed here, unlike in federation: the owner's own name often
//! resolves to a LAN address from inside the LAN, and the check only ever connects to what
//! our own name (and its well-known) points at, never to a name a stranger chose.

mod certificate;
mod judge;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;

use super::FederationError;
use super::client::{Endpoint, HttpsClient, RawResponse, Request, Scheme};
use super::discovery::{Resolution, Resolver};
use super::dns::{Dns, dns_tls_name};
use super::keys::MAX_KEY_RESPONSE;
use super::server_name::{Host, ServerAddress};
use crate::matrix::crypto::SigningKey;
use judge::{client_base_url, expiry, judge_clock, judge_keys, judge_versions, tls_advice};

/// How long the whole of one step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A well-known or `/versions` answer is small.
const MAX_CLIENT_ANSWER: usize = 64 * 1024;

/// What the check needs to know about us.
pub(crate) struct Settings<'a> {
    pub(crate) server_name: &'a str,
    pub(crate) signing_key: &'a SigningKey,
    pub(crate) signing_key_path: &'a Path,
    pub(crate) extra_ca_file: Option<&'a Path>,
    /// Where `/.well-known/matrix/*` is fetched: 443, except in tests.
    pub(crate) well_known_port: u16,
}

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Pass,
    /// Works today, but needs attention (a certificate about to expire, a drifting clock).
    Warn,
    Fail,
}

impl Mark {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Mark::Pass => "✓",
            Mark::Warn => "!",
            Mark::Fail => "✗",
        }
    }
}

/// One printed line: a step, how it went, and what was seen or what to fix.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) mark: Mark,
    pub(crate) step: &'static str,
    pub(crate) text: String,
}

/// Runs every step, handing each line to `report` as soon as it is known. Fails only when
/// the check cannot start (an unreadable extra CA file).
pub(crate) async fn run(
    settings: &Settings<'_>,
    report: &mut dyn FnMut(&Line),
) -> Result<(), FederationError> {
    // Private addresses allowed: see the module's comment.
    let client = HttpsClient::new(settings.extra_ca_file, true)?;
    let resolver = Resolver::new(Dns::from_system(), settings.well_known_port);
    let mut check = Check {
        settings,
        client,
        resolver,
        dates: Vec::new(),
        report,
    };
    let endpoint = check.resolve().await;
    let connected = match &endpoint {
        Some(endpoint) => check.tls(endpoint).await,
        None => check.skip("tls", "needs the resolved address"),
    };
    match (&endpoint, connected) {
        (Some(endpoint), true) => check.server_keys(endpoint).await,
        _ => {
            check.skip("server keys", "needs a verified TLS connection");
        }
    }
    check.client_discovery().await;
    check.clock();
    Ok(())
}

struct Check<'a, 'r> {
    settings: &'a Settings<'a>,
    client: HttpsClient,
    resolver: Resolver,
    /// Per answer: where it came from, and how far its `Date` is from our clock (seconds,
    /// positive when ours is ahead).
    dates: Vec<(String, f64)>,
    report: &'r mut dyn FnMut(&Line),
}

impl Check<'_, '_> {
    fn line(&mut self, mark: Mark, step: &'static str, text: String) {
        (self.report)(&Line { mark, step, text });
    }

    fn skip(&mut self, step: &'static str, why: &str) -> bool {
        self.line(Mark::Fail, step, format!("not checked: {why}"));
        false
    }

    /// Step 1: our name, resolved as any other server resolves it.
    async fn resolve(&mut self) -> Option<Endpoint> {
        let name = self.settings.server_name;
        let work = self.resolver.resolve_explained(&self.client, name);
        let Resolution {
            step,
            well_known,
            endpoint,
        } = match tokio::time::timeout(STEP_TIMEOUT, work).await {
            Ok(resolution) => resolution,
            Err(_) => {
                self.line(
                    Mark::Fail,
                    "resolve",
                    format!("{name}: no answer in {STEP_TIMEOUT:?} (DNS or well-known hangs)"),
                );
                return None;
            }
        };
        let well_known = well_known.map(|answer| match (answer.delegated, answer.failure) {
            (Some(delegated), _) => {
                format!("; /.well-known/matrix/server delegates to {delegated}")
            }
            (None, failure) => format!(
                "; no /.well-known/matrix/server delegation ({})",
                failure.unwrap_or_default()
            ),
        });
        let well_known = well_known.unwrap_or_default();
        match endpoint {
            Ok(endpoint) => {
                let addresses: Vec<String> =
                    endpoint.addresses.iter().map(ToString::to_string).collect();
                self.line(
                    Mark::Pass,
                    "resolve",
                    format!(
                        "{name} → {} by {step} (certificate name {}, Host {}){well_known}",
                        addresses.join(", "),
                        tls_name_text(&endpoint.tls_name),
                        endpoint.host_header
                    ),
                );
                Some(endpoint)
            }
            Err(err) => {
                self.line(
                    Mark::Fail,
                    "resolve",
                    format!(
                        "{name} by {step}: {err}{well_known}. Fix: give the host an A/AAAA \
                         record (or fix the delegation it points to)"
                    ),
                );
                None
            }
        }
    }

    /// Step 2: a verified TLS handshake, as another server makes it, and the expiry.
    async fn tls(&mut self, endpoint: &Endpoint) -> bool {
        let name = tls_name_text(&endpoint.tls_name);
        let mut failure = None;
        for address in &endpoint.addresses {
            match self.client.handshake(*address, &endpoint.tls_name).await {
                Ok(chain) => {
                    let (mark, text) = expiry(chain.first().map(|der| der.as_ref()));
                    self.line(
                        mark,
                        "tls",
                        format!("{address}: certificate valid for {name}, {text}"),
                    );
                    return mark != Mark::Fail;
                }
                Err(err) => failure = Some((*address, err)),
            }
        }
        let text = match failure {
            Some((address, err)) => format!("{address}: {}", tls_advice(&err, &name)),
            None => "no address to connect to".to_owned(),
        };
        self.line(Mark::Fail, "tls", text);
        false
    }

    /// Step 3: the key other servers will fetch, and the one we sign with.
    async fn server_keys(&mut self, endpoint: &Endpoint) {
        const STEP: &str = "server keys";
        let response = match self
            .get(
                endpoint,
                "/_matrix/key/v2/server",
                Scheme::Https,
                MAX_KEY_RESPONSE,
            )
            .await
        {
            Ok(response) => response,
            Err(err) => return self.line(Mark::Fail, STEP, err.to_string()),
        };
        self.note_date("server keys", &response);
        let (mark, text) = judge_keys(self.settings, &response, now_ms());
        self.line(mark, STEP, text);
    }

    /// Step 4: what a client finds from the server name alone.
    async fn client_discovery(&mut self) {
        let Some(base_url) = self.client_well_known().await else {
            self.skip("client versions", "needs m.homeserver.base_url");
            return;
        };
        self.client_versions(&base_url).await
    }

    async fn client_well_known(&mut self) -> Option<String> {
        const STEP: &str = "client well-known";
        let server = match ServerAddress::parse(self.settings.server_name) {
            Ok(server) => server,
            Err(err) => {
                self.line(Mark::Fail, STEP, err.to_string());
                return None;
            }
        };
        let port = self.settings.well_known_port;
        let host = server.host_text();
        let url = match port {
            443 => format!("https://{host}/.well-known/matrix/client"),
            _ => format!("https://{host}:{port}/.well-known/matrix/client"),
        };
        let fix = "Fix: set [well_known] client = \"https://<where clients reach Hearth>\" \
                   and serve it on port 443 of the name (or from the web server there)";
        let answer = match self.endpoint(&server.host, port).await {
            Ok(endpoint) => {
                let path = "/.well-known/matrix/client";
                self.get(&endpoint, path, Scheme::Https, MAX_CLIENT_ANSWER)
                    .await
            }
            Err(err) => Err(err),
        };
        let response = match answer {
            Ok(response) => response,
            Err(err) => {
                self.line(Mark::Fail, STEP, format!("{url}: {err}. {fix}"));
                return None;
            }
        };
        self.note_date("client well-known", &response);
        match client_base_url(&response) {
            Ok(base_url) => {
                self.line(
                    Mark::Pass,
                    STEP,
                    format!("{url}: m.homeserver.base_url is {base_url}"),
                );
                Some(base_url)
            }
            Err(why) => {
                self.line(Mark::Fail, STEP, format!("{url}: {why}. {fix}"));
                None
            }
        }
    }

    /// The base URL's `/versions`, which every client asks first, and its CORS header,
    /// without which web clients (Element Web) cannot talk to us.
    async fn client_versions(&mut self, base_url: &str) {
        const STEP: &str = "client versions";
        let url = format!("{}/_matrix/client/versions", base_url.trim_end_matches('/'));
        let parsed = match url::Url::parse(&url) {
            Ok(parsed) => parsed,
            Err(err) => return self.line(Mark::Fail, STEP, format!("{url}: {err}")),
        };
        let scheme = match parsed.scheme() {
            "https" => Scheme::Https,
            _ => Scheme::Http,
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => Host::Name(name.to_ascii_lowercase()),
            Some(url::Host::Ipv4(ip)) => Host::Ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => Host::Ip(ip.into()),
            None => return self.line(Mark::Fail, STEP, format!("{url}: no host")),
        };
        let port = parsed.port_or_known_default().unwrap_or(443);
        let answer = match self.endpoint(&host, port).await {
            Ok(endpoint) => {
                self.get(&endpoint, parsed.path(), scheme, MAX_CLIENT_ANSWER)
                    .await
            }
            Err(err) => Err(err),
        };
        let response = match answer {
            Ok(response) => response,
            Err(err) => {
                let text = format!("{url}: {err}. Fix: m.homeserver.base_url must reach Hearth");
                return self.line(Mark::Fail, STEP, text);
            }
        };
        self.note_date("client versions", &response);
        let (mark, text) = judge_versions(&response, scheme);
        self.line(mark, STEP, format!("{url}: {text}"));
    }

    /// Step 5: our clock against every `Date` seen.
    fn clock(&mut self) {
        let (mark, text) = judge_clock(&self.dates);
        self.line(mark, "clock", text);
    }

    /// Where `host:port` is, and the name its certificate must carry.
    async fn endpoint(&self, host: &Host, port: u16) -> Result<Endpoint, FederationError> {
        let (addresses, tls_name, host_text) = match host {
            Host::Ip(ip) => {
                let text = match ip {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    std::net::IpAddr::V4(v4) => v4.to_string(),
                };
                (
                    vec![SocketAddr::new(*ip, port)],
                    ServerName::IpAddress((*ip).into()),
                    text,
                )
            }
            Host::Name(name) => (
                self.resolver.dns.lookup_ip(name, port).await?,
                dns_tls_name(name)?,
                name.clone(),
            ),
        };
        let host_header = match port {
            443 => host_text,
            _ => format!("{host_text}:{port}"),
        };
        Ok(Endpoint {
            addresses,
            tls_name,
            host_header,
        })
    }

    async fn get(
        &self,
        endpoint: &Endpoint,
        path: &str,
        scheme: Scheme,
        limit: usize,
    ) -> Result<RawResponse, FederationError> {
        let request = Request {
            method: "GET",
            path: path.to_owned(),
            body: None,
            authorization: None,
        };
        let work = async {
            let (head, body) = self.client.open(endpoint, &request, scheme).await?;
            let body = body.read_to_end(&head, limit).await?;
            Ok(RawResponse {
                status: head.status,
                headers: head.headers,
                body,
            })
        };
        tokio::time::timeout(STEP_TIMEOUT, work)
            .await
            .map_err(|_| FederationError::Timeout(endpoint.host_header.clone()))?
    }

    fn note_date(&mut self, source: &str, response: &RawResponse) {
        let received = SystemTime::now();
        let Some(date) = response
            .header("date")
            .and_then(|date| httpdate::parse_http_date(date).ok())
        else {
            return;
        };
        let skew = match received.duration_since(date) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(behind) => -behind.duration().as_secs_f64(),
        };
        self.dates.push((source.to_owned(), skew));
    }
}

fn now_ms() -> u64 {
    crate::matrix::time::now_ms()
}

fn tls_name_text(name: &ServerName<'_>) -> String {
    name.to_str().into_owned()
}

#[cfg(test)]
mod tests;
