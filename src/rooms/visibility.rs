//! Who may see which events of a room (spec: client-server API, "Room History Visibility",
//! "Server behaviour"): decided per event, by the `m.room.history_visibility` in force when
//! it was sent and the reader's membership then, both read from the room's state history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::RoomId;

use super::history;
use crate::storage::{Storage, StorageError};

/// One reader's view of one room's history: the visibility settings and the reader's
/// memberships over time, each as `(position, value)` in stream order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Visibility {
    settings: Vec<(u64, String)>,
    memberships: Vec<(u64, String)>,
}

impl Visibility {
    /// Reads the room's visibility changes and `user_id`'s membership changes.
    pub(crate) fn for_user(
        storage: &Storage,
        room_id: &RoomId,
        user_id: &str,
    ) -> Result<Visibility, StorageError> {
        let settings = settings_over_time(storage, room_id)?;
        let memberships =
            history::entries_over_time(storage, room_id, ("m.room.member", user_id), "membership")?;
        Ok(Visibility {
            settings,
            memberships,
        })
    }

    /// Whether the event at `position` is visible. The state before the event decides;
    /// for an event that itself changes the visibility or the reader's membership, the
    /// value before *or* after may allow it.
    ///
    /// Position 0 is no place in the timeline: the events stored there (outliers fetched
    /// for their state, soft-failed events such as a banned user's posts) are never shown
    /// to clients.
    pub(crate) fn allows(&self, position: u64) -> bool {
        if position == 0 {
            return false;
        }
        let before = position.saturating_sub(1);
        let joined_later = self
            .memberships
            .iter()
            .any(|(at, membership)| *at > position && membership == "join");
        let allowed = |setting: &str, membership: &str| match (setting, membership) {
            ("world_readable", _) | (_, "join") => true,
            ("invited", "invite") => true,
            ("shared", _) => joined_later,
            _ => false,
        };
        let setting_before = value_at(&self.settings, before).unwrap_or("shared");
        let membership_before = value_at(&self.memberships, before).unwrap_or("leave");
        let setting_after = value_at(&self.settings, position).unwrap_or("shared");
        let membership_after = value_at(&self.memberships, position).unwrap_or("leave");
        allowed(setting_before, membership_before) || allowed(setting_after, membership_after)
    }

    /// The first position the reader may see (`u64::MAX` if none): where scans can stop.
    /// Visibility only changes where a setting or a membership does, so checking each
    /// change point and the first position after it is enough.
    pub(crate) fn first_visible(&self) -> u64 {
        let mut points: Vec<u64> = std::iter::once(1)
            .chain(self.settings.iter().map(|(at, _)| *at))
            .chain(self.memberships.iter().map(|(at, _)| *at))
            .flat_map(|at| [at, at.saturating_add(1)])
            .collect();
        points.sort_unstable();
        points.dedup();
        points
            .into_iter()
            .find(|&at| self.allows(at))
            .unwrap_or(u64::MAX)
    }
}

/// The room's `m.room.history_visibility` settings over time. A value this server does not
/// know counts as `shared`, the spec's default.
fn settings_over_time(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<Vec<(u64, String)>, StorageError> {
    let mut settings = history::entries_over_time(
        storage,
        room_id,
        ("m.room.history_visibility", ""),
        "history_visibility",
    )?;
    for (_, setting) in &mut settings {
        if !["world_readable", "shared", "invited", "joined"].contains(&setting.as_str()) {
            *setting = "shared".to_owned();
        }
    }
    Ok(settings)
}

/// The most users of one server whose memberships are read to decide what it may see:
/// past this, the server is judged by these (a bound on the work one request costs).
const MAX_SERVER_MEMBERS: usize = 1000;

/// Another server's view of one room's history (spec: server-server API, history
/// visibility for servers): an event is shown to a server if it is `world_readable`, if
/// the history is `shared` and one of its users joined at some point, or if one of its
/// users was invited (`invited`) or joined (`joined`, `invited`) when it was sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerVisibility {
    settings: Vec<(u64, String)>,
    /// The memberships over time of each of the server's users that ever had one.
    members: Arc<MembershipsOverTime>,
}

