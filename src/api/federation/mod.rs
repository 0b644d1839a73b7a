//! The server-server API, one file per area of the spec. Handlers that need to know which
//! server asks take [`origin::FederationOrigin`] or [`origin::SignedJson`].

pub mod directory;
pub mod events;
pub mod membership;
pub mod origin;
pub mod query;
pub mod send;
pub mod user;
pub mod version;
