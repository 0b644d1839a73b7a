//! Users: what the server keeps about each of its own users and what they keep about
//! themselves.
//!
//! - [`Users`] (in `service`): the service the HTTP layer asks; it holds the database
//!   handle, the password hasher and the user-interactive auth sessions.
//! - [`accounts`]: accounts, sessions and devices, registration tokens, user-interactive
//!   authentication, password hashing with bounded concurrency.
//! - [`profile`]: display names and avatars (the room service copies them into member events),
//!   and the user directory's search over them.
//! - [`account_data`]: global and per-room account data, with its own stream.
//! - [`filter`]: stored filter definitions and how they choose events and fields.
//! - [`push_rules`]: push rules (kept as `m.push_rules` account data) and pushers.
//! - [`tags`]: room tags (kept as `m.tag` room account data).
//! - [`keys`]: devices' end-to-end encryption keys: identity, one-time and fallback keys.
//! - [`cross_signing`]: users' master, self-signing and user-signing keys and the
//!   signatures made with them; [`cross_signing::stage_keys_changed`] marks a change.
//! - [`dehydrated`]: dehydrated devices (MSC3814), devices without a token that receive
//!   to-device messages while the user is away.
//! - [`key_backup`]: server-side key backups (end-to-end encryption), with their own
//!   trees and write lock, reached through [`Users::key_backups`].
//! - [`openid`]: OpenID tokens for third parties, checked over federation.
//! - [`to_device`]: send-to-device messages: each device's bounded inbox, and the EDUs for
//!   other servers' devices.

pub(crate) mod account_data;
pub(crate) mod accounts;
pub(crate) mod cross_signing;
pub(crate) mod dehydrated;
mod e2ee_service;
pub(crate) mod filter;
pub(crate) mod key_backup;
pub(crate) mod keys;
pub(crate) mod openid;
pub(crate) mod profile;
pub(crate) mod push_rules;
mod service;
pub(crate) mod tags;
pub(crate) mod to_device;

pub(crate) use service::Users;
