//! The follower: what it queues for whom, with the position, and what it leaves out.

use serde_json::json;

use super::*;
use crate::federation::test_state::test_state;
use crate::matrix::events::builder::NewEvent;
use crate::rooms::create::CreateRoomRequest;

const REMOTE: &str = "there.test";

fn queued(fed: &Federation) -> Vec<QueueItem> {
    fed.storage
        .destination_queue
        .scan_prefix(&pair_prefix(REMOTE))
        .map(|entry| entry.expect("entry").1)
        .collect()
}

#[actix_web::test]
async fn our_users_events_and_receipts_are_queued_with_the_position_handled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = test_state(dir.path(), "");
    let alice = UserId::parse("@alice:here.test").expect("user");
    let room_id = fed
        .rooms
        .create_room(&alice, CreateRoomRequest::default(), "12")
        .await
        .expect("room");
    let room = room_id.to_string();
    let remote_member = (room.clone(), format!("@bob:{REMOTE}"));
    let left_member = (room.clone(), "@carol:gone.test".to_owned());
    let storage = &fed.storage;
    set_membership(storage, &remote_member, &"join".to_owned());
    set_membership(storage, &left_member, &"leave".to_owned());
    let wake = Arc::new(Wake::default());
    let mut follower = Follower::start(fed.clone(), wake.clone()).expect("start");
    let message = NewEvent::message("m.room.message", json!({ "body": "hi" }));
    let event = fed
        .rooms
        .append(&room_id, &alice, message)
        .await
        .expect("message");
    crate::sync::receipts::set(
        &fed.storage,
        &fed.rooms.stream,
        &room_id,
        &alice,
        "m.read",
        event.event_id.as_str(),
        None,
    )
    .await
    .expect("receipt");
    let private = crate::sync::receipts::PRIVATE;
    crate::sync::receipts::set(
        &fed.storage,
        &fed.rooms.stream,
        &room_id,
        &alice,
        private,
        event.event_id.as_str(),
        None,
    )
    .await
    .expect("private receipt");
    let upto = fed.rooms.visible_position();
    follower.catch_up(upto).await.expect("catch up");

    // The room's creation was before the follower's first start: history, not sent.
    let items = queued(&fed);
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        items[0],
        QueueItem::Pdu {
            event_id: event.event_id.to_string()
        }
    );
    let QueueItem::Edu { edu, expires_ms } = &items[1] else {
        panic!("a receipt EDU: {items:?}");
    };
    assert_eq!(*expires_ms, None);
    assert_eq!(edu["edu_type"], "m.receipt");
    let read = &edu["content"][&room]["m.read"]["@alice:here.test"];
    assert_eq!(read["event_ids"], json!([event.event_id]));
    assert_eq!(wake.take(), BTreeSet::from([REMOTE.to_owned()]));
    assert!(
        storage
            .destination_queue
            .scan_prefix(&pair_prefix("gone.test"))
            .next()
            .is_none()
    );

    // Restarted, the follower goes on from where it was: nothing is queued twice.
    drop(follower);
    let mut follower = Follower::start(fed.clone(), wake).expect("start");
    assert_eq!(follower.handled, upto);
    follower.catch_up(upto).await.expect("nothing to do");
    assert_eq!(queued(&fed).len(), 2);
}

#[actix_web::test]
async fn typing_of_our_users_is_queued_once_per_repeat_and_presence_only_if_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = test_state(dir.path(), "");
    let room_id = OwnedRoomId::try_from("!room:here.test").expect("room");
    let alice = OwnedUserId::try_from("@alice:here.test").expect("user");
    let bob = OwnedUserId::try_from(format!("@bob:{REMOTE}")).expect("user");
    for user in [&alice, &bob] {
        let key = (room_id.to_string(), user.to_string());
        set_membership(&fed.storage, &key, &"join".to_owned());
    }
    let mut follower = Follower::start(fed.clone(), Arc::new(Wake::default())).expect("start");
    let typing = |user_id: &OwnedUserId, typing| Change::Typing {
        room_id: room_id.clone(),
        user_id: user_id.clone(),
        typing,
    };
    for change in [
        typing(&alice, true),
        typing(&alice, true),
        typing(&bob, true),
        typing(&alice, false),
        Change::Presence {
            user_id: alice.clone(),
        },
    ] {
        follower.handle_change(change).expect("change");
    }
    let edus: Vec<Value> = queued(&fed)
        .into_iter()
        .map(|item| match item {
            QueueItem::Edu { edu, expires_ms } => {
                assert!(expires_ms.is_some(), "typing is news for a while only");
                edu
            }
            other => panic!("not an EDU: {other:?}"),
        })
        .collect();
    let expected = [true, false].map(|typing| typing_edu(&room_id, &alice, typing));
    assert_eq!(edus, expected);
}

