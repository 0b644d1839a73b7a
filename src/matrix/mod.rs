//! The pure core of the Matrix protocol: rules that hold whatever server runs them, tested
//! with fixtures and the spec's own examples, doing no storage I/O.
//!
//! - [`canonical_json`]: the spec's canonical JSON, the form every signature and hash covers.
//! - [`canonical_bytes`]: the same canonical JSON written straight from a JSON text, for
//!   bodies too large to hold as a tree.
//! - [`crypto`]: signing keys, signing and verifying JSON, key rotation, password hashing.
//! - [`events`]: PDUs, room versions, content and reference hashes, event IDs, redaction,
//!   building and signing new events.
//! - [`time`]: the clock, as Matrix counts it (milliseconds since the Unix epoch).

pub(crate) mod canonical_bytes;
pub(crate) mod canonical_json;
pub mod crypto;
pub mod events;
pub mod time;
