//! The client-server API, one file per area of the spec.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod context;
pub(crate) mod device;
pub(crate) mod directory;
pub(crate) mod membership;
pub(crate) mod mutual_rooms;
pub(crate) mod not_offered;
pub(crate) mod openid;
pub(crate) mod push;
pub(crate) mod read_markers;
pub(crate) mod relations;
pub(crate) mod report;
pub(crate) mod room;
pub(crate) mod search;
pub(crate) mod session;
pub(crate) mod space;
pub(crate) mod summary;
pub(crate) mod sync;
pub(crate) mod tags;
pub(crate) mod upgrade;
pub(crate) mod user;
pub(crate) mod user_directory;
pub(crate) mod versions;
