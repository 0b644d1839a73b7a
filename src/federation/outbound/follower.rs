//! The follower: turns what our users do into queue entries for other servers.
//!
//! It reads the global stream from the last position it handled (a counter in storage) up
//! to the position [`crate::rooms::Rooms::subscribe`] says is stored and flushed. Each
//! event sent by one of our users goes to every other server with a joined member in the
//! room; each public read receipt of one of our users goes as an `m.receipt` EDU. The
//! entries and the new position are one batch: a crash either keeps both or neither, so
//! nothing is lost and nothing is queued twice. Our users' to-device messages for other
//! servers wait at their positions in `stream_todeviceout` and are queued the same way, and
//! so are our users' cross-signing key changes (`stream_keyschanged`, as
//! `m.signing_key_update`). Typing (and, if configured, presence)
//! comes from [`crate::sync::ephemeral`] as it happens and is queued with an expiry: it is news
//! only for a while.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::Wake;
use super::queue::QueueItem;
use crate::federation::Federation;
use crate::storage::records::KeysChangedRecord;
use crate::storage::{Batch, StorageError, pair_prefix};
use crate::sync::ephemeral::Change;
use crate::sync::receipts::ReceiptRecord;

/// The counter holding the last stream position handled.
pub(crate) const POSITION_COUNTER: &str = crate::users::device_lists::OUTBOUND_POSITION_COUNTER;

/// Stream positions handled in one batch: bounds the batch, and the work lost to a crash.
const POSITIONS_PER_BATCH: u64 = 200;

/// How long queued typing and presence stay worth sending.
const TYPING_LIFETIME_MS: u64 = 60_000;
const PRESENCE_LIFETIME_MS: u64 = 10 * 60_000;

/// "Still typing" is repeated to other servers at most this often.
const TYPING_REPEAT: Duration = Duration::from_secs(20);

/// The most "still typing" times remembered (one per typing user and room).
const MAX_TYPING_REMEMBERED: usize = 1024;

/// Waited after a storage failure before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

pub(super) struct Follower {
    fed: Arc<Federation>,
    wake: Arc<Wake>,
    /// The last stream position handled and recorded.
    handled: u64,
    /// When we last told other servers that a user is typing in a room.
    typing_told: HashMap<(OwnedRoomId, OwnedUserId), Instant>,
}

/// Follows the stream and the ephemeral changes until the server stops.
pub(super) async fn run(
    fed: Arc<Federation>,
    wake: Arc<Wake>,
    mut changes: mpsc::Receiver<Change>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut visible = fed.rooms.subscribe();
    let mut follower = loop {
        match Follower::start(fed.clone(), wake.clone()) {
            Ok(follower) => break follower,
            Err(err) => {
                tracing::error!("federation: cannot read the outbound position: {err}");
                if pause(&mut stopping).await {
                    return;
                }
            }
        }
    };
    loop {
        if *stopping.borrow() {
            return;
        }
        let upto = *visible.borrow_and_update();
        if let Err(err) = follower.catch_up(upto).await {
            tracing::error!("federation: queueing events for other servers failed: {err}");
            if pause(&mut stopping).await {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = visible.changed() => if changed.is_err() { return },
            Some(change) = changes.recv() => {
                if let Err(err) = follower.handle_change(change) {
                    tracing::warn!("federation: a typing or presence change was not queued: {err}");
                }
            }
            _ = stopping.changed() => return,
        }
    }
}

/// Waits a little after a failure; `true` if the server is stopping meanwhile.
async fn pause(stopping: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(RETRY_AFTER_FAILURE) => *stopping.borrow(),
        _ = stopping.changed() => true,
    }
}

impl Follower {
    /// Starts where the last run stopped. The very first run starts at the present: the
    /// history before federation existed here is not pushed to anyone.
    pub(super) fn start(fed: Arc<Federation>, wake: Arc<Wake>) -> Result<Follower, StorageError> {
        let handled = match fed.storage.counter(POSITION_COUNTER)? {
            Some(handled) => handled,
            None => {
                let now = fed.rooms.visible_position();
                let mut batch = Batch::new();
                fed.storage
                    .batch_set_counter(&mut batch, POSITION_COUNTER, now);
                fed.storage.apply(batch)?;
                now
            }
        };
        Ok(Follower {
            fed,
            wake,
            handled,
            typing_told: HashMap::new(),
        })
    }

