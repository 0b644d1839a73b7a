//! Who may see which events of a room (spec: client-server API, "Room History Visibility",
//! "Server behaviour"): decided per event, by the `m.room.history_visibility` in force when
//! it was sent and the reader's membership then, both read from the room's state history.

use ruma::RoomId;

use super::history;
use crate::storage::{Storage, StorageError};

/// One reader's view of one room's history: the visibility settings and the reader's
/// memberships over time, each as `(position, value)` in stream order.
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    settings: Vec<(u64, String)>,
    memberships: Vec<(u64, String)>,
}

impl Visibility {
    /// Reads the room's visibility changes and `user_id`'s membership changes.
    pub fn for_user(
        storage: &Storage,
        room_id: &RoomId,
        user_id: &str,
    ) -> Result<Visibility, StorageError> {
        let mut settings = history::entries_over_time(
            storage,
            room_id,
            ("m.room.history_visibility", ""),
            "history_visibility",
        )?;
        // A value this server does not know counts as `shared`, the spec's default.
        for (_, setting) in &mut settings {
            if !["world_readable", "shared", "invited", "joined"].contains(&setting.as_str()) {
                *setting = "shared".to_owned();
            }
        }
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
    pub fn allows(&self, position: u64) -> bool {
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
    pub fn first_visible(&self) -> u64 {
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

    #[test]
    fn world_readable_is_visible_to_anyone() {
        let view = view(&[(3, "world_readable")], &[]);
        assert!(view.allows(7));
        // Before any setting, shared applies: not visible to someone who never joins.
        assert!(!view.allows(1));
    }
}
