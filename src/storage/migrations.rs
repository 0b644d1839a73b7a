//! Numbered schema migrations, run in order at start-up. Each one moves the database from
//! version `n - 1` to `n` and must be safe to run again if a crash interrupts it before the
//! new version is recorded. Append only: never edit or renumber a released migration.

use super::codec::{KeyCodec, ValueCodec};
use super::compact::{UnreadCodec, user_room_short};
use super::{Storage, StorageError, StorageResult};

pub(super) struct Migration {
    pub(crate) version: u64,
    pub(crate) description: &'static str,
    pub(crate) apply: fn(&Storage) -> StorageResult<()>,
}

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial schema: meta, userid_account",
        // The trees are created when opened; there is nothing to convert yet.
        apply: |_| Ok(()),
    },
    Migration {
        version: 2,
        description: "sessions and devices: tokenhash_session, userdevice_device, token_registration",
        // New, empty trees: created when opened.
        apply: |_| Ok(()),
    },
    Migration {
        version: 3,
        description: "rooms: eventid_pdu, eventid_meta, roomid_room, roomstate_eventid, roomstream_eventid, userroom_membership, txn_eventid",
        apply: |_| Ok(()),
    },
    Migration {
        version: 4,
        description: "users: useraccountdata_data, userid_profile, userfilter_filter",
        apply: |_| Ok(()),
    },
    Migration {
        version: 5,
        description: "receipts: roomreceipt_record",
        apply: |_| Ok(()),
    },
    Migration {
        version: 6,
        description: "directory: alias_room, roomid_published",
        apply: |_| Ok(()),
    },
    Migration {
        version: 7,
        description: "openid: openid_user",
        apply: |_| Ok(()),
    },
    Migration {
        version: 8,
        description: "push: userid_pushers",
        apply: |_| Ok(()),
    },
    Migration {
        version: 9,
        description: "relations: parent_child, roomthread_latest",
        apply: |_| Ok(()),
    },
    Migration {
        version: 10,
        description: "state history, notifications, change streams, state snapshots: roomstate_history, roomstream_state, usernotify_record, userroomnotify_flags, userroom_read, stream_room, userstream_accountdata, statekey_short, short_statekey, eventid_short, short_eventid, snapshot_data, eventid_statebefore, parentrel_child, roomuser_membership",
        apply: |storage| {
            index_state_history(storage)?;
            index_change_streams(storage)?;
            index_snapshots(storage)
        },
    },
    Migration {
        version: 11,
        description: "federation: servername_keys, userroom_invitestate",
        apply: |_| Ok(()),
    },
    Migration {
        version: 12,
        description: "federation queues: destination_queue, destination_txn, destination_known, seq_keptedu",
        apply: |_| Ok(()),
    },
    Migration {
        version: 13,
        description: "outbound catch-up: destination_catchup, destination_state",
        // New, empty trees; a recorded transaction without `catch_up` reads as before.
        apply: |_| Ok(()),
    },
    Migration {
        version: 14,
        description: "compact notifications: usernotify_record in binary, without the room and event IDs; userroomnotify_flags becomes pairstream_unread, keyed by userroom_short",
        apply: compact_notifications,
    },
];

/// Rewrites the JSON rows of `usernotify_record` in their compact form
/// ([`super::compact`]), and moves `userroomnotify_flags` (keyed by user and room IDs) to
/// `pairstream_unread` (keyed by their short ID), dropping the old tree last. The codec
/// reads both forms and short IDs are found again, so running it again after a crash
/// redoes only what is left.
fn compact_notifications(storage: &Storage) -> StorageResult<()> {
    for entry in storage.usernotify_record.iter() {
        let (key, value) = entry?;
        storage.usernotify_record.insert(&key, &value)?;
    }
    const OLD: &str = "userroomnotify_flags";
    if !storage
        .db
        .tree_names()
        .iter()
        .any(|name| name == OLD.as_bytes())
    {
        return Ok(());
    }
    let old = storage.db.open_tree(OLD)?;
    for entry in old.iter() {
        let (key, value) = entry?;
        let (user, room, position) = <(String, String, u64) as KeyCodec>::decode(&key)?;
        let flags = <UnreadCodec as ValueCodec>::decode(&value)?;
        let short = user_room_short(storage, &user, &room)?;
        storage
            .pairstream_unread
            .insert(&(short, position), &flags)?;
    }
    storage.flush_blocking()?;
    storage.db.drop_tree(OLD)?;
    Ok(())
}

