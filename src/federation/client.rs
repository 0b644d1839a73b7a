//! The outbound HTTPS client. Certificates are checked against the system's roots plus the
//! optional `federation.extra_ca_file`; the name checked (and sent as SNI unless it is an IP
//! address) and the `Host` header (HTTP/2: `:authority`) come from discovery, as the spec's
//! steps say: the address dialled, the certificate's name and the `Host` header may all
//! differ. Every connection has a time limit and every answer a size limit, and every
//! address is checked against [`is_private`] right before connecting: this is the one place
//! all outbound connections pass (discovery, well-known redirects, keys, requests, URL
//! previews), so no caller can reach the owner's network by mistake. No redirect is ever
//! followed here: a caller that follows one (well-known) resolves and checks the new
//! address the same way.
//!
//! HTTP is hyper's (HTTP/1.1, and HTTP/2 when the peer offers it by ALPN); connections are
//! kept alive and reused through [`super::pool`], keyed by the checked address and the
//! certificate name. Bodies stream ([`BodyReader`]): small JSON answers are gathered in
//! memory ([`HttpsClient::send`]), large ones go to a writer ([`BodyReader::copy_to`], as
//! [`super::Transport::get_to_writer`] does).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::FederationError;
use super::pool::{Body, Key, Pool, Sender};
use super::private_address::is_private;
pub(crate) use super::response::{BodyReader, Head, RawResponse};

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

/// Whether a connection is encrypted: always for federation; URL previews may fetch plain
/// `http://` pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Https,
    Http,
}

