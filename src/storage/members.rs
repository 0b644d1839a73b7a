//! Who is joined to a room, summed up: how many members and which servers. Sending one
//! message needs both (push rules' `room_member_count`, and where the event goes), and
//! reading them from the membership index costs one entry per member: ~10,000 entries per
//! message in a large room. The summary is kept in memory per room and, when a write
//! changes the room's memberships, updated by what the write changed (one membership per
//! member event: filling a room of 25,000 members must not read them all again for each
//! one); a generation per room keeps a summary read while a write lands from being kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::codec::KeyCodec;
use super::{Batch, Storage, StorageResult};

/// Rooms whose summary is kept at most (a whole cache is dropped when full: simple, and
/// rare on a family server).
const CAPACITY: usize = 512;

/// A room's joined members, summed up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JoinedSummary {
    pub(crate) count: usize,
    /// The joined members with an account here (our users), in user ID order.
    pub(crate) local: Vec<String>,
    /// How many joined members each server has (ours included): its keys are the room's
    /// servers, and the counts let a leave tell when a server's last member went.
    members_per_server: BTreeMap<String, usize>,
}

impl JoinedSummary {
    /// The server of every joined member (ours included), in name order.
    pub(crate) fn servers(&self) -> impl Iterator<Item = &str> {
        self.members_per_server.keys().map(String::as_str)
    }

    /// Whether `server` has a joined member.
    pub(crate) fn has_server(&self, server: &str) -> bool {
        self.members_per_server.contains_key(server)
    }

    /// Counts a joined member (`local`: one of our users); a summary is built by adding
    /// each joined member, in user ID order.
    pub(crate) fn add(&mut self, user: &str, local: bool) {
        self.count += 1;
        if let Some((_, server)) = user.split_once(':') {
            *self
                .members_per_server
                .entry(server.to_owned())
                .or_default() += 1;
        }
        if local
            && let Err(at) = self
                .local
                .binary_search_by(|other| other.as_str().cmp(user))
        {
            self.local.insert(at, user.to_owned());
        }
    }

    /// Forgets a member who was joined and is no longer.
    fn remove(&mut self, user: &str) {
        self.count = self.count.saturating_sub(1);
        if let Some((_, server)) = user.split_once(':')
            && let Some(members) = self.members_per_server.get_mut(server)
        {
            *members -= 1;
            if *members == 0 {
                self.members_per_server.remove(server);
            }
        }
        if let Ok(at) = self
            .local
            .binary_search_by(|other| other.as_str().cmp(user))
        {
            self.local.remove(at);
        }
    }
}

/// A member whose joined state a write changes.
pub(crate) struct JoinChange {
    pub(crate) room: String,
    pub(crate) user: String,
    /// Joined after the write (else joined before it).
    pub(crate) joined: bool,
    /// One of our users (read only for a member who joins).
    pub(crate) local: bool,
}

#[derive(Default)]
struct Inner {
    summaries: HashMap<String, Arc<JoinedSummary>>,
    /// The `clock` of the last write touching each room's memberships.
    generations: HashMap<String, u64>,
    /// Counts writes.
    clock: u64,
    /// The generation of rooms not in `generations` (the `clock` when it was last cleared).
    floor: u64,
}

impl Inner {
    fn generation(&self, room: &str) -> u64 {
        self.generations.get(room).copied().unwrap_or(self.floor)
    }
}

/// The cache of [`JoinedSummary`]s (see the module's doc).
#[derive(Default)]
pub(crate) struct MembersCache {
    inner: Mutex<Inner>,
}