/// Fills `roomstate_history` and `roomstream_state` from the events already stored: every
/// state event at its stream position. Inserting the same entries again is harmless.
fn index_state_history(storage: &Storage) -> StorageResult<()> {
    for entry in storage.roomstream_eventid.iter() {
        let ((room, position), event_id) = entry?;
        let Some(text) = storage.eventid_pdu.get(&event_id)? else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| StorageError::Corrupt(format!("stored event {event_id}: {err}")))?;
        let (Some(kind), Some(state_key)) = (event["type"].as_str(), event["state_key"].as_str())
        else {
            continue;
        };
        let (kind, state_key) = (kind.to_owned(), state_key.to_owned());
        storage.roomstate_history.insert(
            &(room.clone(), kind.clone(), state_key.clone(), position),
            &event_id,
        )?;
        storage
            .roomstream_state
            .insert(&(room, position), &vec![(kind, state_key)])?;
    }
    Ok(())
}

/// Fills `stream_room` (events and receipts by position) and `userstream_accountdata`
/// (each account data key at its latest position). Running it again is harmless.
fn index_change_streams(storage: &Storage) -> StorageResult<()> {
    for entry in storage.roomstream_eventid.iter() {
        let ((room, position), _) = entry?;
        storage.stream_room.insert(&position, &room)?;
    }
    for entry in storage.roomreceipt_record.iter() {
        let ((room, _, _), record) = entry?;
        storage.stream_room.insert(&record.stream, &room)?;
    }
    for entry in storage.parent_child.iter() {
        let ((parent, position), child) = entry?;
        let Some(text) = storage.eventid_pdu.get(&child)? else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| StorageError::Corrupt(format!("stored event {child}: {err}")))?;
        if let (Some(rel_type), Some(sender)) = (
            event["content"]["m.relates_to"]["rel_type"].as_str(),
            event["sender"].as_str(),
        ) {
            storage.parentrel_child.insert(
                &(parent, rel_type.to_owned(), position),
                &(child, sender.to_owned()),
            )?;
        }
    }
    for entry in storage.userroom_membership.iter() {
        let ((user, room), record) = entry?;
        storage
            .roomuser_membership
            .insert(&(room, user), &record.membership)?;
    }
    for entry in storage.useraccountdata_data.iter() {
        let ((user, scope, kind), record) = entry?;
        storage
            .userstream_accountdata
            .insert(&(user, record.stream), &(scope, kind))?;
    }
    Ok(())
}

/// Gives every stored event its state snapshot before it, replaying each room's events in
/// stream order (rooms here so far are local, so their history is a line), and records each
/// room's current snapshot. A room already done is skipped.
fn index_snapshots(storage: &Storage) -> StorageResult<()> {
    use super::snapshots;
    for entry in storage.roomid_room.iter() {
        let (room, mut record) = entry?;
        if record.state.is_some() {
            continue;
        }
        let mut batch = super::Batch::new();
        let mut pending = std::collections::BTreeMap::new();
        let mut current =
            snapshots::store_full(storage, &mut batch, &Default::default(), &mut pending)?;
        for entry in storage
            .roomstream_eventid
            .scan_prefix(&super::pair_prefix(&room))
        {
            let (_, event_id) = entry?;
            storage
                .eventid_statebefore
                .batch_insert(&mut batch, &event_id, &current)?;
            let Some(text) = storage.eventid_pdu.get(&event_id)? else {
                continue;
            };
            let event: serde_json::Value = serde_json::from_str(&text)
                .map_err(|err| StorageError::Corrupt(format!("stored event {event_id}: {err}")))?;
            if let (Some(kind), Some(state_key)) =
                (event["type"].as_str(), event["state_key"].as_str())
            {
                let key = snapshots::short_state_key(storage, kind, state_key)?;
                let short = snapshots::short_event_id(storage, &event_id)?;
                current = snapshots::derive(
                    storage,
                    &mut batch,
                    Some(current),
                    &[(key, short)],
                    &mut pending,
                )?;
            }
        }
        record.state = Some(current);
        storage
            .roomid_room
            .batch_insert(&mut batch, &room, &record)?;
        storage.apply(batch)?;
    }
    Ok(())
}