    /// Handles every position up to `upto`, a bounded span at a time. Spans with nothing
    /// for other servers write nothing: a federation join reserves a block of a million
    /// positions for history, and walking it cost 5,000 writes and flushes, seconds of a
    /// busy disk just after the join. The last span records `upto` as handled.
    pub(super) async fn catch_up(&mut self, upto: u64) -> Result<(), StorageError> {
        while self.handled < upto {
            let to = upto.min(self.handled.saturating_add(POSITIONS_PER_BATCH));
            self.handle_span(self.handled, to, to == upto)?;
            self.handled = to;
            if to < upto {
                // A long walk does not hold up the other tasks of this thread.
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// Queues what positions `(from, to]` hold for other servers, and records `to` as
    /// handled, in one batch (a span with nothing queued is written only if it is the
    /// `last` of a walk); then wakes the senders.
    ///
    /// Not flushed: the entries derive from the stream, which is durable already, so a
    /// crash that loses the batch loses its counter with it and the span is queued again.
    /// Nothing queued leaves before it is durable: a sender flushes the transaction it
    /// records (see [`super::queue::next_transaction`]) before sending it, and that flush
    /// covers every write before it. This was one `fdatasync` per message sent in a busy
    /// room, competing with the clients' own.
    fn handle_span(&self, from: u64, to: u64, last: bool) -> Result<(), StorageError> {
        let storage = &self.fed.storage;
        let mut touched = BTreeSet::new();
        {
            // Held until the batch is applied: a server changing mode meanwhile would get
            // its items in the wrong place.
            let mut staging = self.wake.staging();
            let mut batch = Batch::new();
            staging.start(storage, &mut batch)?;
            let mut servers = RoomServers::new(self.origin());
            for entry in storage.stream_room.range(&(from + 1), &to) {
                let (position, room) = entry?;
                if let Some((item, destinations)) =
                    self.outgoing_at(position, &room, &mut servers)?
                {
                    staging.stage(storage, &mut batch, &destinations, &item, Some(&room))?;
                    touched.extend(destinations);
                }
            }
            // Our users' to-device messages for other servers, handed over at their
            // positions: queued and removed in this batch, so each is queued once.
            for entry in storage.stream_todeviceout.range(&(from + 1), &to) {
                let (position, edus) = entry?;
                for (destination, edu) in edus {
                    let item = QueueItem::Edu {
                        edu,
                        expires_ms: None,
                    };
                    let destinations = BTreeSet::from([destination]);
                    staging.stage(storage, &mut batch, &destinations, &item, None)?;
                    touched.extend(destinations);
                }
                storage
                    .stream_todeviceout
                    .batch_remove(&mut batch, &position);
            }
            // Our users' new cross-signing keys, for the servers sharing a room with them.
            for entry in storage.stream_keyschanged.range(&(from + 1), &to) {
                let (_, change) = entry?;
                if let Some((edu, destinations)) = self.signing_key_outgoing(&change)? {
                    let item = QueueItem::Edu {
                        edu,
                        expires_ms: None,
                    };
                    staging.stage(storage, &mut batch, &destinations, &item, None)?;
                    touched.extend(destinations);
                }
            }
            // Our users' device-list changes, as `m.device_list_update` EDUs for the
            // servers sharing a room with them.
            let origin = self.origin();
            let mut servers_of = |user: &UserId| user_servers(storage, user, origin);
            for (edu, destinations) in crate::federation::device_lists::outgoing(
                storage,
                origin,
                (from, to),
                &mut servers_of,
            )? {
                let item = QueueItem::Edu {
                    edu,
                    expires_ms: None,
                };
                staging.stage(storage, &mut batch, &destinations, &item, None)?;
                touched.extend(destinations);
            }
            staging.finish(storage, &mut batch)?;
            if batch.len() == 0 && !last {
                return Ok(());
            }
            storage.batch_set_counter(&mut batch, POSITION_COUNTER, to);
            storage.apply(batch)?;
        }
        self.wake.add(touched);
        Ok(())
    }

    fn origin(&self) -> &ruma::ServerName {
        &self.fed.transport.origin
    }

    /// What position `position` of `room` holds for other servers, and for which.
    fn outgoing_at(
        &self,
        position: u64,
        room: &str,
        servers: &mut RoomServers,
    ) -> Result<Option<(QueueItem, BTreeSet<String>)>, StorageError> {
        let storage = &self.fed.storage;
        match storage
            .roomstream_eventid
            .get(&(room.to_owned(), position))?
        {
            Some(event_id) => self.event_outgoing(room, event_id, servers),
            None => self.receipt_outgoing(room, position, servers),
        }
    }

    /// An event one of our users sent goes to the servers of the room's joined members,
    /// and, for a membership change, to the server of the user it is about (a kicked or
    /// banned user's server hears of it). A remote user's join, leave or knock that came
    /// through our `send_*` endpoints goes to the room's other servers (the spec asks the
    /// resident server to send it on); its own server has it already.
    fn event_outgoing(
        &self,
        room: &str,
        event_id: String,
        servers: &mut RoomServers,
    ) -> Result<Option<(QueueItem, BTreeSet<String>)>, StorageError> {
        let storage = &self.fed.storage;
        let Some(json) = crate::rooms::load_json(storage, &event_id)? else {
            return Ok(None);
        };
        let Some(sender) = string_field(&json, "sender").and_then(|s| UserId::parse(s).ok()) else {
            return Ok(None);
        };
        let local = sender.server_name() == self.origin();
        forget_devices_if_gone(storage, &json, self.origin())?;
        let relayed = !local
            && storage
                .eventid_meta
                .get(&event_id)?
                .is_some_and(|meta| meta.relay);
        if !local && !relayed {
            return Ok(None);
        }
        let mut destinations = servers.of(storage, room)?.clone();
        if relayed {
            destinations.remove(sender.server_name().as_str());
            return Ok(
                (!destinations.is_empty()).then_some((QueueItem::Pdu { event_id }, destinations))
            );
        }
        if string_field(&json, "type") == Some("m.room.member")
            && let Some(target) = string_field(&json, "state_key")
            && let Ok(target) = UserId::parse(target)
            && target.server_name() != self.origin()
        {
            let target = BTreeSet::from([target.server_name().to_string()]);
            destinations.extend(allowed_by_acl(storage, room, target)?);
        }
        Ok((!destinations.is_empty()).then_some((QueueItem::Pdu { event_id }, destinations)))
    }

    /// A public read receipt of one of our users, stored at `position`, as an `m.receipt`
    /// EDU for the servers of the room's joined members.
    fn receipt_outgoing(
        &self,
        room: &str,
        position: u64,
        servers: &mut RoomServers,
    ) -> Result<Option<(QueueItem, BTreeSet<String>)>, StorageError> {
        let storage = &self.fed.storage;
        let mut prefix = pair_prefix(room);
        prefix.extend_from_slice(&pair_prefix(crate::sync::receipts::PUBLIC));
        for entry in storage.roomreceipt_record.scan_prefix(&prefix) {
            let (_, record) = entry?;
            let local = UserId::parse(&record.user_id)
                .is_ok_and(|user| user.server_name() == self.origin());
            if record.stream != position || !local {
                continue;
            }
            let destinations = servers.of(storage, room)?.clone();
            let item = QueueItem::Edu {
                edu: receipt_edu(room, &record),
                expires_ms: None,
            };
            return Ok((!destinations.is_empty()).then_some((item, destinations)));
        }
        Ok(None)
    }

    /// An `m.signing_key_update` EDU with the user's current master and self-signing keys,
    /// for every server sharing a room with them, when those keys changed (signatures
    /// alone are for device lists to tell).
    fn signing_key_outgoing(
        &self,
        change: &KeysChangedRecord,
    ) -> Result<Option<(Value, BTreeSet<String>)>, StorageError> {
        let storage = &self.fed.storage;
        let Ok(user_id) = UserId::parse(change.user_id.as_str()) else {
            return Ok(None);
        };
        if !change.cross_signing_keys || user_id.server_name() != self.origin() {
            return Ok(None);
        }
        let Some(content) = crate::users::cross_signing::signing_key_update(storage, &user_id)?
        else {
            return Ok(None);
        };
        let destinations = user_servers(storage, &user_id, self.origin())?;
        let edu = json!({ "edu_type": "m.signing_key_update", "content": content });
        Ok((!destinations.is_empty()).then_some((edu, destinations)))
    }

    /// Queues a typing or presence change of one of our users.
    pub(super) fn handle_change(&mut self, change: Change) -> Result<(), StorageError> {
        let outgoing = match change {
            Change::Typing {
                room_id,
                user_id,
                typing,
            } => self.typing_outgoing(&room_id, &user_id, typing)?,
            Change::Presence { user_id } => self.presence_outgoing(&user_id)?,
        };
        let Some((edu, destinations, lifetime_ms)) = outgoing else {
            return Ok(());
        };
        if destinations.is_empty() {
            return Ok(());
        }
        let item = QueueItem::Edu {
            edu,
            expires_ms: Some(crate::matrix::time::now_ms() + lifetime_ms),
        };
        let storage = &self.fed.storage;
        let mut staging = self.wake.staging();
        let mut batch = Batch::new();
        staging.start(storage, &mut batch)?;
        staging.stage(storage, &mut batch, &destinations, &item, None)?;
        staging.finish(storage, &mut batch)?;
        // Not flushed: news for a minute is not worth a disk write of its own (sled writes
        // it out within half a second anyway).
        storage.apply(batch)?;
        self.wake.add(destinations);
        Ok(())
    }

    /// An `m.typing` EDU for the room's servers, if the user is ours and this is news.
    fn typing_outgoing(
        &mut self,
        room_id: &OwnedRoomId,
        user_id: &OwnedUserId,
        typing: bool,
    ) -> Result<Option<Outgoing>, StorageError> {
        if user_id.server_name() != self.origin() || !self.typing_is_news(room_id, user_id, typing)
        {
            return Ok(None);
        }
        let servers = room_servers(&self.fed.storage, room_id.as_str(), self.origin())?;
        let edu = typing_edu(room_id, user_id, typing);
        Ok(Some((edu, servers, TYPING_LIFETIME_MS)))
    }

    /// An `m.presence` EDU for every server sharing a room with the user, if the user is
    /// ours and the configuration says to send presence.
    fn presence_outgoing(&self, user_id: &OwnedUserId) -> Result<Option<Outgoing>, StorageError> {
        if !self.fed.config.federation.send_presence || user_id.server_name() != self.origin() {
            return Ok(None);
        }
        let Some(presence) = self.fed.ephemeral.presence_of(user_id) else {
            return Ok(None);
        };
        let mut content = presence.to_json();
        content["user_id"] = json!(user_id);
        let edu = json!({ "edu_type": "m.presence", "content": { "push": [content] } });
        let servers = user_servers(&self.fed.storage, user_id, self.origin())?;
        Ok(Some((edu, servers, PRESENCE_LIFETIME_MS)))
    }

    /// Whether other servers should hear of this typing change: every start and stop, and
    /// "still typing" again only every [`TYPING_REPEAT`].
    fn typing_is_news(
        &mut self,
        room_id: &OwnedRoomId,
        user_id: &OwnedUserId,
        typing: bool,
    ) -> bool {
        let key = (room_id.clone(), user_id.clone());
        if !typing {
            self.typing_told.remove(&key);
            return true;
        }
        let now = Instant::now();
        if self
            .typing_told
            .get(&key)
            .is_some_and(|told| now.duration_since(*told) < TYPING_REPEAT)
        {
            return false;
        }
        if self.typing_told.len() >= MAX_TYPING_REMEMBERED {
            self.typing_told
                .retain(|_, told| now.duration_since(*told) < TYPING_REPEAT);
            if self.typing_told.len() >= MAX_TYPING_REMEMBERED {
                self.typing_told.clear();
            }
        }
        self.typing_told.insert(key, now);
        true
    }
}

/// An EDU, the servers it goes to, and how long it stays worth sending (ms).
type Outgoing = (Value, BTreeSet<String>, u64);

/// The servers of each room's joined members, read once per batch of positions.
struct RoomServers<'a> {
    origin: &'a ruma::ServerName,
    rooms: HashMap<String, BTreeSet<String>>,
}

impl<'a> RoomServers<'a> {
    fn new(origin: &'a ruma::ServerName) -> RoomServers<'a> {
        RoomServers {
            origin,
            rooms: HashMap::new(),
        }
    }

    fn of(
        &mut self,
        storage: &crate::storage::Storage,
        room: &str,
    ) -> Result<&BTreeSet<String>, StorageError> {
        Ok(match self.rooms.entry(room.to_owned()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(room_servers(storage, room, self.origin)?),
        })
    }
}

/// The other servers with a joined member in `room` that the room's server ACL lets take
/// part: a denied server is sent none of the room's events and EDUs (spec: server-server
/// API, "Server Access Control Lists"), even while its users are still members.
pub(crate) fn room_servers(
    storage: &crate::storage::Storage,
    room: &str,
    origin: &ruma::ServerName,
) -> Result<BTreeSet<String>, StorageError> {
    // From the joined members' summary, not a scan of every membership per event.
    let servers = storage
        .joined_summary(room)?
        .servers()
        .filter(|server| *server != origin.as_str())
        .map(str::to_owned)
        .collect();
    allowed_by_acl(storage, room, servers)
}

/// `servers` less those the current server ACL of `room` denies.
fn allowed_by_acl(
    storage: &crate::storage::Storage,
    room: &str,
    mut servers: BTreeSet<String>,
) -> Result<BTreeSet<String>, StorageError> {
    let Ok(room_id) = ruma::RoomId::parse(room) else {
        return Ok(servers);
    };
    if let Some(acl) = crate::federation::acl::room_acl(storage, &room_id)? {
        servers.retain(|server| crate::federation::acl::allows(Some(&acl), server));
    }
    Ok(servers)
}

/// The other servers sharing a room with `user_id`.
fn user_servers(
    storage: &crate::storage::Storage,
    user_id: &UserId,
    origin: &ruma::ServerName,
) -> Result<BTreeSet<String>, StorageError> {
    let mut servers = BTreeSet::new();
    for (room_id, record) in crate::rooms::memberships(storage, user_id)? {
        if record.membership == "join" {
            servers.extend(room_servers(storage, room_id.as_str(), origin)?);
        }
    }
    Ok(servers)
}

/// A remote user's leave, kick or ban: if they share no room with ours any more, their
/// cached device list goes (we stop hearing of their devices).
fn forget_devices_if_gone(
    storage: &crate::storage::Storage,
    json: &CanonicalJsonObject,
    origin: &ruma::ServerName,
) -> Result<(), StorageError> {
    if string_field(json, "type") != Some("m.room.member") {
        return Ok(());
    }
    let Some(target) = string_field(json, "state_key").and_then(|key| UserId::parse(key).ok())
    else {
        return Ok(());
    };
    let joined = matches!(
        json.get("content"),
        Some(CanonicalJsonValue::Object(content))
            if matches!(content.get("membership"), Some(CanonicalJsonValue::String(m)) if m == "join")
    );
    if joined || target.server_name() == origin {
        return Ok(());
    }
    crate::federation::device_lists::forget_if_unshared(storage, &target)
}

fn string_field<'a>(json: &'a CanonicalJsonObject, key: &str) -> Option<&'a str> {
    match json.get(key) {
        Some(CanonicalJsonValue::String(value)) => Some(value),
        _ => None,
    }
}

/// The `m.receipt` EDU of one read receipt (spec: server-server API, "Receipts").
pub(crate) fn receipt_edu(room: &str, record: &ReceiptRecord) -> Value {
    let mut data = json!({ "ts": record.ts });
    if let Some(thread_id) = &record.thread_id {
        data["thread_id"] = json!(thread_id);
    }
    json!({
        "edu_type": "m.receipt",
        "content": {
            room: {
                crate::sync::receipts::PUBLIC: {
                    &record.user_id: { "event_ids": [&record.event_id], "data": data }
                }
            }
        }
    })
}

/// The `m.typing` EDU (spec: server-server API, "Typing Notifications").
pub(crate) fn typing_edu(room_id: &OwnedRoomId, user_id: &OwnedUserId, typing: bool) -> Value {
    json!({
        "edu_type": "m.typing",
        "content": { "room_id": room_id, "user_id": user_id, "typing": typing },
    })
}

#[cfg(test)]
#[path = "follower_tests.rs"]
mod tests;