impl MembersCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The cached summary of `room`, and the room's generation (to hand to [`Self::keep`]).
    pub(crate) fn get(&self, room: &str) -> (Option<Arc<JoinedSummary>>, u64) {
        let inner = self.lock();
        (inner.summaries.get(room).cloned(), inner.generation(room))
    }

    /// Keeps a summary read at `generation`, unless a write touched the room since.
    pub(crate) fn keep(&self, room: &str, generation: u64, summary: Arc<JoinedSummary>) {
        let mut inner = self.lock();
        if inner.generation(room) != generation {
            return;
        }
        if inner.summaries.len() >= CAPACITY {
            inner.summaries.clear();
        }
        inner.summaries.insert(room.to_owned(), summary);
    }

    /// The first step of a write to `rooms`' memberships, before it lands: takes their
    /// summaries out (no reader sees them while the write lands) and moves their
    /// generations (no summary read before the write is kept). Writes to memberships are
    /// serialized by the caller from here to [`Self::written`].
    pub(crate) fn writing(&self, rooms: &[String]) -> Vec<(String, Arc<JoinedSummary>)> {
        let taken = {
            let mut inner = self.lock();
            rooms
                .iter()
                .filter_map(|room| Some((room.clone(), inner.summaries.remove(room)?)))
                .collect()
        };
        self.touched(rooms);
        taken
    }

    /// The last step of a write begun with [`Self::writing`]: moves the generations again
    /// (a summary read while the write landed is not kept) and, when the write landed
    /// (`changes`: the members whose joined state it changed), keeps the summaries taken
    /// out, updated.
    pub(crate) fn written(
        &self,
        rooms: &[String],
        taken: Vec<(String, Arc<JoinedSummary>)>,
        changes: Option<&[JoinChange]>,
    ) {
        self.touched(rooms);
        let Some(changes) = changes else {
            return;
        };
        let mut inner = self.lock();
        for (room, summary) in taken {
            let mut summary = Arc::unwrap_or_clone(summary);
            for change in changes.iter().filter(|change| change.room == room) {
                if change.joined {
                    summary.add(&change.user, change.local);
                } else {
                    summary.remove(&change.user);
                }
            }
            if inner.summaries.len() >= CAPACITY {
                inner.summaries.clear();
            }
            inner.summaries.insert(room, Arc::new(summary));
        }
    }

    /// Forgets the summaries of `rooms`, whose memberships a write touched, and moves
    /// their generations.
    fn touched(&self, rooms: &[String]) {
        if rooms.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        if inner.generations.len() >= CAPACITY * 4 {
            // Every room's generation becomes the current clock: no reader's can match.
            inner.generations.clear();
            inner.summaries.clear();
            inner.floor = clock;
        }
        for room in rooms {
            inner.summaries.remove(room);
            inner.generations.insert(room.clone(), clock);
        }
    }
}

