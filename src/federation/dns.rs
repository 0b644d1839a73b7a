//! DNS for server discovery: the resolver (hickory with the system's configuration, or the
//! C library's as a fallback) for SRV records and addresses, and the TLS name a host must
//! present. Its own file because both discovery steps ([`super::discovery`]) and well-known
//! fetching ([`super::well_known`]) use it, and neither should import the other for it.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use rustls::pki_types::ServerName;

use super::FederationError;

/// The name a certificate must be valid for, and sent as SNI.
pub(crate) fn dns_tls_name(hostname: &str) -> Result<ServerName<'static>, FederationError> {
    ServerName::try_from(hostname.to_owned())
        .map_err(|_| FederationError::InvalidServerName(hostname.to_owned()))
}

/// DNS: hickory with the system's configuration; if that configuration cannot be read, the
/// C library's resolver for addresses, and no SRV records.
pub(crate) struct Dns {
    resolver: Option<TokioResolver>,
}

/// How many SRV targets and addresses are tried at most: a hostile zone cannot make us
/// dial hundreds of addresses.
const MAX_TARGETS: usize = 8;

impl Dns {
    pub(crate) fn from_system() -> Dns {
        let resolver = TokioResolver::builder_tokio().and_then(|builder| builder.build());
        match resolver {
            Ok(resolver) => Dns {
                resolver: Some(resolver),
            },
            Err(err) => {
                tracing::warn!(
                    "cannot read the system DNS configuration ({err}); using the C library's resolver, without SRV records"
                );
                Dns { resolver: None }
            }
        }
    }

    /// The addresses of `hostname` (CNAME, AAAA and A records, and `/etc/hosts`) with `port`.
    pub(crate) async fn lookup_ip(
        &self,
        hostname: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, FederationError> {
        let dns_error = |reason: String| FederationError::Dns {
            name: hostname.to_owned(),
            reason,
        };
        let addresses: Vec<SocketAddr> = match &self.resolver {
            Some(resolver) => resolver
                .lookup_ip(hostname)
                .await
                .map_err(|err| dns_error(err.to_string()))?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .take(MAX_TARGETS)
                .collect(),
            None => tokio::net::lookup_host((hostname, port))
                .await
                .map_err(|err| dns_error(err.to_string()))?
                .take(MAX_TARGETS)
                .collect(),
        };
        if addresses.is_empty() {
            return Err(FederationError::NoAddress(hostname.to_owned()));
        }
        Ok(addresses)
    }

    /// The targets of an SRV record, best first (lowest priority, then highest weight).
    /// Empty when there is none, the lookup failed, or the record says "no service" (`.`).
    pub(crate) async fn lookup_srv(&self, name: &str) -> Vec<(String, u16)> {
        let Some(resolver) = &self.resolver else {
            return Vec::new();
        };
        // A trailing dot: the name is complete, the search domains are not tried.
        let lookup = match resolver.srv_lookup(format!("{name}.")).await {
            Ok(lookup) => lookup,
            Err(err) => {
                tracing::debug!(name, "no SRV record: {err}");
                return Vec::new();
            }
        };
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some((srv.priority, srv.weight, srv.target.to_utf8(), srv.port)),
                _ => None,
            })
            .collect();
        records.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        records
            .into_iter()
            .map(|(_, _, target, port)| (target.trim_end_matches('.').to_owned(), port))
            .filter(|(target, _)| !target.is_empty())
            .take(MAX_TARGETS)
            .collect()
    }

    /// The addresses of SRV targets, in the targets' order; targets that do not resolve are
    /// skipped.
    pub(super) async fn lookup_targets(
        &self,
        targets: &[(String, u16)],
    ) -> Result<Vec<SocketAddr>, FederationError> {
        let mut addresses = Vec::new();
        for (target, port) in targets {
            match self.lookup_ip(target, *port).await {
                Ok(found) => addresses.extend(found),
                Err(err) => tracing::debug!("SRV target {target}: {err}"),
            }
        }
        addresses.truncate(MAX_TARGETS);
        if addresses.is_empty() {
            return Err(FederationError::NoAddress(
                targets.first().map(|t| t.0.clone()).unwrap_or_default(),
            ));
        }
        Ok(addresses)
    }
}