#[cfg(test)]
/// The schema version this build writes.
pub const SCHEMA_VERSION: u64 = MIGRATIONS.len() as u64;

pub(super) fn run(storage: &Storage, migrations: &[Migration]) -> StorageResult<()> {
    let latest = migrations.last().map_or(0, |m| m.version);
    let found = storage.schema_version()?;
    if found > latest {
        return Err(StorageError::TooNew {
            found,
            supported: latest,
        });
    }
    for migration in migrations.iter().filter(|m| m.version > found) {
        tracing::info!(
            version = migration.version,
            "migrating the database: {}",
            migration.description
        );
        (migration.apply)(storage).map_err(|err| StorageError::Migration {
            version: migration.version,
            description: migration.description,
            reason: err.to_string(),
        })?;
        storage.set_schema_version(migration.version)?;
        storage.flush_blocking()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(storage: &Storage, name: &str) -> StorageResult<()> {
        let mut order = storage
            .meta
            .get(b"order")?
            .map(|v| v.to_vec())
            .unwrap_or_default();
        order.extend_from_slice(name.as_bytes());
        storage.meta.insert(b"order", order)?;
        Ok(())
    }

    const TEST_MIGRATIONS: &[Migration] = &[
        Migration {
            version: 1,
            description: "one",
            apply: |s| mark(s, "1"),
        },
        Migration {
            version: 2,
            description: "two",
            apply: |s| mark(s, "2"),
        },
        Migration {
            version: 3,
            description: "three",
            apply: |s| mark(s, "3"),
        },
    ];

    #[test]
    fn pending_migrations_run_in_order_once() {
        let (_dir, storage) = crate::storage::testing::temporary();
        storage.set_schema_version(1).expect("set");
        run(&storage, TEST_MIGRATIONS).expect("migrate");
        run(&storage, TEST_MIGRATIONS).expect("nothing left to do");
        assert_eq!(
            storage.meta.get(b"order").expect("get").as_deref(),
            Some(&b"23"[..])
        );
        assert_eq!(storage.schema_version().expect("version"), 3);
    }

    #[test]
    fn a_failing_migration_stops_at_the_last_good_version() {
        let failing: &[Migration] = &[
            Migration {
                version: 1,
                description: "one",
                apply: |s| mark(s, "1"),
            },
            Migration {
                version: 2,
                description: "broken",
                apply: |_| Err(StorageError::Corrupt("test".into())),
            },
        ];
        let (_dir, storage) = crate::storage::testing::temporary();
        storage.set_schema_version(0).expect("set");
        let err = run(&storage, failing).expect_err("fails");
        assert!(err.to_string().contains("migration 2 (broken)"), "{err}");
        assert_eq!(storage.schema_version().expect("version"), 1);
    }

    #[test]
    fn state_history_is_built_from_stored_events() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let room = "!r:x".to_owned();
        let events = [
            (
                "$topic1",
                r#"{"type":"m.room.topic","state_key":"","content":{"topic":"a"}}"#,
            ),
            (
                "$message",
                r#"{"type":"m.room.message","content":{"body":"hi"}}"#,
            ),
            (
                "$topic2",
                r#"{"type":"m.room.topic","state_key":"","content":{"topic":"b"}}"#,
            ),
        ];
        for (position, (id, json)) in events.iter().enumerate() {
            let position = position as u64 + 1;
            storage
                .eventid_pdu
                .insert(&(*id).to_owned(), &(*json).to_owned())
                .expect("pdu");
            storage
                .roomstream_eventid
                .insert(&(room.clone(), position), &(*id).to_owned())
                .expect("stream");
        }
        index_state_history(&storage).expect("index");
        index_state_history(&storage).expect("again, harmlessly");
        let changes: Vec<_> = storage
            .roomstream_state
            .iter()
            .map(|entry| entry.expect("entry").0.1)
            .collect();
        assert_eq!(changes, vec![1, 3]);
        let first = (room, "m.room.topic".to_owned(), String::new(), 1);
        assert_eq!(
            storage
                .roomstate_history
                .get(&first)
                .expect("get")
                .as_deref(),
            Some("$topic1")
        );
    }
}
