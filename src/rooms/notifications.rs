//! Push rules at work (spec: client-server API, "Push Notifications", "Receiving
//! notifications"): when an event is stored, each local member's rules decide whether it
//! notifies them and whether it highlights; those outcomes are stored with the event, in
//! its batch, and give the unread counts of `/sync` and the list of `/notifications`.
//!
//! What a user has read is kept per room and per thread (`userroom_read`): it moves forward
//! with their `m.read` and `m.read.private` receipts and when they send an event. The
//! stored notifications are what `federation::push` delivers to push gateways.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::task::{Context, Poll, Waker};

use ruma::events::TimelineEventType;
use ruma::push::{
    Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset,
};
use ruma::room_version_rules::{RoomPowerLevelsRules, RoomVersionRules};
use ruma::serde::Raw;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, Int, OwnedUserId, RoomId, UInt, UserId};
use serde_json::Value;

use crate::rooms;
use crate::storage::records::StoredNotification;
use crate::storage::{
    Batch, Storage, StorageError, pair_prefix, user_room_short, user_room_short_if_any,
};

/// A notification as `/notifications` and push delivery see it: the stored row with its
/// room and event read back from its stream position.
#[derive(Debug, Clone)]
pub(crate) struct NotificationRecord {
    pub(crate) room_id: String,
    pub(crate) event_id: String,
    /// The actions of the push rule that matched, as the spec writes them.
    pub(crate) actions: Value,
    /// The thread the event belongs to (its root), if any.
    pub(crate) thread: Option<String>,
    pub(crate) ts: u64,
}

/// The stored notification at `position` with its room and event: those at that position
/// of the stream. `None` if the event is gone (its room was deleted).
pub(crate) fn resolve(
    storage: &Storage,
    position: u64,
    stored: StoredNotification,
) -> Result<Option<NotificationRecord>, StorageError> {
    let Some(room_id) = storage.stream_room.get(&position)? else {
        return Ok(None);
    };
    let Some(event_id) = storage
        .roomstream_eventid
        .get(&(room_id.clone(), position))?
    else {
        return Ok(None);
    };
    Ok(Some(NotificationRecord {
        room_id,
        event_id,
        actions: stored.actions,
        thread: stored.thread,
        ts: stored.ts,
    }))
}

/// What one event means for one local user: notify (and highlight) or nothing.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) user_id: String,
    pub(crate) actions: Value,
    pub(crate) highlight: bool,
}

/// The push outcome of an event for everyone it may notify, and its thread.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventPush {
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) thread: Option<String>,
}

/// The thread key of the main timeline in `userroom_read` and threaded receipts.
pub(crate) const MAIN: &str = "main";

/// How many `m.relates_to` hops are followed to find an event's thread (the spec suggests
/// three, so that a reaction to a threaded message counts in that thread).
const THREAD_HOPS: usize = 3;

/// The user's push rules: their `m.push_rules` account data, or the spec's defaults.
pub(crate) fn ruleset(storage: &Storage, user_id: &UserId) -> Result<Ruleset, StorageError> {
    crate::users::push_rules::ruleset(storage, user_id)
}

