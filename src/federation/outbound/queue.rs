//! The durable queue of what waits to go to each server, and the transactions made from it.
//!
//! Items are queued in the same batch as the stream position that produced them (see
//! [`super::follower`]), so a crash loses neither. A transaction is recorded as in flight
//! before it is sent and removed, with its items, only after the server answered `200`:
//! a retry, even after a restart, sends the same `txnId` with the same content, as the spec
//! asks ("wait and retry for a 200 OK response before sending a transaction with a different
//! `txnId`").

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::storage::{Batch, Storage, StorageError, pair_prefix};

/// The spec's limits of one transaction.
pub(crate) const MAX_PDUS: usize = 50;
pub(crate) const MAX_EDUS: usize = 100;

/// Stale items skipped while building one transaction, at most: bounds the work of one
/// call after a long outage full of expired typing notifications.
const MAX_SKIPPED: usize = 1000;

pub(crate) use crate::storage::records::QueueItem;

pub(crate) use crate::storage::records::PendingTxn;

/// A transaction ready to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transaction {
    pub(crate) pending: PendingTxn,
    pub(crate) pdus: Vec<Value>,
    pub(crate) edus: Vec<Value>,
}

impl Transaction {
    /// The request body of `PUT /_matrix/federation/v1/send/{txnId}`.
    pub(crate) fn body(&self, origin: &str) -> Value {
        json!({
            "origin": origin,
            "origin_server_ts": self.pending.origin_server_ts,
            "pdus": self.pdus,
            "edus": self.edus,
        })
    }
}

/// Adds `item` to the queue of each of `destinations`, in `batch`.
pub(crate) fn stage(
    storage: &Storage,
    batch: &mut Batch,
    destinations: &BTreeSet<String>,
    item: &QueueItem,
) -> Result<(), StorageError> {
    for destination in destinations {
        let seq = storage.next_id("outbound_queue")?;
        storage
            .destination_queue
            .batch_insert(batch, &(destination.clone(), seq), item)?;
        storage
            .destination_known
            .batch_insert(batch, destination, &seq)?;
    }
    Ok(())
}

/// Which queue entries go into the next transaction, and which are stale and go away.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    pub(crate) seqs: Vec<u64>,
    pub(crate) stale: Vec<u64>,
}

/// Picks the head of a queue, in order, up to the spec's limits. It stops at the first item
/// that does not fit rather than reaching past it: a receipt must not overtake the event
/// it points at. Expired EDUs are stale, and so is what `sendable` refuses (a PDU that can
/// no longer be read, an item of a room whose server ACL now denies the destination).
pub(crate) fn select(
    items: impl Iterator<Item = Result<(u64, QueueItem), StorageError>>,
    now_ms: u64,
    sendable: impl Fn(&QueueItem) -> Result<bool, StorageError>,
) -> Result<Selection, StorageError> {
    let mut selection = Selection::default();
    let (mut pdus, mut edus) = (0, 0);
    for item in items {
        let (seq, item) = item?;
        let fresh = match &item {
            QueueItem::Pdu { .. } => true,
            QueueItem::Edu { expires_ms, .. } => expires_ms.is_none_or(|at| at > now_ms),
        };
        let usable = fresh && sendable(&item)?;
        if !usable {
            selection.stale.push(seq);
            if selection.stale.len() >= MAX_SKIPPED {
                break;
            }
            continue;
        }
        let (count, limit) = match item {
            QueueItem::Pdu { .. } => (&mut pdus, MAX_PDUS),
            QueueItem::Edu { .. } => (&mut edus, MAX_EDUS),
        };
        if *count == limit {
            break;
        }
        *count += 1;
        selection.seqs.push(seq);
    }
    Ok(selection)
}

