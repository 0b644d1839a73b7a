//! Hashing and signing events (spec: server-server API, "Signing Events"; appendices,
//! "Signing Events"): the content hash covers the whole event, the signature covers the
//! event as redacted by the room version's rules, and (from room version 3) the event ID is
//! the reference hash of the redacted event.

use ruma::canonical_json::redact;
use ruma::room_version_rules::{EventIdFormatVersion, RoomVersionRules};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId};

use crate::matrix::crypto::{SigningKey, sign_json};

/// Why an event could not be hashed, signed or named.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the event is not valid canonical JSON: {0}")]
    Json(String),
    #[error("the event is larger than 65536 bytes")]
    TooLarge,
}

fn json_error(err: impl std::fmt::Display) -> SigningError {
    let text = err.to_string();
    if text.contains("too large") || text.contains("PduTooLarge") {
        SigningError::TooLarge
    } else {
        SigningError::Json(text)
    }
}

/// Adds `hashes.sha256` (the content hash) and our signature to an event about to be sent.
pub fn hash_and_sign(
    event: &mut CanonicalJsonObject,
    rules: &RoomVersionRules,
    server_name: &str,
    key: &SigningKey,
) -> Result<(), SigningError> {
    ruma::signatures::add_content_hash_to_event(event).map_err(json_error)?;
    add_signature(event, rules, server_name, key)
}

/// Adds our signature to an event another server made and hashed, keeping theirs: how a
/// restricted room's resident server vouches for a join (`join_authorised_via_users_server`).
/// The content hash is left as it is: the event must stay the one its sender signed.
pub(crate) fn add_signature(
    event: &mut CanonicalJsonObject,
    rules: &RoomVersionRules,
    server_name: &str,
    key: &SigningKey,
) -> Result<(), SigningError> {
    let redacted = redact(event.clone(), &rules.redaction, None).map_err(json_error)?;
    let mut redacted = match serde_json::to_value(CanonicalJsonValue::Object(redacted)) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(_) => return Err(SigningError::Json("not an object".to_owned())),
        Err(err) => return Err(json_error(err)),
    };
    sign_json(&mut redacted, server_name, key).map_err(json_error)?;
    let signatures = redacted.remove("signatures").unwrap_or_default();
    let signatures = CanonicalJsonValue::try_from(signatures).map_err(json_error)?;
    event.insert("signatures".to_owned(), signatures);
    Ok(())
}

