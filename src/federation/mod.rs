//! Federation: talking to other Matrix servers (spec: server-server API).
//!
//! # Layout
//! - [`server_name`]: a server name split into host and port, as discovery needs it.
//! - [`discovery`]: server name → where to connect and which name to expect, following the
//!   spec's numbered steps, with [`well_known`] delegation and its caching rules.
//! - [`client`]: the outbound HTTPS client (system roots plus an optional extra CA bundle,
//!   SNI and `Host` per the spec, timeouts, response size limits), over [`http1`].
//! - [`auth`]: `X-Matrix` request signatures, made for outgoing and checked on incoming
//!   requests.
//! - [`keys`]: other servers' signing keys, fetched directly or through notaries, verified and
//!   cached in storage; and the answers we give as a notary.
//! - [`cache`]: the small bounded expiring map the caches above share.
//! - [`acl`]: `m.room.server_acl` matching: whether a room lets a server take part.
//! - [`serve`]: our rooms' events, state, auth chains and history, served to other servers
//!   as far as ACLs and history visibility let them see.
//! - [`directory`], [`users`]: what other servers may ask about our aliases, published
//!   rooms, spaces, OpenID tokens, devices and keys.
//! - [`outbound`]: the durable per-server queue and the transactions that carry our
//!   users' events and EDUs to other servers, with backoff.
//! - [`edu`]: what other servers' EDUs (typing, receipts, presence, E2EE) do here.
//! - [`inbound`]: the first checks on a PDU from another server (format, signatures,
//!   content hash) before the room service authorizes and stores it; gaps filled with
//!   `get_missing_events`.
//! - [`gap_state`]: the state at a gap `get_missing_events` cannot close, fetched from the
//!   sender (`/state_ids`, `/event`, `/state`), checked whole, kept as outliers.
//! - [`join`]: joining rooms held elsewhere and letting other servers' users join, leave
//!   and knock on ours (`make_*`/`send_*`); [`join_answer`]: `send_join`'s answer, large
//!   ones read event by event, checked one by one and as a whole, stored or refused whole.
//! - [`room_state`]: whether a room state another server gives us whole (a `send_join`
//!   answer, the state bridging a gap) is coherent: one room, one event per key, its create
//!   event, every event authorized by its own auth events, all given.
//! - [`invite`]: invites across servers, co-signed, with the stripped state kept for rooms
//!   we do not hold.
//! - [`backfill`]: history from before a remote join, fetched as a client pages back.
//! - [`queries`]: remote profiles, aliases and public room directories, for our users.
//!
//! [`Federation`] ties them together: it is what the rest of Hearth holds to make a signed
//! request to another server.

pub mod acl;
pub mod auth;
pub mod backfill;
pub mod cache;
pub mod client;
pub mod directory;
pub mod discovery;
pub mod edu;
mod error;
pub mod gap_state;
pub mod http1;
pub mod inbound;
pub mod invite;
pub mod join;
mod join_answer;
pub mod keys;
pub mod outbound;
pub mod queries;
pub mod restricted;
pub mod room_state;
pub mod serve;
pub mod server_name;
pub mod users;
pub mod well_known;

#[cfg(test)]
mod test_state;
#[cfg(test)]
mod tests;

use std::time::Duration;

use ruma::OwnedServerName;
use serde_json::Value;

pub use error::FederationError;

use crate::config::FederationConfig;
use crate::crypto::SigningKey;
use client::{HttpsClient, Request, Response};
use discovery::Resolver;

/// Everything needed to make requests to other servers, built once at start-up.
pub struct Federation {
    /// Our server name: the `origin` of what we sign.
    pub origin: OwnedServerName,
    /// A copy of our signing key for `X-Matrix` headers and notary signatures.
    signing_key: SigningKey,
    pub resolver: Resolver,
    pub client: HttpsClient,
    /// Servers asked for keys a server cannot give us itself.
    pub notaries: Vec<String>,
    pub keys: keys::KeyCache,
    /// Wakes the outbound senders: new work, or a server heard from again.
    pub outbound: std::sync::Arc<outbound::Wake>,
}

/// How long a whole request to another server may take before we give up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read from another server unless a caller asks for more.
pub const DEFAULT_RESPONSE_LIMIT: usize = 4 * 1024 * 1024;

impl Federation {
    /// Builds the client (reading the system's and the configured CA certificates) and the
    /// resolver (reading the system's DNS configuration).
    pub fn new(
        origin: OwnedServerName,
        signing_key: SigningKey,
        config: &FederationConfig,
    ) -> Result<Federation, FederationError> {
        let client = HttpsClient::new(config.extra_ca_file.as_deref())?;
        Ok(Federation {
            origin,
            signing_key,
            resolver: Resolver::from_system(),
            client,
            notaries: config.trusted_key_servers.clone(),
            keys: keys::KeyCache::default(),
            outbound: Default::default(),
        })
    }

    /// Our signing key, for notary signatures.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// Sends a request to `destination` signed with `X-Matrix`, and returns the answer
    /// whatever its status. `path` is the request target from `/_matrix/...` on, with any
    /// query string, exactly as it goes on the wire: that is what the signature covers.
    pub async fn signed_request(
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
    pub async fn unsigned_request(
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
}
