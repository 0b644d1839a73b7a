//! Per-connection state, in memory and bounded: which rooms a connection was sent, with
//! which config and up to which stream position, and the recency order of the user's rooms
//! as of the last request.
//!
//! A connection is `(user, device, conn_id)`. Each answer gets a `pos` of
//! `"{stream position}_{answer number}"` (so `/messages` reads it as a stream position,
//! as the MSC wants); answer numbers come from one counter seeded from the clock, so a
//! `pos` from before a restart or from another connection is never mistaken for a current
//! one. What an answer sent is kept *pending* until the client sends its `pos` back: a
//! request with the previous `pos` (a retry, or a request the client cancelled) is answered
//! as if the pending answer had never been given.
//!
//! Bounds: [`MAX_PER_DEVICE`] connections per device and [`MAX_CONNECTIONS`] in all (the
//! least recently used goes first), and a connection unused for [`IDLE_EXPIRY`] is
//! dropped. A client whose connection went answers its next request with `400
//! M_UNKNOWN_POS`, and the client starts a new connection, as the MSC expects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ruma::OwnedRoomId;

use super::order::RoomOrder;
use super::request::Combined;
use crate::error::{Error, ErrorKind};

/// Connections per device at most (Element X keeps two: the room list and encryption).
pub(crate) const MAX_PER_DEVICE: usize = 8;
/// Connections on the server at most: a family's phones and laptops, with room to spare.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// A connection nobody used for this long is dropped.
pub(crate) const IDLE_EXPIRY: Duration = Duration::from_secs(60 * 60);

/// What a connection was sent of one room.
#[derive(Debug, Clone)]
pub(crate) struct SentRoom {
    /// The stream position the room was sent up to.
    pub(crate) upto: u64,
    /// The config it was sent with (a bigger one later sends the room afresh).
    pub(crate) config: Combined,
}

/// The state an acknowledged answer left, or an answer's changes to it.
#[derive(Debug, Default)]
pub(crate) struct Acknowledged {
    /// The answer's number (0: none yet).
    pub(crate) answer: u64,
    /// The stream position it covered.
    pub(crate) upto: u64,
    /// The typing serial it covered.
    pub(crate) typing: u64,
    pub(crate) rooms: HashMap<OwnedRoomId, SentRoom>,
}

/// An answer given but not yet acknowledged: what it changes.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) answer: u64,
    pub(crate) upto: u64,
    pub(crate) typing: u64,
    pub(crate) rooms: Vec<(OwnedRoomId, SentRoom)>,
}

/// One connection's state.
#[derive(Debug, Default)]
pub(crate) struct Connection {
    pub(crate) acknowledged: Acknowledged,
    pub(crate) pending: Option<Pending>,
    /// The user's rooms in recency order, kept current from the stream.
    pub(crate) order: RoomOrder,
    /// Counts the connection's requests: a request that a newer one superseded (the
    /// client cancelled it, but it still waits here) must not record its answer.
    pub(crate) latest_request: u64,
}

impl Connection {
    /// Whether this is the connection's first request (nothing acknowledged).
    pub(crate) fn is_new(&self) -> bool {
        self.acknowledged.answer == 0
    }

    /// Takes `pos` from the client: the pending answer's makes it acknowledged; the
    /// acknowledged one's drops the pending answer (the client never saw it); any other is
    /// not ours.
    fn accept(&mut self, pos: &str) -> Result<(), Error> {
        let answer = parse_pos(pos).ok_or_else(unknown_pos)?;
        if let Some(pending) = self.pending.take_if(|pending| pending.answer == answer) {
            self.acknowledged.answer = pending.answer;
            self.acknowledged.upto = pending.upto;
            self.acknowledged.typing = pending.typing;
            self.acknowledged.rooms.extend(pending.rooms);
            return Ok(());
        }
        if answer != 0 && answer == self.acknowledged.answer {
            self.pending = None;
            return Ok(());
        }
        Err(unknown_pos())
    }

    /// Whether `request` is still the connection's newest request.
    pub(crate) fn is_latest(&self, request: u64) -> bool {
        self.latest_request == request
    }

    /// Records an answer as pending; returns its `pos`.
    pub(crate) fn answered(&mut self, answer: u64, pending: Pending) -> String {
        let pos = format!("{}_{answer}", pending.upto);
        self.pending = Some(pending);
        pos
    }
}

/// The answer number of a `pos`.
fn parse_pos(pos: &str) -> Option<u64> {
    let (position, answer) = pos.split_once('_')?;
    position.parse::<u64>().ok()?;
    answer.parse().ok().filter(|answer| *answer != 0)
}

pub(crate) fn unknown_pos() -> Error {
    Error::new(
        ErrorKind::UnknownPos,
        "Unknown or expired `pos`: start a new connection without one",
    )
}

type Key = (String, String, String);

struct Entry {
    connection: Arc<Mutex<Connection>>,
    last_used: Instant,
}

/// Every live connection, bounded (see the module's doc).
pub(crate) struct Connections {
    entries: Mutex<HashMap<Key, Entry>>,
    next_answer: AtomicU64,
}

