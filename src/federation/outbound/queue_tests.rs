//! The queue and its transactions: the spec's limits, order, the same `txnId` and content
//! on every retry (across a reopen of the database too), and entries that survive a crash.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::storage::Storage;

const DESTINATION: &str = "there.test";
const ORIGIN: &str = "here.test";

fn pdu(n: u64) -> (u64, QueueItem) {
    let event_id = format!("$event{n}");
    (n, QueueItem::Pdu { event_id })
}

fn edu(n: u64, expires_ms: Option<u64>) -> (u64, QueueItem) {
    let edu = json!({ "edu_type": "m.typing", "content": { "n": n } });
    (n, QueueItem::Edu { edu, expires_ms })
}

fn select_all(items: Vec<(u64, QueueItem)>, now_ms: u64) -> Selection {
    select(items.into_iter().map(Ok), now_ms, |_| Ok(true)).expect("select")
}

#[test]
fn a_transaction_holds_at_most_50_pdus_and_100_edus() {
    let pdus: Vec<_> = (0..60).map(pdu).collect();
    assert_eq!(select_all(pdus, 0).seqs, (0..50).collect::<Vec<_>>());
    let edus: Vec<_> = (0..130).map(|n| edu(n, None)).collect();
    assert_eq!(select_all(edus, 0).seqs, (0..100).collect::<Vec<_>>());
    // PDUs and EDUs count apart: 50 and 100 fit together.
    let mixed: Vec<_> = (0..150)
        .map(|n| if n % 3 == 0 { pdu(n) } else { edu(n, None) })
        .chain((150..160).map(pdu))
        .collect();
    let selection = select_all(mixed, 0);
    assert_eq!(selection.seqs, (0..150).collect::<Vec<_>>());
}

#[test]
fn nothing_overtakes_an_item_that_does_not_fit() {
    // The 51st PDU does not fit; the receipt after it waits with it.
    let items: Vec<_> = (0..51).map(pdu).chain([edu(51, None)]).collect();
    let selection = select_all(items, 0);
    assert_eq!(selection.seqs, (0..50).collect::<Vec<_>>());
    assert!(selection.stale.is_empty());
}

#[test]
fn expired_edus_and_vanished_events_are_stale() {
    let items = vec![pdu(1), edu(2, Some(100)), edu(3, Some(300)), pdu(4)];
    let exists = |item: &QueueItem| {
        Ok(!matches!(item, QueueItem::Pdu { event_id } if event_id == "$event4"))
    };
    let selection = select(items.into_iter().map(Ok), 200, exists).expect("select");
    assert_eq!(selection.seqs, vec![1, 3]);
    assert_eq!(selection.stale, vec![2, 4]);
}

/// A database with `pdus` events stored and queued for [`DESTINATION`], then `edus` EDUs.
fn queued_storage(dir: &std::path::Path, pdus: u64, edus: u64) -> Storage {
    let storage = crate::storage::testing::open(dir);
    let mut batch = Batch::new();
    let destinations = BTreeSet::from([DESTINATION.to_owned()]);
    for n in 0..pdus {
        let event_id = format!("$event{n}");
        let json = json!({ "type": "m.room.message", "content": { "n": n } }).to_string();
        storage.eventid_pdu.insert(&event_id, &json).expect("pdu");
        stage(&storage, &mut batch, &destinations, &pdu(n).1).expect("stage");
    }
    for n in 0..edus {
        stage(&storage, &mut batch, &destinations, &edu(n, None).1).expect("stage");
    }
    storage.apply(batch).expect("apply");
    storage.flush_blocking().expect("flush");
    storage
}