/// Evaluates `json`, an event about to be stored in `room_id`, against the push rules of
/// each local user it may concern: the room's joined members (the sender excepted) and, for
/// an invite, the invited user. Reads the room's state before the event.
pub(crate) fn evaluate(
    storage: &Storage,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    json: &CanonicalJsonObject,
) -> Result<EventPush, StorageError> {
    let thread = thread_of(storage, room_id, json)?;
    let sender = json.get("sender").and_then(as_str).unwrap_or_default();
    let (members, joined) = joined_members(storage, room_id)?;
    let mut candidates: Vec<(String, String)> = members
        .iter()
        .filter(|(user, _)| user.as_str() != sender)
        .map(|(user, name)| (user.clone(), name.clone()))
        .collect();
    if let Some(invited) = invite_target(json) {
        candidates.push((invited.clone(), invited));
    }
    let mut outcomes = Vec::new();
    if candidates.is_empty() {
        return Ok(EventPush { outcomes, thread });
    }
    let raw: Raw<Value> = match serde_json::value::to_raw_value(json) {
        Ok(raw) => Raw::from_json(raw),
        Err(_) => return Ok(EventPush { outcomes, thread }),
    };
    // Flattened once for every member's rules (ruma's `get_actions` would do it per user).
    let flattened = FlattenedJson::from_raw(&raw);
    let power_levels = power_levels_context(storage, rules, room_id)?;
    let member_count = UInt::try_from(joined as u64).unwrap_or(UInt::MAX);
    for (user, display_name) in candidates {
        let Ok(user_id) = OwnedUserId::try_from(user.as_str()) else {
            continue;
        };
        // Only our own users have push rules here.
        if !storage.userid_account.contains_key(&user)? {
            continue;
        }
        // Rules that cannot be read must not stop the room: the defaults apply.
        let ruleset = ruleset(storage, &user_id).unwrap_or_else(|err| {
            tracing::warn!(user = %user_id, "push rules unreadable, defaults used: {err}");
            Ruleset::server_default(&user_id)
        });
        let mut context =
            PushConditionRoomCtx::new(room_id.to_owned(), member_count, user_id, display_name);
        context.power_levels = power_levels.clone();
        let Some(actions) = first_match(&ruleset, &flattened, &context) else {
            continue;
        };
        if !actions.iter().any(Action::should_notify) {
            continue;
        }
        outcomes.push(Outcome {
            user_id: user,
            actions: serde_json::to_value(actions).unwrap_or(Value::Array(Vec::new())),
            highlight: actions.iter().any(Action::is_highlight),
        });
    }
    Ok(EventPush { outcomes, thread })
}

/// Adds, to the event's batch (which places it at `position`), its notifications and the
/// sender's implicit read marker (sending an event marks everything before it read, in its
/// thread).
pub(crate) fn stage(
    storage: &Storage,
    batch: &mut Batch,
    room: &str,
    sender: &str,
    push: &EventPush,
    position: u64,
    ts: u64,
) -> Result<(), StorageError> {
    for outcome in &push.outcomes {
        let record = StoredNotification {
            actions: outcome.actions.clone(),
            highlight: outcome.highlight,
            thread: push.thread.clone(),
            ts,
        };
        storage.usernotify_record.batch_insert(
            batch,
            &(outcome.user_id.clone(), position),
            &record,
        )?;
        let short = user_room_short(storage, &outcome.user_id, room)?;
        storage.pairstream_unread.batch_insert(
            batch,
            &(short, position),
            &(outcome.highlight, push.thread.clone()),
        )?;
    }
    let thread = push.thread.as_deref().unwrap_or(MAIN);
    mark_read(storage, batch, (sender, room, thread), position)
}

/// Moves what `user` has read in `room` (and `thread`: `""` for everything) forward to
/// `position`, never back. Call under the room service's ordering lock.
pub(crate) fn mark_read(
    storage: &Storage,
    batch: &mut Batch,
    (user, room, thread): (&str, &str, &str),
    position: u64,
) -> Result<(), StorageError> {
    let key = (user.to_owned(), room.to_owned(), thread.to_owned());
    if storage.userroom_read.get(&key)?.unwrap_or(0) >= position {
        return Ok(());
    }
    storage.userroom_read.batch_insert(batch, &key, &position)?;
    // What is read no longer counts: its unread flags go, so counting later reads only
    // what is still unread (the list for `/notifications` stays).
    let Some(short) = user_room_short_if_any(storage, user, room)? else {
        return Ok(());
    };
    for entry in storage
        .pairstream_unread
        .range(&(short, 0), &(short, position))
    {
        let ((_, at), (_, flagged_thread)) = entry?;
        let same_thread = match thread {
            "" => true,
            MAIN => flagged_thread.is_none(),
            root => flagged_thread.as_deref() == Some(root),
        };
        if same_thread {
            storage.pairstream_unread.batch_remove(batch, &(short, at));
        }
    }
    Ok(())
}

/// Unread notification and highlight counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) notifications: u64,
    pub(crate) highlights: u64,
}

impl Counts {
    fn add(&mut self, highlight: bool) {
        self.notifications += 1;
        self.highlights += u64::from(highlight);
    }

    pub(crate) fn to_json(self) -> Value {
        serde_json::json!({
            "notification_count": self.notifications,
            "highlight_count": self.highlights,
        })
    }
}

