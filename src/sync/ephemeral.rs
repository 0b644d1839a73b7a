//! Ephemeral state, kept in memory: typing notifications (spec: "Typing Notifications"), with
//! their timeouts, and presence (spec: "Presence"). Changes are numbered by one serial, so a
//! `/sync` token can say what a client has seen.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::{mpsc, watch};

/// The longest a client may say it keeps typing without repeating itself.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// A user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Presence {
    /// `online`, `unavailable` or `offline`.
    pub(crate) presence: String,
    pub(crate) status_msg: Option<String>,
    pub(crate) last_active: Instant,
    /// The serial of its last change.
    pub(crate) changed: u64,
}

/// Idle this long, an online user becomes unavailable, and an unavailable one offline.
const IDLE_UNAVAILABLE: Duration = Duration::from_secs(5 * 60);
const IDLE_OFFLINE: Duration = Duration::from_secs(30 * 60);

/// Seen active this recently counts as `currently_active`.
const CURRENTLY_ACTIVE: Duration = Duration::from_secs(5 * 60);

impl Presence {
    /// The client form: `presence`, `last_active_ago`, `currently_active`, `status_msg`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let ago = self.last_active.elapsed();
        let mut content = serde_json::json!({
            "presence": self.presence,
            "last_active_ago": u64::try_from(ago.as_millis()).unwrap_or(u64::MAX),
            "currently_active": self.presence == "online" && ago < CURRENTLY_ACTIVE,
        });
        if let Some(status) = &self.status_msg {
            content["status_msg"] = serde_json::json!(status);
        }
        content
    }
}

#[derive(Default)]
struct Rooms {
    /// room → user → until when
    typing: HashMap<OwnedRoomId, HashMap<OwnedUserId, Instant>>,
    /// room → the serial of its last change
    changed: HashMap<OwnedRoomId, u64>,
    presence: HashMap<OwnedUserId, Presence>,
    serial: u64,
}

/// A change told to whoever called [`Ephemeral::watch_changes`] (the federation sender,
/// which tells other servers about our users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// `user_id` started (or, again, still is) typing, or stopped or timed out.
    Typing {
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
        typing: bool,
    },
    /// `user_id`'s presence changed; read it with [`Ephemeral::presence_of`].
    Presence { user_id: OwnedUserId },
}

pub(crate) struct Ephemeral {
    rooms: Mutex<Rooms>,
    /// The newest serial; `/sync` long-polls wake on it.
    serial: watch::Sender<u64>,
    /// Where changes are told, once someone listens.
    changes: OnceLock<mpsc::Sender<Change>>,
}

impl Default for Ephemeral {
    /// The serial starts at the boot time in milliseconds, so tokens handed out before a
    /// restart are never ahead of it (which would hide news until it caught up).
    fn default() -> Self {
        let boot = crate::matrix::time::now_ms();
        Ephemeral {
            rooms: Mutex::new(Rooms {
                serial: boot,
                ..Rooms::default()
            }),
            serial: watch::channel(boot).0,
            changes: OnceLock::new(),
        }
    }
}

/// The longest status message kept.
pub(crate) const MAX_STATUS_BYTES: usize = 1024;

