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

path_id! {
    OwnedRoomId => "room ID",
    OwnedUserId => "user ID",
    OwnedEventId => "event ID",
    OwnedRoomAliasId => "room alias",
    OwnedRoomOrAliasId => "room ID or alias",
    OwnedServerName => "server name",
}

/// The ID in a path segment, or `400 M_INVALID_PARAM`.
pub(crate) fn id<T: PathId>(text: &str) -> Result<T, Error> {
    T::parse(text).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidParam,
            format!("`{text}` is not a valid {}", T::WHAT),
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
}