#[actix_web::test]
async fn a_retry_sends_the_same_transaction_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = queued_storage(dir.path(), 70, 3);
    let first = next_transaction(&storage, ORIGIN, DESTINATION, 1_000)
        .await
        .expect("next")
        .expect("something to send");
    assert_eq!(first.pdus.len(), 50);
    assert!(first.edus.is_empty(), "the EDUs come after the 70 PDUs");
    assert_eq!(first.pdus[0]["content"]["n"], 0, "in order");
    let body = first.body("here.test");
    assert_eq!(body["origin"], "here.test");
    assert_eq!(body["origin_server_ts"], 1_000);
    // Not acknowledged: asked again, later, it is the very same transaction.
    let again = next_transaction(&storage, ORIGIN, DESTINATION, 9_000)
        .await
        .expect("next")
        .expect("still there");
    assert_eq!(again, first);
    drop(storage);
    let storage = crate::storage::testing::open(dir.path());
    let after_restart = next_transaction(&storage, ORIGIN, DESTINATION, 20_000)
        .await
        .expect("next")
        .expect("still there");
    assert_eq!(after_restart, first);
    assert_eq!(after_restart.body("here.test"), body);

    // Acknowledged: the next one has a new ID and the rest, then nothing is left.
    complete(&storage, ORIGIN, DESTINATION, &first).expect("complete");
    let second = next_transaction(&storage, ORIGIN, DESTINATION, 30_000)
        .await
        .expect("next")
        .expect("the rest");
    assert_ne!(second.pending.txn_id, first.pending.txn_id);
    assert_eq!((second.pdus.len(), second.edus.len()), (20, 3));
    complete(&storage, ORIGIN, DESTINATION, &second).expect("complete");
    let none = next_transaction(&storage, ORIGIN, DESTINATION, 40_000)
        .await
        .expect("next");
    assert!(none.is_none());
    assert_eq!(
        storage
            .destination_queue
            .scan_prefix(&pair_prefix(DESTINATION))
            .count(),
        0
    );
}

#[test]
fn queued_entries_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Applied (not yet flushed by anyone else) and then the database is gone: reopening
    // it is what a restart after `kill -9` sees once the write was flushed.
    drop(queued_storage(dir.path(), 2, 1));
    let storage = crate::storage::testing::open(dir.path());
    assert_eq!(known_destinations(&storage).expect("known"), [DESTINATION]);
    let items: Vec<_> = storage
        .destination_queue
        .scan_prefix(&pair_prefix(DESTINATION))
        .map(|entry| entry.expect("entry").1)
        .collect();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[0],
        QueueItem::Pdu {
            event_id: "$event0".to_owned()
        }
    );
    assert!(matches!(items[2], QueueItem::Edu { .. }));
}

// ---- catch-up

const ROOM_A: &str = "!a:here.test";
const ROOM_B: &str = "!b:here.test";

/// Stores event `n` of `room` (its JSON and where it sits).
fn store_event(storage: &Storage, n: u64, room: &str) -> QueueItem {
    let event_id = format!("$event{n}");
    let json = json!({ "type": "m.room.message", "room_id": room, "sender": "@a:here.test", "content": { "n": n } });
    storage
        .eventid_pdu
        .insert(&event_id, &json.to_string())
        .expect("pdu");
    storage
        .roomstream_eventid
        .insert(&(room.to_owned(), n + 1), &event_id)
        .expect("stream");
    let meta = crate::storage::records::EventMeta {
        room_id: room.to_owned(),
        stream: n + 1,
        txn: None,
        redacted_by: None,
        relay: false,
    };
    storage.eventid_meta.insert(&event_id, &meta).expect("meta");
    QueueItem::Pdu { event_id }
}

fn receipt(room: &str, user: &str, event: u64) -> QueueItem {
    let edu = json!({ "edu_type": "m.receipt", "content": { room: { "m.read": {
        user: { "event_ids": [format!("$event{event}")], "data": { "ts": event } }
    } } } });
    QueueItem::Edu {
        edu,
        expires_ms: None,
    }
}

fn typing(room: &str) -> QueueItem {
    let edu = json!({ "edu_type": "m.typing", "content": { "room_id": room, "user_id": "@a:here.test", "typing": true } });
    QueueItem::Edu {
        edu,
        expires_ms: Some(u64::MAX),
    }
}

