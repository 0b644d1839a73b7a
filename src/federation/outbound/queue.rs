//! The durable queue of what waits to go to each server, and the transactions made from it.
//!
//! Items are queued in the same batch as the stream position that produced them (see
//! [`super::follower`]), so a crash loses neither. A transaction is recorded as in flight
//! before it is sent and removed, with its items, only after the server answered `200`:
//! a retry, even after a restart, sends the same `txnId` with the same content, as the spec
//! asks ("wait and retry for a 200 OK response before sending a transaction with a different
//! `txnId`").
//!
//! # Catch-up
//! A server that keeps failing (see [`CATCH_UP_AFTER_FAILURES`] and [`CATCH_UP_BACKLOG`])
//! stops getting one row per event: its backlog collapses to one row per room in
//! `destination_catchup` (a mark from which the room's newest event of ours is found when
//! it is sent, rewritten only every [`REMARK_AFTER`] positions) and each of our users'
//! newest read receipt there; typing and presence for it are dropped. When it takes
//! transactions again it is sent those newest events, and fills the gaps itself with
//! `/get_missing_events` and backfill, as the spec intends (this is what Synapse does too).
//! A dead server thus costs disk per room, not per event. EDUs of other kinds (none are
//! queued today; to-device and device-list updates would be) are never collapsed nor
//! dropped: they stay in the queue, in order.
//!
//! The follower's staging and the changes of mode are serialized by [`super::Wake`]'s
//! staging lock, so a server's items go to the queue or to catch-up rows, never both at
//! once, and a newer catch-up row is never overwritten by an older item.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::storage::{Batch, Storage, StorageError, StorageResult, pair_prefix};

/// The spec's limits of one transaction.
pub(crate) const MAX_PDUS: usize = 50;
pub(crate) const MAX_EDUS: usize = 100;

/// Stale items skipped while building one transaction, at most: bounds the work of one
/// call after a long outage full of expired typing notifications.
const MAX_SKIPPED: usize = 1000;

pub(crate) use crate::storage::records::QueueItem;

pub(crate) use crate::storage::records::{CatchUpEntry, DestinationState, PendingTxn};

/// Failures in a row after which a server's backlog collapses into catch-up rows: a server
/// down for a moment (a restart) still gets every event; one down longer gets the newest.
pub(crate) const CATCH_UP_AFTER_FAILURES: u32 = 3;

/// Items queued for a failing server after which its backlog collapses at once, whatever
/// the failures: a busy room does not fill the disk while its backoff runs.
pub(crate) const CATCH_UP_BACKLOG: u64 = 500;

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

/// Where an item goes for a server in catch-up.
#[derive(Debug, PartialEq, Eq)]
enum CatchUpSlot {
    /// Overwrites the row `(room, user)` (empty user: the room's newest event).
    Row { room_id: String, user_id: String },
    /// News only for a while (typing, presence): not kept for a server that is down.
    Drop,
    /// Kept in the queue as it is, in order (an EDU of another kind).
    Queue,
}

/// Where `item` (of `room`, for a PDU; `None` if unknown) goes for a server in catch-up.
fn catch_up_slot(item: &QueueItem, room: Option<&str>) -> CatchUpSlot {
    match item {
        QueueItem::Pdu { .. } => match room {
            Some(room) => CatchUpSlot::Row {
                room_id: room.to_owned(),
                user_id: String::new(),
            },
            // An event no longer stored cannot be sent anyway.
            None => CatchUpSlot::Drop,
        },
        QueueItem::Edu {
            expires_ms: Some(_),
            ..
        } => CatchUpSlot::Drop,
        QueueItem::Edu { edu, .. } => match receipt_room_user(edu) {
            Some((room_id, user_id)) => CatchUpSlot::Row { room_id, user_id },
            None => CatchUpSlot::Queue,
        },
    }
}

