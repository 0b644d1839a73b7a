//! IDs taken from a path segment (`{roomId}`, `{userId}`, `{eventId}`, ...), parsed in one
//! place so every endpoint refuses a malformed one the same way: `400 M_INVALID_PARAM`
//! naming the text (actix has percent-decoded it already). Handlers keep taking the
//! segments as `web::Path<String>` or tuples and call [`id`] on each.

use ruma::{
    OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedRoomOrAliasId, OwnedServerName, OwnedUserId,
};

use crate::error::{Error, ErrorKind};

/// An ID type a path segment may hold, and how to name it in an error.
pub(crate) trait PathId: Sized {
    /// What the segment should have been, for the error message ("room ID").
    const WHAT: &'static str;
    fn parse(text: &str) -> Option<Self>;
}

macro_rules! path_id {
    ($($type:ty => $what:literal),* $(,)?) => {$(
        impl PathId for $type {
            const WHAT: &'static str = $what;
            fn parse(text: &str) -> Option<Self> {
                <$type>::try_from(text).ok()
            }
        }
    )*};
}

impl PathId for OwnedRoomId {
    const WHAT: &'static str = "room ID";
    fn parse(text: &str) -> Option<Self> {
        well_formed_room_id(text)
            .then(|| OwnedRoomId::try_from(text).ok())
            .flatten()
    }
}

/// The spec's two forms of room ID (appendices, "Room IDs"): `!opaque_id:server_name`, or,
/// from room version 12, `!` and the create event's reference hash (43 characters of
/// URL-safe unpadded base64). ruma accepts more (`!`, `!:x`, `!abc`), which no room can
/// have, and does not check the server name: such IDs are malformed (`400`), not rooms one
/// is missing from (`403`).
fn well_formed_room_id(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('!') else {
        return false;
    };
    match rest.split_once(':') {
        Some((opaque, server)) => !opaque.is_empty() && ruma::ServerName::parse(server).is_ok(),
        None => {
            rest.len() == 43
                && rest
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        }
    }
}

/// The most of a refused segment an error message repeats: a 64 KiB segment must not
/// make a 64 KiB answer.
const MAX_ECHOED: usize = 64;

path_id! {
    OwnedUserId => "user ID",
    OwnedEventId => "event ID",
    OwnedRoomAliasId => "room alias",
    OwnedRoomOrAliasId => "room ID or alias",
    OwnedServerName => "server name",
}

/// The ID in a path segment, or `400 M_INVALID_PARAM`. A segment with U+FFFD is refused
/// whatever the type: actix puts one where percent-decoding met invalid UTF-8, so the ID
/// the client sent was not text.
pub(crate) fn id<T: PathId>(text: &str) -> Result<T, Error> {
    let decoded = (!text.contains('\u{FFFD}')).then_some(text);
    decoded.and_then(T::parse).ok_or_else(|| {
        let shown = match text.char_indices().nth(MAX_ECHOED) {
            Some((end, _)) => format!("{}…", &text[..end]),
            None => text.to_owned(),
        };
        Error::new(
            ErrorKind::InvalidParam,
            format!("`{shown}` is not a valid {}", T::WHAT),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_refuses_with_invalid_param() {
        let room: OwnedRoomId = id("!abc:example.org").expect("room");
        assert_eq!(room.as_str(), "!abc:example.org");
        let user: OwnedUserId = id("@alice:example.org").expect("user");
        assert_eq!(user.localpart(), "alice");
        let event: OwnedEventId = id("$abc").expect("event");
        assert_eq!(event.as_str(), "$abc");
        let err = id::<OwnedRoomId>("not-a-room").expect_err("invalid");
        assert!(matches!(err.kind, ErrorKind::InvalidParam));
        assert!(id::<OwnedUserId>("alice").is_err());
        assert!(id::<OwnedRoomAliasId>("!room:example.org").is_err());
    }

    #[test]
    fn room_ids_need_a_server_name_or_a_hash() {
        let hash = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM";
        assert!(id::<OwnedRoomId>(hash).is_ok());
        assert!(id::<OwnedRoomId>("!a:example.org").is_ok());
        for bad in [
            "!",
            "!:",
            "!:example.org",
            "!a:",
            "!abc",
            "a:example.org",
            "!31hneApx/1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
        ] {
            assert!(id::<OwnedRoomId>(bad).is_err(), "{bad}");
        }
        assert!(id::<OwnedRoomId>("!\u{FFFD}\u{FFFD}:example.org").is_err());
        let long = format!("!{}:example.org", "a".repeat(70_000));
        let err = id::<OwnedRoomId>(&long).expect_err("too long");
        assert!(err.message.len() < 200, "{}", err.message.len());
    }
}
