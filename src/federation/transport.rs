//! Signed requests to other servers: [`Transport`] holds our name and key, the resolver, the
//! HTTPS client and the key cache, and sends requests signed with `X-Matrix` (or unsigned,
//! for key queries) with a timeout and a size limit on the answer. The federation services
//! (joins, invites, backfill, gaps, queries, the outbound sender) all send through it.

use std::time::Duration;

use ruma::OwnedServerName;
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::Value;

use super::cache::KeyCache;
use tokio::io::AsyncWrite;

use super::client::{HttpsClient, Request, Response, Scheme};
use super::discovery::Resolver;
use super::response::{MAX_ERROR_BODY, StreamedResponse};
use super::{FederationError, auth, outbound};
use crate::config::FederationConfig;
use crate::error::{Error, ErrorKind};
use crate::matrix::crypto::SigningKey;

/// Everything needed to make requests to other servers, built once at start-up.
pub(crate) struct Transport {
    /// Our server name: the `origin` of what we sign.
    pub origin: OwnedServerName,
    /// A copy of our signing key for `X-Matrix` headers and notary signatures.
    pub(super) signing_key: SigningKey,
    pub(crate) resolver: Resolver,
    pub(crate) client: HttpsClient,
    /// Servers asked for keys a server cannot give us itself.
    pub(crate) notaries: Vec<String>,
    pub(crate) keys: KeyCache,
    /// Wakes the outbound senders: new work, or a server heard from again.
    pub(crate) outbound: std::sync::Arc<outbound::Wake>,
}

/// How much of another server's `errcode` and `error` is passed on to a client.
const MAX_RELAYED_CHARS: usize = 200;

/// How long a streamed answer (media, up to `media.max_upload_size`) may take in all.
const STREAM_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a whole request to another server may take before we give up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Transport {
    /// Builds the client (reading the system's and the configured CA certificates) and the
    /// resolver (reading the system's DNS configuration).
    pub(crate) fn new(
        origin: OwnedServerName,
        signing_key: SigningKey,
        config: &FederationConfig,
    ) -> Result<Transport, FederationError> {
        let client = HttpsClient::new(
            config.extra_ca_file.as_deref(),
            config.allow_private_addresses,
        )?;
        Ok(Transport {
            origin,
            signing_key,
            resolver: Resolver::from_system(),
            client,
            notaries: config.trusted_key_servers.clone(),
            keys: KeyCache::default(),
            outbound: Default::default(),
        })
    }

    /// Our signing key, for notary signatures.
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// Sends a request to `destination` signed with `X-Matrix`, and returns the answer
    /// whatever its status. `path` is the request target from `/_matrix/...` on, with any
    /// query string, exactly as it goes on the wire: that is what the signature covers.
    pub(crate) async fn signed_request(
        &self,
        destination: &str,
        method: &'static str,
        path: &str,
        content: Option<&Value>,
        response_limit: usize,
    ) -> Result<Response, FederationError> {
        let authorization = auth::authorization_header(
            &auth::RequestToSign {
                method,
                uri: path,
                origin: self.origin.as_str(),
                destination,
                content,
            },
            &self.signing_key,
        )?;
        let body = content.map(serde_json::to_vec).transpose()?;
        let request = Request {
            method,
            path: path.to_owned(),
            body,
            authorization: Some(authorization),
        };
        self.send(destination, &request, response_limit).await
    }

    /// Sends an unsigned request (key queries need no signature) to `destination`.
    pub(crate) async fn unsigned_request(
        &self,
        destination: &str,
        method: &'static str,
        path: &str,
        response_limit: usize,
    ) -> Result<Response, FederationError> {
        let request = Request {
            method,
            path: path.to_owned(),
            body: None,
            authorization: None,
        };
        self.send(destination, &request, response_limit).await
    }

    async fn send(
        &self,
        destination: &str,
        request: &Request,
        response_limit: usize,
    ) -> Result<Response, FederationError> {
        let work = async {
            let endpoint = self.resolver.resolve(&self.client, destination).await?;
            self.client.send(&endpoint, request, response_limit).await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| FederationError::Timeout(destination.to_owned()))?
    }

    /// `GET path` from `destination` (signed with `X-Matrix` when `signed`), with a `200`
    /// answer's body streamed into `writer` (at most `cap` bytes; past that an error, and
    /// what was written is the caller's to discard) instead of memory: media go from the
    /// other server to a file. Another status's body (an error) comes back in the answer,
    /// its first [`MAX_ERROR_BODY`] bytes. The wait for the head is bounded as for every
    /// request; the body may take up to [`STREAM_TIMEOUT`] in all, each pause bounded.
    pub(crate) async fn get_to_writer<W: AsyncWrite + Unpin>(
        &self,
        destination: &str,
        path: &str,
        signed: bool,
        writer: &mut W,
        cap: u64,
    ) -> Result<StreamedResponse, FederationError> {
        let authorization = if signed {
            Some(auth::authorization_header(
                &auth::RequestToSign {
                    method: "GET",
                    uri: path,
                    origin: self.origin.as_str(),
                    destination,
                    content: None,
                },
                &self.signing_key,
            )?)
        } else {
            None
        };
        let request = Request {
            method: "GET",
            path: path.to_owned(),
            body: None,
            authorization,
        };
        self.stream_to_writer(destination, &request, writer, (cap, STREAM_TIMEOUT))
            .await
    }

    /// A signed `PUT path` with `content` to `destination` whose `200` answer's body is
    /// streamed into `writer` (at most `cap` bytes, within `timeout` in all): `send_join`'s
    /// answer for a large room, hundreds of MB, goes to a file, not to memory. Another status
    /// is an error, as [`Transport::request_raw`] makes it.
    pub(crate) async fn put_to_writer<W: AsyncWrite + Unpin>(
        &self,
        destination: &str,
        path: &str,
        content: &Value,
        writer: &mut W,
        (cap, timeout): (u64, Duration),
    ) -> Result<(), Error> {
        let authorization = auth::authorization_header(
            &auth::RequestToSign {
                method: "PUT",
                uri: path,
                origin: self.origin.as_str(),
                destination,
                content: Some(content),
            },
            &self.signing_key,
        )
        .map_err(|err| unreachable(destination, &err))?;
        let request = Request {
            method: "PUT",
            path: path.to_owned(),
            body: Some(serde_json::to_vec(content).map_err(Error::internal)?),
            authorization: Some(authorization),
        };
        let answer = self
            .stream_to_writer(destination, &request, writer, (cap, timeout))
            .await
            .map_err(|err| match err {
                // The other server was reached, and its answer is what is refused.
                FederationError::TooLarge(_) | FederationError::Timeout(_) => Error::new(
                    ErrorKind::RemoteUnavailable,
                    format!("The answer of {destination} is refused: {err}"),
                ),
                err => unreachable(destination, &err),
            })?;
        if answer.status != 200 {
            return Err(refusal(destination, answer.status, &answer.error_body));
        }
        Ok(())
    }

    /// Sends `request`; a `200` answer's body goes into `writer`, another's first
    /// [`MAX_ERROR_BODY`] bytes come back in the answer.
    async fn stream_to_writer<W: AsyncWrite + Unpin>(
        &self,
        destination: &str,
        request: &Request,
        writer: &mut W,
        (cap, timeout): (u64, Duration),
    ) -> Result<StreamedResponse, FederationError> {
        let opening = async {
            let endpoint = self.resolver.resolve(&self.client, destination).await?;
            self.client.open(&endpoint, request, Scheme::Https).await
        };
        let (head, body) = tokio::time::timeout(REQUEST_TIMEOUT, opening)
            .await
            .map_err(|_| FederationError::Timeout(destination.to_owned()))??;
        let limit = usize::try_from(cap).unwrap_or(usize::MAX);
        let transfer = async {
            if head.status == 200 {
                body.copy_to(&head, writer, limit).await?;
                Ok(Vec::new())
            } else {
                body.read_prefix(MAX_ERROR_BODY).await
            }
        };
        let error_body = tokio::time::timeout(timeout, transfer)
            .await
            .map_err(|_| FederationError::Timeout(destination.to_owned()))??;
        Ok(StreamedResponse {
            status: head.status,
            headers: head.headers,
            error_body,
        })
    }

    /// A signed request whose answer must have status 200 (at most `limit` bytes); its body as
    /// it came.
    pub(crate) async fn request_raw(
        &self,
        server: &str,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
        limit: usize,
    ) -> Result<Vec<u8>, Error> {
        let response = self
            .signed_request(server, method, path, body, limit)
            .await
            .map_err(|err| unreachable(server, &err))?;
        if response.status != 200 {
            return Err(refusal(server, response.status, &response.body));
        }
        Ok(response.body)
    }

    /// A signed request whose answer must be JSON with status 200.
    pub(crate) async fn request_json(
        &self,
        server: &str,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let bytes = self
            .request_raw(server, method, path, body, ANSWER_LIMIT)
            .await?;
        serde_json::from_slice(&bytes).map_err(|err| {
            tracing::info!(server, path, "the answer is not JSON: {err}");
            Error::new(
                ErrorKind::RemoteUnavailable,
                format!("{server} sent an invalid answer"),
            )
        })
    }
}

