//! [`ExpiringMap`]: a capped map whose entries expire. Discovery and key fetching remember
//! answers with it; the cap keeps a flood of distinct server names from growing memory.
//! [`KeyCache`], the transport's memory of key fetches (unconfirmed keys, failures, fetches
//! under way), lives here too: the transport holds it and `keys` consults it, and neither
//! should import the other for it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::storage::records::ServerKeys;

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

    /// Forgets `key`, giving back its value if it had not expired.
    pub(crate) fn remove(&self, key: &K) -> Option<V> {
        let now = Instant::now();
        self.lock()
            .remove(key)
            .filter(|(_, until)| *until > now)
            .map(|(value, _)| value)
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

/// How soon a server that answered is asked again for a key it did not list.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a failed fetch is remembered: a flood of requests naming a dead or hanging
/// server costs one fetch per this interval, not one each.
const FAILURE_MEMORY: Duration = Duration::from_secs(2 * 60);
/// How long keys not confirmed by a verified request are kept in memory.
const UNCONFIRMED_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Servers whose unconfirmed keys are held in memory at once. An answer is at most 16 KiB
/// of JSON (typically under 1 KiB), a few times that as a parsed tree: at most ~12 MiB in
/// all against a hostile flood, well under 1 MiB in ordinary use.
const MAX_UNCONFIRMED_SERVERS: usize = 256;
/// Servers remembered as failing at once (a name and a deadline each).
const MAX_FAILED_SERVERS: usize = 4096;
/// Key fetches running at once; over this, a fetch is refused rather than queued.
const MAX_FETCHES_IN_FLIGHT: usize = 256;

/// Keys fetched, and when.
#[derive(Clone)]
pub(crate) struct Fetched {
    pub(crate) keys: ServerKeys,
    at: Instant,
}

impl Fetched {
    /// Whether the server was asked so recently that asking again is not worth it.
    pub(crate) fn is_recent(&self, now: Instant) -> bool {
        now.duration_since(self.at) < REFETCH_INTERVAL
    }
}

/// In-memory bookkeeping of key fetches, all bounded: keys fetched but not (yet) confirmed by
/// a request they verified (they are stored only once confirmed, so a stranger naming
/// servers cannot fill the disk), servers whose last fetch failed, and the fetches under
/// way (one per server: concurrent requests for the same server wait for the same fetch).
pub(crate) struct KeyCache {
    fetched: ExpiringMap<String, Fetched>,
    failed: ExpiringMap<String, ()>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            fetched: ExpiringMap::new(MAX_UNCONFIRMED_SERVERS),
            failed: ExpiringMap::new(MAX_FAILED_SERVERS),
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

/// The right to fetch one server's keys; others asking for the same server wait for it to
/// be dropped. Dropping it forgets the server's entry when nobody else waits.
pub(crate) struct FetchTurn<'a> {
    cache: &'a KeyCache,
    server: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for FetchTurn<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.cache.in_flight);
        // Ours and the map's: nobody else holds or waits for this lock.
        if in_flight
            .get(&self.server)
            .is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            in_flight.remove(&self.server);
        }
    }
}

impl KeyCache {
    /// Waits for any fetch of `server`'s keys under way, then gives the caller the turn.
    /// `None` when too many fetches run already.
    pub(super) async fn turn(&self, server: &str) -> Option<FetchTurn<'_>> {
        let lock = {
            let mut in_flight = lock(&self.in_flight);
            if !in_flight.contains_key(server) && in_flight.len() >= MAX_FETCHES_IN_FLIGHT {
                return None;
            }
            in_flight.entry(server.to_owned()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Some(FetchTurn {
            cache: self,
            server: server.to_owned(),
            _guard: guard,
        })
    }

    /// The keys last fetched for `server`, if still held.
    pub(crate) fn fetched(&self, server: &str) -> Option<Fetched> {
        self.fetched.get(&server.to_owned(), Instant::now())
    }

    /// Remembers a successful fetch (and forgets any failure).
    pub(super) fn remember(&self, server: &str, keys: ServerKeys) {
        let now = Instant::now();
        self.failed.remove(&server.to_owned());
        self.fetched.insert(
            server.to_owned(),
            Fetched { keys, at: now },
            now + UNCONFIRMED_LIFETIME,
            now,
        );
    }

    /// Takes out the keys fetched for `server`: they are being stored.
    pub(super) fn take(&self, server: &str) -> Option<ServerKeys> {
        self.fetched
            .remove(&server.to_owned())
            .map(|fetched| fetched.keys)
    }

    /// Remembers that fetching `server`'s keys failed.
    pub(super) fn fail(&self, server: &str) {
        let now = Instant::now();
        self.failed
            .insert(server.to_owned(), (), now + FAILURE_MEMORY, now);
    }

    /// Whether a fetch of `server`'s keys failed recently.
    pub(super) fn failed_recently(&self, server: &str) -> bool {
        self.failed
            .get(&server.to_owned(), Instant::now())
            .is_some()
    }

    #[cfg(test)]
    pub(crate) fn servers_held(&self) -> usize {
        self.fetched.len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

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