/// Stores event `n` of `room`, sent by a user of another server (not ours to send).
fn store_remote_event(storage: &Storage, n: u64, room: &str) {
    store_event(storage, n, room);
    let json = json!({ "type": "m.room.message", "room_id": room, "sender": "@r:there.test", "content": { "n": n } });
    storage
        .eventid_pdu
        .insert(&format!("$event{n}"), &json.to_string())
        .expect("pdu");
}

/// An EDU of a kind that is never collapsed nor dropped (say, a to-device message).
fn lasting_edu() -> QueueItem {
    let edu = json!({ "edu_type": "m.direct_to_device", "content": { "message_id": "m1" } });
    QueueItem::Edu {
        edu,
        expires_ms: None,
    }
}

/// Stages `item` for [`DESTINATION`] as the follower does, in a batch of its own.
fn stage_one(storage: &Storage, item: &QueueItem, room: Option<&str>) {
    STAGING.with_borrow_mut(|staging| stage_with(storage, staging, item, room));
}

thread_local! {
    /// The follower's staging state, one per test (each test runs on a thread of its own).
    static STAGING: std::cell::RefCell<Staging> = std::cell::RefCell::new(Staging::default());
}

/// Records a failure of [`DESTINATION`], as the dispatcher does.
fn fail(storage: &Storage, delay_ms: u64, retry_at_ms: u64) -> DestinationState {
    STAGING.with_borrow_mut(|staging| {
        record_failure(storage, staging, DESTINATION, delay_ms, retry_at_ms).expect("failure")
    })
}

fn stage_with(storage: &Storage, staging: &mut Staging, item: &QueueItem, room: Option<&str>) {
    let mut batch = Batch::new();
    staging.start(storage, &mut batch).expect("start");
    let destinations = BTreeSet::from([DESTINATION.to_owned()]);
    staging
        .stage(storage, &mut batch, &destinations, item, room)
        .expect("stage");
    staging.finish(storage, &mut batch).expect("finish");
    storage.apply(batch).expect("apply");
}

fn queue_len(storage: &Storage) -> usize {
    storage
        .destination_queue
        .scan_prefix(&pair_prefix(DESTINATION))
        .count()
}

fn catch_up_rows(storage: &Storage) -> Vec<((String, String, String), QueueItem)> {
    storage
        .destination_catchup
        .scan_prefix(&pair_prefix(DESTINATION))
        .map(|entry| entry.expect("row"))
        .collect()
}

fn event_numbers(transaction: &Transaction) -> Vec<u64> {
    transaction
        .pdus
        .iter()
        .map(|pdu| pdu["content"]["n"].as_u64().expect("n"))
        .collect()
}

fn state(storage: &Storage) -> Option<DestinationState> {
    storage
        .destination_state
        .get(&DESTINATION.to_owned())
        .expect("state")
}

/// 100 events alternating between two rooms, two receipts of one user in room A, typing and
/// an EDU of another kind, all queued while the server was healthy.
fn backlog_of_two_rooms(storage: &Storage) {
    for n in 0..100 {
        let room = if n % 2 == 0 { ROOM_A } else { ROOM_B };
        let item = store_event(storage, n, room);
        stage_one(storage, &item, Some(room));
    }
    stage_one(storage, &receipt(ROOM_A, "@a:here.test", 10), None);
    stage_one(storage, &receipt(ROOM_A, "@a:here.test", 98), None);
    stage_one(storage, &typing(ROOM_A), None);
    stage_one(storage, &lasting_edu(), None);
}

