//! Inbound EDUs: applied for the sender's own joined users, ignored otherwise, never a panic.

use ruma::{RoomId, ServerName};
use serde_json::json;

use super::*;
use crate::federation::test_state::test_state;

const ROOM: &str = "!room:here.test";

/// A state where `@bob:there.test` is joined to [`ROOM`] and `@eve:there.test` only invited.
fn state_with_members(
    dir: &std::path::Path,
    extra: &str,
) -> std::sync::Arc<crate::federation::Federation> {
    let fed = test_state(dir, extra);
    for (user, membership) in [("@bob:there.test", "join"), ("@eve:there.test", "invite")] {
        let record = crate::rooms::MembershipRecord {
            membership: membership.to_owned(),
            stream: 1,
            event_id: format!("$member_{membership}"),
            joined_stream: None,
            invited_stream: None,
        };
        fed.storage
            .userroom_membership
            .insert(&(user.to_owned(), ROOM.to_owned()), &record)
            .expect("membership");
    }
    fed
}

fn there() -> &'static ServerName {
    <&ServerName>::try_from("there.test").expect("server name")
}

fn typing(user: &str) -> Value {
    json!({ "edu_type": "m.typing", "content": { "room_id": ROOM, "user_id": user, "typing": true } })
}

fn receipt(user: &str, event_id: &str) -> Value {
    json!({ "edu_type": "m.receipt", "content": { ROOM: { "m.read": {
        user: { "event_ids": [event_id], "data": { "ts": 1234, "thread_id": "main" } }
    } } } })
}

fn presence(user: &str) -> Value {
    json!({ "edu_type": "m.presence", "content": { "push": [
        { "user_id": user, "presence": "online", "status_msg": "hi", "last_active_ago": 5 }
    ] } })
}

#[actix_web::test]
async fn typing_counts_only_for_the_senders_joined_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = state_with_members(dir.path(), "");
    let room = <&RoomId>::try_from(ROOM).expect("room");
    let edus = vec![
        typing("@bob:there.test"),
        // Another server's user, an invited user, nonsense: ignored.
        typing("@mallory:elsewhere.test"),
        typing("@eve:there.test"),
        json!({ "edu_type": "m.typing", "content": { "room_id": 5, "typing": "yes" } }),
        json!("not even an object"),
        json!({ "edu_type": "m.unknown" }),
    ];
    receive_edus(&fed, there(), edus).await;
    let typing = fed.ephemeral.typing_changed_since(room, 0);
    let bob = OwnedUserId::try_from("@bob:there.test").expect("user");
    assert_eq!(typing, Some(vec![bob]));
}

#[actix_web::test]
async fn receipts_are_stored_with_their_time_for_joined_users_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = state_with_members(dir.path(), "");
    let room = <&RoomId>::try_from(ROOM).expect("room");
    let edus = vec![
        receipt("@bob:there.test", "$read:there.test"),
        receipt("@mallory:elsewhere.test", "$read:there.test"),
        receipt("@eve:there.test", "$read:there.test"),
        receipt("@bob:there.test", "not an event id"),
    ];
    receive_edus(&fed, there(), edus).await;
    let viewer = <&UserId>::try_from("@alice:here.test").expect("user");
    let upto = fed.rooms.visible_position();
    let receipts = crate::sync::receipts::changes(&fed.storage, room, viewer, None, upto)
        .expect("changes")
        .expect("a receipt");
    assert_eq!(
        receipts["content"],
        json!({ "$read:there.test": { "m.read": {
            "@bob:there.test": { "ts": 1234, "thread_id": "main" }
        } } })
    );
}

#[actix_web::test]
async fn presence_is_taken_only_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = state_with_members(dir.path(), "");
    let bob = <&UserId>::try_from("@bob:there.test").expect("user");
    receive_edus(&fed, there(), vec![presence("@bob:there.test")]).await;
    assert!(fed.ephemeral.presence_of(bob).is_none(), "off by default");
    drop(fed);

    let fed = state_with_members(dir.path(), "[federation]\nreceive_presence = true\n");
    let edus = vec![
        presence("@bob:there.test"),
        // Shares no room with us; another server's user.
        presence("@stranger:there.test"),
        presence("@mallory:elsewhere.test"),
    ];
    receive_edus(&fed, there(), edus).await;
    let seen = fed.ephemeral.presence_of(bob).expect("presence");
    assert_eq!(seen.presence, "online");
    assert_eq!(seen.status_msg.as_deref(), Some("hi"));
    assert_eq!(fed.ephemeral.presence_changes(0).len(), 1);
}

