//! Sliding sync's extensions: `to_device`, `e2ee`, `account_data`, `receipts` and
//! `typing`, each answered from the same indexes `/sync` reads, for the rooms the request's
//! lists and subscriptions cover (or those the extension's `lists`/`rooms` name).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedRoomId, UserId};
use serde_json::{Map, Value, json};

use super::request::{Extensions, ScopedConfig};
use crate::error::{Error, ErrorKind};
use crate::sync::SyncService;
use crate::users::{account_data, keys, to_device};

/// The rooms an answer is about, by where they came from.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    /// Each list's rooms in its windows.
    pub(crate) lists: BTreeMap<String, Vec<OwnedRoomId>>,
    /// Subscribed rooms the user may see.
    pub(crate) subscriptions: Vec<OwnedRoomId>,
}

impl Coverage {
    /// The rooms an extension configured by `config` covers.
    fn rooms_for(&self, config: &ScopedConfig) -> BTreeSet<&OwnedRoomId> {
        let mut rooms = BTreeSet::new();
        for (name, list) in &self.lists {
            if config.covers_list(name) {
                rooms.extend(list);
            }
        }
        for room in &self.subscriptions {
            if config.covers_subscription(room.as_str()) {
                rooms.insert(room);
            }
        }
        rooms
    }
}

/// What the extensions are answered from.
pub(crate) struct Span<'a> {
    pub(crate) user_id: &'a UserId,
    pub(crate) device_id: &'a str,
    /// The connection's acknowledged position (`None` on its first request).
    pub(crate) since: Option<u64>,
    pub(crate) since_typing: u64,
    pub(crate) upto: u64,
    /// Rooms sent whole in this answer: their receipts and typing come whole too.
    pub(crate) fresh: &'a BTreeSet<OwnedRoomId>,
}

/// The extensions' answers, and whether any carries something new (to end a long poll).
pub(crate) fn answer(
    service: &SyncService,
    config: &Extensions,
    span: &Span<'_>,
    coverage: &Coverage,
) -> Result<(Value, bool), Error> {
    let mut answer = Map::new();
    let mut news = false;
    if config.to_device.enabled == Some(true) {
        let (value, any) = to_device_answer(service, config, span)?;
        news |= any;
        answer.insert("to_device".into(), value);
    }
    if config.e2ee.enabled == Some(true) {
        let (value, any) = e2ee_answer(service, span)?;
        news |= any;
        answer.insert("e2ee".into(), value);
    }
    if config.account_data.on() {
        let (value, any) = account_data_answer(service, &config.account_data, span, coverage)?;
        news |= any;
        answer.insert("account_data".into(), value);
    }
    if config.receipts.on() {
        // Only rooms whose stream moved (receipts are on it) or sent whole are read.
        let moved = rooms_moved(service, span)?;
        let mut rooms = Map::new();
        for room_id in coverage.rooms_for(&config.receipts) {
            let fresh = span.fresh.contains(room_id);
            if !fresh && moved.as_ref().is_some_and(|moved| !moved.contains(room_id)) {
                continue;
            }
            let since = if fresh { None } else { span.since };
            if let Some(receipts) = crate::sync::receipts::changes(
                &service.storage,
                room_id,
                span.user_id,
                since,
                span.upto,
            )? {
                rooms.insert(room_id.to_string(), receipts);
            }
        }
        news |= !rooms.is_empty();
        answer.insert("receipts".into(), json!({ "rooms": rooms }));
    }
    if config.typing.on() {
        let mut rooms = Map::new();
        let since_typing = if span.since_typing > service.ephemeral.serial() {
            0
        } else {
            span.since_typing
        };
        let typed: BTreeSet<OwnedRoomId> = service
            .ephemeral
            .typing_rooms_changed_since(since_typing)
            .into_iter()
            .collect();
        for room_id in coverage.rooms_for(&config.typing) {
            let fresh = span.fresh.contains(room_id);
            if !fresh && span.since.is_some() && !typed.contains(room_id) {
                continue;
            }
            let since = if fresh { 0 } else { since_typing };
            if let Some(typing) = service.ephemeral.typing_changed_since(room_id, since) {
                rooms.insert(
                    room_id.to_string(),
                    json!({ "type": "m.typing", "content": { "user_ids": typing } }),
                );
            }
        }
        news |= !rooms.is_empty();
        answer.insert("typing".into(), json!({ "rooms": rooms }));
    }
    Ok((Value::Object(answer), news))
}

/// The rooms the stream names in `(since, upto]` (events, receipts), or `None` on a
/// connection's first request (every room counts): what changed costs, not how many rooms
/// the lists cover.
fn rooms_moved(
    service: &SyncService,
    span: &Span<'_>,
) -> Result<Option<BTreeSet<OwnedRoomId>>, Error> {
    let Some(since) = span.since else {
        return Ok(None);
    };
    let mut moved = BTreeSet::new();
    if since < span.upto {
        for entry in service.storage.stream_room.range(&(since + 1), &span.upto) {
            if let Ok(room_id) = OwnedRoomId::try_from(entry?.1) {
                moved.insert(room_id);
            }
        }
    }
    Ok(Some(moved))
}