#[actix_web::test]
async fn a_failing_servers_backlog_collapses_to_the_newest_event_per_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = crate::storage::testing::open(dir.path());
    backlog_of_two_rooms(&storage);
    assert_eq!(queue_len(&storage), 104);
    // A transaction was in flight when the server went down.
    let in_flight = next_transaction(&storage, ORIGIN, DESTINATION, 1_000)
        .await
        .expect("next")
        .expect("a transaction");
    assert_eq!(in_flight.pdus.len(), MAX_PDUS);

    // Two failures: a short outage keeps every event.
    for failures in 1..CATCH_UP_AFTER_FAILURES {
        let recorded = fail(&storage, 1_000, 2_000);
        assert_eq!(recorded.failures, failures);
        assert!(!recorded.catching_up);
    }
    assert_eq!(queue_len(&storage), 104);
    // The third: the backlog collapses to the newest event of each room, the newest
    // receipt; typing is dropped, the EDU of another kind stays queued; the transaction in
    // flight is forgotten (its events are in the rows).
    let recorded = fail(&storage, 4_000, 5_000);
    assert!(recorded.catching_up);
    assert_eq!(queue_len(&storage), 1);
    let rows = catch_up_rows(&storage);
    let key = |room: &str, user: &str| (DESTINATION.to_owned(), room.to_owned(), user.to_owned());
    assert_eq!(
        rows,
        vec![
            (
                key(ROOM_A, ""),
                QueueItem::Pdu {
                    event_id: "$event98".to_owned()
                }
            ),
            (
                key(ROOM_A, "@a:here.test"),
                receipt(ROOM_A, "@a:here.test", 98)
            ),
            (
                key(ROOM_B, ""),
                QueueItem::Pdu {
                    event_id: "$event99".to_owned()
                }
            ),
        ]
    );
    assert!(
        storage
            .destination_txn
            .get(&DESTINATION.to_owned())
            .expect("txn")
            .is_none()
    );

    // While down, a thousand more events cost no more rows; typing is not kept.
    for n in 100..1100 {
        let room = if n % 2 == 0 { ROOM_A } else { ROOM_B };
        let item = store_event(&storage, n, room);
        stage_one(&storage, &item, Some(room));
        stage_one(&storage, &typing(room), None);
    }
    assert_eq!(queue_len(&storage), 1);
    assert_eq!(catch_up_rows(&storage).len(), 3);

    // Back: the newest event of each room and the receipt go first, in one transaction.
    let first = next_transaction(&storage, ORIGIN, DESTINATION, 10_000)
        .await
        .expect("next")
        .expect("catch-up");
    assert_eq!(event_numbers(&first), [1098, 1099]);
    assert_eq!(
        first.edus,
        [receipt(ROOM_A, "@a:here.test", 98)].map(|item| match item {
            QueueItem::Edu { edu, .. } => edu,
            QueueItem::Pdu { .. } => unreachable!(),
        })
    );
    // A newer event of room A while it is in flight: the retry is the same transaction,
    // and the newer event is not lost when it is accepted.
    let newer = store_event(&storage, 1100, ROOM_A);
    stage_one(&storage, &newer, Some(ROOM_A));
    let again = next_transaction(&storage, ORIGIN, DESTINATION, 11_000)
        .await
        .expect("next")
        .expect("the same");
    assert_eq!(again, first);
    complete(&storage, ORIGIN, DESTINATION, &first).expect("complete");
    assert!(state(&storage).is_some_and(|state| state.catching_up));
    let second = next_transaction(&storage, ORIGIN, DESTINATION, 12_000)
        .await
        .expect("next")
        .expect("the newer event");
    assert_eq!(event_numbers(&second), [1100]);
    complete(&storage, ORIGIN, DESTINATION, &second).expect("complete");
    // Caught up: the server is healthy again, the lasting EDU follows, and new events are
    // queued one by one again.
    assert_eq!(state(&storage), None);
    let third = next_transaction(&storage, ORIGIN, DESTINATION, 13_000)
        .await
        .expect("next")
        .expect("the lasting EDU");
    assert_eq!(third.edus[0]["edu_type"], "m.direct_to_device");
    complete(&storage, ORIGIN, DESTINATION, &third).expect("complete");
    for n in 1101..1103 {
        let item = store_event(&storage, n, ROOM_B);
        stage_one(&storage, &item, Some(ROOM_B));
    }
    assert_eq!(queue_len(&storage), 2);
    assert!(catch_up_rows(&storage).is_empty());
}