/// The ID of an event of a room version whose IDs are reference hashes (3 and later):
/// `$` and the hash, base64 as the version says. Versions 1 and 2 carry their ID inside the
/// event; for them this is `None`.
pub fn event_id_for(
    event: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<Option<OwnedEventId>, SigningError> {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        return Ok(None);
    }
    let hash = ruma::signatures::reference_hash(event, rules).map_err(json_error)?;
    OwnedEventId::try_from(format!("${hash}"))
        .map(Some)
        .map_err(|err| SigningError::Json(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::crypto::{KeyId, decode_base64};
    use serde_json::json;

    fn spec_key() -> SigningKey {
        let seed = decode_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").expect("base64");
        SigningKey::from_seed(
            KeyId::ed25519("1").expect("id"),
            seed.try_into().expect("32 bytes"),
        )
    }

    fn object(value: serde_json::Value) -> CanonicalJsonObject {
        match CanonicalJsonValue::try_from(value).expect("canonical") {
            CanonicalJsonValue::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    fn field(event: &CanonicalJsonObject, path: &[&str]) -> String {
        let mut value = &CanonicalJsonValue::Object(event.clone());
        let mut holder;
        for part in path {
            holder = value
                .as_object()
                .and_then(|o| o.get(*part))
                .expect(part)
                .clone();
            value = &holder;
            if let Some(text) = value.as_str() {
                return text.to_owned();
            }
        }
        panic!("no string at {path:?}")
    }

    /// Appendices, "Signing Events": the minimal event.
    #[test]
    fn spec_vector_minimal_event() {
        let mut event = object(json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
            "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
            "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
            "unsigned": { "age_ts": 1000000 }
        }));
        hash_and_sign(&mut event, &RoomVersionRules::V1, "domain", &spec_key()).expect("sign");
        assert_eq!(
            field(&event, &["hashes", "sha256"]),
            "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
        );
        assert_eq!(
            field(&event, &["signatures", "domain", "ed25519:1"]),
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        );
    }

    /// Appendices, "Signing Events": the event with redactable content.
    #[test]
    fn spec_vector_redactable_event() {
        let mut event = object(json!({
            "content": { "body": "Here is the message content" }, "event_id": "$0:domain",
            "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
            "room_id": "!r:domain", "sender": "@u:domain", "signatures": {},
            "unsigned": { "age_ts": 1000000 }
        }));
        hash_and_sign(&mut event, &RoomVersionRules::V1, "domain", &spec_key()).expect("sign");
        assert_eq!(
            field(&event, &["hashes", "sha256"]),
            "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
        );
        assert_eq!(
            field(&event, &["signatures", "domain", "ed25519:1"]),
            "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
        );
    }

    /// A restricted room's join: the resident server's signature is added to the joining
    /// server's; the hash and the first signature stay, and both verify.
    #[test]
    fn a_second_signature_keeps_the_first_and_the_hash() {
        let rules = RoomVersionRules::V10;
        let mut event = object(json!({
            "room_id": "!r:a.example", "sender": "@b:b.example", "state_key": "@b:b.example",
            "type": "m.room.member", "origin_server_ts": 1, "depth": 3,
            "content": { "membership": "join", "join_authorised_via_users_server": "@a:a.example" },
            "prev_events": [], "auth_events": [],
        }));
        let joining = SigningKey::from_seed(KeyId::ed25519("b").expect("id"), [2; 32]);
        hash_and_sign(&mut event, &rules, "b.example", &joining).expect("sign");
        let before = event.clone();
        let resident = spec_key();
        add_signature(&mut event, &rules, "a.example", &resident).expect("sign");
        assert_eq!(event["hashes"], before["hashes"]);
        assert_eq!(
            field(&event, &["signatures", "b.example", "ed25519:b"]),
            field(&before, &["signatures", "b.example", "ed25519:b"])
        );
        let mut keys = ruma::signatures::PublicKeyMap::new();
        for (server, key) in [("a.example", &resident), ("b.example", &joining)] {
            keys.insert(
                server.to_owned(),
                [(
                    key.key_id().to_string(),
                    ruma::serde::Base64::new(key.public_key().to_vec()),
                )]
                .into(),
            );
        }
        let verified = ruma::signatures::verify_event(&keys, &event, &rules).expect("verifies");
        assert_eq!(verified, ruma::signatures::Verified::All);
        // Without the resident's signature the join does not verify: it names a user of theirs.
        assert!(ruma::signatures::verify_event(&keys, &before, &rules).is_err());
    }

    #[test]
    fn event_ids_follow_the_room_version() {
        let event = object(json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin_server_ts": 1, "type": "X",
            "content": {}, "prev_events": [], "auth_events": [], "depth": 1,
            "hashes": { "sha256": "abc" }
        }));
        assert_eq!(
            event_id_for(&event, &RoomVersionRules::V1).expect("v1"),
            None
        );
        let v3 = event_id_for(&event, &RoomVersionRules::V3)
            .expect("v3")
            .expect("id");
        let v4 = event_id_for(&event, &RoomVersionRules::V4)
            .expect("v4")
            .expect("id");
        assert_eq!(
            v3.as_str().len(),
            44,
            "$ and 43 characters of unpadded base64"
        );
        // The same hash: standard base64 in room version 3, URL-safe from version 4.
        assert_eq!(v3.as_str().replace('+', "-").replace('/', "_"), v4.as_str());
        // The ID covers the redacted event: unsigned data and signatures do not change it.
        let mut signed = event;
        signed.insert(
            "unsigned".into(),
            CanonicalJsonValue::Object(Default::default()),
        );
        assert_eq!(
            event_id_for(&signed, &RoomVersionRules::V4)
                .expect("v4")
                .expect("id"),
            v4
        );
    }
}
