//! The body of a notification for a push gateway (spec: push gateway API, `POST
//! /_matrix/push/v1/notify`), built when it is sent: the counts are those of that moment,
//! and an event redacted meanwhile goes out redacted.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::rooms;
use crate::storage::records::PushItem;
use crate::storage::{Storage, StorageError};

/// Event types whose notifications wake a phone (`prio: high`).
const HIGH_PRIORITY_TYPES: &[&str] = &["m.room.message", "m.room.encrypted", "m.call.invite"];

/// The `{"notification": ...}` body for `item`, sent to `pusher` (as stored by
/// `pushers/set`); `None` if its event is gone (nothing to say).
pub(crate) fn notification(
    storage: &Storage,
    item: &PushItem,
    pusher: &Value,
    upto: u64,
) -> Result<Option<Value>, StorageError> {
    let Ok(user_id) = UserId::parse(item.user_id.as_str()) else {
        return Ok(None);
    };
    let mut notification = Map::new();
    notification.insert(
        "counts".into(),
        json!({ "unread": unread_total(storage, &user_id, upto)? }),
    );
    let mut prio = "low";
    if let (Some(event_id), Some(room_id)) = (&item.event_id, &item.room_id) {
        let Ok(room_id) = RoomId::parse(room_id.as_str()) else {
            return Ok(None);
        };
        let Some(event) = rooms::load_json(storage, event_id)? else {
            return Ok(None);
        };
        let event = serde_json::to_value(event).unwrap_or_default();
        if is_high_priority(&event, &user_id) {
            prio = "high";
        }
        notification.insert("event_id".into(), json!(event_id));
        notification.insert("room_id".into(), json!(room_id));
        if pusher["data"]["format"] != "event_id_only" {
            describe_event(storage, &room_id, &user_id, &event, &mut notification)?;
        }
    }
    notification.insert("prio".into(), json!(prio));
    notification.insert("devices".into(), json!([device(pusher, &item.actions)]));
    Ok(Some(json!({ "notification": notification })))
}

/// What a full-format notification says about its event: type, sender and their name,
/// the room's name and alias, whether the user is its target, and its content.
fn describe_event(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
    event: &Value,
    notification: &mut Map<String, Value>,
) -> Result<(), StorageError> {
    let sender = event["sender"].as_str().unwrap_or_default();
    notification.insert("type".into(), event["type"].clone());
    notification.insert("sender".into(), json!(sender));
    let display_name = rooms::state_content(storage, room_id, "m.room.member", sender)?
        .and_then(|content| content["displayname"].as_str().map(str::to_owned));
    if let Some(name) = display_name {
        notification.insert("sender_display_name".into(), json!(name));
    }
    let room_name = rooms::state_content(storage, room_id, "m.room.name", "")?
        .and_then(|content| content["name"].as_str().map(str::to_owned))
        .filter(|name| !name.is_empty());
    if let Some(name) = room_name {
        notification.insert("room_name".into(), json!(name));
    }
    let alias = rooms::state_content(storage, room_id, "m.room.canonical_alias", "")?
        .and_then(|content| content["alias"].as_str().map(str::to_owned));
    if let Some(alias) = alias {
        notification.insert("room_alias".into(), json!(alias));
    }
    if event["type"] == "m.room.member" {
        notification.insert(
            "user_is_target".into(),
            json!(event["state_key"] == user_id.as_str()),
        );
    }
    if let Some(content) = event.get("content") {
        notification.insert("content".into(), content.clone());
    }
    Ok(())
}

/// A message, an encrypted event, a call, or an invite of the user: worth waking for.
fn is_high_priority(event: &Value, user_id: &UserId) -> bool {
    let kind = event["type"].as_str().unwrap_or_default();
    HIGH_PRIORITY_TYPES.contains(&kind)
        || (kind == "m.room.member"
            && event["state_key"] == user_id.as_str()
            && event["content"]["membership"] == "invite")
}

/// The one device of the request: the pusher, its data without `url` and `format` (which
/// are for us), and the tweaks of the rule that matched.
fn device(pusher: &Value, actions: &Value) -> Value {
    let mut data = pusher["data"].as_object().cloned().unwrap_or_default();
    data.remove("url");
    data.remove("format");
    json!({
        "app_id": pusher["app_id"],
        "pushkey": pusher["pushkey"],
        "pushkey_ts": pusher[crate::users::push_rules::PUSHKEY_TS].as_u64().unwrap_or(0),
        "data": data,
        "tweaks": tweaks(actions),
    })
}

/// `{"set_tweak": "sound", "value": "default"}` actions as `{"sound": "default"}`; a
/// tweak without a value (`highlight`) is `true`.
fn tweaks(actions: &Value) -> Value {
    let mut tweaks = Map::new();
    for action in actions.as_array().into_iter().flatten() {
        if let Some(name) = action["set_tweak"].as_str() {
            let value = action.get("value").cloned().unwrap_or(Value::Bool(true));
            tweaks.insert(name.to_owned(), value);
        }
    }
    Value::Object(tweaks)
}

/// The user's unread notifications across the rooms they are joined to: the badge.
pub(crate) fn unread_total(
    storage: &Storage,
    user_id: &UserId,
    upto: u64,
) -> Result<u64, StorageError> {
    let mut total = 0;
    let prefix = crate::storage::pair_prefix(user_id.as_str());
    for entry in storage.userroom_membership.scan_prefix(&prefix) {
        let ((_, room), membership) = entry?;
        if membership.membership != "join" {
            continue;
        }
        let Ok(room_id) = RoomId::parse(room.as_str()) else {
            continue;
        };
        let (counts, _) = rooms::notifications::unread(storage, user_id, &room_id, upto, false)?;
        total += counts.notifications;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tweaks_come_from_set_tweak_actions() {
        let actions = json!([
            "notify",
            { "set_tweak": "sound", "value": "default" },
            { "set_tweak": "highlight" },
        ]);
        assert_eq!(
            tweaks(&actions),
            json!({ "sound": "default", "highlight": true })
        );
    }

    #[test]
    fn the_device_keeps_the_apps_data_only() {
        let pusher = json!({
            "app_id": "org.example.app",
            "pushkey": "key",
            "pushkey_ts": 12,
            "data": { "url": "https://x/_matrix/push/v1/notify", "format": "event_id_only", "extra": 1 },
        });
        let device = device(&pusher, &json!(["notify"]));
        assert_eq!(device["data"], json!({ "extra": 1 }));
        assert_eq!(device["pushkey_ts"], 12);
    }
}
