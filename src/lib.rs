//! Hearth: a Matrix homeserver for one person or a family, made for a Raspberry Pi.
//!
//! # Layout
//! A request flows one way: `api` (thin actix handlers) → services → `storage` (the only module
//! that knows sled). The pure core (`canonical_json`, `crypto`) does no I/O.
//!
//! - [`cli`]: the clap command line (`serve`, `init`, `check-config`, `user …`, `version`).
//! - [`config`]: TOML → validated [`config::Config`]; errors name the key and the line.
//! - [`error`]: the request [`error::Error`] (Matrix `errcode` + HTTP status, decided in one
//!   place) and [`error::StartupError`] for everything that stops the server from starting.
//! - [`server`]: binds listeners, builds the actix app, runs until a shutdown future resolves.
//! - [`tls`]: loads the PEM certificate and key, and swaps them on `SIGHUP`.
//! - [`api`]: HTTP handlers, one file per area of the spec.
//! - [`accounts`]: local user accounts, sessions and devices, registration tokens,
//!   user-interactive authentication.
//! - [`canonical_json`], [`crypto`]: canonical JSON, signing keys, signing and verifying JSON,
//!   password hashing.
//! - [`federation`]: talking to other servers: discovery, the outbound HTTPS client,
//!   `X-Matrix` signatures, other servers' keys.
//! - [`files`]: writing files atomically (keys, config), never half-written.
//! - [`events`]: the room model's pure core: PDUs, room versions, hashes, event IDs,
//!   event signatures.
//! - [`storage`]: typed sled trees, key codecs, schema migrations, the data-directory lock.
//! - [`ephemeral`], [`receipts`]: typing and presence (in memory), who read what (stored).
//! - [`filter`]: filter definitions (which events, which fields) for `/sync` and friends.
//! - [`sync`]: `/sync`, everything new for a user since a stream position, long-polled.
//! - [`state`]: [`state::AppState`], everything a handler may reach, passed as `web::Data`.
//! - [`account_data`], [`profile`]: what users keep on the server about themselves.
//! - [`directory`]: room aliases, the public room directory, and what non-members may
//!   see of a room.
//! - [`spaces`]: the space hierarchy, walked from `m.space.child` events.
//! - [`rooms`]: rooms: appending authorized events, current state and its history,
//!   timelines, memberships, creating rooms, who may join restricted rooms, events from
//!   other servers and state resolution where the graph forks (version 1 is ours:
//!   `rooms::state_res_v1`).
//! - [`search`]: `/search` over room events: matching, ranking, pages, context, groups;
//!   reads the timelines (no index), a bounded number of events per request.
//! - [`notifications`]: push rules applied to each stored event: unread counts,
//!   `/notifications`, read positions.
//! - [`ratelimit`]: per-address token buckets for login and registration.
//! - [`memory`]: handing freed memory back to the system after large bursts.
//! - [`logging`], [`notify`]: tracing set-up and systemd readiness notification.

pub mod api;
pub mod config;
pub mod directory;
pub mod error;
pub mod federation;
pub mod matrix;
pub mod rooms;
pub mod search;
pub mod server;
pub mod storage;
pub mod sync;
pub mod users;

/// The name and version this build reports to clients and other servers.
pub const SERVER_SOFTWARE: &str = "Hearth";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