/// The HTTPS client, shared by every outbound request.
pub(crate) struct HttpsClient {
    connector: TlsConnector,
    /// The addresses never connected to: [`is_private`], or none when
    /// `federation.allow_private_addresses` is set.
    refused: fn(IpAddr) -> bool,
    pool: Arc<Pool>,
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
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(HttpsClient {
            connector: TlsConnector::from(Arc::new(config)),
            refused: if allow_private_addresses {
                |_| false
            } else {
                is_private
            },
            pool: Arc::default(),
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
        let (head, body) = self.open(endpoint, request, Scheme::Https).await?;
        let body = body.read_to_end(&head, limit).await?;
        Ok(RawResponse {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// Sends `request` and returns the answer's head as soon as it came, with its body to
    /// read. A kept-alive connection to one of the endpoint's addresses is used if there is
    /// one (if it fails before answering, the request is sent once more on a new
    /// connection: every federation request may be repeated); otherwise the addresses are
    /// dialled in turn.
    pub(crate) async fn open(
        &self,
        endpoint: &Endpoint,
        request: &Request,
        scheme: Scheme,
    ) -> Result<(Head, BodyReader), FederationError> {
        let keys: Vec<Key> = endpoint
            .addresses
            .iter()
            .map(|address| Key {
                address: *address,
                tls_name: (scheme == Scheme::Https).then(|| endpoint.tls_name.clone()),
            })
            .collect();
        for key in &keys {
            if (self.refused)(key.address.ip()) {
                continue;
            }
            if let Some(sender) = self.pool.take(key) {
                match self.exchange(key, sender, endpoint, request).await {
                    Ok(answer) => return Ok(answer),
                    Err(err) => {
                        tracing::debug!(address = %key.address, "kept-alive connection failed ({err}); dialling anew");
                        break;
                    }
                }
            }
        }
        let (key, sender) = self.connect(endpoint, &keys).await?;
        self.exchange(&key, sender, endpoint, request).await
    }

    /// A TLS handshake alone with `address`, verifying its certificate for `tls_name` exactly
    /// as every request does, and the chain the peer presented (leaf first): what `hearth
    /// check` reports. Refused addresses are refused here too.
    pub(crate) async fn handshake(
        &self,
        address: SocketAddr,
        tls_name: &ServerName<'static>,
    ) -> std::io::Result<Vec<CertificateDer<'static>>> {
        if (self.refused)(address.ip()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "a private address, which federation.allow_private_addresses forbids",
            ));
        }
        let connect = async {
            let tcp = TcpStream::connect(address).await?;
            let tls = self.connector.connect(tls_name.clone(), tcp).await?;
            let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
            Ok(chain.iter().map(|der| der.clone().into_owned()).collect())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
    }

    /// The same client refusing the addresses `refused` says (tests: refuse one loopback
    /// address and not another).
    #[cfg(test)]
    pub(crate) fn refusing(self, refused: fn(IpAddr) -> bool) -> HttpsClient {
        HttpsClient { refused, ..self }
    }

    /// How many connections are kept alive (tests).
    #[cfg(test)]
    pub(crate) fn kept_alive(&self) -> usize {
        self.pool.len()
    }

    /// One request on one connection, up to the answer's head. A new HTTP/2 connection is
    /// put in the pool at once (it is shared); an HTTP/1.1 one goes back when its body was
    /// read.
    async fn exchange(
        &self,
        key: &Key,
        mut sender: Sender,
        endpoint: &Endpoint,
        request: &Request,
    ) -> Result<(Head, BodyReader), FederationError> {
        let outgoing = build_request(endpoint, request, &sender, key.tls_name.is_some())?;
        let response = sender
            .send(outgoing)
            .await
            .map_err(|err| FederationError::Http(err.to_string()))?;
        let (parts, body) = response.into_parts();
        let connection = match sender {
            Sender::Http1(_) => Some((self.pool.clone(), key.clone(), sender)),
            Sender::Http2(_) => {
                self.pool.put(key.clone(), sender);
                None
            }
        };
        Ok((Head::from_parts(&parts), BodyReader::new(body, connection)))
    }

    /// Tries each address in turn; the first that completes a verified handshake wins.
    /// Private addresses are skipped (unless allowed) before any packet is sent; the error
    /// then reads like any unreachable server's, so what a client sees does not tell a
    /// refused address from a closed port.
    async fn connect(
        &self,
        endpoint: &Endpoint,
        keys: &[Key],
    ) -> Result<(Key, Sender), FederationError> {
        let mut last_error = FederationError::NoAddress(endpoint.host_header.clone());
        for key in keys {
            let address = key.address;
            if (self.refused)(address.ip()) {
                tracing::info!(
                    %address,
                    destination = endpoint.host_header,
                    "refused to connect to a private address"
                );
                last_error = FederationError::PrivateAddress(endpoint.host_header.clone());
                continue;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, self.dial(key)).await {
                Ok(Ok(sender)) => return Ok((key.clone(), sender)),
                Ok(Err(err)) => {
                    tracing::debug!(%address, "outbound connection failed: {err}");
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

    /// TCP, then TLS for the key's name (HTTP/2 if the peer chose it), then HTTP.
    async fn dial(&self, key: &Key) -> std::io::Result<Sender> {
        let tcp = TcpStream::connect(key.address).await?;
        tcp.set_nodelay(true)?;
        let sender = match &key.tls_name {
            Some(name) => {
                let tls = self.connector.connect(name.clone(), tcp).await?;
                let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                Sender::handshake(tls, http2).await
            }
            None => Sender::handshake(tcp, false).await,
        };
        sender.map_err(std::io::Error::other)
    }
}

/// The request as hyper sends it: HTTP/1.1 with the target in origin form and a `Host`
/// header; HTTP/2 with the same authority in the URI (`:authority`), as RFC 9113 asks.
fn build_request(
    endpoint: &Endpoint,
    request: &Request,
    sender: &Sender,
    tls: bool,
) -> Result<hyper::Request<Body>, FederationError> {
    let invalid =
        |err: &dyn std::fmt::Display| FederationError::Http(format!("bad request: {err}"));
    let method = hyper::Method::from_bytes(request.method.as_bytes()).map_err(|e| invalid(&e))?;
    let mut builder = hyper::Request::builder().method(method);
    builder = if sender.is_http2() {
        let scheme = if tls { "https" } else { "http" };
        builder.uri(format!(
            "{scheme}://{}{}",
            endpoint.host_header, request.path
        ))
    } else {
        let host = HeaderValue::from_str(&endpoint.host_header).map_err(|e| invalid(&e))?;
        builder.uri(request.path.as_str()).header(HOST, host)
    };
    builder = builder.header(
        USER_AGENT,
        format!("{}/{}", crate::SERVER_SOFTWARE, crate::VERSION),
    );
    if let Some(authorization) = &request.authorization {
        let value = HeaderValue::from_str(authorization).map_err(|e| invalid(&e))?;
        builder = builder.header(AUTHORIZATION, value);
    }
    let body = match &request.body {
        Some(body) => {
            builder = builder.header(CONTENT_TYPE, "application/json");
            Full::new(Bytes::copy_from_slice(body))
        }
        None => Full::new(Bytes::new()),
    };
    builder.body(body).map_err(|e| invalid(&e))
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
