//! The client-server API, one file per area of the spec.

pub mod account;
pub mod admin;
pub mod context;
pub mod device;
pub mod directory;
pub mod membership;
pub mod mutual_rooms;
pub mod not_offered;
pub mod openid;
pub mod push;
pub mod read_markers;
pub mod relations;
pub mod report;
pub mod room;
pub mod search;
pub mod session;
pub mod space;
pub mod summary;
pub mod sync;
pub mod tags;
pub mod upgrade;
pub mod user;
pub mod user_directory;
pub mod versions;
