//! Message retention (MSC1763, `m.room.retention`): a scheduled job that removes the content
//! of events older than their room's `max_lifetime`, without breaking the room's graph.
//!
//! An expired event is *pruned in place*: its stored JSON is replaced by the form the room
//! version's redaction algorithm leaves (what a redaction would leave, but without sending a
//! redaction event). The event ID, `prev_events`, `auth_events`, depth, hashes and signatures
//! stay, so the graph, auth checks and other servers' requests still work; the reference hash
//! is computed over the redacted form anyway, so the event ID still matches. Events that hold
//! a piece of the room's *current* state keep everything (the room's name, topic, power levels
//! and memberships are what the room is, not messages); older state events are pruned like
//! messages, which keeps the keys auth rules read.
//!
//! Every reader (`/messages`, `/sync`, `/context`, `/event`, search, notifications,
//! federation) reads the stored JSON, so each shows the pruned form from the moment a batch
//! commits; nothing is filtered on the way out. Search has no index of its own (it reads the
//! timelines), relations and aggregations hold IDs and senders only, and the notifications of
//! pruned events are deleted. Media are not touched: their lifetime is separate.
//!
//! The walk is bounded: per room it reads the timeline from a cursor (a counter in the
//! database), oldest first, in batches of [`BATCH`] events, stops at the first event that has
//! not expired, and commits each batch (content, notifications, cursor) atomically, so a
//! restart resumes where it stopped.
//!
//! `min_lifetime` only ever lengthens the time an event is kept: Hearth never deletes before
//! `max_lifetime` anyway, so it is honoured by taking the larger of the two.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, RoomId};
use serde_json::Value;

use super::Rooms;
use crate::config::RetentionConfig;
use crate::storage::{Batch, Storage, StorageError, pair_prefix};

/// Events pruned per atomic batch (and per hold of the room's lock).
pub(crate) const BATCH: usize = 100;

/// The `max_lifetime` (ms) in force in a room whose `m.room.retention` content is
/// `policy` (none when the room has no such state), or none when its events are kept
/// forever. The room's own `max_lifetime` is clamped to the configured bounds; without one,
/// the server default applies. A `min_lifetime` above the result raises it.
pub(crate) fn effective_max_lifetime(
    config: &RetentionConfig,
    policy: Option<&Value>,
) -> Option<u64> {
    if !config.enabled {
        return None;
    }
    let lifetime = |key: &str| policy.and_then(|policy| policy.get(key)?.as_u64());
    let max = match lifetime("max_lifetime") {
        Some(room) => {
            let raised = config
                .allowed_lifetime_min
                .map_or(room, |min| room.max(min));
            config
                .allowed_lifetime_max
                .map_or(raised, |max| raised.min(max))
        }
        None => config.default_max_lifetime?,
    };
    Some(lifetime("min_lifetime").map_or(max, |min| max.max(min)))
}

/// What a purge run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Purged {
    /// Rooms with a lifetime in force (walked).
    pub(crate) rooms: usize,
    /// Events whose content was removed.
    pub(crate) events: usize,
    /// Events the walk read (pruned, kept as current state, or not expired).
    pub(crate) walked: usize,
}

/// The counter holding how far the walk of `room` got: the last stream position handled.
fn cursor_name(room: &str) -> String {
    format!("retention.{room}")
}

impl Rooms {
    /// Prunes, in every room with a lifetime in force, the events that expired before `now`
    /// (ms since the epoch). Rooms one after another; each in batches under its lock.
    pub(crate) async fn purge_expired(
        &self,
        config: &RetentionConfig,
        now: u64,
    ) -> Result<Purged, StorageError> {
        let mut purged = Purged::default();
        if !config.enabled {
            return Ok(purged);
        }
        let room_ids: Vec<String> = self
            .storage
            .roomid_room
            .iter()
            .map(|entry| entry.map(|(room, _)| room))
            .collect::<Result<_, _>>()?;
        for room in room_ids {
            let Ok(room_id) = OwnedRoomId::try_from(room.as_str()) else {
                continue;
            };
            let policy = super::state_content(&self.storage, &room_id, "m.room.retention", "")
                .ok()
                .flatten();
            let Some(lifetime) = effective_max_lifetime(config, policy.as_ref()) else {
                continue;
            };
            purged.rooms += 1;
            let walk = Walk {
                cursor: cursor_name(room_id.as_str()),
                expired_before: now.saturating_sub(lifetime),
                keep_current_state: true,
            };
            let (pruned, walked) = self.purge_room(&room_id, &walk).await?;
            purged.events += pruned;
            purged.walked += walked;
        }
        if purged.events > 0 {
            self.storage.flush().await?;
        }
        Ok(purged)
    }

