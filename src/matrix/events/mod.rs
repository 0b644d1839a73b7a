//! Events of the room model, the pure core shared by the client API and federation: the PDU
//! type ([`Pdu`]), room-version rules, content hashes, event IDs (reference hashes) and
//! signatures. No I/O; tested with the spec's own vectors.
//!
//! ruma supplies the rules of each room version (redaction, event ID format, auth rules) and
//! the hashing; this module puts them together the way Hearth uses them, and signs with our
//! ed25519 key.

pub(crate) mod builder;
pub(crate) mod pdu;
pub mod signing;

pub(crate) use pdu::Pdu;

use ruma::RoomVersionId;
use ruma::room_version_rules::RoomVersionRules;

/// The room versions Hearth can take part in: every stable one, 1 to 12.
pub fn rules_for(version: &RoomVersionId) -> Option<RoomVersionRules> {
    version.rules()
}

/// The room version new rooms get unless asked for another.
pub(crate) const DEFAULT_ROOM_VERSION: &str = "12";

/// The largest PDU the spec allows, in bytes of canonical JSON.
pub(crate) const MAX_PDU_BYTES: usize = 65_536;