/// The next transaction for `destination`: the one in flight, if any, exactly as it was;
/// else a new one from the head of the queue, recorded as in flight (and flushed) before
/// it is returned. `None` when nothing waits.
pub(crate) async fn next_transaction(
    storage: &Storage,
    destination: &str,
    now_ms: u64,
) -> Result<Option<Transaction>, StorageError> {
    if let Some(pending) = storage.destination_txn.get(&destination.to_owned())? {
        return load(storage, destination, pending).map(Some);
    }
    let items = storage
        .destination_queue
        .scan_prefix(&pair_prefix(destination))
        .map(|entry| entry.map(|((_, seq), item)| (seq, item)));
    let sendable = |item: &QueueItem| sendable_to(storage, destination, item);
    let selection = select(items, now_ms, sendable)?;
    let mut batch = Batch::new();
    for seq in &selection.stale {
        storage
            .destination_queue
            .batch_remove(&mut batch, &(destination.to_owned(), *seq));
    }
    if selection.seqs.is_empty() {
        storage.apply(batch)?;
        return Ok(None);
    }
    let pending = PendingTxn {
        txn_id: format!("{now_ms}.{}", storage.next_id("outbound_txn")?),
        origin_server_ts: now_ms,
        seqs: selection.seqs,
    };
    storage
        .destination_txn
        .batch_insert(&mut batch, &destination.to_owned(), &pending)?;
    storage.apply(batch)?;
    storage.flush().await?;
    load(storage, destination, pending).map(Some)
}

/// Whether `item` may still go to `destination`: a PDU must still be stored, and the
/// server ACL of the item's room, as it is now, must allow the destination. Items were
/// queued under the ACL of their time; one set since then is obeyed from the moment it is
/// in the room's state.
fn sendable_to(
    storage: &Storage,
    destination: &str,
    item: &QueueItem,
) -> Result<bool, StorageError> {
    let room = match item {
        QueueItem::Pdu { event_id } => {
            if !storage.eventid_pdu.contains_key(&event_id.to_owned())? {
                return Ok(false);
            }
            storage
                .eventid_meta
                .get(&event_id.to_owned())?
                .map(|meta| meta.room_id)
        }
        QueueItem::Edu { edu, .. } => edu_room(edu).map(str::to_owned),
    };
    let Some(room_id) = room.and_then(|room| ruma::OwnedRoomId::try_from(room).ok()) else {
        return Ok(true);
    };
    crate::federation::acl::room_allows(storage, &room_id, destination)
}

/// The room an EDU is about, for the EDUs of one room (`m.typing`, and the `m.receipt`s
/// queued here, which hold one room each).
fn edu_room(edu: &Value) -> Option<&str> {
    let content = edu.get("content")?;
    match edu.get("edu_type")?.as_str()? {
        "m.typing" => content.get("room_id")?.as_str(),
        "m.receipt" => {
            let rooms = content.as_object()?;
            (rooms.len() == 1).then(|| rooms.keys().next().map(String::as_str))?
        }
        _ => None,
    }
}

/// Reads the content of a recorded transaction. Entries are never changed once queued, and
/// events never change once stored, so the content is the same every time.
fn load(
    storage: &Storage,
    destination: &str,
    pending: PendingTxn,
) -> Result<Transaction, StorageError> {
    let mut transaction = Transaction {
        pending,
        pdus: Vec::new(),
        edus: Vec::new(),
    };
    for seq in &transaction.pending.seqs {
        let key = (destination.to_owned(), *seq);
        match storage.destination_queue.get(&key)? {
            Some(QueueItem::Pdu { event_id }) => {
                if let Some(text) = storage.eventid_pdu.get(&event_id)? {
                    let pdu = serde_json::from_str(&text).map_err(|err| {
                        StorageError::Corrupt(format!("stored event {event_id}: {err}"))
                    })?;
                    transaction.pdus.push(pdu);
                }
            }
            Some(QueueItem::Edu { edu, .. }) => transaction.edus.push(edu),
            None => {}
        }
    }
    Ok(transaction)
}

/// Forgets a transaction the server accepted, with its entries, in one batch.
pub(crate) async fn complete(
    storage: &Storage,
    destination: &str,
    transaction: &Transaction,
) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    for seq in &transaction.pending.seqs {
        storage
            .destination_queue
            .batch_remove(&mut batch, &(destination.to_owned(), *seq));
    }
    storage
        .destination_txn
        .batch_remove(&mut batch, &destination.to_owned());
    storage.apply(batch)?;
    storage.flush().await
}

/// Every server something was ever queued for: where to look for work at start-up.
pub(crate) fn known_destinations(storage: &Storage) -> Result<Vec<String>, StorageError> {
    storage
        .destination_known
        .iter()
        .map(|entry| entry.map(|(destination, _)| destination))
        .collect()
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
