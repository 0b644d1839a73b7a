//! Federation: talking to other Matrix servers (spec: server-server API).
//!
//! # Layout
//! - [`server_name`]: a server name split into host and port, as discovery needs it.
//! - [`discovery`]: server name → where to connect and which name to expect, following the
//!   spec's numbered steps, with [`well_known`] delegation and its caching rules, over
//!   [`dns`] (SRV records, addresses).
//! - [`client`]: the outbound HTTPS client (system roots plus an optional extra CA bundle,
//!   SNI and `Host` per the spec, timeouts, response size limits), on hyper, with kept-alive
//!   connections in [`pool`] and bodies streamed through [`response`].
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
//! - [`push`]: notifications for our users' phones, queued per pusher and posted to their
//!   push gateways (remote servers too, reached through the same client).
//! - [`edu`]: what other servers' EDUs (typing, receipts, presence, E2EE) do here.
//! - [`inbound`]: events from other servers' transactions, checked first (`pdu_checks`:
//!   format, signatures, content hash, shared by every way an event arrives) before the
//!   room service authorizes and stores them; gaps filled with `get_missing_events`.
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
//! - [`device_keys`]: remote users' device keys queried and one-time keys claimed for our
//!   users, every server at once within the client's timeout.
//!
//! - [`self_check`]: `hearth check`, our own name resolved, connected to and its keys and
//!   client discovery checked as other servers and clients will.
//! - [`figures`]: what the metrics show of federation (inbound counts, outbound queues).
//! - [`transport`]: signed requests to other servers ([`Transport`]): what every part above
//!   sends through.
//!
//! [`Federation`] is the service: the handles its parts work with, assembled once.

pub(crate) mod acl;
pub mod auth;
pub(crate) mod backfill;
pub(crate) mod cache;
pub(crate) mod client;
pub(crate) mod device_keys;
pub(crate) mod device_lists;
pub(crate) mod directory;
pub(crate) mod discovery;
pub(crate) mod dns;
pub(crate) mod edu;
mod error;
pub(crate) mod figures;
pub(crate) mod gap_state;
pub(crate) mod inbound;
pub(crate) mod invite;
pub(crate) mod join;
mod join_answer;
mod join_graph;
mod join_stream;
pub(crate) mod keys;
pub(crate) mod outbound;
mod pdu_checks;
pub(crate) mod pool;
pub(crate) mod private_address;
pub(crate) mod push;
pub(crate) mod queries;
pub(crate) mod resident;
pub(crate) mod response;
pub(crate) mod restricted;
pub(crate) mod room_state;
pub(crate) mod self_check;
pub(crate) mod serve;
pub(crate) mod server_name;
pub(crate) mod streamed;
pub(crate) mod transport;
pub(crate) mod users;
pub(crate) mod well_known;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod keys_tests;
#[cfg(test)]
mod test_state;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub(crate) use error::FederationError;
pub(crate) use transport::Transport;

use crate::config::Config;
use crate::matrix::crypto::SigningKey;
use crate::rooms::Rooms;
use crate::storage::Storage;
use crate::sync::ephemeral::Ephemeral;

/// The federation service: what its parts work with, assembled once at start-up. It holds
/// the database, the room service (remote events are appended through it), the transport for
/// signed requests, our signing key, the config, typing and presence (EDUs), and the flag
/// that tells background senders the server is stopping.
pub(crate) struct Federation {
    pub(crate) storage: Arc<Storage>,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) transport: Transport,
    pub(crate) signing_key: SigningKey,
    pub(crate) config: Arc<Config>,
    pub(crate) ephemeral: Arc<Ephemeral>,
    pub(crate) stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// The inbound work in progress per origin (see [`inbound::OriginWork`]).
    pub(crate) inbound: inbound::OriginWork,
    /// Device-list resyncs in progress (see [`device_lists::Resyncs`]).
    pub(crate) device_lists: device_lists::Resyncs,
    /// Inbound transactions and PDUs, counted for the metrics.
    pub(crate) inbound_counts: figures::InboundCounts,
}

/// The largest answer read from another server unless a caller asks for more.
pub const DEFAULT_RESPONSE_LIMIT: usize = 4 * 1024 * 1024;
