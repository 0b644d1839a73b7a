//! The shape of state content a client sends with `PUT /rooms/{roomId}/state/...`, checked
//! before the event is built: content the auth rules cannot read is the client's mistake
//! (`400 M_BAD_JSON`), not a refusal (`403`), and a member event the client may send as
//! state (its own profile in the room) is told apart from a membership change, which has
//! its own endpoints.

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind};

/// The integer fields of `m.room.power_levels` (spec: "m.room.power_levels").
const LEVELS: [&str; 7] = [
    "ban",
    "events_default",
    "invite",
    "kick",
    "redact",
    "state_default",
    "users_default",
];

/// The maps of `m.room.power_levels`, each from a name to an integer level.
const LEVEL_MAPS: [&str; 3] = ["events", "notifications", "users"];

/// Canonical JSON's integer range, ±(2^53 - 1): what a power level may be.
const MAX_LEVEL: i64 = (1 << 53) - 1;

/// Refuses `m.room.power_levels` content whose levels are not integers (the spec's type),
/// whose maps are not maps, or whose `users` keys are not user IDs. Room versions before 10
/// also take a string holding an integer (`"50"`), as their auth rules do: older clients
/// and bots write them, and those rooms count them (`integer_only` is false there).
pub(crate) fn check_power_levels(
    content: &Map<String, Value>,
    integer_only: bool,
) -> Result<(), Error> {
    let bad = |what: String| Error::new(ErrorKind::BadJson, what);
    let is_level = |value: &Value| {
        let level = match value {
            Value::String(text) if !integer_only => text.trim().parse::<i64>().ok(),
            other => other.as_i64(),
        };
        level.is_some_and(|level| level.abs() <= MAX_LEVEL)
    };
    for field in LEVELS {
        if let Some(value) = content.get(field)
            && !is_level(value)
        {
            return Err(bad(format!("`{field}` must be an integer")));
        }
    }
    for field in LEVEL_MAPS {
        let Some(value) = content.get(field) else {
            continue;
        };
        let map = value
            .as_object()
            .ok_or_else(|| bad(format!("`{field}` must be an object")))?;
        for (key, level) in map {
            if !is_level(level) {
                return Err(bad(format!("`{field}` levels must be integers")));
            }
            if field == "users" && ruma::UserId::parse(key.as_str()).is_err() {
                return Err(bad("`users` keys must be user IDs".to_owned()));
            }
        }
    }
    Ok(())
}

/// Whether an `m.room.member` event sent as state is one the client may send this way: its
/// own, keeping its `join` (a per-room display name or avatar, the spec's own example for
/// this endpoint). Other changes go through `/join`, `/invite`, `/leave`, `/kick`, `/ban`,
/// which do the work around them (federation, invites' stripped state). A `membership`
/// that is no string is `M_BAD_JSON`; joining someone else is `M_FORBIDDEN`, as the auth
/// rules would answer.
pub(crate) fn check_own_member_event(
    sender: &str,
    state_key: &str,
    content: &Map<String, Value>,
) -> Result<(), Error> {
    let Some(membership) = content.get("membership").and_then(Value::as_str) else {
        return Err(Error::new(
            ErrorKind::BadJson,
            "`membership` must be a string",
        ));
    };
    if membership == "join" && state_key != sender {
        // The auth rules' answer: only a user may join themselves.
        return Err(Error::new(
            ErrorKind::Forbidden,
            "Only a user may join themselves",
        ));
    }
    if membership != "join" || state_key != sender {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "Change memberships with /invite, /join, /leave, /kick and /ban",
        ));
    }
    for field in ["displayname", "avatar_url"] {
        if content
            .get(field)
            .is_some_and(|value| !value.is_string() && !value.is_null())
        {
            return Err(Error::new(
                ErrorKind::BadJson,
                format!("`{field}` must be a string"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(members) => members,
            _ => panic!("object"),
        }
    }

    #[test]
    fn power_levels_must_be_integers_in_maps() {
        let good = object(json!({
            "ban": 50, "users": { "@a:x": 100 }, "events": { "m.room.name": 50 },
            "notifications": { "room": 50 }, "historical": "unknown fields pass"
        }));
        assert!(check_power_levels(&good, true).is_ok());
        for bad in [
            json!({ "ban": "50" }),
            json!({ "kick": 1.5 }),
            json!({ "redact": 9_007_199_254_740_992_i64 }),
            json!({ "events": [] }),
            json!({ "users": { "@a:x": "100" } }),
            json!({ "users": { "a": 100 } }),
            json!({ "notifications": { "room": null } }),
        ] {
            let err = check_power_levels(&object(bad.clone()), true).expect_err("refused");
            assert!(matches!(err.kind, ErrorKind::BadJson), "{bad}");
        }
    }

    #[test]
    fn rooms_before_version_10_take_levels_written_as_strings() {
        let strings = object(json!({ "ban": "50", "users": { "@a:x": " 100" } }));
        assert!(check_power_levels(&strings, false).is_ok());
        assert!(check_power_levels(&strings, true).is_err());
        let junk = object(json!({ "ban": "fifty" }));
        assert!(check_power_levels(&junk, false).is_err());
    }

    #[test]
    fn only_ones_own_join_is_sent_as_state() {
        let join = object(json!({ "membership": "join", "displayname": "A" }));
        assert!(check_own_member_event("@a:x", "@a:x", &join).is_ok());
        let other = check_own_member_event("@a:x", "@b:x", &join).expect_err("not theirs");
        assert!(matches!(other.kind, ErrorKind::Forbidden));
        let number = object(json!({ "membership": 5 }));
        let err = check_own_member_event("@a:x", "@a:x", &number).expect_err("a number");
        assert!(matches!(err.kind, ErrorKind::BadJson));
        let leave = object(json!({ "membership": "leave" }));
        assert!(check_own_member_event("@a:x", "@a:x", &leave).is_err());
        let odd = object(json!({ "membership": "join", "displayname": 3 }));
        let err = check_own_member_event("@a:x", "@a:x", &odd).expect_err("bad name");
        assert!(matches!(err.kind, ErrorKind::BadJson));
    }
}