/// Memberships over time, one list of `(position, membership)` per user.
type MembershipsOverTime = Vec<Vec<(u64, String)>>;

/// Per (room, server): the membership generation read at, and what was read.
type KeptMembers = HashMap<(String, String), (u64, Arc<MembershipsOverTime>)>;

/// How many (room, server) pairs [`ServerMembers`] keeps (all are dropped when it is full:
/// simple, and a family server answers few servers at a time).
const SERVER_MEMBERS_KEPT: usize = 64;

/// The memberships over time of one server's users in one room, kept per (room, server)
/// until a write touches the room's memberships: finding a server's users means reading
/// every member of the room (50,000 in a large one), once, not at each request it makes.
#[derive(Default)]
pub(crate) struct ServerMembers {
    kept: Mutex<KeptMembers>,
}

impl ServerMembers {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeptMembers> {
        self.kept
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn get(
        &self,
        storage: &Storage,
        room_id: &RoomId,
        server: &str,
    ) -> Result<Arc<MembershipsOverTime>, StorageError> {
        let key = (room_id.as_str().to_owned(), server.to_owned());
        // Taken before the read: a write landing during it changes the generation, and
        // what was read is then not kept.
        let generation = storage.membership_generation(room_id.as_str());
        if let Some((kept, members)) = self.lock().get(&key)
            && *kept == generation
        {
            return Ok(members.clone());
        }
        let members = Arc::new(read_server_members(storage, room_id, server)?);
        let mut kept = self.lock();
        if kept.len() >= SERVER_MEMBERS_KEPT {
            kept.clear();
        }
        kept.insert(key, (generation, members.clone()));
        Ok(members)
    }
}

/// The memberships over time of `server`'s users in the room (at most
/// [`MAX_SERVER_MEMBERS`] users), read from the room's membership index.
fn read_server_members(
    storage: &Storage,
    room_id: &RoomId,
    server: &str,
) -> Result<MembershipsOverTime, StorageError> {
    let mut members = Vec::new();
    for entry in storage
        .roomuser_membership
        .scan_prefix(&crate::storage::pair_prefix(room_id.as_str()))
    {
        let ((_, user), _) = entry?;
        let on_server = ruma::UserId::parse(user.as_str())
            .is_ok_and(|user| user.server_name().as_str() == server);
        if !on_server {
            continue;
        }
        members.push(history::entries_over_time(
            storage,
            room_id,
            ("m.room.member", &user),
            "membership",
        )?);
        if members.len() == MAX_SERVER_MEMBERS {
            break;
        }
    }
    Ok(members)
}

impl ServerVisibility {
    /// Reads the room's visibility changes and the membership changes of `server`'s users
    /// (those kept in `members` while the room's memberships are unchanged).
    pub(crate) fn for_server(
        storage: &Storage,
        room_id: &RoomId,
        server: &str,
        members: &ServerMembers,
    ) -> Result<ServerVisibility, StorageError> {
        Ok(ServerVisibility {
            settings: settings_over_time(storage, room_id)?,
            members: members.get(storage, room_id, server)?,
        })
    }

