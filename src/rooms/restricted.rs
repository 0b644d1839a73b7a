//! Restricted rooms (join rule `restricted` from room version 8, `knock_restricted` from 10):
//! who may join without an invite, and which of our users vouches for such a join.
//!
//! The spec splits the work. The client-server API ("Restricted rooms") names the one allow
//! condition, `m.room_membership`: the joining user must be *joined* to one of the rooms
//! listed. The auth rules (rule 4.3.5 of room versions 8 and later) cannot check that, as
//! they see one room only; instead the join names, in `join_authorised_via_users_server`, a
//! joined member who may invite, and that member's server signs the join. So whoever makes
//! the join event checks the conditions first and picks the member: this module, for a
//! join made here (our own user's) or a `make_join`/`send_join` of another server's user
//! (server-server API, "Restricted rooms", which also gives the error codes used here).

use ruma::room_version_rules::AuthorizationRules;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId};
use serde_json::Value;

use super::{
    power_level_for, power_levels, rules_of, state_content, state_sender, user_power_level,
};
use crate::error::{Error, ErrorKind};
use crate::storage::{Storage, StorageError, pair_prefix};

/// What a join needs besides its sender's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinAuthorisation {
    /// Nobody need vouch: the room is not restricted, or the user is invited or joined.
    NotNeeded,
    /// The user meets an allow condition, and this user of ours vouches for the join.
    Via(OwnedUserId),
}

/// Whether `user_id` may join `room_id` (a room we hold) and who of ours vouches for it.
///
/// Refused with the server-server API's codes: `403 M_FORBIDDEN` when the user is banned
/// or meets no condition we can check; `400 M_UNABLE_TO_AUTHORISE_JOIN` when we cannot check
/// any condition the user might meet (we are in none of the other rooms named);
/// `400 M_UNABLE_TO_GRANT_JOIN` when the user meets one but none of our users in the room
/// may invite (another resident server may).
pub(crate) fn authorise_join(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
    ours: &ServerName,
) -> Result<JoinAuthorisation, Error> {
    let room = storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Error::not_found("No such room here"))?;
    let rules = rules_of(&room)?;
    let join_rules = state_content(storage, room_id, "m.room.join_rules", "")?.unwrap_or_default();
    let membership = membership_in(storage, room_id, user_id)?;
    if !is_restricted(&rules.authorization, &join_rules) {
        refuse_uninvited(&join_rules, membership.as_deref())?;
        return Ok(JoinAuthorisation::NotNeeded);
    }
    match membership.as_deref() {
        Some("join" | "invite") => return Ok(JoinAuthorisation::NotNeeded),
        Some("ban") => {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You are banned from this room",
            ));
        }
        _ => {}
    }
    match check_conditions(storage, &join_rules, user_id, ours)? {
        Conditions::Met => {}
        Conditions::Unverifiable => {
            return Err(Error::new(
                ErrorKind::UnableToAuthoriseJoin,
                "This server is in none of the rooms whose members may join this room",
            ));
        }
        Conditions::Unmet => {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "You are not a member of any of the rooms whose members may join this room",
            ));
        }
    }
    let authoriser = best_authoriser(storage, room_id, ours)?.ok_or_else(|| {
        Error::new(
            ErrorKind::UnableToGrantJoin,
            "No user of this server in the room may invite you: ask another server",
        )
    })?;
    Ok(JoinAuthorisation::Via(authoriser))
}

/// A room whose join rule asks for an invite (`invite`, `knock`, `private`) takes no join from
/// a user who is neither invited nor joined, nor from a banned one: refused here, with the
/// spec's `403` for `make_join`, rather than with a template the auth rules would refuse.
fn refuse_uninvited(join_rules: &Value, membership: Option<&str>) -> Result<(), Error> {
    if membership == Some("ban") {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You are banned from this room",
        ));
    }
    let needs_invite = matches!(
        join_rules["join_rule"].as_str(),
        Some("invite" | "knock" | "private")
    );
    if needs_invite && !matches!(membership, Some("join" | "invite")) {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You are not invited to this room",
        ));
    }
    Ok(())
}