impl Ephemeral {
    /// The one receiver of typing and presence changes (`None` for later callers). Holds at
    /// most `capacity` changes: a listener that falls behind misses some, which for
    /// ephemeral news is better than memory growing without bound.
    pub(crate) fn watch_changes(&self, capacity: usize) -> Option<mpsc::Receiver<Change>> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        self.changes.set(sender).ok().map(|()| receiver)
    }

    fn tell(&self, change: Change) {
        if let Some(changes) = self.changes.get()
            && changes.try_send(change).is_err()
        {
            tracing::debug!("a typing or presence change was dropped: its listener is behind");
        }
    }

    /// Sets a user's presence. Only a change of state or message is a change others hear of;
    /// activity alone refreshes `last_active`.
    pub(crate) fn set_presence(
        &self,
        user_id: &UserId,
        presence: &str,
        status_msg: Option<Option<String>>,
    ) {
        let mut rooms = self.lock();
        let previous = rooms.presence.get(user_id).cloned();
        let status_msg = match status_msg {
            Some(message) => message,
            None => previous.as_ref().and_then(|p| p.status_msg.clone()),
        };
        let changed = previous
            .as_ref()
            .is_none_or(|p| p.presence != presence || p.status_msg != status_msg);
        let serial = if changed {
            rooms.serial += 1;
            rooms.serial
        } else {
            previous.as_ref().map_or(0, |p| p.changed)
        };
        rooms.presence.insert(
            user_id.to_owned(),
            Presence {
                presence: presence.to_owned(),
                status_msg,
                last_active: Instant::now(),
                changed: serial,
            },
        );
        if changed {
            self.serial.send_replace(serial);
            self.tell(Change::Presence {
                user_id: user_id.to_owned(),
            });
        }
    }

    pub(crate) fn presence_of(&self, user_id: &UserId) -> Option<Presence> {
        self.lock().presence.get(user_id).cloned()
    }

    /// Every presence that changed after serial `since`.
    pub(crate) fn presence_changes(&self, since: u64) -> Vec<(OwnedUserId, Presence)> {
        let rooms = self.lock();
        rooms
            .presence
            .iter()
            .filter(|(_, presence)| presence.changed > since)
            .map(|(user, presence)| (user.clone(), presence.clone()))
            .collect()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.serial.subscribe()
    }

    pub(crate) fn serial(&self) -> u64 {
        *self.serial.borrow()
    }

    /// Marks `user` as typing in `room` for `timeout`, or (with `None`) as done.
    pub(crate) fn set_typing(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) {
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
        // A repeated "still typing" is no change here, but other servers time typing out
        // on their own clock and need to hear it again.
        if changed || timeout.is_some() {
            self.tell(Change::Typing {
                room_id: room_id.to_owned(),
                user_id: user_id.to_owned(),
                typing: timeout.is_some(),
            });
        }
    }

    /// Forgets whoever's typing time is up, and steps idle users down (online → unavailable
    /// after 5 minutes, → offline after 30); a change wakes `/sync`.
    pub(crate) fn expire(&self) {
        let mut rooms = self.lock();
        let now = Instant::now();
        let mut stepped = Vec::new();
        for (user, presence) in &rooms.presence {
            let idle = now.duration_since(presence.last_active);
            let next = match presence.presence.as_str() {
                "online" if idle > IDLE_UNAVAILABLE => Some("unavailable"),
                "unavailable" if idle > IDLE_OFFLINE => Some("offline"),
                _ => None,
            };
            if let Some(next) = next {
                stepped.push((user.clone(), next));
            }
        }
        for (user, next) in stepped {
            rooms.serial += 1;
            let serial = rooms.serial;
            if let Some(presence) = rooms.presence.get_mut(&user) {
                presence.presence = next.to_owned();
                presence.changed = serial;
            }
            self.serial.send_replace(serial);
            self.tell(Change::Presence { user_id: user });
        }
        let mut expired = Vec::new();
        for (room_id, users) in &mut rooms.typing {
            let before = users.len();
            users.retain(|user_id, until| {
                let typing = *until > now;
                if !typing {
                    self.tell(Change::Typing {
                        room_id: room_id.clone(),
                        user_id: user_id.clone(),
                        typing: false,
                    });
                }
                typing
            });
            if users.len() != before {
                expired.push(room_id.clone());
            }
        }
        rooms.typing.retain(|_, users| !users.is_empty());
        for room_id in expired {
            self.bump(&mut rooms, &room_id);
        }
    }

    /// The rooms whose typing changed after serial `since`.
    pub(crate) fn typing_rooms_changed_since(&self, since: u64) -> Vec<OwnedRoomId> {
        let rooms = self.lock();
        rooms
            .changed
            .iter()
            .filter(|(_, changed)| **changed > since)
            .map(|(room, _)| room.clone())
            .collect()
    }

    /// Who is typing in `room`, if that changed after serial `since`.
    pub(crate) fn typing_changed_since(
        &self,
        room_id: &RoomId,
        since: u64,
    ) -> Option<Vec<OwnedUserId>> {
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
        let typing = Ephemeral::default();
        let room = <&RoomId>::try_from("!r:x").expect("room");
        let alice = <&UserId>::try_from("@alice:x").expect("user");
        typing.set_typing(room, alice, Some(Duration::from_secs(30)));
        assert_eq!(
            typing.typing_changed_since(room, 0),
            Some(vec![alice.to_owned()])
        );
        let serial = typing.serial();
        assert_eq!(typing.typing_changed_since(room, serial), None);
        typing.set_typing(room, alice, Some(Duration::from_secs(30)));
        assert_eq!(typing.serial(), serial, "typing again is no change");
        typing.set_typing(room, alice, None);
        assert_eq!(typing.typing_changed_since(room, serial), Some(vec![]));
        typing.set_typing(room, alice, Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        let before = typing.serial();
        typing.expire();
        assert!(typing.serial() > before);
        assert_eq!(typing.typing_changed_since(room, before), Some(vec![]));
    }

    #[test]
    fn typing_and_presence_changes_are_told_to_the_listener() {
        let ephemeral = Ephemeral::default();
        let mut changes = ephemeral.watch_changes(8).expect("first listener");
        assert!(ephemeral.watch_changes(8).is_none(), "only one listener");
        let room = <&RoomId>::try_from("!r:x").expect("room");
        let alice = <&UserId>::try_from("@alice:x").expect("user");
        ephemeral.set_typing(room, alice, Some(Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        ephemeral.expire();
        ephemeral.set_presence(alice, "online", None);
        let typing = |typing| Change::Typing {
            room_id: room.to_owned(),
            user_id: alice.to_owned(),
            typing,
        };
        assert_eq!(changes.try_recv().ok(), Some(typing(true)));
        assert_eq!(changes.try_recv().ok(), Some(typing(false)));
        assert_eq!(
            changes.try_recv().ok(),
            Some(Change::Presence {
                user_id: alice.to_owned()
            })
        );
        assert!(changes.try_recv().is_err());
    }

    #[test]
    fn presence_changes_are_serialized_and_activity_is_not_a_change() {
        let ephemeral = Ephemeral::default();
        let alice = <&UserId>::try_from("@alice:x").expect("user");
        ephemeral.set_presence(alice, "online", None);
        let first = ephemeral.serial();
        assert_eq!(ephemeral.presence_changes(0).len(), 1);
        ephemeral.set_presence(alice, "online", None);
        assert_eq!(ephemeral.serial(), first, "still online is no news");
        ephemeral.set_presence(alice, "unavailable", Some(Some("lunch".into())));
        let changed = ephemeral.presence_changes(first);
        assert_eq!(changed[0].1.presence, "unavailable");
        assert_eq!(changed[0].1.to_json()["status_msg"], "lunch");
    }
}