#[actix_web::test]
async fn presence_goes_to_the_servers_sharing_a_room_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = test_state(dir.path(), "[federation]\nsend_presence = true\n");
    let alice = OwnedUserId::try_from("@alice:here.test").expect("user");
    let room = "!room:here.test".to_owned();
    let record = crate::rooms::MembershipRecord {
        membership: "join".to_owned(),
        stream: 1,
        event_id: "$join".to_owned(),
        joined_stream: Some(1),
        invited_stream: None,
    };
    let storage = &fed.storage;
    storage
        .userroom_membership
        .insert(&(alice.to_string(), room.clone()), &record)
        .expect("alice's membership");
    for (user, membership) in [("@alice:here.test", "join"), ("@bob:there.test", "join")] {
        set_membership(
            storage,
            &(room.clone(), user.to_owned()),
            &membership.to_owned(),
        );
    }
    fed.ephemeral
        .set_presence(&alice, "online", Some(Some("lunch".to_owned())));
    let mut follower = Follower::start(fed.clone(), Arc::new(Wake::default())).expect("start");
    let change = Change::Presence { user_id: alice };
    follower.handle_change(change).expect("change");
    let items = queued(&fed);
    let [QueueItem::Edu { edu, .. }] = items.as_slice() else {
        panic!("one presence EDU: {items:?}");
    };
    assert_eq!(edu["edu_type"], "m.presence");
    let push = &edu["content"]["push"][0];
    assert_eq!(push["user_id"], "@alice:here.test");
    assert_eq!(push["presence"], "online");
    assert_eq!(push["status_msg"], "lunch");
    assert!(push["last_active_ago"].is_u64());
}

#[actix_web::test]
async fn a_server_the_rooms_acl_denies_is_queued_nothing_and_sent_nothing_already_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = test_state(dir.path(), "");
    let alice = UserId::parse("@alice:here.test").expect("user");
    let room_id = fed
        .rooms
        .create_room(&alice, CreateRoomRequest::default(), "11")
        .await
        .expect("room");
    let storage = &fed.storage;
    let member = (room_id.to_string(), format!("@bob:{REMOTE}"));
    set_membership(storage, &member, &"join".to_owned());
    let wake = Arc::new(Wake::default());
    let mut follower = Follower::start(fed.clone(), wake.clone()).expect("start");
    let append = async |event: NewEvent| {
        fed.rooms
            .append(&room_id, &alice, event)
            .await
            .expect("event")
    };
    // Queued while allowed, not sent yet when the ACL comes.
    let early = append(NewEvent::message(
        "m.room.message",
        json!({ "body": "early" }),
    ))
    .await;
    follower
        .catch_up(fed.rooms.visible_position())
        .await
        .expect("catch up");
    assert_eq!(queued(&fed).len(), 1);
    let acl = json!({ "allow": ["*"], "deny": [REMOTE] });
    append(NewEvent::state("m.room.server_acl", "", acl)).await;
    append(NewEvent::message(
        "m.room.message",
        json!({ "body": "late" }),
    ))
    .await;
    follower
        .catch_up(fed.rooms.visible_position())
        .await
        .expect("catch up");
    assert_eq!(
        queued(&fed),
        [QueueItem::Pdu {
            event_id: early.event_id.to_string()
        }],
        "neither the ACL nor what follows is queued for the denied server"
    );
    let next = super::super::queue::next_transaction(
        storage,
        "here.test",
        REMOTE,
        crate::matrix::time::now_ms(),
    )
    .await
    .expect("transaction");
    assert_eq!(next, None, "what was queued before the ACL is not sent");
    assert!(queued(&fed).is_empty());
}

/// Writes a membership as the server does (in a batch through `Storage::apply`), so the
/// joined members' summary follows.
fn set_membership(storage: &crate::storage::Storage, key: &(String, String), membership: &String) {
    let mut batch = crate::storage::Batch::new();
    storage
        .roomuser_membership
        .batch_insert(&mut batch, key, membership)
        .expect("stage");
    storage.apply(batch).expect("member");
}

/// A federation join reserves a block of a million positions for the room's history: the
/// follower walks it writing only at its end (it once wrote and flushed every 200
/// positions, seconds of a busy disk after each join), and a restart goes on from there.
#[actix_web::test]
async fn a_block_of_empty_positions_is_walked_and_recorded_at_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = test_state(dir.path(), "");
    let wake = Arc::new(Wake::default());
    let mut follower = Follower::start(fed.clone(), wake.clone()).expect("start");
    let floor = fed
        .storage
        .reserve_stream_positions(crate::rooms::BACKFILL_BLOCK)
        .expect("reserve");
    let upto = floor + crate::rooms::BACKFILL_BLOCK - 1;
    follower.catch_up(upto).await.expect("catch up");
    assert_eq!(follower.handled, upto);
    assert!(queued(&fed).is_empty());
    assert!(wake.take().is_empty());
    drop(follower);
    let follower = Follower::start(fed.clone(), wake).expect("start");
    assert_eq!(follower.handled, upto);
}