impl Default for Connections {
    fn default() -> Self {
        // Seeded from the clock: numbers handed out before a restart are not handed out
        // again (one request per millisecond would be needed to catch up).
        let seed = crate::matrix::time::now_ms();
        Connections {
            entries: Mutex::new(HashMap::new()),
            next_answer: AtomicU64::new(seed.max(1)),
        }
    }
}

impl Connections {
    fn entries(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A new answer number.
    pub(crate) fn next_answer(&self) -> u64 {
        self.next_answer.fetch_add(1, Ordering::Relaxed)
    }

    /// The connection for a request and the request's number on it: a new connection
    /// without `pos` (replacing any with the same key), else the existing one with `pos`
    /// accepted, else `M_UNKNOWN_POS`.
    pub(crate) fn open(
        &self,
        key: (&str, &str, &str),
        pos: Option<&str>,
    ) -> Result<(Arc<Mutex<Connection>>, u64), Error> {
        let connection = self.find(key, pos)?;
        let request = {
            let mut connection = lock(&connection);
            connection.latest_request += 1;
            connection.latest_request
        };
        Ok((connection, request))
    }

    fn find(
        &self,
        (user, device, conn_id): (&str, &str, &str),
        pos: Option<&str>,
    ) -> Result<Arc<Mutex<Connection>>, Error> {
        let key = (user.to_owned(), device.to_owned(), conn_id.to_owned());
        let now = Instant::now();
        let mut entries = self.entries();
        entries.retain(|_, entry| now.duration_since(entry.last_used) < IDLE_EXPIRY);
        let Some(pos) = pos else {
            entries.remove(&key);
            make_room(&mut entries, &key);
            let connection = Arc::new(Mutex::new(Connection::default()));
            entries.insert(
                key,
                Entry {
                    connection: connection.clone(),
                    last_used: now,
                },
            );
            return Ok(connection);
        };
        let entry = entries.get_mut(&key).ok_or_else(unknown_pos)?;
        entry.last_used = now;
        let connection = entry.connection.clone();
        drop(entries);
        lock(&connection).accept(pos)?;
        Ok(connection)
    }

    /// How many connections are live.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}

/// Makes room for one more connection of `key`'s device: the least recently used of the
/// device's goes when it has [`MAX_PER_DEVICE`], the least recently used of all when the
/// server has [`MAX_CONNECTIONS`].
fn make_room(entries: &mut HashMap<Key, Entry>, key: &Key) {
    let same_device = |other: &Key| other.0 == key.0 && other.1 == key.1;
    if entries.keys().filter(|other| same_device(other)).count() >= MAX_PER_DEVICE {
        evict_oldest(entries, |other| same_device(other));
    }
    if entries.len() >= MAX_CONNECTIONS {
        evict_oldest(entries, |_| true);
    }
}

fn evict_oldest(entries: &mut HashMap<Key, Entry>, among: impl Fn(&Key) -> bool) {
    let oldest = entries
        .iter()
        .filter(|(key, _)| among(key))
        .min_by_key(|(_, entry)| entry.last_used)
        .map(|(key, _)| key.clone());
    if let Some(oldest) = oldest {
        entries.remove(&oldest);
    }
}

/// Locks one connection (a poisoned lock is still the state as last left).
pub(crate) fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    connection
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(connections: &Connections, connection: &Mutex<Connection>, upto: u64) -> String {
        let number = connections.next_answer();
        lock(connection).answered(
            number,
            Pending {
                answer: number,
                upto,
                typing: 0,
                rooms: Vec::new(),
            },
        )
    }

    #[test]
    fn a_pos_is_accepted_once_acknowledged_and_again_as_a_retry() {
        let connections = Connections::default();
        let key = ("@a:x", "DEV", "room-list");
        let (first, _) = connections.open(key, None).expect("new");
        let pos1 = answer(&connections, &first, 5);
        let (again, _) = connections.open(key, Some(&pos1)).expect("pending pos");
        let pos2 = answer(&connections, &again, 6);
        // A retry with the acknowledged pos drops the answer the client never saw.
        connections.open(key, Some(&pos1)).expect("retry");
        assert!(connections.open(key, Some(&pos2)).is_err());
        assert!(connections.open(key, Some("5_1")).is_err());
        assert!(
            connections
                .open(("@b:x", "DEV", "room-list"), Some(&pos1))
                .is_err()
        );
    }

    #[test]
    fn connections_are_bounded_per_device_and_in_all() {
        let connections = Connections::default();
        for n in 0..MAX_PER_DEVICE + 3 {
            connections
                .open(("@a:x", "DEV", &n.to_string()), None)
                .expect("new");
        }
        assert_eq!(connections.len(), MAX_PER_DEVICE);
        for n in 0..MAX_CONNECTIONS + 10 {
            connections
                .open(("@a:x", &format!("D{n}"), ""), None)
                .expect("new");
        }
        assert_eq!(connections.len(), MAX_CONNECTIONS);
    }
}