/// The device's inbox after `since` (the client's last `next_batch`), which everything up
/// to `since` is acknowledged by, and deleted: `/sync`'s semantics, on the extension's own
/// token.
fn to_device_answer(
    service: &SyncService,
    config: &Extensions,
    span: &Span<'_>,
) -> Result<(Value, bool), Error> {
    let since = match config.to_device.since.as_deref() {
        None => None,
        Some(token) => Some(token.parse::<u64>().map_err(|_| {
            Error::new(
                ErrorKind::InvalidParam,
                format!("`{token}` is not a to-device token from this server"),
            )
        })?),
    };
    // A token from the future (another server's, or a restored backup) acknowledges nothing.
    let since = since.filter(|since| *since <= span.upto);
    if let Some(since) = since {
        to_device::acknowledge(&service.storage, span.user_id, span.device_id, since)?;
    }
    let (mut events, next) = to_device::pending(
        &service.storage,
        span.user_id,
        span.device_id,
        since,
        span.upto,
    )?;
    if let Some(limit) = config.to_device.limit {
        // The pending page ends at the last message it holds; a smaller limit would need
        // that message's position, so keep the page whole unless the client asked for none.
        if limit == 0 {
            events.clear();
            let next = since.unwrap_or(0);
            return Ok((
                json!({ "next_batch": next.to_string(), "events": [] }),
                false,
            ));
        }
    }
    let any = !events.is_empty();
    Ok((
        json!({ "next_batch": next.to_string(), "events": events }),
        any,
    ))
}

/// One-time key counts and unused fallback key types (always), and device list changes.
fn e2ee_answer(service: &SyncService, span: &Span<'_>) -> Result<(Value, bool), Error> {
    let (changed, left) = device_list_changes(service, span.user_id, span.since, span.upto)?;
    let any = !changed.is_empty() || !left.is_empty();
    Ok((
        json!({
            "device_lists": { "changed": changed, "left": left },
            "device_one_time_keys_count":
                keys::one_time_key_counts(&service.storage, span.user_id, span.device_id)?,
            "device_unused_fallback_key_types":
                keys::unused_fallback_types(&service.storage, span.user_id, span.device_id)?,
        }),
        any,
    ))
}

/// The `e2ee` extension's `device_lists`: the users whose devices changed since `since`
/// and those who no longer share a room with the user, from the device-list stream `/sync`
/// reads ([`crate::sync::device_lists`]); nothing on a connection's first request.
pub(crate) fn device_list_changes(
    service: &SyncService,
    user_id: &UserId,
    since: Option<u64>,
    upto: u64,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let Some(since) = since else {
        return Ok((Vec::new(), Vec::new()));
    };
    let lists = crate::sync::device_lists::between(&service.storage, user_id, since, upto)?;
    Ok((
        lists.changed.into_iter().collect(),
        lists.left.into_iter().collect(),
    ))
}

/// Global account data and that of the covered rooms: all of it on a connection's first
/// request (and for rooms sent whole), what changed since afterwards.
fn account_data_answer(
    service: &SyncService,
    config: &ScopedConfig,
    span: &Span<'_>,
    coverage: &Coverage,
) -> Result<(Value, bool), Error> {
    let covered: BTreeSet<String> = coverage
        .rooms_for(config)
        .into_iter()
        .map(ToString::to_string)
        .collect();
    let mut global = Vec::new();
    let mut rooms: Map<String, Value> = Map::new();
    let mut push = |scope: String, kind: String, content| {
        let event = json!({ "type": kind, "content": content });
        if scope.is_empty() {
            global.push(event);
        } else if covered.contains(&scope)
            && let Value::Array(events) = rooms.entry(scope).or_insert_with(|| json!([]))
        {
            events.push(event);
        }
    };
    for (scope, kind, content) in
        account_data::changes(&service.storage, span.user_id, span.since, span.upto)?
    {
        // A fresh room's data is read whole below.
        let fresh =
            span.since.is_some() && span.fresh.iter().any(|room_id| room_id.as_str() == scope);
        if !fresh {
            push(scope, kind, content);
        }
    }
    if span.since.is_some() {
        for room_id in span.fresh {
            if !covered.contains(room_id.as_str()) {
                continue;
            }
            for (kind, content) in
                account_data::room_entries(&service.storage, span.user_id, room_id)?
            {
                push(room_id.to_string(), kind, content);
            }
        }
    }
    let any = !global.is_empty() || !rooms.is_empty();
    Ok((json!({ "global": global, "rooms": rooms }), any))
}
