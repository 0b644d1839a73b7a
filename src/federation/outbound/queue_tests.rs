//! The queue and its transactions: the spec's limits, order, the same `txnId` and content
//! on every retry (across a reopen of the database too), and entries that survive a crash.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::storage::Storage;

const DESTINATION: &str = "there.test";

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
    let first = next_transaction(&storage, DESTINATION, 1_000)
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
    let again = next_transaction(&storage, DESTINATION, 9_000)
        .await
        .expect("next")
        .expect("still there");
    assert_eq!(again, first);
    drop(storage);
    let storage = crate::storage::testing::open(dir.path());
    let after_restart = next_transaction(&storage, DESTINATION, 20_000)
        .await
        .expect("next")
        .expect("still there");
    assert_eq!(after_restart, first);
    assert_eq!(after_restart.body("here.test"), body);

    // Acknowledged: the next one has a new ID and the rest, then nothing is left.
    complete(&storage, DESTINATION, &first)
        .await
        .expect("complete");
    let second = next_transaction(&storage, DESTINATION, 30_000)
        .await
        .expect("next")
        .expect("the rest");
    assert_ne!(second.pending.txn_id, first.pending.txn_id);
    assert_eq!((second.pdus.len(), second.edus.len()), (20, 3));
    complete(&storage, DESTINATION, &second)
        .await
        .expect("complete");
    let none = next_transaction(&storage, DESTINATION, 40_000)
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
