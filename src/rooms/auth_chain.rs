//! Auth chains walked at any size (spec: server-server API, "Retrieving event
//! authorisation information", and the `auth_chain` of `send_join` and `/state`): a room of
//! 100,000 state events has an auth chain as long, and that is no reason to refuse it.
//!
//! The walk keeps short event IDs (`u64`, see `storage::snapshots`) rather than ID strings,
//! and reads from each stored event only its `auth_events`: 200,000 events cost a few MB
//! of memory. What bounds it is the work one request may ask for, in time
//! ([`WALK_TIME`]), not the room's size.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::storage::snapshots;
use crate::storage::{Storage, StorageError};

/// The longest one walk may take: far beyond the few seconds a room of several hundred
/// thousand events needs, it stops a request from holding a worker without end.
pub(crate) const WALK_TIME: Duration = Duration::from_secs(120);

/// Why a walk stopped without an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("the auth chain walk took longer than {0:?}")]
    TooLong(Duration),
}

/// A time bound on one request's work, looked at every few hundred steps.
pub(crate) struct WorkBound {
    started: Instant,
    limit: Duration,
    steps: u32,
}

impl WorkBound {
    pub(crate) fn new(limit: Duration) -> WorkBound {
        WorkBound {
            started: Instant::now(),
            limit,
            steps: 0,
        }
    }

    /// Counts one step; an error once the time is up.
    pub(crate) fn step(&mut self) -> Result<(), WalkError> {
        self.steps = self.steps.wrapping_add(1);
        if self.steps.is_multiple_of(256) && self.started.elapsed() > self.limit {
            return Err(WalkError::TooLong(self.limit));
        }
        Ok(())
    }
}

/// The `auth_events` of a stored event, and nothing else of it.
#[derive(Debug, Default, Deserialize)]
struct AuthEdges {
    #[serde(default)]
    auth_events: Vec<Reference>,
}

/// A reference to another event: an ID, or (room versions 1 and 2) an ID with its hashes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reference {
    Id(String),
    WithHashes(String, IgnoredAny),
}

impl Reference {
    fn into_id(self) -> String {
        match self {
            Reference::Id(id) | Reference::WithHashes(id, _) => id,
        }
    }
}

/// The `auth_events` of the stored event `event_id` (none if we do not have it).
fn stored_auth_events(storage: &Storage, event_id: &str) -> Result<Vec<String>, StorageError> {
    let Some(text) = storage.eventid_pdu.get(&event_id.to_owned())? else {
        return Ok(Vec::new());
    };
    let edges: AuthEdges = serde_json::from_str(&text)
        .map_err(|err| StorageError::Corrupt(format!("stored event {event_id}: {err}")))?;
    Ok(edges
        .auth_events
        .into_iter()
        .map(Reference::into_id)
        .collect())
}

/// The short ID of a stored event (given one now if it had none); `None` for an event
/// we do not have, which the walk cannot follow nor serve.
pub(crate) fn stored_short(storage: &Storage, event_id: &str) -> Result<Option<u64>, StorageError> {
    if let Some(short) = storage.eventid_short.get(&event_id.to_owned())? {
        return Ok(Some(short));
    }
    if !storage.eventid_pdu.contains_key(&event_id.to_owned())? {
        return Ok(None);
    }
    snapshots::short_event_id(storage, event_id).map(Some)
}

/// The auth chain of `start` (short event IDs): their `auth_events`, and theirs,
/// recursively, each once, in the order found, as short event IDs. The starting events are
/// in it only where one of them is an auth event of another (as the spec's answers have
/// them). Events we do not have are left out.
pub(crate) fn walk(
    storage: &Storage,
    start: impl IntoIterator<Item = u64>,
    bound: &mut WorkBound,
) -> Result<Vec<u64>, WalkError> {
    let mut seen: HashSet<u64> = HashSet::new();
    let mut chain: Vec<u64> = Vec::new();
    // Breadth first over the chain found so far: `chain[next..]` are still to expand.
    let mut next = 0;
    for short in start {
        bound.step()?;
        if let Some(id) = storage.short_eventid.get(&short)? {
            expand(storage, &id, &mut seen, &mut chain)?;
        }
    }
    while let Some(short) = chain.get(next).copied() {
        next += 1;
        bound.step()?;
        let Some(id) = storage.short_eventid.get(&short)? else {
            continue;
        };
        expand(storage, &id, &mut seen, &mut chain)?;
    }
    Ok(chain)
}