/// The room and user of an `m.receipt` EDU of one receipt (what the follower queues).
fn receipt_room_user(edu: &Value) -> Option<(String, String)> {
    if edu.get("edu_type")?.as_str()? != "m.receipt" {
        return None;
    }
    let room = edu_room(edu)?;
    let users = edu["content"][room].as_object()?;
    let mut receipts = users.values().filter_map(Value::as_object);
    let users = receipts.next()?;
    if receipts.next().is_some() || users.len() != 1 {
        return None;
    }
    let user = users.keys().next()?;
    Some((room.to_owned(), user.clone()))
}

/// What staging knows of the failing servers, kept behind [`super::Wake`]'s staging lock:
/// their recorded states (read again for each batch), and how many items were queued for
/// each since its failure was recorded (counted in memory: a disk write per event is what
/// this module avoids).
#[derive(Default)]
pub(crate) struct Staging {
    failing: BTreeMap<String, DestinationState>,
    queued: BTreeMap<String, u64>,
    changed: BTreeSet<String>,
}

impl Staging {
    /// Reads the failing servers for a new batch, and collapses (in `batch`) the backlog of
    /// those that queued more than [`CATCH_UP_BACKLOG`] items since they started failing.
    pub(crate) fn start(&mut self, storage: &Storage, batch: &mut Batch) -> StorageResult<()> {
        self.failing.clear();
        self.changed.clear();
        for entry in storage.destination_state.iter() {
            let (destination, state) = entry?;
            self.failing.insert(destination, state);
        }
        let failing = &self.failing;
        self.queued
            .retain(|destination, _| failing.contains_key(destination));
        for (destination, state) in &mut self.failing {
            let queued = self.queued.get(destination).copied().unwrap_or_default();
            if !state.catching_up && state.queued.saturating_add(queued) > CATCH_UP_BACKLOG {
                collapse(storage, batch, destination)?;
                state.catching_up = true;
                self.changed.insert(destination.clone());
            }
        }
        Ok(())
    }

    /// Adds `item` (of `room`, if known) for each of `destinations`, in `batch`: to the
    /// queue; or, for a server in catch-up, as a mark on the room's row (written only if
    /// the room has none or an old one: see [`resolve`]), a receipt over the user's row, or
    /// nowhere.
    pub(crate) fn stage(
        &mut self,
        storage: &Storage,
        batch: &mut Batch,
        destinations: &BTreeSet<String>,
        item: &QueueItem,
        room: Option<&str>,
    ) -> StorageResult<()> {
        for destination in destinations {
            match self.failing.get(destination) {
                Some(state) if state.catching_up => match catch_up_slot(item, room) {
                    CatchUpSlot::Row { room_id, user_id } => {
                        let key = (destination.clone(), room_id, user_id);
                        if needs_mark(storage, &key, item)? {
                            storage
                                .destination_catchup
                                .batch_insert(batch, &key, item)?;
                        }
                        continue;
                    }
                    CatchUpSlot::Drop => continue,
                    CatchUpSlot::Queue => {}
                },
                Some(_) => {
                    let queued = self.queued.entry(destination.clone()).or_default();
                    *queued = queued.saturating_add(1);
                }
                None => {}
            }
            let seq = storage.next_id("outbound_queue")?;
            storage
                .destination_queue
                .batch_insert(batch, &(destination.clone(), seq), item)?;
            // Only the key is read (at start-up): written once, not once per event.
            if !storage.destination_known.contains_key(destination)? {
                storage
                    .destination_known
                    .batch_insert(batch, destination, &seq)?;
            }
        }
        Ok(())
    }

    /// Records, in `batch`, the servers that went into catch-up in this batch.
    pub(crate) fn finish(&mut self, storage: &Storage, batch: &mut Batch) -> StorageResult<()> {
        for destination in std::mem::take(&mut self.changed) {
            if let Some(state) = self.failing.get(&destination) {
                storage
                    .destination_state
                    .batch_insert(batch, &destination, state)?;
            }
        }
        Ok(())
    }
}

/// Adds `item` to the queue of each of `destinations` (none of them failing), in `batch`.
#[cfg(test)]
pub(crate) fn stage(
    storage: &Storage,
    batch: &mut Batch,
    destinations: &BTreeSet<String>,
    item: &QueueItem,
) -> StorageResult<()> {
    Staging::default().stage(storage, batch, destinations, item, None)
}