/// A user's unread counts in a room up to `upto`. With `per_thread`, the room's counts are
/// the main timeline's and each thread's come apart (keyed by root); without, the room's
/// counts hold everything.
pub(crate) fn unread(
    storage: &Storage,
    user_id: &UserId,
    room_id: &RoomId,
    upto: u64,
    per_thread: bool,
) -> Result<(Counts, BTreeMap<String, Counts>), StorageError> {
    let read = read_positions(storage, user_id, room_id)?;
    let everything = read.get("").copied().unwrap_or(0);
    let mut room = Counts::default();
    let mut threads: BTreeMap<String, Counts> = BTreeMap::new();
    if everything >= upto {
        return Ok((room, threads));
    }
    let Some(short) = user_room_short_if_any(storage, user_id.as_str(), room_id.as_str())? else {
        return Ok((room, threads));
    };
    for entry in storage
        .pairstream_unread
        .range(&(short, everything + 1), &(short, upto))
    {
        let ((_, position), (highlight, thread)) = entry?;
        let thread_key = thread.as_deref().unwrap_or(MAIN);
        if read.get(thread_key).is_some_and(|&read| position <= read) {
            continue;
        }
        match thread {
            Some(root) if per_thread => threads.entry(root).or_default().add(highlight),
            _ => room.add(highlight),
        }
    }
    Ok((room, threads))
}

/// The most notifications one `/notifications` page looks at (highlights may be rare).
const MAX_EXAMINED: usize = 5000;

/// One entry of `/notifications`.
pub(crate) struct Listed {
    pub(crate) record: NotificationRecord,
    pub(crate) read: bool,
}

/// A page of a user's notifications, newest first, and where the next page starts.
pub(crate) struct Page {
    pub(crate) notifications: Vec<Listed>,
    pub(crate) next: Option<u64>,
}

/// Up to `limit` of the user's notifications older than `before` (the newest without it),
/// highlights only if asked.
pub(crate) fn list(
    storage: &Storage,
    user_id: &UserId,
    before: Option<u64>,
    limit: usize,
    only_highlights: bool,
) -> Result<Page, StorageError> {
    let user = user_id.to_string();
    let upto = match before {
        Some(0) => {
            return Ok(Page {
                notifications: Vec::new(),
                next: None,
            });
        }
        Some(before) => before - 1,
        None => u64::MAX,
    };
    let mut read_by_room: HashMap<String, HashMap<String, u64>> = HashMap::new();
    let mut notifications = Vec::new();
    let mut next = None;
    for (examined, entry) in storage
        .usernotify_record
        .range(&(user.clone(), 0), &(user, upto))
        .rev()
        .enumerate()
    {
        let ((_, position), stored) = entry?;
        // A page looks at a bounded number of notifications; the token resumes the walk.
        if examined == MAX_EXAMINED {
            next = Some(position + 1);
            break;
        }
        if only_highlights && !stored.highlight {
            continue;
        }
        if notifications.len() == limit {
            next = Some(position + 1);
            break;
        }
        let Some(record) = resolve(storage, position, stored)? else {
            continue;
        };
        let read = match read_by_room.get(&record.room_id) {
            Some(read) => read,
            None => {
                let room_id = match ruma::OwnedRoomId::try_from(record.room_id.as_str()) {
                    Ok(room_id) => room_id,
                    Err(_) => continue,
                };
                let read = read_positions(storage, user_id, &room_id)?;
                read_by_room.entry(record.room_id.clone()).or_insert(read)
            }
        };
        let read = is_read(read, record.thread.as_deref(), position);
        notifications.push(Listed { record, read });
    }
    Ok(Page {
        notifications,
        next,
    })
}

/// Whether the notification at `position` in `room` (in `thread`) is read.
pub(crate) fn is_read(read: &HashMap<String, u64>, thread: Option<&str>, position: u64) -> bool {
    read.get("").is_some_and(|&read| position <= read)
        || read
            .get(thread.unwrap_or(MAIN))
            .is_some_and(|&read| position <= read)
}