/// Adds the auth events of `event_id` not seen yet to `chain`.
fn expand(
    storage: &Storage,
    event_id: &str,
    seen: &mut HashSet<u64>,
    chain: &mut Vec<u64>,
) -> Result<(), StorageError> {
    for auth in stored_auth_events(storage, event_id)? {
        if let Some(short) = stored_short(storage, &auth)?
            && seen.insert(short)
        {
            chain.push(short);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Batch;

    fn stage(storage: &Storage, batch: &mut Batch, id: &str, auth: &[&str]) {
        let text = serde_json::json!({ "auth_events": auth, "type": "m.room.member" }).to_string();
        storage
            .eventid_pdu
            .batch_insert(batch, &id.to_owned(), &text)
            .expect("insert");
    }

    fn store(storage: &Storage, id: &str, auth: &[&str]) {
        let mut batch = Batch::new();
        stage(storage, &mut batch, id, auth);
        storage.apply(batch).expect("apply");
    }

    fn short(storage: &Storage, id: &str) -> u64 {
        stored_short(storage, id).expect("short").expect("stored")
    }

    #[test]
    fn a_chain_longer_than_any_old_cap_is_walked_whole() {
        let (_dir, storage) = crate::storage::testing::temporary();
        // A chain of 60,000 events, each authorized by the one before (longer than the
        // 50,000 at which the older walk refused the room).
        let length = 60_000;
        let mut batch = Batch::new();
        stage(&storage, &mut batch, "$0", &[]);
        for i in 1..=length {
            stage(
                &storage,
                &mut batch,
                &format!("${i}"),
                &[&format!("${}", i - 1)],
            );
            if batch.len() >= 5_000 {
                storage.apply(std::mem::take(&mut batch)).expect("apply");
            }
        }
        storage.apply(batch).expect("apply");
        let top = short(&storage, &format!("${length}"));
        let chain = walk(&storage, [top], &mut WorkBound::new(WALK_TIME)).expect("walked");
        assert_eq!(chain.len(), length);
        let first = storage.short_eventid.get(&chain[0]).expect("get");
        assert_eq!(first.as_deref(), Some(format!("${}", length - 1).as_str()));
        let last = storage.short_eventid.get(&chain[length - 1]).expect("get");
        assert_eq!(last.as_deref(), Some("$0"));
    }

    #[test]
    fn each_event_once_unknown_ones_left_out_and_time_bounds_the_walk() {
        let (_dir, storage) = crate::storage::testing::temporary();
        store(&storage, "$create", &[]);
        store(&storage, "$power", &["$create"]);
        store(&storage, "$a", &["$create", "$power", "$missing"]);
        store(&storage, "$b", &["$create", "$power", "$a"]);
        let start = [short(&storage, "$a"), short(&storage, "$b")];
        let chain = walk(&storage, start, &mut WorkBound::new(WALK_TIME)).expect("walk");
        let names: Vec<String> = chain
            .iter()
            .map(|short| {
                storage
                    .short_eventid
                    .get(short)
                    .expect("get")
                    .expect("named")
            })
            .collect();
        assert_eq!(names, ["$create", "$power", "$a"]);
        // Room versions 1 and 2 name auth events with their hashes.
        let text = r#"{"auth_events":[["$c:x",{"sha256":"h"}],["$p:x",{"sha256":"h"}]]}"#;
        let mut batch = Batch::new();
        storage
            .eventid_pdu
            .batch_insert(&mut batch, &"$v1:x".to_owned(), &text.to_owned())
            .expect("insert");
        storage.apply(batch).expect("apply");
        assert_eq!(
            stored_auth_events(&storage, "$v1:x").expect("read"),
            ["$c:x", "$p:x"]
        );
        let mut spent = WorkBound::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(
            walk(&storage, 0..300, &mut spent),
            Err(WalkError::TooLong(_))
        ));
    }
}