/// Moves `destination`'s queue into catch-up rows, in `batch`: each PDU and receipt over
/// its room's row (oldest first, so the newest wins), typing and presence dropped, other
/// EDUs left in the queue. A transaction in flight made of queue items is forgotten: its
/// events are in the rows, and the server, down for a while, never answered it.
fn collapse(storage: &Storage, batch: &mut Batch, destination: &str) -> Result<(), StorageError> {
    let mut rows: BTreeMap<(String, String, String), QueueItem> = BTreeMap::new();
    let mut collapsed = 0_usize;
    for entry in storage
        .destination_queue
        .scan_prefix(&pair_prefix(destination))
    {
        let (key, item) = entry?;
        let room = match &item {
            QueueItem::Pdu { event_id } => {
                storage.eventid_meta.get(event_id)?.map(|meta| meta.room_id)
            }
            QueueItem::Edu { .. } => None,
        };
        match catch_up_slot(&item, room.as_deref()) {
            CatchUpSlot::Row { room_id, user_id } => {
                rows.insert((destination.to_owned(), room_id, user_id), item);
            }
            CatchUpSlot::Drop => {}
            CatchUpSlot::Queue => continue,
        }
        storage.destination_queue.batch_remove(batch, &key);
        collapsed += 1;
    }
    for (key, item) in &rows {
        storage.destination_catchup.batch_insert(batch, key, item)?;
    }
    if let Some(pending) = storage.destination_txn.get(&destination.to_owned())?
        && pending.catch_up.is_empty()
    {
        storage
            .destination_txn
            .batch_remove(batch, &destination.to_owned());
    }
    tracing::info!(
        %destination,
        collapsed,
        rows = rows.len(),
        "federation: server keeps failing, its backlog collapses to the newest event per room"
    );
    Ok(())
}

/// How many items wait in `destination`'s queue, counted up to `limit + 1`.
fn backlog(storage: &Storage, destination: &str, limit: u64) -> Result<u64, StorageError> {
    let mut count = 0;
    for entry in storage
        .destination_queue
        .scan_prefix(&pair_prefix(destination))
    {
        entry?;
        count += 1;
        if count > limit {
            break;
        }
    }
    Ok(count)
}

/// Records one more failure of `destination`, waiting `delay_ms` until `retry_at_ms`; and
/// collapses its backlog if it failed [`CATCH_UP_AFTER_FAILURES`] times in a row or its
/// queue holds more than [`CATCH_UP_BACKLOG`] items. Call under the staging lock.
pub(crate) fn record_failure(
    storage: &Storage,
    staging: &mut Staging,
    destination: &str,
    delay_ms: u64,
    retry_at_ms: u64,
) -> Result<DestinationState, StorageError> {
    let key = destination.to_owned();
    // Counted afresh here, from the queue itself.
    staging.queued.remove(destination);
    let mut state = storage.destination_state.get(&key)?.unwrap_or_default();
    state.failures = state.failures.saturating_add(1);
    state.delay_ms = delay_ms;
    state.retry_at_ms = retry_at_ms;
    let mut batch = Batch::new();
    if !state.catching_up {
        state.queued = backlog(storage, destination, CATCH_UP_BACKLOG)?;
        if state.failures >= CATCH_UP_AFTER_FAILURES || state.queued > CATCH_UP_BACKLOG {
            collapse(storage, &mut batch, destination)?;
            state.catching_up = true;
        }
    }
    storage
        .destination_state
        .batch_insert(&mut batch, &key, &state)?;
    storage.apply(batch)?;
    Ok(state)
}

