//! The client-server API, one file per area of the spec.

pub mod versions;