    /// Whether the event at `position` may be shown to the server. As for users, the
    /// setting and memberships before the event decide, or those after it for an event
    /// that changes them.
    pub(crate) fn allows(&self, position: u64) -> bool {
        let before = position.saturating_sub(1);
        let ever_joined = self
            .members
            .iter()
            .any(|changes| changes.iter().any(|(_, membership)| membership == "join"));
        let member_with = |at: u64, accepted: &[&str]| {
            self.members.iter().any(|changes| {
                value_at(changes, at).is_some_and(|membership| accepted.contains(&membership))
            })
        };
        let allowed = |at: u64| match value_at(&self.settings, at).unwrap_or("shared") {
            "world_readable" => true,
            "shared" => ever_joined,
            "invited" => member_with(at, &["invite", "join"]),
            _ => member_with(at, &["join"]),
        };
        allowed(before) || allowed(position)
    }
}

/// The value in force at `position` in a `(position, value)` list in stream order.
fn value_at(changes: &[(u64, String)], position: u64) -> Option<&str> {
    changes
        .iter()
        .take_while(|(at, _)| *at <= position)
        .last()
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores `user`'s membership event at `position` (history and membership index).
    fn member(storage: &Storage, room: &str, user: &str, position: u64, membership: &str) {
        let mut batch = crate::storage::Batch::new();
        let event_id = format!("$m{position}");
        let json =
            format!(r#"{{"content":{{"membership":"{membership}"}},"type":"m.room.member"}}"#);
        let history_key = (
            room.to_owned(),
            "m.room.member".to_owned(),
            user.to_owned(),
            position,
        );
        let storage_ok = |result: Result<(), StorageError>| result.expect("staged");
        storage_ok(
            storage
                .eventid_pdu
                .batch_insert(&mut batch, &event_id, &json),
        );
        storage_ok(
            storage
                .roomstate_history
                .batch_insert(&mut batch, &history_key, &event_id),
        );
        storage_ok(storage.roomuser_membership.batch_insert(
            &mut batch,
            &(room.to_owned(), user.to_owned()),
            &membership.to_owned(),
        ));
        storage.apply(batch).expect("applied");
    }

    #[test]
    fn a_servers_members_are_read_once_until_the_rooms_memberships_change() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let room = RoomId::parse("!r:here").expect("room");
        let cache = ServerMembers::default();
        member(&storage, room.as_str(), "@a:other", 5, "join");
        member(&storage, room.as_str(), "@z:third", 6, "join");
        let read = |cache: &ServerMembers| cache.get(&storage, &room, "other").expect("read");
        let first = read(&cache);
        assert_eq!(*first, vec![vec![(5, "join".to_owned())]]);
        assert!(Arc::ptr_eq(&first, &read(&cache)), "read again, not kept");
        member(&storage, room.as_str(), "@b:other", 7, "invite");
        assert_eq!(
            read(&cache).len(),
            2,
            "a membership written, the kept read stayed"
        );
        member(&storage, room.as_str(), "@a:other", 8, "leave");
        assert_eq!(
            read(&cache)[0],
            vec![(5, "join".to_owned()), (8, "leave".to_owned())]
        );
    }

    fn view(settings: &[(u64, &str)], memberships: &[(u64, &str)]) -> Visibility {
        let owned = |list: &[(u64, &str)]| {
            list.iter()
                .map(|(at, value)| (*at, (*value).to_owned()))
                .collect()
        };
        Visibility {
            settings: owned(settings),
            memberships: owned(memberships),
        }
    }

    #[test]
    fn shared_history_is_visible_to_those_who_join_later() {
        let view = view(&[(3, "shared")], &[(10, "join")]);
        assert!(view.allows(5));
        assert!(view.allows(12));
        assert_eq!(view.first_visible(), 1);
    }

    #[test]
    fn joined_history_starts_at_the_join_and_ends_at_the_leave() {
        let view = view(&[(3, "joined")], &[(10, "join"), (20, "leave")]);
        assert!(!view.allows(5));
        assert!(view.allows(10), "one's own join");
        assert!(view.allows(15));
        assert!(view.allows(20), "one's own leave");
        assert!(!view.allows(21));
        // Before the setting the default (shared) applied: the room's first events are
        // visible to whoever joins later, and the setting's own event too.
        assert!(view.allows(2));
        assert!(view.allows(3));
        assert_eq!(view.first_visible(), 1);
        let from_the_start = super::tests::view(&[(1, "joined")], &[(10, "join")]);
        assert!(!from_the_start.allows(2));
        assert_eq!(
            (2..=9).find(|&at| from_the_start.allows(at)),
            None,
            "nothing between the setting and the join"
        );
    }

    #[test]
    fn the_setting_in_force_when_sent_decides_not_todays() {
        // Joined-only while the reader was away, shared afterwards.
        let view = view(&[(1, "joined"), (30, "shared")], &[(40, "join")]);
        assert!(!view.allows(10));
        assert!(view.allows(30), "the change itself: shared after it");
        assert!(view.allows(35));
    }

    #[test]
    fn invited_history_starts_at_the_invite() {
        let view = view(&[(3, "invited")], &[(10, "invite"), (12, "join")]);
        assert!(!view.allows(9));
        assert!(view.allows(11));
        assert!(view.allows(13));
        let declined = super::tests::view(&[(3, "invited")], &[(10, "invite"), (12, "leave")]);
        assert!(declined.allows(11));
        assert!(!declined.allows(13));
    }

    fn server_view(settings: &[(u64, &str)], members: &[&[(u64, &str)]]) -> ServerVisibility {
        let owned = |list: &[(u64, &str)]| {
            list.iter()
                .map(|(at, value)| (*at, (*value).to_owned()))
                .collect::<Vec<_>>()
        };
        ServerVisibility {
            settings: owned(settings),
            members: Arc::new(members.iter().map(|list| owned(list)).collect()),
        }
    }

    #[test]
    fn a_server_without_users_sees_only_world_readable_history() {
        let open = server_view(&[(3, "world_readable")], &[]);
        assert!(open.allows(3), "the setting itself");
        assert!(open.allows(9));
        assert!(!open.allows(2), "before it, shared applied");
        let shared = server_view(&[(3, "shared")], &[]);
        assert!(!shared.allows(9));
    }

    #[test]
    fn shared_history_is_visible_once_one_user_of_the_server_joined() {
        let view = server_view(
            &[(3, "shared")],
            &[&[(20, "invite")], &[(30, "join"), (40, "leave")]],
        );
        assert!(view.allows(1));
        assert!(view.allows(50), "joined at some point");
        let invited_only = server_view(&[(3, "shared")], &[&[(20, "invite")]]);
        assert!(!invited_only.allows(25));
    }

    #[test]
    fn joined_and_invited_history_need_a_user_of_the_server_then() {
        let joined = server_view(
            &[(1, "joined")],
            &[&[(10, "invite"), (12, "join"), (20, "leave")]],
        );
        assert!(!joined.allows(11), "invited is not enough");
        assert!(joined.allows(12));
        assert!(joined.allows(15));
        assert!(!joined.allows(25));
        let invited = server_view(
            &[(1, "invited")],
            &[&[(10, "invite"), (12, "join"), (20, "leave")]],
        );
        assert!(!invited.allows(9));
        assert!(invited.allows(11));
        assert!(invited.allows(15));
        assert!(!invited.allows(25));
        // Two users: one left, the other still there.
        let two = server_view(
            &[(1, "joined")],
            &[&[(5, "join"), (8, "leave")], &[(7, "join")]],
        );
        assert!(two.allows(9));
    }

    #[test]
    fn events_without_a_stream_position_are_never_visible() {
        let open = view(&[(1, "world_readable")], &[(2, "join")]);
        assert!(!open.allows(0));
        let shared = view(&[], &[(5, "join")]);
        assert!(!shared.allows(0), "shared history joined later");
        assert!(shared.allows(1));
    }

    #[test]
    fn world_readable_is_visible_to_anyone() {
        let view = view(&[(3, "world_readable")], &[]);
        assert!(view.allows(7));
        // Before any setting, shared applies: not visible to someone who never joins.
        assert!(!view.allows(1));
    }
}