impl Storage {
    /// [`Storage::apply`] for a batch that writes memberships: the summaries of their
    /// rooms are updated, not read again.
    pub(super) fn apply_with_memberships(&self, batch: Batch) -> StorageResult<()> {
        let memberships = batch.writes_of(&self.roomuser_membership.name());
        // What the batch changes in the joined members, against what is stored: read and
        // written under one lock, so that no other membership write lands in between.
        let _memberships = self
            .membership_writes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut joined: BTreeMap<(String, String), (bool, bool)> = BTreeMap::new();
        for (key, value) in &memberships {
            let (room, user) = <(String, String) as KeyCodec>::decode(key)?;
            let now = *value == Some(b"join".as_slice());
            match joined.entry((room, user)) {
                std::collections::btree_map::Entry::Occupied(mut entry) => entry.get_mut().1 = now,
                std::collections::btree_map::Entry::Vacant(entry) => {
                    let before = self.roomuser_membership.tree_get(key)?;
                    entry.insert((before.as_deref() == Some(b"join".as_slice()), now));
                }
            }
        }
        drop(memberships);
        let mut rooms: Vec<String> = joined.keys().map(|(room, _)| room.clone()).collect();
        rooms.dedup();
        let taken = self.members.writing(&rooms);
        let result = {
            let _writing = self.gate.pass();
            batch.apply()
        };
        // A member's account that cannot be read drops the summaries (read again later).
        let changes = result
            .is_ok()
            .then(|| {
                joined
                    .into_iter()
                    .filter(|(_, (before, now))| before != now)
                    .map(|((room, user), (_, now))| {
                        let local = now && self.userid_account.contains_key(&user)?;
                        Ok(JoinChange {
                            room,
                            user,
                            joined: now,
                            local,
                        })
                    })
                    .collect::<StorageResult<Vec<_>>>()
                    .ok()
            })
            .flatten();
        self.members.written(&rooms, taken, changes.as_deref());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::pair_prefix;

    fn summary(count: usize) -> Arc<JoinedSummary> {
        Arc::new(JoinedSummary {
            count,
            ..JoinedSummary::default()
        })
    }

    #[test]
    fn a_summary_read_while_a_write_lands_is_not_kept() {
        let cache = MembersCache::default();
        let key = ["!room:here".to_owned()];
        let (cached, generation) = cache.get("!room:here");
        assert!(cached.is_none());
        cache.touched(&key);
        cache.keep("!room:here", generation, summary(1));
        assert!(
            cache.get("!room:here").0.is_none(),
            "a stale summary was kept"
        );
        let (_, generation) = cache.get("!room:here");
        cache.keep("!room:here", generation, summary(2));
        assert_eq!(cache.get("!room:here").0, Some(summary(2)));
        cache.touched(&key);
        assert!(
            cache.get("!room:here").0.is_none(),
            "a write did not drop the summary"
        );
    }

    #[test]
    fn clearing_the_generations_keeps_stale_summaries_out() {
        let cache = MembersCache::default();
        let (_, generation) = cache.get("!a:here");
        cache.touched(&["!a:here".to_owned()]);
        for i in 0..CAPACITY * 4 {
            cache.touched(&[format!("!r{i}:here")]);
        }
        cache.keep("!a:here", generation, summary(1));
        assert!(cache.get("!a:here").0.is_none());
    }

    #[test]
    fn a_write_updates_the_kept_summary() {
        let cache = MembersCache::default();
        let rooms = ["!a:here".to_owned()];
        let mut kept = JoinedSummary::default();
        kept.add("@alice:here", true);
        kept.add("@bob:there", false);
        let (_, generation) = cache.get("!a:here");
        cache.keep("!a:here", generation, Arc::new(kept));
        let taken = cache.writing(&rooms);
        assert!(
            cache.get("!a:here").0.is_none(),
            "seen while the write lands"
        );
        let change = |user: &str, joined, local| JoinChange {
            room: "!a:here".to_owned(),
            user: user.to_owned(),
            joined,
            local,
        };
        let changes = [
            change("@bob:there", false, false),
            change("@carol:here", true, true),
        ];
        cache.written(&rooms, taken, Some(&changes));
        let mut expected = JoinedSummary::default();
        expected.add("@alice:here", true);
        expected.add("@carol:here", true);
        assert_eq!(cache.get("!a:here").0, Some(Arc::new(expected)));
        let taken = cache.writing(&rooms);
        cache.written(&rooms, taken, None);
        assert!(
            cache.get("!a:here").0.is_none(),
            "kept after a failed write"
        );
    }

    #[test]
    fn the_joined_summary_follows_membership_writes_without_reading_them_again() {
        let (_dir, storage) = super::super::testing::temporary();
        let room = "!big:here";
        storage
            .userid_account
            .insert(
                &"@alice:here".to_owned(),
                &serde_json::from_str(r#"{"password_hash": "", "created_at_ms": 0}"#)
                    .expect("record"),
            )
            .expect("account");
        let write = |changes: &[(&str, &str)]| {
            let mut batch = Batch::new();
            for (user, membership) in changes {
                storage
                    .roomuser_membership
                    .batch_insert(
                        &mut batch,
                        &(room.to_owned(), (*user).to_owned()),
                        &(*membership).to_owned(),
                    )
                    .expect("stage");
            }
            storage.apply(batch).expect("apply");
        };
        let scanned = || {
            let mut summary = JoinedSummary::default();
            for entry in storage.roomuser_membership.scan_prefix(&pair_prefix(room)) {
                let ((_, user), membership) = entry.expect("entry");
                if membership == "join" {
                    summary.add(&user, user.ends_with(":here"));
                }
            }
            summary
        };
        write(&[("@alice:here", "join"), ("@bob:there", "join")]);
        let steps: &[&[(&str, &str)]] = &[
            &[("@carol:there", "join"), ("@dan:far", "invite")],
            &[("@bob:there", "leave")],
            &[
                ("@dan:far", "join"),
                ("@dan:far", "leave"),
                ("@eve:far", "ban"),
            ],
            &[("@carol:there", "join")],
            &[("@carol:there", "leave"), ("@alice:here", "leave")],
            &[("@alice:here", "join"), ("@dan:far", "join")],
        ];
        for step in steps {
            let kept = storage.joined_summary(room).expect("summary");
            write(step);
            assert_ne!(
                storage.members.get(room).0,
                None,
                "the summary was dropped, not updated"
            );
            let updated = storage.joined_summary(room).expect("summary");
            assert_eq!(*updated, scanned(), "after {step:?} (was {kept:?})");
        }
    }
}
