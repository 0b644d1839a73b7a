//! Server discovery (spec: "Resolving server names"): a server name becomes an [`Endpoint`],
//! the addresses to connect to, the name the certificate must be valid for, and the `Host`
//! header. One function per numbered step of the spec, each logging the step that matched.
//! Well-known answers are remembered in a bounded map; DNS answers in hickory's own bounded
//! cache, for their TTLs. The DNS client itself is [`super::dns`], which well-known
//! fetching uses too.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rustls::pki_types::ServerName;

use super::FederationError;
use super::cache::ExpiringMap;
use super::client::{Endpoint, HttpsClient};
use super::dns::{Dns, dns_tls_name};
use super::server_name::{Host, ServerAddress};
use super::well_known::{self, WellKnown};

/// The port of federation when nothing says otherwise.
pub(crate) const DEFAULT_PORT: u16 = 8448;
/// Well-known answers remembered at once; more evict the ones closest to expiry.
const WELL_KNOWN_CACHE_SIZE: usize = 1024;

/// Resolves server names to endpoints.
pub(crate) struct Resolver {
    pub(crate) dns: Dns,
    well_known: ExpiringMap<String, WellKnown>,
    /// Where `/.well-known` is fetched: 443, except in tests.
    well_known_port: u16,
}

impl Resolver {
    /// A resolver using the system's DNS configuration (`/etc/resolv.conf`, `/etc/hosts`).
    pub(crate) fn from_system() -> Resolver {
        Resolver::new(Dns::from_system(), 443)
    }

    /// A resolver fetching well-known files from another port than 443 (for tests).
    pub(crate) fn new(dns: Dns, well_known_port: u16) -> Resolver {
        Resolver {
            dns,
            well_known: ExpiringMap::new(WELL_KNOWN_CACHE_SIZE),
            well_known_port,
        }
    }

    /// Follows the spec's steps for `server_name`.
    pub(crate) async fn resolve(
        &self,
        client: &HttpsClient,
        server_name: &str,
    ) -> Result<Endpoint, FederationError> {
        self.resolve_explained(client, server_name).await.endpoint
    }

    /// Follows the spec's steps for `server_name`, saying which step decided and what the
    /// well-known lookup found (for `hearth check`, which prints it).
    pub(crate) async fn resolve_explained(
        &self,
        client: &HttpsClient,
        server_name: &str,
    ) -> Resolution {
        let server = match ServerAddress::parse(server_name) {
            Ok(server) => server,
            Err(err) => return Resolution::new("not a valid server name", None, Err(err)),
        };
        match (&server.host, server.port) {
            (Host::Ip(ip), port) => Resolution::new(
                "step 1: IP literal",
                None,
                Ok(step_1_ip_literal(&server, *ip, port)),
            ),
            (Host::Name(hostname), Some(port)) => Resolution::new(
                "step 2: hostname with explicit port",
                None,
                self.step_2_explicit_port(hostname, port).await,
            ),
            (Host::Name(hostname), None) => {
                let well_known = self.step_3_well_known(client, hostname).await;
                let (step, endpoint) = match &well_known.delegated {
                    Some(delegated) => self.step_3_delegated(delegated).await,
                    None => self.srv_or_default_port(hostname, "4", "5", "6").await,
                };
                Resolution::new(step, Some(well_known), endpoint)
            }
        }
    }

    /// Step 2: a hostname with a port: its addresses, that port, `Host: name:port`.
    async fn step_2_explicit_port(
        &self,
        hostname: &str,
        port: u16,
    ) -> Result<Endpoint, FederationError> {
        tracing::debug!(hostname, port, "discovery step 2: explicit port");
        Ok(Endpoint {
            addresses: self.dns.lookup_ip(hostname, port).await?,
            tls_name: dns_tls_name(hostname)?,
            host_header: format!("{hostname}:{port}"),
        })
    }

    /// Step 3: the delegated server name of `/.well-known/matrix/server`, from the cache or
    /// fetched (and then cached, failures included).
    async fn step_3_well_known(&self, client: &HttpsClient, hostname: &str) -> WellKnown {
        let now = Instant::now();
        let answer = match self.well_known.get(&hostname.to_owned(), now) {
            Some(cached) => cached,
            None => {
                let fetched =
                    well_known::fetch(client, &self.dns, hostname, self.well_known_port).await;
                self.well_known.insert(
                    hostname.to_owned(),
                    fetched.clone(),
                    now + fetched.lifetime,
                    now,
                );
                fetched
            }
        };
        if let Some(delegated) = &answer.delegated {
            tracing::debug!(
                hostname,
                delegated,
                "discovery step 3: well-known delegation"
            );
        }
        answer
    }

