//! [`ExpiringMap`]: a capped map whose entries expire. Discovery and key fetching remember
//! answers with it; the cap keeps a flood of distinct server names from growing memory.
//! [`KeyCache`], the transport's record of recent key fetches, lives here too: the
//! transport holds it and `keys` consults it, and neither should import the other for it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// A map of at most `capacity` entries, each valid until its own deadline. When full, expired
/// entries go first, then the one closest to expiry.
pub(crate) struct ExpiringMap<K, V> {
    capacity: usize,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> ExpiringMap<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        ExpiringMap {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key` if it has not expired at `now`.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some((value, until)) if *until > now => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers `value` until `until`, making room if the map is full.
    pub(crate) fn insert(&self, key: K, value: V, until: Instant, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, deadline)| *deadline > now);
            if entries.len() >= self.capacity
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, (_, deadline))| *deadline)
                    .map(|(key, _)| key.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(key, (value, until));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// How soon a server is asked again for a key it did not have.
const REFETCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// In-memory bookkeeping of key fetches: which servers were asked recently, so a flood of
/// requests naming unknown keys does not become a flood of fetches.
pub(crate) struct KeyCache {
    recently_fetched: ExpiringMap<String, ()>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            recently_fetched: ExpiringMap::new(1024),
        }
    }
}

impl KeyCache {
    /// Whether `server` may be asked for its keys now; if so, the next minute it may not.
    pub(super) fn may_fetch(&self, server: &str) -> bool {
        let now = Instant::now();
        if self.recently_fetched.get(&server.to_owned(), now).is_some() {
            return false;
        }
        self.recently_fetched
            .insert(server.to_owned(), (), now + REFETCH_INTERVAL, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_expire() {
        let map = ExpiringMap::new(4);
        let now = Instant::now();
        map.insert("a", 1, now + Duration::from_secs(10), now);
        assert_eq!(map.get(&"a", now), Some(1));
        assert_eq!(map.get(&"a", now + Duration::from_secs(10)), None);
        assert!(map.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn the_map_never_grows_past_its_capacity() {
        let map = ExpiringMap::new(3);
        let now = Instant::now();
        for i in 0..10u64 {
            map.insert(i, i, now + Duration::from_secs(100 + i), now);
        }
        assert_eq!(map.len(), 3);
        // The entries closest to expiry made room for the newer ones.
        assert_eq!(map.get(&9, now), Some(9));
        assert_eq!(map.get(&0, now), None);
    }

    #[test]
    fn expired_entries_make_room_first() {
        let map = ExpiringMap::new(2);
        let now = Instant::now();
        map.insert("old", 0, now + Duration::from_secs(1), now);
        map.insert("long", 1, now + Duration::from_secs(1000), now);
        let later = now + Duration::from_secs(5);
        map.insert("new", 2, later + Duration::from_secs(10), later);
        assert_eq!(map.get(&"long", later), Some(1));
        assert_eq!(map.get(&"new", later), Some(2));
    }
}