/// Where the user has read up to in a room: `""` for everything, `main`, or a thread root.
pub(crate) fn read_positions(
    storage: &Storage,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<HashMap<String, u64>, StorageError> {
    let mut prefix = pair_prefix(user_id.as_str());
    prefix.extend_from_slice(&pair_prefix(room_id.as_str()));
    storage
        .userroom_read
        .scan_prefix(&prefix)
        .map(|entry| entry.map(|((_, _, thread), position)| (thread, position)))
        .collect()
}

/// The thread an event belongs to: the root of the first `m.thread` relation found by
/// following `m.relates_to` up to [`THREAD_HOPS`] events.
pub(crate) fn thread_of(
    storage: &Storage,
    room_id: &RoomId,
    json: &CanonicalJsonObject,
) -> Result<Option<String>, StorageError> {
    let mut relation = relates_to(json);
    for _ in 0..THREAD_HOPS {
        let Some((rel_type, parent)) = relation else {
            return Ok(None);
        };
        // Only an event of the same room can be a thread here.
        let same_room = storage
            .eventid_meta
            .get(&parent)?
            .is_some_and(|meta| meta.room_id == room_id.as_str());
        if !same_room {
            return Ok(None);
        }
        if rel_type.as_deref() == Some("m.thread") {
            return Ok(Some(parent));
        }
        relation = rooms::load_json(storage, &parent)?.and_then(|parent| relates_to(&parent));
    }
    Ok(None)
}

/// `(rel_type, event_id)` of an event's `m.relates_to`.
fn relates_to(json: &CanonicalJsonObject) -> Option<(Option<String>, String)> {
    let relation = json
        .get("content")?
        .as_object()?
        .get("m.relates_to")?
        .as_object()?;
    let parent = relation.get("event_id").and_then(as_str)?.to_owned();
    let rel_type = relation.get("rel_type").and_then(as_str).map(str::to_owned);
    Some((rel_type, parent))
}

fn as_str(value: &CanonicalJsonValue) -> Option<&str> {
    value.as_str()
}

/// The invited user of an `m.room.member` invite event.
fn invite_target(json: &CanonicalJsonObject) -> Option<String> {
    let kind = json.get("type").and_then(as_str)?;
    if kind != TimelineEventType::RoomMember.to_string() {
        return None;
    }
    let membership = json
        .get("content")?
        .as_object()?
        .get("membership")
        .and_then(as_str)?;
    (membership == "invite")
        .then(|| json.get("state_key").and_then(as_str).map(str::to_owned))
        .flatten()
}

/// The joined members of a room with their display names there (their user ID if none),
/// and how many are joined in all. Only local members' events are read: only they have
/// push rules here.
fn joined_members(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<(Vec<(String, String)>, usize), StorageError> {
    // From the joined members' summary: a large room's memberships are not read for each
    // event.
    let summary = storage.joined_summary(room_id.as_str())?;
    let mut local = Vec::new();
    for user in summary.local.iter().cloned() {
        let name = rooms::state_content(storage, room_id, "m.room.member", &user)?
            .and_then(|content| content["displayname"].as_str().map(str::to_owned))
            .unwrap_or_else(|| user.clone());
        local.push((user, name));
    }
    Ok((local, summary.count))
}

/// What `sender_notification_permission` conditions (`@room`) need: the room's power levels.
fn power_levels_context(
    storage: &Storage,
    rules: &RoomVersionRules,
    room_id: &RoomId,
) -> Result<Option<PushConditionPowerLevelsCtx>, StorageError> {
    let levels = rooms::state_content(storage, room_id, "m.room.power_levels", "")?;
    let create = rooms::state_content(storage, room_id, "m.room.create", "")?.unwrap_or_default();
    let mut creators: Vec<OwnedUserId> = create["additional_creators"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|user| user.as_str().and_then(|u| OwnedUserId::try_from(u).ok()))
        .collect();
    if let Some(creator) = rooms::state_sender(storage, room_id, "m.room.create", "")?
        .and_then(|creator| OwnedUserId::try_from(creator).ok())
    {
        creators.push(creator);
    }
    let Some(levels) = levels else {
        return Ok(None);
    };
    let users = levels["users"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(user, level)| {
            Some((
                OwnedUserId::try_from(user.as_str()).ok()?,
                Int::new(level.as_i64()?)?,
            ))
        })
        .collect();
    let users_default = levels["users_default"]
        .as_i64()
        .and_then(Int::new)
        .unwrap_or_default();
    let notifications = serde_json::from_value(levels["notifications"].clone()).unwrap_or_default();
    Ok(Some(PushConditionPowerLevelsCtx::new(
        users,
        users_default,
        notifications,
        RoomPowerLevelsRules::new(&rules.authorization, creators),
    )))
}

/// The actions of the first of `ruleset`'s rules that applies (none: no actions).
fn first_match<'a>(
    ruleset: &'a Ruleset,
    event: &FlattenedJson,
    context: &PushConditionRoomCtx,
) -> Option<&'a [Action]> {
    for rule in ruleset {
        if now(rule.applies(event, context))? {
            return Some(rule.actions());
        }
    }
    Some(&[])
}