/// The servers failing to take transactions, as recorded (read at start-up).
pub(crate) fn failing_destinations(
    storage: &Storage,
) -> Result<Vec<(String, DestinationState)>, StorageError> {
    storage.destination_state.iter().collect()
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
    origin: &str,
    destination: &str,
    now_ms: u64,
) -> Result<Option<Transaction>, StorageError> {
    if let Some(pending) = storage.destination_txn.get(&destination.to_owned())? {
        return load(storage, destination, pending).map(Some);
    }
    if let Some(transaction) = next_catch_up(storage, origin, destination, now_ms).await? {
        return Ok(Some(transaction));
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
        catch_up: Vec::new(),
    };
    storage
        .destination_txn
        .batch_insert(&mut batch, &destination.to_owned(), &pending)?;
    storage.apply(batch)?;
    storage.flush().await?;
    load(storage, destination, pending).map(Some)
}

/// A catch-up transaction from `destination`'s catch-up rows (at most the spec's limits of
/// PDUs and EDUs), recorded as in flight with its items; `None` when there are none.
async fn next_catch_up(
    storage: &Storage,
    origin: &str,
    destination: &str,
    now_ms: u64,
) -> Result<Option<Transaction>, StorageError> {
    let mut entries = Vec::new();
    let mut batch = Batch::new();
    let (mut pdus, mut edus, mut skipped) = (0, 0, 0);
    for entry in storage
        .destination_catchup
        .scan_prefix(&pair_prefix(destination))
    {
        let (key, marked) = entry?;
        let item = resolve(storage, origin, &key.1, &key.2, &marked)?;
        if !sendable_to(storage, destination, &item)? {
            storage.destination_catchup.batch_remove(&mut batch, &key);
            skipped += 1;
            if skipped >= MAX_SKIPPED {
                break;
            }
            continue;
        }
        let count = match item {
            QueueItem::Pdu { .. } => &mut pdus,
            QueueItem::Edu { .. } => &mut edus,
        };
        if (*count == MAX_PDUS && matches!(item, QueueItem::Pdu { .. })) || *count == MAX_EDUS {
            continue;
        }
        *count += 1;
        let (_, room_id, user_id) = key;
        entries.push(CatchUpEntry {
            room_id,
            user_id,
            item,
        });
        if pdus == MAX_PDUS && edus == MAX_EDUS {
            break;
        }
    }
    if entries.is_empty() {
        storage.apply(batch)?;
        return Ok(None);
    }
    let pending = PendingTxn {
        txn_id: format!("{now_ms}.{}", storage.next_id("outbound_txn")?),
        origin_server_ts: now_ms,
        seqs: Vec::new(),
        catch_up: entries,
    };
    storage
        .destination_txn
        .batch_insert(&mut batch, &destination.to_owned(), &pending)?;
    storage.apply(batch)?;
    storage.flush().await?;
    load(storage, destination, pending).map(Some)
}

/// Stream positions a room's catch-up mark may lag behind a newer event of ours before it
/// is written again: bounds what [`resolve`] reads (at most this many events of the room)
/// at one disk write per this many positions, not one per event.
pub(crate) const REMARK_AFTER: u64 = 1000;

/// The stream position of a stored event (0 if unknown).
fn position_of(storage: &Storage, event_id: &str) -> StorageResult<u64> {
    Ok(storage
        .eventid_meta
        .get(&event_id.to_owned())?
        .map_or(0, |meta| meta.stream))
}

/// Whether a room's catch-up row must be written for `item`: it has none, or it marks an
/// event more than [`REMARK_AFTER`] positions older.
fn needs_mark(
    storage: &Storage,
    key: &(String, String, String),
    item: &QueueItem,
) -> StorageResult<bool> {
    let (Some(QueueItem::Pdu { event_id: marked }), QueueItem::Pdu { event_id }) =
        (storage.destination_catchup.get(key)?, item)
    else {
        return Ok(true);
    };
    let (marked_at, at) = (
        position_of(storage, &marked)?,
        position_of(storage, event_id)?,
    );
    Ok(at.saturating_sub(marked_at) > REMARK_AFTER)
}