/// The error for another server's answer of `status` (not 200) with `body`: its own
/// `errcode` and words, cut short (its answer may weigh megabytes, and our client should get
/// an error, not a copy of it). A restricted room's refusals are passed on as they are, for
/// the client to explain; the other server failing is not a refusal.
fn refusal(server: &str, status: u16, body: &[u8]) -> Error {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let short = |text: Option<&str>, default: &str| -> String {
        text.unwrap_or(default)
            .chars()
            .take(MAX_RELAYED_CHARS)
            .collect()
    };
    let errcode = short(value["errcode"].as_str(), "M_UNKNOWN");
    let message = short(value["error"].as_str(), "");
    let kind = match errcode.as_str() {
        "M_UNABLE_TO_AUTHORISE_JOIN" => ErrorKind::UnableToAuthoriseJoin,
        "M_UNABLE_TO_GRANT_JOIN" => ErrorKind::UnableToGrantJoin,
        _ if status >= 500 => ErrorKind::RemoteUnavailable,
        _ => ErrorKind::Forbidden,
    };
    Error::new(
        kind,
        format!("{server} answered {status}: {errcode} {message}"),
    )
}

/// What a client is told when `server` could not be reached: `502 M_UNKNOWN` naming the
/// server and nothing else. The detail (OS errors, TLS alerts, addresses, a refused private
/// address) is logged: telling it to the client would let any user map which hosts and
/// ports around us answer, and a refused private address must look like a dead server.
pub(crate) fn unreachable(server: &str, err: &FederationError) -> Error {
    tracing::info!(server, "federation request failed: {err}");
    Error::new(
        ErrorKind::RemoteUnavailable,
        format!("Could not reach {server}"),
    )
}

pub(crate) fn to_object(value: &Value) -> Option<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value.clone()) {
        Ok(CanonicalJsonValue::Object(object)) => Some(object),
        _ => None,
    }
}

/// The most an answer other than `send_join`'s may weigh (a page of 100 events of at most
/// 64 KiB each fits).
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;

/// Percent-encodes a path segment (room and user IDs hold `!`, `@`, `:`, `$`).
pub(crate) fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
