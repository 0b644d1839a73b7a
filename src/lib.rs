//! Hearth: a Matrix homeserver for one person or a family, made for a Raspberry Pi.
//!
//! # Layout
//! The folders are the layers. A request flows one way, and no module imports one above it
//! (`../shared/tools/layers` checks this, with the other facts below):
//!
//! ```text
//!  server/   wiring: listeners, TLS, logging, systemd, start-up errors, the CLI
//!  api/      HTTP: thin handlers (parse, call one service, shape the answer); api::app
//!            declares `Services`, the only "app state" (assembled by server::assemble)
//!  media/  federation/  sync/  directory/  rooms/  users/
//!            services, each using only those after it: the rules of the domain, no HTTP
//!  matrix/   the pure core: canonical JSON, signing, events, the clock
//!  storage/  the only code that knows sled: typed trees, records, snapshots, the stream
//! ```
//!
//! - [`server`]: `hearth serve` from a validated config to a running server ([`server::run`]
//!   takes bound listeners and a shutdown future); [`server::cli`] and [`server::init`]: the
//!   command line, which reaches a running server through `server::control` (a private Unix
//!   socket in the data directory); `server::backup`: `hearth backup` and `hearth restore`;
//!   [`server::tls`], [`server::logging`], [`server::systemd`];
//!   [`server::StartupError`], printed as a "caused by" chain.
//! - [`config`]: TOML → validated [`config::Config`]; errors name the key and the line.
//! - [`error`]: the request [`error::Error`] (Matrix `errcode` + HTTP status, decided in one
//!   place).
//! - [`api`]: HTTP handlers, one file per area of the spec, and [`api::app::Services`];
//!   `api::admin` answers Synapse's administration API (`/_synapse/admin`) for existing tools.
//! - [`media`]: the content repository ([`media::Media`]): uploads streamed to files named
//!   by their SHA-256, asynchronous uploads, thumbnails, other servers' media fetched over
//!   federation into a bounded cache, what `hearth media` does, and URL previews
//!   ([`media::preview`], off by default).
//! - [`federation`]: other servers: discovery, the signed [`federation::Transport`], keys,
//!   inbound transactions and gaps, joins (joining and resident sides), invites, backfill,
//!   the outbound queue, and what we serve; [`federation::Federation`] is the service.
//! - [`sync`]: `/sync` ([`sync::SyncService`], long-polled on the stream), simplified sliding
//!   sync ([`sync::sliding`], MSC4186), receipts, typing and presence.
//! - [`directory`]: room aliases, the public room directory, room summaries, spaces.
//! - [`rooms`]: the room service ([`rooms::Rooms`]): appending authorized events (local and
//!   remote alike), current state and its history, timelines as a reader sees them,
//!   memberships, push-rule evaluation and unread counts, creating and upgrading rooms,
//!   restricted joins, state resolution where the graph forks (version 1 is ours:
//!   [`rooms::state_res_v1`]), and `/search` over room events ([`rooms::search`]: matching,
//!   ranking, pages, context, groups).
//! - [`users`]: accounts, sessions and devices, registration tokens, user-interactive
//!   authentication, profiles, account data (room tags among it), filters, OpenID tokens,
//!   devices' end-to-end encryption keys, send-to-device inboxes.
//! - [`matrix`]: canonical JSON, signing keys and signatures, password hashing, PDUs and room
//!   versions, hashes, event IDs, redaction, the clock ([`matrix::time`]).
//! - [`storage`]: typed sled trees with documented key layouts, the records stored in them,
//!   state snapshots, the global stream ([`storage::stream`]), atomic files, migrations, the
//!   data-directory lock.
//!
//! # Who writes what
//! Each tree has one writing module; others ask it. Events, state, memberships, timelines,
//! relations and notifications: [`rooms`] (through [`rooms::Rooms`], which orders stream
//! positions). Accounts, sessions, devices, registration tokens, profiles, account data,
//! filters, OpenID tokens, push rules and pushers, to-device inboxes, device and
//! cross-signing keys, dehydrated devices, the device-list stream
//! ([`users::device_lists`]): [`users`] (the
//! outbound follower removes the to-device messages for other servers it has queued). Receipts: [`sync::receipts`].
//! Aliases and published rooms: [`directory`]. Media records and files: [`media`]. Other
//! servers' keys, outbound queues, other servers' users' device lists
//! ([`federation::device_lists`]): [`federation`]. Stream positions and the stream's room
//! index: [`storage::stream`].
//!
//! # How a request flows
//! Every request first passes `api::middleware` (at most a few requests in flight per client
//! address), and its body is read only by `api::json` (a cap per endpoint, a time limit, and
//! for strangers the server-wide budget of unauthenticated bytes in `api::strangers`); a
//! signed federation request has its origin's key in hand before its body is read.
//! A client sends a message: [`api::auth`] turns the access token into a user and device; the
//! handler calls [`rooms::Rooms::append`], which builds and authorizes the event, stages its
//! rows in one batch, takes a stream position, flushes and wakes `/sync`. Another server sends
//! a transaction: `api::federation::origin` checks its `X-Matrix` signature; each PDU goes
//! through [`federation::inbound`] (format, signatures, hashes, gaps) to
//! [`rooms::Rooms::store_remote`] (auth against the state before it and the current state);
//! each EDU to [`federation::edu`]. [`federation::outbound`] follows the stream and sends our
//! events to the rooms' other servers.

// An owned argument the function never consumes is a copy every caller pays for. (Handlers
// take actix extractors by value, which the lint knows and allows.)
#![warn(clippy::needless_pass_by_value)]

pub mod api;
pub mod config;
pub mod directory;
pub mod error;
pub mod federation;
pub mod matrix;
pub mod media;
pub mod rooms;
pub mod server;
pub mod storage;
pub mod sync;
pub mod users;

/// The name and version this build reports to clients and other servers.
pub const SERVER_SOFTWARE: &str = "Hearth";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