#[test]
fn a_backlog_over_the_limit_collapses_at_the_next_batch_after_one_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = crate::storage::testing::open(dir.path());
    let first = store_event(&storage, 0, ROOM_A);
    stage_one(&storage, &first, Some(ROOM_A));
    let recorded = fail(&storage, 30_000, 40_000);
    assert!(!recorded.catching_up, "one failure, a short backlog");
    let mut rows_seen = Vec::new();
    for n in 1..=CATCH_UP_BACKLOG + 10 {
        let item = store_event(&storage, n, ROOM_A);
        stage_one(&storage, &item, Some(ROOM_A));
        rows_seen.push(queue_len(&storage) + catch_up_rows(&storage).len());
    }
    let most = rows_seen.iter().max().copied().unwrap_or_default() as u64;
    assert!(most <= CATCH_UP_BACKLOG + 2, "{most}");
    assert_eq!(queue_len(&storage), 0);
    assert_eq!(catch_up_rows(&storage).len(), 1);
    assert!(state(&storage).is_some_and(|state| state.catching_up && state.failures == 1));
}

#[actix_web::test]
async fn catch_up_and_backoff_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let storage = crate::storage::testing::open(dir.path());
        backlog_of_two_rooms(&storage);
        for _ in 0..CATCH_UP_AFTER_FAILURES {
            fail(&storage, 86_400_000, 90_000_000);
        }
        let item = store_event(&storage, 100, ROOM_B);
        stage_one(&storage, &item, Some(ROOM_B));
        storage.flush_blocking().expect("flush");
    }
    // A new process: the counts in memory are gone.
    STAGING.set(Staging::default());
    let storage = crate::storage::testing::open(dir.path());
    let failing = failing_destinations(&storage).expect("failing");
    assert_eq!(failing.len(), 1);
    let (destination, recorded) = &failing[0];
    assert_eq!(destination, DESTINATION);
    assert_eq!(
        (recorded.failures, recorded.delay_ms, recorded.retry_at_ms),
        (CATCH_UP_AFTER_FAILURES, 86_400_000, 90_000_000)
    );
    assert!(recorded.catching_up);
    // Still in catch-up after the restart: new events overwrite rows.
    let item = store_event(&storage, 101, ROOM_A);
    stage_one(&storage, &item, Some(ROOM_A));
    assert_eq!(queue_len(&storage), 1, "only the lasting EDU");
    let resumed = next_transaction(&storage, ORIGIN, DESTINATION, 1_000)
        .await
        .expect("next")
        .expect("catch-up");
    assert_eq!(event_numbers(&resumed), [101, 100]);
}

#[actix_web::test]
async fn the_newest_of_our_events_is_found_among_others_with_a_mark_now_and_then() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = crate::storage::testing::open(dir.path());
    let first = store_event(&storage, 0, ROOM_A);
    stage_one(&storage, &first, Some(ROOM_A));
    for _ in 0..CATCH_UP_AFTER_FAILURES {
        fail(&storage, 1_000, 2_000);
    }
    // 3,000 more events in the room, one in seven ours (staged, as the follower does).
    let mut marks = BTreeSet::new();
    let mut newest_ours = 0;
    for n in 1..=3_000 {
        if n % 7 == 0 {
            let item = store_event(&storage, n, ROOM_A);
            stage_one(&storage, &item, Some(ROOM_A));
            newest_ours = n;
        } else {
            store_remote_event(&storage, n, ROOM_A);
        }
        let rows = catch_up_rows(&storage);
        assert_eq!(rows.len(), 1);
        if let QueueItem::Pdu { event_id } = &rows[0].1 {
            marks.insert(event_id.clone());
        }
    }
    assert!(
        marks.len() <= 4,
        "a mark per {REMARK_AFTER} positions: {}",
        marks.len()
    );
    let transaction = next_transaction(&storage, ORIGIN, DESTINATION, 1_000)
        .await
        .expect("next")
        .expect("catch-up");
    assert_eq!(event_numbers(&transaction), [newest_ours]);
    complete(&storage, ORIGIN, DESTINATION, &transaction).expect("complete");
    assert!(catch_up_rows(&storage).is_empty());
    assert_eq!(state(&storage), None, "caught up");
}