    /// Prunes the content of every event of a room being deleted (`DELETE
    /// /_synapse/admin/v2/rooms/{roomId}` with `purge`), current state included: what is
    /// left is the graph's skeleton, which keeps the room's event IDs and signatures valid
    /// for other servers. Call once no local user is joined. Flushed. Returns how many
    /// events were pruned.
    pub(crate) async fn purge_all_content(&self, room_id: &RoomId) -> Result<usize, StorageError> {
        let walk = Walk {
            cursor: format!("purge.{room_id}"),
            expired_before: u64::MAX,
            keep_current_state: false,
        };
        let (pruned, _) = self.purge_room(room_id, &walk).await?;
        self.storage.flush().await?;
        Ok(pruned)
    }

    /// Prunes the events of `room_id` that `walk` says expired, oldest first: how many
    /// were pruned and how many the walk read.
    async fn purge_room(
        &self,
        room_id: &RoomId,
        walk: &Walk,
    ) -> Result<(usize, usize), StorageError> {
        let Some(room) = self.storage.roomid_room.get(&room_id.to_string())? else {
            return Ok((0, 0));
        };
        let Ok(rules) = super::rules_of(&room) else {
            return Ok((0, 0));
        };
        let local = local_users_ever_in(&self.storage, room_id.as_str())?;
        let (mut total, mut walked) = (0, 0);
        loop {
            let lock = self.lock_for(room_id);
            let held = lock.lock().await;
            let step = purge_batch(
                &self.storage,
                room_id.as_str(),
                &rules.redaction,
                &local,
                walk,
                self.visible_position(),
            )?;
            total += step.pruned;
            walked += step.walked;
            if step.done {
                return Ok((total, walked));
            }
            drop(held);
            tokio::task::yield_now().await;
        }
    }
}

/// Which events a purge walk prunes, and where it keeps its place.
struct Walk {
    /// The counter holding the last stream position handled.
    cursor: String,
    /// Events sent before this (ms since the epoch) are pruned.
    expired_before: u64,
    /// Whether the events of the room's current state keep their content (retention),
    /// or go too (a deleted room).
    keep_current_state: bool,
}

/// What one batch did: events pruned, and whether the walk reached an unexpired event or
/// the end of the timeline.
struct Step {
    pruned: usize,
    walked: usize,
    done: bool,
}

/// Prunes up to [`BATCH`] expired events of `room` after its cursor, and moves the cursor
/// past them, in one atomic batch. Call under the room's lock.
fn purge_batch(
    storage: &Storage,
    room: &str,
    redaction: &ruma::room_version_rules::RedactionRules,
    local: &HashSet<String>,
    walk: &Walk,
    visible: u64,
) -> Result<Step, StorageError> {
    let cursor_key = &walk.cursor;
    let cursor = storage.counter(cursor_key)?.unwrap_or(0);
    let mut batch = Batch::new();
    let mut step = Step {
        pruned: 0,
        walked: 0,
        done: true,
    };
    let mut last = None;
    let range = storage.roomstream_eventid.range(
        &(room.to_owned(), cursor.saturating_add(1)),
        &(room.to_owned(), visible),
    );
    for (read, entry) in range.enumerate() {
        if read == BATCH {
            step.done = false;
            break;
        }
        let ((_, position), event_id) = entry?;
        step.walked += 1;
        let Some(json) = super::load_json(storage, &event_id)? else {
            last = Some(position);
            continue;
        };
        let sent = match json.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
            _ => 0,
        };
        if sent >= walk.expired_before {
            break;
        }
        last = Some(position);
        if walk.keep_current_state && in_current_state(storage, room, &event_id, &json)? {
            continue;
        }
        let pruned = ruma::canonical_json::redact(json.clone(), redaction, None)
            .map_err(|err| StorageError::Corrupt(format!("pruning {event_id}: {err}")))?;
        if pruned != json {
            let text = CanonicalJsonValue::Object(pruned).to_string();
            storage
                .eventid_pdu
                .batch_insert(&mut batch, &event_id, &text)?;
            step.pruned += 1;
        }
        for user in local {
            storage
                .usernotify_record
                .batch_remove(&mut batch, &(user.clone(), position));
        }
    }
    if let Some(last) = last {
        storage.batch_set_counter(&mut batch, cursor_key, last);
        storage.apply(batch)?;
    }
    Ok(step)
}