    /// Steps 3.1 to 3.5: the delegated name, resolved like a server name but without a
    /// second well-known lookup.
    async fn step_3_delegated(
        &self,
        delegated: &str,
    ) -> (String, Result<Endpoint, FederationError>) {
        let server = match ServerAddress::parse(delegated) {
            Ok(server) => server,
            Err(err) => return ("step 3: invalid delegation".to_owned(), Err(err)),
        };
        match (&server.host, server.port) {
            (Host::Ip(ip), port) => {
                tracing::debug!(delegated, "discovery step 3.1: delegated IP literal");
                (
                    "step 3.1: well-known delegation to an IP literal".to_owned(),
                    Ok(step_1_ip_literal(&server, *ip, port)),
                )
            }
            (Host::Name(hostname), Some(port)) => {
                tracing::debug!(delegated, "discovery step 3.2: delegated with port");
                (
                    "step 3.2: well-known delegation with explicit port".to_owned(),
                    self.step_2_explicit_port(hostname, port).await,
                )
            }
            (Host::Name(hostname), None) => {
                self.srv_or_default_port(hostname, "3.3", "3.4", "3.5")
                    .await
            }
        }
    }

    /// `_matrix-fed._tcp` SRV, then the deprecated `_matrix._tcp`, then port 8448 (steps 4,
    /// 5, 6, or 3.3 to 3.5 for a delegated name). The certificate and `Host` are those of
    /// `hostname`, whatever the SRV record names. Returns the step that decided.
    async fn srv_or_default_port(
        &self,
        hostname: &str,
        srv_step: &str,
        deprecated_step: &str,
        default_step: &str,
    ) -> (String, Result<Endpoint, FederationError>) {
        let tls_name = match dns_tls_name(hostname) {
            Ok(name) => name,
            Err(err) => return (format!("step {srv_step}: invalid hostname"), Err(err)),
        };
        let endpoint = |addresses| Endpoint {
            addresses,
            tls_name: tls_name.clone(),
            host_header: hostname.to_owned(),
        };
        for (service, step) in [
            ("_matrix-fed._tcp", srv_step),
            ("_matrix._tcp", deprecated_step),
        ] {
            let targets = self.dns.lookup_srv(&format!("{service}.{hostname}")).await;
            if !targets.is_empty() {
                tracing::debug!(hostname, step, "discovery step {step}: SRV {service}");
                let addresses = self.dns.lookup_targets(&targets).await;
                return (
                    format!("step {step}: SRV record {service}.{hostname}"),
                    addresses.map(&endpoint),
                );
            }
        }
        tracing::debug!(
            hostname,
            "discovery step {default_step}: port {DEFAULT_PORT}"
        );
        let addresses = self.dns.lookup_ip(hostname, DEFAULT_PORT).await;
        (
            format!("step {default_step}: no SRV record, default port {DEFAULT_PORT}"),
            addresses.map(&endpoint),
        )
    }
}

/// How a server name was resolved: the step that decided, what well-known said (when it
/// was asked), and the endpoint or why there is none.
pub(crate) struct Resolution {
    pub(crate) step: String,
    pub(crate) well_known: Option<WellKnown>,
    pub(crate) endpoint: Result<Endpoint, FederationError>,
}

impl Resolution {
    fn new(
        step: impl Into<String>,
        well_known: Option<WellKnown>,
        endpoint: Result<Endpoint, FederationError>,
    ) -> Resolution {
        Resolution {
            step: step.into(),
            well_known,
            endpoint,
        }
    }
}

/// Step 1 (and 3.1): an IP literal, with its port or 8448. The certificate must be valid for
/// the IP address (no SNI is sent), and `Host` is the name as given, with its port if any.
fn step_1_ip_literal(server: &ServerAddress, ip: IpAddr, port: Option<u16>) -> Endpoint {
    tracing::debug!(server = %server, "discovery step 1: IP literal");
    Endpoint {
        addresses: vec![SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT))],
        tls_name: ServerName::IpAddress(ip.into()),
        host_header: server.host_and_port(),
    }
}