#[actix_web::test]
async fn to_device_messages_reach_our_devices_only_from_their_senders_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = state_with_members(dir.path(), "");
    let record = crate::storage::records::DeviceRecord {
        display_name: None,
        token_hash: String::new(),
        created_at_ms: 0,
        last_seen_ts: None,
        last_seen_ip: None,
    };
    fed.storage
        .userdevice_device
        .insert(
            &("@alice:here.test".to_owned(), "PHONE".to_owned()),
            &record,
        )
        .expect("device");
    let to_device = |sender: &str, id: &str| {
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": sender, "type": "m.room.encrypted", "message_id": id,
            "messages": { "@alice:here.test": { "*": { "ciphertext": id } } }
        } })
    };
    let edus = vec![
        to_device("@bob:there.test", "ok"),
        // Not a user of the server sending it.
        to_device("@mallory:elsewhere.test", "forged"),
        // Malformed: no message ID, messages not an object.
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": "@bob:there.test", "type": "m.x", "messages": {}
        } }),
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": "@bob:there.test", "type": "m.x", "message_id": "b", "messages": 5
        } }),
        // A retried transaction repeats the message: stored once.
        to_device("@bob:there.test", "ok"),
    ];
    receive_edus(&fed, there(), edus).await;
    let inbox: Vec<Value> = fed
        .storage
        .userdevice_todevice
        .iter()
        .map(|entry| entry.expect("entry").1)
        .collect();
    assert_eq!(
        inbox,
        [
            json!({ "sender": "@bob:there.test", "type": "m.room.encrypted",
                 "content": { "ciphertext": "ok" } })
        ]
    );
}

#[actix_web::test]
async fn device_list_updates_apply_in_order_to_the_cache_and_reach_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = state_with_members(dir.path(), "");
    let bob = "@bob:there.test".to_owned();
    let list = crate::storage::records::RemoteDeviceList {
        stream_id: 5,
        devices: [("A".to_owned(), json!({ "user_id": bob, "device_id": "A" }))].into(),
        ..Default::default()
    };
    fed.storage
        .userid_remotedevices
        .insert(&bob, &list)
        .expect("cache");
    let update = |device: &str, stream_id: u64, prev: u64, extra: Value| {
        let mut content = json!({
            "user_id": bob, "device_id": device, "stream_id": stream_id, "prev_id": [prev],
        });
        for (key, value) in extra.as_object().expect("object") {
            content[key] = value.clone();
        }
        json!({ "edu_type": "m.device_list_update", "content": content })
    };
    let before = fed.rooms.visible_position();
    receive_edus(
        &fed,
        there(),
        vec![
            update(
                "B",
                6,
                5,
                json!({ "keys": { "user_id": bob, "device_id": "B" } }),
            ),
            // Keys naming another device, or another user: refused.
            update(
                "C",
                7,
                6,
                json!({ "keys": { "user_id": bob, "device_id": "X" } }),
            ),
            update(
                "D",
                7,
                6,
                json!({ "keys": { "user_id": "@eve:there.test", "device_id": "D" } }),
            ),
            update("A", 8, 6, json!({ "deleted": true })),
            // Old news: ignored.
            update(
                "A",
                3,
                2,
                json!({ "keys": { "user_id": bob, "device_id": "A" } }),
            ),
        ],
    )
    .await;
    let cached = fed
        .storage
        .userid_remotedevices
        .get(&bob)
        .expect("read")
        .expect("cached");
    assert_eq!(cached.stream_id, 8);
    assert_eq!(cached.devices.keys().collect::<Vec<_>>(), vec!["B"]);
    let rows = crate::users::device_lists::changes_between(
        &fed.storage,
        before,
        fed.rooms.visible_position(),
    )
    .expect("rows");
    assert_eq!(rows.len(), 1, "one row per user");
    assert_eq!(rows[0].1.user_id, bob);
}
