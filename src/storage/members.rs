//! Who is joined to a room, summed up: how many members and which servers. Sending one
//! message needs both (push rules' `room_member_count`, and where the event goes), and
//! reading them from the membership index costs one entry per member: ~10,000 entries per
//! message in a large room. The summary is kept in memory per room and dropped whenever a
//! write touches the room's memberships; a generation per room keeps a summary read while
//! a write lands from being kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Rooms whose summary is kept at most (a whole cache is dropped when full: simple, and
/// rare on a family server).
const CAPACITY: usize = 512;

/// A room's joined members, summed up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JoinedSummary {
    pub(crate) count: usize,
    /// The server of every joined member (ours included).
    pub(crate) servers: BTreeSet<String>,
    /// The joined members with an account here (our users), in user ID order.
    pub(crate) local: Vec<String>,
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

    /// Forgets the summaries of the rooms whose memberships a write touched (keys of
    /// `roomuser_membership`, which begin with the room ID).
    pub(crate) fn touched<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        let mut rooms: Vec<String> = keys
            .filter_map(|key| key.split(|&byte| byte == 0xFF).next())
            .map(|room| String::from_utf8_lossy(room).into_owned())
            .collect();
        if rooms.is_empty() {
            return;
        }
        rooms.dedup();
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
            inner.summaries.remove(&room);
            inner.generations.insert(room, clock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(count: usize) -> Arc<JoinedSummary> {
        Arc::new(JoinedSummary {
            count,
            ..JoinedSummary::default()
        })
    }

    #[test]
    fn a_summary_read_while_a_write_lands_is_not_kept() {
        let cache = MembersCache::default();
        let key = b"!room:here\xff@alice:here".to_vec();
        let (cached, generation) = cache.get("!room:here");
        assert!(cached.is_none());
        cache.touched([key.as_slice()].into_iter());
        cache.keep("!room:here", generation, summary(1));
        assert!(
            cache.get("!room:here").0.is_none(),
            "a stale summary was kept"
        );
        let (_, generation) = cache.get("!room:here");
        cache.keep("!room:here", generation, summary(2));
        assert_eq!(cache.get("!room:here").0, Some(summary(2)));
        cache.touched([key.as_slice()].into_iter());
        assert!(
            cache.get("!room:here").0.is_none(),
            "a write did not drop the summary"
        );
    }

    #[test]
    fn clearing_the_generations_keeps_stale_summaries_out() {
        let cache = MembersCache::default();
        let (_, generation) = cache.get("!a:here");
        cache.touched([b"!a:here\xffx".as_slice()].into_iter());
        for i in 0..CAPACITY * 4 {
            let key = format!("!r{i}:here\u{ff}x");
            cache.touched([key.as_bytes()].into_iter());
        }
        cache.keep("!a:here", generation, summary(1));
        assert!(cache.get("!a:here").0.is_none());
    }
}
