//! The outbound HTTPS client. Certificates are checked against the system's roots plus the
//! optional `federation.extra_ca_file`; the name checked (and sent as SNI unless it is an IP
//! address) and the `Host` header come from discovery, as the spec's steps say. Every
//! connection has a time limit and every answer a size limit, and every address is checked
//! against [`is_private`] right before connecting: this is the one place all outbound
//! connections pass (discovery, well-known redirects, keys, requests), so no caller can
//! reach the owner's network by mistake.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::FederationError;
use super::http1::{self, RawResponse};
use super::private_address::is_private;

/// Where a request goes: the addresses to try in order, the name the certificate must be
/// valid for, and the `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) addresses: Vec<SocketAddr>,
    pub(crate) tls_name: ServerName<'static>,
    pub(crate) host_header: String,
}

/// A request to send: the target from `/_matrix/...` on, an optional JSON body and an
/// optional `Authorization` header.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: &'static str,
    pub(crate) path: String,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) authorization: Option<String>,
}

pub(crate) type Response = RawResponse;

/// How long a TCP connection and TLS handshake may take, per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where distributions keep their CA bundle; the first one found is used. `SSL_CERT_FILE`,
/// when set, comes first, as OpenSSL-based tools do.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The HTTPS client, shared by every outbound request.
pub(crate) struct HttpsClient {
    connector: TlsConnector,
    /// The addresses never connected to: [`is_private`], or none when
    /// `federation.allow_private_addresses` is set.
    refused: fn(IpAddr) -> bool,
}

impl HttpsClient {
    /// Reads the system's roots and, if given, the extra CA bundle. Private addresses are
    /// refused unless `allow_private_addresses`.
    pub(crate) fn new(
        extra_ca_file: Option<&Path>,
        allow_private_addresses: bool,
    ) -> Result<HttpsClient, FederationError> {
        let roots = load_roots(extra_ca_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| FederationError::TlsConfig(err.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpsClient {
            connector: TlsConnector::from(Arc::new(config)),
            refused: if allow_private_addresses {
                |_| false
            } else {
                is_private
            },
        })
    }

    /// Sends `request` to `endpoint` and reads the answer (at most `limit` bytes of body),
    /// whatever its status.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        request: &Request,
        limit: usize,
    ) -> Result<Response, FederationError> {
        let stream = self.connect(endpoint).await?;
        let mut stream = BufReader::new(stream);
        let mut headers = Vec::new();
        if let Some(authorization) = &request.authorization {
            headers.push(("Authorization", authorization.as_str()));
        }
        let wire = http1::encode_request(
            request.method,
            &request.path,
            &endpoint.host_header,
            &headers,
            request.body.as_deref(),
        );
        stream.get_mut().write_all(&wire).await?;
        stream.get_mut().flush().await?;
        http1::read_response(&mut stream, limit).await
    }

    /// Sends `request` to `endpoint` and copies a `200` answer's body into `writer` as it
    /// arrives (at most `limit` bytes); another status's body comes back in the answer.
    pub(crate) async fn send_into<W>(
        &self,
        endpoint: &Endpoint,
        request: &Request,
        writer: &mut W,
        limit: u64,
    ) -> Result<http1::StreamedResponse, FederationError>
    where
        W: tokio::io::AsyncWrite + Unpin + ?Sized,
    {
        let stream = self.connect(endpoint).await?;
        let mut stream = BufReader::new(stream);
        let mut headers = Vec::new();
        if let Some(authorization) = &request.authorization {
            headers.push(("Authorization", authorization.as_str()));
        }
        let wire = http1::encode_request(
            request.method,
            &request.path,
            &endpoint.host_header,
            &headers,
            request.body.as_deref(),
        );
        stream.get_mut().write_all(&wire).await?;
        stream.get_mut().flush().await?;
        http1::read_response_into(&mut stream, writer, limit).await
    }

    /// The same client refusing the addresses `refused` says (tests: refuse one loopback
    /// address and not another).
    #[cfg(test)]
    pub(crate) fn refusing(self, refused: fn(IpAddr) -> bool) -> HttpsClient {
        HttpsClient { refused, ..self }
    }

    /// Tries each address in turn; the first that completes a verified handshake wins.
    /// Private addresses are skipped (unless allowed) before any packet is sent; the error
    /// then reads like any unreachable server's, so what a client sees does not tell a
    /// refused address from a closed port.
    async fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, FederationError> {
        let mut last_error = FederationError::NoAddress(endpoint.host_header.clone());
        for address in &endpoint.addresses {
            if (self.refused)(address.ip()) {
                tracing::info!(
                    %address,
                    destination = endpoint.host_header,
                    "refused to connect to a private address (federation.allow_private_addresses is off)"
                );
                last_error = FederationError::PrivateAddress(endpoint.host_header.clone());
                continue;
            }
            let attempt = async {
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
                self.connector.connect(endpoint.tls_name.clone(), tcp).await
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(err)) => {
                    tracing::debug!(%address, "federation connection failed: {err}");
                    last_error = FederationError::Connect {
                        destination: format!("{} ({address})", endpoint.host_header),
                        reason: err.to_string(),
                    };
                }
                Err(_) => {
                    last_error =
                        FederationError::Timeout(format!("{} ({address})", endpoint.host_header));
                }
            }
        }
        Err(last_error)
    }
}

/// The body of a `200` answer parsed as `T`; any other status is an error naming it.
pub(crate) fn json_body<T: DeserializeOwned>(
    server: &str,
    response: &Response,
) -> Result<T, FederationError> {
    if response.status != 200 {
        return Err(FederationError::Status {
            server: server.to_owned(),
            status: response.status,
        });
    }
    Ok(serde_json::from_slice(&response.body)?)
}

/// The system's roots (unreadable entries skipped) plus every certificate of `extra`, which
/// must be readable and hold at least one: a typo there should stop start-up, not silently
/// break federation.
fn load_roots(extra: Option<&Path>) -> Result<RootCertStore, FederationError> {
    let mut roots = RootCertStore::empty();
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let system = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
        .find(|path| path.is_file());
    match &system {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .map(|iter| iter.filter_map(Result::ok).collect::<Vec<_>>())
                .unwrap_or_default();
            let (added, _) = roots.add_parsable_certificates(certificates);
            tracing::debug!("{added} trusted roots from {}", path.display());
        }
        None => {
            tracing::warn!("no system CA bundle found; only federation.extra_ca_file is trusted")
        }
    }
    if let Some(path) = extra {
        let certificates: Vec<_> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|err| FederationError::TlsConfig(format!("{}: {err}", path.display())))?;
        if certificates.is_empty() {
            return Err(FederationError::TlsConfig(format!(
                "{}: no certificate found",
                path.display()
            )));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|err| FederationError::TlsConfig(format!("{}: {err}", path.display())))?;
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_extra_bundle_is_an_error() {
        let err = HttpsClient::new(Some(Path::new("/nonexistent/ca.pem")), false)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn an_extra_bundle_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "nothing here\n").expect("write");
        assert!(HttpsClient::new(Some(&path), false).is_err());
    }

    #[test]
    fn the_system_roots_load() {
        HttpsClient::new(None, false).expect("client");
    }
}