/// The value of a future that needs no waiting (ruma's rule matching is `async` for
/// conditions this server does not use), or `None` if it would wait.
fn now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::storage::KeyCodec as _;
    use crate::storage::testing;

    /// A database whose notifications an older Hearth wrote as JSON, with room and event
    /// IDs copied in: after the migration, `/notifications` and the unread counts read the
    /// same as before.
    #[test]
    fn notifications_written_as_json_read_the_same_after_the_migration() {
        let dir = tempfile::tempdir().expect("dir");
        let (user, room) = ("@u:x".to_owned(), "!r:x".to_owned());
        let sound = json!(["notify", {"set_tweak": "sound", "value": "default"}]);
        let custom = json!(["notify", {"set_tweak": "highlight"}, {"set_tweak": "x", "value": 1}]);
        {
            let storage = testing::open(dir.path());
            for (position, event) in [(5u64, "$e5"), (7, "$e7")] {
                storage
                    .stream_room
                    .insert(&position, &room)
                    .expect("stream");
                storage
                    .roomstream_eventid
                    .insert(&(room.clone(), position), &event.to_owned())
                    .expect("timeline");
            }
            let rows = [
                (
                    5u64,
                    json!({"room_id": room, "event_id": "$e5", "actions": sound, "highlight": false, "ts": 100}),
                    json!([false, null]),
                ),
                (
                    7,
                    json!({"room_id": room, "event_id": "$e7", "actions": custom, "highlight": true, "thread": "$root", "ts": 200}),
                    json!([true, "$root"]),
                ),
            ];
            for (position, record, flags) in rows {
                testing::write_raw(
                    &storage,
                    "usernotify_record",
                    &(user.clone(), position).encode(),
                    record.to_string().as_bytes(),
                );
                testing::write_raw(
                    &storage,
                    "userroomnotify_flags",
                    &(user.clone(), room.clone(), position).encode(),
                    flags.to_string().as_bytes(),
                );
            }
            testing::set_schema_version(&storage, 13);
        }
        let storage = testing::open(dir.path());
        let raw = testing::read_raw(&storage, "usernotify_record", &(user.clone(), 5).encode())
            .expect("row");
        assert_eq!(raw.len(), 10, "rewritten compact: {raw:?}");
        let user_id = UserId::parse(user.as_str()).expect("user");
        let page = list(&storage, &user_id, None, 10, false).expect("list");
        let listed: Vec<_> = page
            .notifications
            .iter()
            .map(|listed| {
                let record = &listed.record;
                (
                    record.event_id.as_str(),
                    record.room_id.as_str(),
                    record.actions.clone(),
                    record.thread.as_deref(),
                    record.ts,
                    listed.read,
                )
            })
            .collect();
        assert_eq!(
            listed,
            vec![
                ("$e7", "!r:x", custom, Some("$root"), 200, false),
                ("$e5", "!r:x", sound, None, 100, false),
            ]
        );
        let room_id = RoomId::parse(room.as_str()).expect("room");
        let (main, threads) = unread(&storage, &user_id, &room_id, 10, true).expect("unread");
        assert_eq!(
            main,
            Counts {
                notifications: 1,
                highlights: 0
            }
        );
        assert_eq!(
            threads.get("$root"),
            Some(&Counts {
                notifications: 1,
                highlights: 1
            })
        );
    }
}