/// What a catch-up row stands for now. A room's row is a mark, written again only every
/// [`REMARK_AFTER`] positions (so a dead server costs next to no disk writes per event):
/// it stands for the newest event of the room that goes to other servers (ours, or one we
/// relay), which is the marked one or comes at most [`REMARK_AFTER`] positions after it.
/// A receipt row holds its receipt.
fn resolve(
    storage: &Storage,
    origin: &str,
    room: &str,
    user: &str,
    marked: &QueueItem,
) -> StorageResult<QueueItem> {
    let QueueItem::Pdu { event_id } = marked else {
        return Ok(marked.clone());
    };
    if !user.is_empty() {
        return Ok(marked.clone());
    }
    let floor = position_of(storage, event_id)?;
    let after_mark = storage.roomstream_eventid.range(
        &(room.to_owned(), floor.saturating_add(1)),
        &(room.to_owned(), floor.saturating_add(REMARK_AFTER)),
    );
    let mut newest = marked.clone();
    for entry in after_mark {
        let ((_, _), candidate) = entry?;
        if goes_out(storage, origin, &candidate)? {
            newest = QueueItem::Pdu {
                event_id: candidate,
            };
        }
    }
    Ok(newest)
}

/// Whether a stored event is one the follower sends to other servers: sent by one of our
/// users, or relayed by us (see [`super::follower`]).
fn goes_out(storage: &Storage, origin: &str, event_id: &str) -> StorageResult<bool> {
    #[derive(serde::Deserialize)]
    struct Sender {
        sender: String,
    }
    if storage
        .eventid_meta
        .get(&event_id.to_owned())?
        .is_some_and(|meta| meta.relay)
    {
        return Ok(true);
    }
    let Some(text) = storage.eventid_pdu.get(&event_id.to_owned())? else {
        return Ok(false);
    };
    Ok(serde_json::from_str::<Sender>(&text)
        .ok()
        .and_then(|event| {
            let (_, server) = event.sender.split_once(':')?;
            Some(server == origin)
        })
        .unwrap_or(false))
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
    for entry in &transaction.pending.catch_up {
        match &entry.item {
            QueueItem::Pdu { event_id } => {
                if let Some(text) = storage.eventid_pdu.get(event_id)? {
                    let pdu = serde_json::from_str(&text).map_err(|err| {
                        StorageError::Corrupt(format!("stored event {event_id}: {err}"))
                    })?;
                    transaction.pdus.push(pdu);
                }
            }
            QueueItem::Edu { edu, .. } => transaction.edus.push(edu.clone()),
        }
    }
    Ok(transaction)
}

/// Forgets a transaction the server accepted, with its entries, in one batch: queue rows,
/// and catch-up rows that still stand for what was sent (a row of a room with a newer
/// event, or a newer receipt, stays, to be sent next). Once no catch-up row is left, the server is no longer failing: its
/// state goes, and what comes next is queued per event again. Call under the staging lock.
pub(crate) fn complete(
    storage: &Storage,
    origin: &str,
    destination: &str,
    transaction: &Transaction,
) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    for seq in &transaction.pending.seqs {
        storage
            .destination_queue
            .batch_remove(&mut batch, &(destination.to_owned(), *seq));
    }
    let mut removed = BTreeSet::new();
    for entry in &transaction.pending.catch_up {
        let key = (
            destination.to_owned(),
            entry.room_id.clone(),
            entry.user_id.clone(),
        );
        let Some(marked) = storage.destination_catchup.get(&key)? else {
            continue;
        };
        // Still what was sent: nothing newer came for the row meanwhile.
        if resolve(storage, origin, &key.1, &key.2, &marked)? == entry.item {
            storage.destination_catchup.batch_remove(&mut batch, &key);
            removed.insert(key);
        }
    }
    let rows_left = storage
        .destination_catchup
        .scan_prefix(&pair_prefix(destination))
        .map(|entry| entry.map(|(key, _)| key))
        .find(|key| key.as_ref().map_or(true, |key| !removed.contains(key)))
        .transpose()?
        .is_some();
    if !rows_left
        && storage
            .destination_state
            .contains_key(&destination.to_owned())?
    {
        storage
            .destination_state
            .batch_remove(&mut batch, &destination.to_owned());
    }
    storage
        .destination_txn
        .batch_remove(&mut batch, &destination.to_owned());
    storage.apply(batch)
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
