//! Numbered schema migrations, run in order at start-up. Each one moves the database from
//! version `n - 1` to `n` and must be safe to run again if a crash interrupts it before the
//! new version is recorded. Append only: never edit or renumber a released migration.

use super::{Storage, StorageError, StorageResult};

pub(super) struct Migration {
    pub version: u64,
    pub description: &'static str,
    pub apply: fn(&Storage) -> StorageResult<()>,
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
        description: "state history and notifications: roomstate_history, roomstream_state, usernotify_record, userroomnotify_flags, userroom_read",
        apply: index_state_history,
    },
    Migration {
        version: 11,
        description: "federation: servername_keys",
        apply: |_| Ok(()),
    },
];

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
            .insert(&(room, position), &(kind, state_key))?;
    }
    Ok(())
}

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
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path(), 1 << 20).expect("open");
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
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path(), 1 << 20).expect("open");
        storage.set_schema_version(0).expect("set");
        let err = run(&storage, failing).expect_err("fails");
        assert!(err.to_string().contains("migration 2 (broken)"), "{err}");
        assert_eq!(storage.schema_version().expect("version"), 1);
    }

    #[test]
    fn state_history_is_built_from_stored_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path(), 1 << 20).expect("open");
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
        let first = (room.clone(), "m.room.topic".to_owned(), String::new(), 1);
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
