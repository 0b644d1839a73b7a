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
    /// SRV answers given instead of asking DNS: no test can serve DNS records, so the
    /// discovery steps that follow SRV records are tested with these.
    #[cfg(test)]
    srv_answers: Vec<(String, Vec<(String, u16)>)>,
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
                #[cfg(test)]
                srv_answers: Vec::new(),
            },
            Err(err) => {
                tracing::warn!(
                    "cannot read the system DNS configuration ({err}); using the C library's resolver, without SRV records"
                );
                Dns {
                    resolver: None,
                    #[cfg(test)]
                    srv_answers: Vec::new(),
                }
            }
        }
    }

    /// This DNS answering `name`'s SRV query with `targets` (tests).
    #[cfg(test)]
    pub(crate) fn with_srv_answer(mut self, name: &str, targets: &[(&str, u16)]) -> Dns {
        let targets = targets
            .iter()
            .map(|(target, port)| ((*target).to_owned(), *port))
            .collect();
        self.srv_answers.push((name.to_owned(), targets));
        self
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
        #[cfg(test)]
        if let Some((_, targets)) = self.srv_answers.iter().find(|(known, _)| known == name) {
            return targets.clone();
        }
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
        let records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(SrvRecord {
                    priority: srv.priority,
                    weight: srv.weight,
                    target: srv.target.to_utf8(),
                    port: srv.port,
                }),
                _ => None,
            })
            .collect();
        best_first(records)
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

/// One SRV answer.
#[derive(Debug, Clone)]
pub(crate) struct SrvRecord {
    pub(crate) priority: u16,
    pub(crate) weight: u16,
    pub(crate) target: String,
    pub(crate) port: u16,
}

/// SRV targets in the order to try them: lowest priority first, then highest weight; the
/// "no service" target (`.`) dropped; at most [`MAX_TARGETS`].
pub(crate) fn best_first(mut records: Vec<SrvRecord>) -> Vec<(String, u16)> {
    records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    records
        .into_iter()
        .map(|record| (record.target.trim_end_matches('.').to_owned(), record.port))
        .filter(|(target, _)| !target.is_empty())
        .take(MAX_TARGETS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(priority: u16, weight: u16, target: &str, port: u16) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            target: target.to_owned(),
            port,
        }
    }

    #[test]
    fn srv_targets_lowest_priority_then_highest_weight() {
        let ordered = best_first(vec![
            record(20, 0, "backup.example.org.", 8448),
            record(10, 5, "light.example.org.", 443),
            record(10, 50, "heavy.example.org.", 8443),
            record(0, 0, ".", 0),
        ]);
        assert_eq!(
            ordered,
            [
                ("heavy.example.org".to_owned(), 8443),
                ("light.example.org".to_owned(), 443),
                ("backup.example.org".to_owned(), 8448),
            ]
        );
    }

    #[test]
    fn srv_targets_are_bounded() {
        let many = (0..100).map(|i| record(i, 0, "x.org.", 1)).collect();
        assert_eq!(best_first(many).len(), MAX_TARGETS);
    }
}
