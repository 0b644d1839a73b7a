//! Room tags (spec: client-server API, "Room Tagging"): a user's labels for a room
//! (`m.favourite`, `m.lowpriority`, their own), kept as the room's `m.tag` account data so
//! they reach every device through `/sync` like any other account data.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value};

use super::account_data;
use crate::error::Error;
use crate::storage::stream::Stream;
use crate::storage::{Storage, StorageError};

/// The account data type tags are kept in.
const KIND: &str = "m.tag";

/// The user's tags of the room: tag name → its content (`order`, ...).
pub(crate) fn get(
    storage: &Storage,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<Map<String, Value>, StorageError> {
    Ok(account_data::get(storage, user_id, Some(room_id), KIND)?
        .and_then(|content| content.get("tags").and_then(Value::as_object).cloned())
        .unwrap_or_default())
}

/// Changes the room's tags in one step (see [`account_data::modify`]): two devices adding
/// a tag at once both keep theirs.
pub(crate) async fn change(
    storage: &Storage,
    stream: &Stream,
    user_id: &UserId,
    room_id: &RoomId,
    change: impl FnOnce(&mut Map<String, Value>),
) -> Result<(), Error> {
    account_data::modify(storage, stream, user_id, Some(room_id), KIND, |content| {
        let mut tags = content
            .and_then(|mut content| content.remove("tags"))
            .and_then(|tags| match tags {
                Value::Object(tags) => Some(tags),
                _ => None,
            })
            .unwrap_or_default();
        change(&mut tags);
        let mut content = Map::new();
        content.insert("tags".into(), Value::Object(tags));
        Ok(content)
    })
    .await
}