/// Whether the join rules restrict joins, in a room version that knows the rule (in older
/// versions, `restricted` is an unknown rule and lets nobody in uninvited).
fn is_restricted(rules: &AuthorizationRules, join_rules: &Value) -> bool {
    match join_rules["join_rule"].as_str() {
        Some("restricted") => rules.restricted_join_rule,
        Some("knock_restricted") => rules.knock_restricted_join_rule,
        _ => false,
    }
}

/// The rooms whose members may join a `restricted` (or `knock_restricted`) room: the
/// `m.room_membership` entries of its join rules' `allow`. Entries of other types, or
/// without a valid room ID, are conditions no one meets.
pub(crate) fn allowed_room_ids(join_rules: &Value) -> Vec<OwnedRoomId> {
    join_rules["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["type"] == "m.room_membership")
        .filter_map(|entry| entry["room_id"].as_str())
        .filter_map(|id| OwnedRoomId::try_from(id).ok())
        .collect()
}

/// The outcome of checking a user against the allow conditions.
#[derive(Debug, PartialEq, Eq)]
enum Conditions {
    /// The user is joined to one of the rooms named.
    Met,
    /// The user is joined to none of the rooms we can check.
    Unmet,
    /// Not met where we can check, and some rooms named we cannot check.
    Unverifiable,
}

/// Checks the `m.room_membership` conditions as we see the rooms named. A room counts only
/// while one of our users is joined to it: otherwise what we hold of it may be out of date,
/// or we hold nothing. Our own users' memberships we always know.
fn check_conditions(
    storage: &Storage,
    join_rules: &Value,
    user_id: &UserId,
    ours: &ServerName,
) -> Result<Conditions, StorageError> {
    let local_user = user_id.server_name() == ours;
    let mut unchecked = false;
    for allowed in allowed_room_ids(join_rules) {
        if !local_user && !has_local_member(storage, &allowed, ours)? {
            unchecked = true;
            continue;
        }
        if membership_in(storage, &allowed, user_id)?.as_deref() == Some("join") {
            return Ok(Conditions::Met);
        }
    }
    Ok(if unchecked {
        Conditions::Unverifiable
    } else {
        Conditions::Unmet
    })
}

/// Whether `user_id` may vouch for a join (auth rule 4.3.5.2): joined to the room, with at
/// least the power level to invite.
pub(crate) fn may_authorise(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<bool, StorageError> {
    if membership_in(storage, room_id, user_id)?.as_deref() != Some("join") {
        return Ok(false);
    }
    Ok(user_power_level(storage, room_id, user_id)? >= invite_level(storage, room_id)?)
}

/// The power level needed to invite (0 when the power levels do not say).
fn invite_level(storage: &Storage, room_id: &RoomId) -> Result<i64, StorageError> {
    power_level_for(storage, room_id, |levels| {
        levels["invite"].as_i64().unwrap_or(0)
    })
}

/// The user of ours best placed to vouch for a join: joined, allowed to invite, and the
/// most powerful (whose power is likeliest to last until the join arrives). Ties go to the
/// first user ID, so the choice is the same each time.
///
/// Any server can make us look (`make_join`), so the room's members are not all read: the
/// users with a level of their own (the power levels' `users`, and the creators where they
/// are privileged) are weighed first, and the members are scanned only when the default
/// level may invite and could win, up to the first of ours with that default level.
fn best_authoriser(
    storage: &Storage,
    room_id: &RoomId,
    ours: &ServerName,
) -> Result<Option<OwnedUserId>, StorageError> {
    let needed = invite_level(storage, room_id)?;
    let explicit = users_with_own_level(storage, room_id)?;
    let mut best: Option<(i64, OwnedUserId)> = None;
    for user in &explicit {
        if user.server_name() != ours
            || membership_in(storage, room_id, user)?.as_deref() != Some("join")
        {
            continue;
        }
        let level = user_power_level(storage, room_id, user)?;
        if level >= needed && best.as_ref().is_none_or(|(top, _)| level > *top) {
            best = Some((level, user.clone()));
        }
    }
    let default = default_level(storage, room_id)?;
    let default_may_win = best.as_ref().is_none_or(|(top, _)| default >= *top);
    if default >= needed && default_may_win {
        let first = first_local_member(storage, room_id, ours, |user| !explicit.contains(user))?;
        if let Some(user) = first {
            let wins = best
                .as_ref()
                .is_none_or(|(top, top_user)| default > *top || user < *top_user);
            if wins {
                best = Some((default, user));
            }
        }
    }
    Ok(best.map(|(_, user)| user))
}

/// The users whose power level is not the default one, in user ID order: those named in
/// the power levels' `users`, and the room's creators (named in the create event, or its
/// sender) who are privileged in their version or, without power levels, have 100.
fn users_with_own_level(
    storage: &Storage,
    room_id: &RoomId,
) -> Result<std::collections::BTreeSet<OwnedUserId>, StorageError> {
    let levels = power_levels(storage, room_id)?.unwrap_or_default();
    let mut users: std::collections::BTreeSet<OwnedUserId> = levels["users"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(user, _)| UserId::parse(user).ok())
        .collect();
    let create = state_content(storage, room_id, "m.room.create", "")?.unwrap_or_default();
    let creator = match create["creator"].as_str() {
        Some(creator) => Some(creator.to_owned()),
        None => state_sender(storage, room_id, "m.room.create", "")?,
    };
    let additional = create["additional_creators"]
        .as_array()
        .into_iter()
        .flatten();
    users.extend(
        creator
            .iter()
            .map(String::as_str)
            .chain(additional.filter_map(Value::as_str))
            .filter_map(|user| UserId::parse(user).ok()),
    );
    Ok(users)
}

/// The level of a user with no level of their own: `users_default` (0 when the power
/// levels do not say, or when there are none).
fn default_level(storage: &Storage, room_id: &RoomId) -> Result<i64, StorageError> {
    power_level_for(storage, room_id, |levels| {
        levels["users_default"].as_i64().unwrap_or(0)
    })
}

/// Whether one of our users is joined to a room.
fn has_local_member(
    storage: &Storage,
    room_id: &RoomId,
    ours: &ServerName,
) -> Result<bool, StorageError> {
    Ok(first_local_member(storage, room_id, ours, |_| true)?.is_some())
}

/// The first of our users (by user ID) joined to a room for whom `wanted` holds; the scan
/// stops there.
fn first_local_member(
    storage: &Storage,
    room_id: &RoomId,
    ours: &ServerName,
    wanted: impl Fn(&UserId) -> bool,
) -> Result<Option<OwnedUserId>, StorageError> {
    for entry in storage
        .roomuser_membership
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        let ((_, user), membership) = entry?;
        if membership == "join"
            && let Ok(user) = UserId::parse(user)
            && user.server_name() == ours
            && wanted(&user)
        {
            return Ok(Some(user));
        }
    }
    Ok(None)
}

/// A user's current membership of a room as we hold it (`join`, `invite`, …).
fn membership_in(
    storage: &Storage,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Option<String>, StorageError> {
    storage
        .roomuser_membership
        .get(&(room_id.to_string(), user_id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_membership_conditions_with_room_ids_count() {
        let rules = json!({ "join_rule": "restricted", "allow": [
            { "type": "m.room_membership", "room_id": "!space:a.example" },
            { "type": "m.room_membership" },
            { "type": "m.room_membership", "room_id": "not a room" },
            { "type": "org.example.other", "room_id": "!other:a.example" },
        ]});
        let ids: Vec<String> = allowed_room_ids(&rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ids, ["!space:a.example"]);
        assert!(allowed_room_ids(&json!({ "join_rule": "restricted" })).is_empty());
        assert!(allowed_room_ids(&json!({ "allow": "nonsense" })).is_empty());
    }

    /// Conditions as we see the rooms: a remote user's membership counts only in rooms one
    /// of our users is in; our own users' memberships always count.
    #[test]
    fn conditions_are_checked_only_where_we_can_see() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::storage::testing::open(&dir.path().join("data"));
        let ours = <&ServerName>::try_from("here.test").expect("name");
        let member = |room: &str, user: &str, membership: &str| {
            storage
                .roomuser_membership
                .insert(&(room.to_owned(), user.to_owned()), &membership.to_owned())
                .expect("insert");
        };
        // We are in !seen (Alice is), not in !unseen, though we hold a stale copy of it.
        member("!seen:here.test", "@alice:here.test", "join");
        member("!seen:here.test", "@bob:there.test", "join");
        member("!seen:here.test", "@eve:there.test", "invite");
        member("!unseen:there.test", "@eve:there.test", "join");
        member("!unseen:there.test", "@alice:here.test", "leave");
        let allow = |rooms: &[&str]| {
            json!({ "join_rule": "restricted", "allow": rooms.iter()
                .map(|room| json!({ "type": "m.room_membership", "room_id": room }))
                .collect::<Vec<_>>() })
        };
        let check = |rooms: &[&str], user: &str| {
            let user = UserId::parse(user).expect("user");
            check_conditions(&storage, &allow(rooms), &user, ours).expect("check")
        };
        let both = ["!unseen:there.test", "!seen:here.test"];
        assert_eq!(check(&both, "@bob:there.test"), Conditions::Met);
        // Invited is not joined; the join in the room we are not in cannot be trusted.
        assert_eq!(check(&both, "@eve:there.test"), Conditions::Unverifiable);
        assert_eq!(check(&both[1..], "@eve:there.test"), Conditions::Unmet);
        assert_eq!(check(&[], "@bob:there.test"), Conditions::Unmet);
        // Our own user left !unseen: known for sure, so plainly unmet.
        assert_eq!(check(&both[..1], "@alice:here.test"), Conditions::Unmet);
        assert_eq!(check(&both, "@alice:here.test"), Conditions::Met);
    }

    /// A room held only as current state and memberships, enough for the power levels.
    struct HeldRoom {
        _dir: tempfile::TempDir,
        storage: Storage,
        room: OwnedRoomId,
    }

    impl HeldRoom {
        fn new(version: &str, creator: &str) -> HeldRoom {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = crate::storage::testing::open(&dir.path().join("data"));
            let held = HeldRoom {
                _dir: dir,
                storage,
                room: OwnedRoomId::try_from("!held:here.test").expect("room"),
            };
            held.state(
                "m.room.create",
                "",
                creator,
                &json!({ "room_version": version, "creator": creator }),
            );
            held
        }

        fn state(&self, kind: &str, state_key: &str, sender: &str, content: &Value) {
            let event_id = format!("${kind}/{state_key}:here.test");
            let event = json!({ "sender": sender, "content": content });
            self.storage
                .eventid_pdu
                .insert(&event_id, &event.to_string())
                .expect("event");
            let key = (self.room.to_string(), kind.to_owned(), state_key.to_owned());
            self.storage
                .roomstate_eventid
                .insert(&key, &event_id)
                .expect("state");
        }

        fn joined(&self, user: &str) {
            self.storage
                .roomuser_membership
                .insert(
                    &(self.room.to_string(), user.to_owned()),
                    &"join".to_owned(),
                )
                .expect("member");
        }

        fn level(&self, user: &str) -> i64 {
            let user = UserId::parse(user).expect("user");
            user_power_level(&self.storage, &self.room, &user).expect("level")
        }

        fn authoriser(&self) -> Option<String> {
            let ours = <&ServerName>::try_from("here.test").expect("name");
            best_authoriser(&self.storage, &self.room, ours)
                .expect("authoriser")
                .map(|user| user.to_string())
        }
    }

    #[test]
    fn levels_written_as_strings_count_before_version_10_only() {
        let levels = json!({
            "users": { "@alice:here.test": "100", "@bob:here.test": " +60 ",
                       "@carol:here.test": "+-5", "@dave:here.test": "ten" },
            "users_default": "7", "invite": "-1",
        });
        let v9 = HeldRoom::new("9", "@alice:here.test");
        v9.state("m.room.power_levels", "", "@alice:here.test", &levels);
        assert_eq!(v9.level("@alice:here.test"), 100);
        assert_eq!(v9.level("@bob:here.test"), 60);
        // Strings that are not integers read as no level: the default.
        assert_eq!(v9.level("@carol:here.test"), 7);
        assert_eq!(v9.level("@dave:here.test"), 7);
        assert_eq!(v9.level("@erin:here.test"), 7);
        assert_eq!(invite_level(&v9.storage, &v9.room).expect("invite"), -1);

        // From version 10 on, levels are integers only.
        let v10 = HeldRoom::new("10", "@alice:here.test");
        v10.state("m.room.power_levels", "", "@alice:here.test", &levels);
        assert_eq!(v10.level("@alice:here.test"), 0);
        assert_eq!(v10.level("@bob:here.test"), 0);
        assert_eq!(invite_level(&v10.storage, &v10.room).expect("invite"), 0);
    }

    #[test]
    fn the_authoriser_is_the_most_powerful_of_ours_first_by_user_id() {
        let room = HeldRoom::new("10", "@alice:here.test");
        let levels = |users: Value, users_default: i64, invite: i64| json!({ "users": users, "users_default": users_default, "invite": invite });
        for user in ["@alice:here.test", "@bob:here.test", "@carol:here.test"] {
            room.joined(user);
        }
        room.joined("@zed:there.test");
        // The highest level of ours; users of other servers or not joined never.
        room.state(
            "m.room.power_levels",
            "",
            "@alice:here.test",
            &levels(
                json!({ "@alice:here.test": 50, "@carol:here.test": 60,
                        "@zed:there.test": 100, "@gone:here.test": 100 }),
                0,
                50,
            ),
        );
        assert_eq!(room.authoriser().as_deref(), Some("@carol:here.test"));
        // Ties go to the first user ID, whether named or at the default level.
        room.state(
            "m.room.power_levels",
            "",
            "@alice:here.test",
            &levels(json!({ "@carol:here.test": 50 }), 50, 50),
        );
        assert_eq!(room.authoriser().as_deref(), Some("@alice:here.test"));
        room.state(
            "m.room.power_levels",
            "",
            "@alice:here.test",
            &levels(
                json!({ "@alice:here.test": 10, "@carol:here.test": 50 }),
                50,
                50,
            ),
        );
        assert_eq!(room.authoriser().as_deref(), Some("@bob:here.test"));
        // A default above every named level wins; below the invite level nobody may vouch.
        room.state(
            "m.room.power_levels",
            "",
            "@alice:here.test",
            &levels(json!({ "@alice:here.test": 10 }), 20, 20),
        );
        assert_eq!(room.authoriser().as_deref(), Some("@bob:here.test"));
        room.state(
            "m.room.power_levels",
            "",
            "@alice:here.test",
            &levels(json!({ "@alice:here.test": 10 }), 0, 20),
        );
        assert_eq!(room.authoriser(), None);

        // Version 12: the creators are above everyone, named in `users` or not.
        let v12 = HeldRoom::new("12", "@carol:here.test");
        v12.joined("@bob:here.test");
        v12.joined("@carol:here.test");
        v12.state(
            "m.room.power_levels",
            "",
            "@carol:here.test",
            &levels(json!({ "@bob:here.test": 100 }), 0, 50),
        );
        assert_eq!(v12.authoriser().as_deref(), Some("@carol:here.test"));
        // Without power levels: the creator has 100, the others 0, and anyone may invite.
        let bare = HeldRoom::new("9", "@carol:here.test");
        bare.joined("@bob:here.test");
        bare.joined("@carol:here.test");
        assert_eq!(bare.authoriser().as_deref(), Some("@carol:here.test"));
        bare.storage
            .roomuser_membership
            .remove(&(bare.room.to_string(), "@carol:here.test".to_owned()))
            .expect("leave");
        assert_eq!(bare.authoriser().as_deref(), Some("@bob:here.test"));
    }

    #[test]
    fn restricted_rules_count_only_in_versions_that_know_them() {
        let restricted = json!({ "join_rule": "restricted" });
        let knock_restricted = json!({ "join_rule": "knock_restricted" });
        let public = json!({ "join_rule": "public" });
        let v7 = ruma::RoomVersionId::V7.rules().expect("v7").authorization;
        let v9 = ruma::RoomVersionId::V9.rules().expect("v9").authorization;
        let v10 = ruma::RoomVersionId::V10.rules().expect("v10").authorization;
        assert!(!is_restricted(&v7, &restricted));
        assert!(is_restricted(&v9, &restricted));
        assert!(!is_restricted(&v9, &knock_restricted));
        assert!(is_restricted(&v10, &knock_restricted));
        assert!(!is_restricted(&v10, &public));
    }
}