/// Whether the event holds a piece of the room's current state.
fn in_current_state(
    storage: &Storage,
    room: &str,
    event_id: &str,
    json: &CanonicalJsonObject,
) -> Result<bool, StorageError> {
    let (Some(CanonicalJsonValue::String(kind)), Some(CanonicalJsonValue::String(state_key))) =
        (json.get("type"), json.get("state_key"))
    else {
        return Ok(false);
    };
    let current =
        storage
            .roomstate_eventid
            .get(&(room.to_owned(), kind.clone(), state_key.clone()))?;
    Ok(current.as_deref() == Some(event_id))
}

/// Our users with any membership of `room` (joined, left, invited…): whoever may hold a
/// notification of its events.
fn local_users_ever_in(storage: &Storage, room: &str) -> Result<HashSet<String>, StorageError> {
    let mut local = HashSet::new();
    for key in storage
        .roomuser_membership
        .scan_prefix_keys(&pair_prefix(room))
    {
        let (_, user) = key?;
        if storage.userid_account.contains_key(&user)? {
            local.insert(user);
        }
    }
    Ok(local)
}

/// Runs [`Rooms::purge_expired`] every `purge_interval` until `stopping` turns true. None
/// when retention is off.
pub(crate) fn spawn(
    rooms: Arc<Rooms>,
    config: RetentionConfig,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.enabled {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(config.purge_interval));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.changed() => return,
            }
            if *stopping.borrow() {
                return;
            }
            let started = std::time::Instant::now();
            match rooms
                .purge_expired(&config, crate::matrix::time::now_ms())
                .await
            {
                Ok(purged) if purged.events > 0 => tracing::info!(
                    rooms = purged.rooms,
                    events = purged.events,
                    walked = purged.walked,
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "retention: pruned expired events"
                ),
                Ok(_) => {}
                Err(err) => tracing::warn!("retention: the purge stopped: {err}"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enabled() -> RetentionConfig {
        RetentionConfig {
            enabled: true,
            ..RetentionConfig::default()
        }
    }

    #[test]
    fn nothing_expires_when_retention_is_off() {
        let config = RetentionConfig {
            default_max_lifetime: Some(1000),
            ..RetentionConfig::default()
        };
        let policy = json!({ "max_lifetime": 5 });
        assert_eq!(effective_max_lifetime(&config, Some(&policy)), None);
        assert_eq!(effective_max_lifetime(&config, None), None);
    }

    #[test]
    fn a_room_without_policy_takes_the_default_or_keeps_everything() {
        assert_eq!(effective_max_lifetime(&enabled(), None), None);
        let config = RetentionConfig {
            default_max_lifetime: Some(86_400_000),
            ..enabled()
        };
        assert_eq!(effective_max_lifetime(&config, None), Some(86_400_000));
        // A policy without a usable `max_lifetime` is no policy.
        for policy in [
            json!({}),
            json!({ "max_lifetime": null }),
            json!({ "max_lifetime": -5 }),
            json!({ "max_lifetime": "1d" }),
        ] {
            assert_eq!(
                effective_max_lifetime(&config, Some(&policy)),
                Some(86_400_000),
                "{policy}"
            );
        }
    }

    #[test]
    fn a_room_policy_wins_within_the_bounds() {
        let config = RetentionConfig {
            default_max_lifetime: Some(50_000),
            allowed_lifetime_min: Some(1_000),
            allowed_lifetime_max: Some(100_000),
            ..enabled()
        };
        let lifetime =
            |max: u64| effective_max_lifetime(&config, Some(&json!({ "max_lifetime": max })));
        assert_eq!(lifetime(5_000), Some(5_000));
        assert_eq!(lifetime(10), Some(1_000), "raised to the minimum");
        assert_eq!(lifetime(1_000_000), Some(100_000), "lowered to the maximum");
        // Without bounds a room may ask for anything.
        let open = RetentionConfig {
            default_max_lifetime: Some(50_000),
            ..enabled()
        };
        let policy = json!({ "max_lifetime": 1 });
        assert_eq!(effective_max_lifetime(&open, Some(&policy)), Some(1));
    }

    #[test]
    fn min_lifetime_only_lengthens() {
        let config = enabled();
        let policy = json!({ "min_lifetime": 10_000, "max_lifetime": 5_000 });
        assert_eq!(effective_max_lifetime(&config, Some(&policy)), Some(10_000));
        let policy = json!({ "min_lifetime": 1_000, "max_lifetime": 5_000 });
        assert_eq!(effective_max_lifetime(&config, Some(&policy)), Some(5_000));
        // Alone, it does not make anything expire.
        let policy = json!({ "min_lifetime": 1_000 });
        assert_eq!(effective_max_lifetime(&config, Some(&policy)), None);
    }
}
