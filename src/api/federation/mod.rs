//! The server-server API, one file per area of the spec. Handlers that need to know which
//! server asks take [`origin::FederationOrigin`] or [`origin::SignedJson`].

pub(crate) mod directory;
pub(crate) mod events;
pub(crate) mod membership;
pub(crate) mod origin;
pub(crate) mod query;
pub(crate) mod send;
pub(crate) mod user;
pub(crate) mod version;
