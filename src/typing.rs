//! Typing notifications (spec: client-server API, "Typing Notifications"): ephemeral, kept in
//! memory with their timeouts, numbered by their own serial so `/sync` can tell what changed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

/// The longest a client may say it keeps typing without repeating itself.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Rooms {
    /// room → user → until when
    typing: HashMap<OwnedRoomId, HashMap<OwnedUserId, Instant>>,
    /// room → the serial of its last change
    changed: HashMap<OwnedRoomId, u64>,
    serial: u64,
}

pub struct Typing {
    rooms: Mutex<Rooms>,
    /// The newest serial; `/sync` long-polls wake on it.
    serial: watch::Sender<u64>,
}

impl Default for Typing {
    fn default() -> Self {
        Typing {
            rooms: Mutex::new(Rooms::default()),
            serial: watch::channel(0).0,
        }
    }
}

impl Typing {
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.serial.subscribe()
    }

    pub fn serial(&self) -> u64 {
        *self.serial.borrow()
    }

    /// Marks `user` as typing in `room` for `timeout`, or (with `None`) as done.
    pub fn set(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) {
        let mut rooms = self.lock();
        let users = rooms.typing.entry(room_id.to_owned()).or_default();
        let changed = match timeout {
            Some(timeout) => users
                .insert(
                    user_id.to_owned(),
                    Instant::now() + timeout.min(MAX_TIMEOUT),
                )
                .is_none(),
            None => users.remove(user_id).is_some(),
        };
        if changed {
            self.bump(&mut rooms, room_id);
        }
    }

    /// Forgets whoever's time is up; a change wakes `/sync`.
    pub fn expire(&self) {
        let mut rooms = self.lock();
        let now = Instant::now();
        let mut expired = Vec::new();
        for (room_id, users) in &mut rooms.typing {
            let before = users.len();
            users.retain(|_, until| *until > now);
            if users.len() != before {
                expired.push(room_id.clone());
            }
        }
        rooms.typing.retain(|_, users| !users.is_empty());
        for room_id in expired {
            self.bump(&mut rooms, &room_id);
        }
    }

    /// Who is typing in `room`, if that changed after serial `since`.
    pub fn changed_since(&self, room_id: &RoomId, since: u64) -> Option<Vec<OwnedUserId>> {
        let rooms = self.lock();
        let changed = rooms.changed.get(room_id).copied().unwrap_or(0);
        (changed > since).then(|| {
            let mut users: Vec<OwnedUserId> = rooms
                .typing
                .get(room_id)
                .map(|users| users.keys().cloned().collect())
                .unwrap_or_default();
            users.sort();
            users
        })
    }

    fn bump(&self, rooms: &mut Rooms, room_id: &RoomId) {
        rooms.serial += 1;
        let serial = rooms.serial;
        rooms.changed.insert(room_id.to_owned(), serial);
        self.serial.send_replace(serial);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.rooms
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_starts_stops_and_expires() {
        let typing = Typing::default();
        let room = <&RoomId>::try_from("!r:x").expect("room");
        let alice = <&UserId>::try_from("@alice:x").expect("user");
        typing.set(room, alice, Some(Duration::from_secs(30)));
        assert_eq!(typing.changed_since(room, 0), Some(vec![alice.to_owned()]));
        let serial = typing.serial();
        assert_eq!(typing.changed_since(room, serial), None);
        typing.set(room, alice, Some(Duration::from_secs(30)));
        assert_eq!(typing.serial(), serial, "typing again is no change");
        typing.set(room, alice, None);
        assert_eq!(typing.changed_since(room, serial), Some(vec![]));
        typing.set(room, alice, Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        let before = typing.serial();
        typing.expire();
        assert!(typing.serial() > before);
        assert_eq!(typing.changed_since(room, before), Some(vec![]));
    }
}
