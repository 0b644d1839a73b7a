//! State resolution v1 on small forked rooms held in memory (and one in storage): each test
//! names what the spec's algorithm gives and why.

use std::collections::{BTreeMap, HashMap};

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, UInt};
use serde_json::{Value, json};

use super::*;

const ROOM: &str = "!fork:x.test";
const ALICE: &str = "@alice:x.test";
const BOB: &str = "@bob:y.test";
const CAROL: &str = "@carol:y.test";

/// One state: `(type, state_key)` → event ID.
type Named = BTreeMap<(String, String), String>;

/// The events of a room, by ID.
#[derive(Default)]
struct Room {
    events: HashMap<String, Pdu>,
}

impl Room {
    /// Records a state event; returns its ID.
    fn state(
        &mut self,
        id: &str,
        (kind, state_key): (&str, &str),
        sender: &str,
        content: &Value,
        depth: u64,
    ) -> String {
        let event_id = format!("${id}:x.test");
        let pdu = Pdu {
            event_id: OwnedEventId::try_from(event_id.as_str()).expect("event ID"),
            room_id: Some(ROOM.try_into().expect("room ID")),
            sender: sender.try_into().expect("user ID"),
            kind: TimelineEventType::from(kind),
            state_key: Some(state_key.to_owned()),
            content: serde_json::value::to_raw_value(&content).expect("content"),
            prev_events: Vec::new(),
            auth_events: Vec::new(),
            redacts: None,
            depth,
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::from(1u32)),
            sha256: None,
            rejected: false,
        };
        self.events.insert(event_id.clone(), pdu);
        event_id
    }

    fn member(
        &mut self,
        id: &str,
        target: &str,
        sender: &str,
        membership: &str,
        depth: u64,
    ) -> String {
        self.state(
            id,
            ("m.room.member", target),
            sender,
            &json!({ "membership": membership }),
            depth,
        )
    }

    /// The state after each event of `ids`, in order.
    fn after(&self, ids: &[&String]) -> Named {
        let mut state = Named::new();
        for id in ids {
            let event = &self.events[id.as_str()];
            let key = (
                event.kind.to_string(),
                event.state_key.clone().expect("state event"),
            );
            state.insert(key, (*id).clone());
        }
        state
    }

    /// The spec's resolution of `states`, computed with this module's pure half.
    fn resolve(&self, states: &[Named]) -> Named {
        let (mut state, conflicted) = separate(states);
        let mut candidates: StateMap<Vec<Pdu>> = StateMap::new();
        for ((kind, state_key), ids) in conflicted {
            let events = ids.iter().map(|id| self.events[id].clone()).collect();
            candidates.insert((StateEventType::from(kind), state_key), events);
        }
        let undisputed = state.clone();
        let lookup = |kind: &StateEventType, state_key: &str| {
            let id = undisputed.get(&(kind.to_string(), state_key.to_owned()))?;
            self.events.get(id).cloned()
        };
        let rules = RoomVersionRules::V1.authorization;
        for ((kind, state_key), id) in resolve_conflicts(&rules, &candidates, &lookup) {
            state.insert((kind.to_string(), state_key), id.to_string());
        }
        state
    }
}

/// The start of every fork: Alice's public room (Alice 100, Bob 50, state at 50), with Bob in.
struct Base {
    room: Room,
    create: String,
    alice: String,
    power: String,
    join_rules: String,
    bob: String,
}

impl Base {
    fn new() -> Base {
        let mut room = Room::default();
        let create = room.state(
            "create",
            ("m.room.create", ""),
            ALICE,
            &json!({ "creator": ALICE }),
            1,
        );
        let alice = room.member("alice", ALICE, ALICE, "join", 2);
        let power = room.state(
            "power",
            ("m.room.power_levels", ""),
            ALICE,
            &power_levels(50),
            3,
        );
        let join_rules = room.state(
            "public",
            ("m.room.join_rules", ""),
            ALICE,
            &json!({ "join_rule": "public" }),
            4,
        );
        let bob = room.member("bob", BOB, BOB, "join", 5);
        Base {
            room,
            create,
            alice,
            power,
            join_rules,
            bob,
        }
    }

    /// The base state with `more` events after it.
    fn with(&self, more: &[&String]) -> Named {
        let mut ids = vec![
            &self.create,
            &self.alice,
            &self.power,
            &self.join_rules,
            &self.bob,
        ];
        ids.extend_from_slice(more);
        self.room.after(&ids)
    }
}

/// Power levels with Alice at 100 and Bob at `bob`; state events need 50.
fn power_levels(bob: u64) -> Value {
    json!({ "users": { ALICE: 100, BOB: bob }, "state_default": 50, "users_default": 0 })
}

fn entry<'a>(state: &'a Named, kind: &str, state_key: &str) -> &'a str {
    state
        .get(&(kind.to_owned(), state_key.to_owned()))
        .map_or("(none)", String::as_str)
}

/// Of two events, the one whose event ID has the lower SHA-1.
fn lower_sha1<'a>(room: &Room, a: &'a String, b: &'a String) -> &'a String {
    if sha1_of_event_id(&room.events[a]) < sha1_of_event_id(&room.events[b]) {
        a
    } else {
        b
    }
}

#[test]
fn states_agreeing_or_lacking_a_key_are_not_in_conflict() {
    let first = BTreeMap::from([("a", 1), ("b", 2)]);
    let second = BTreeMap::from([("a", 1), ("b", 3), ("c", 4)]);
    let (unconflicted, conflicted) = separate(&[first, second]);
    assert_eq!(unconflicted, BTreeMap::from([("a", 1), ("c", 4)]));
    assert_eq!(
        conflicted,
        BTreeMap::from([("b", std::collections::BTreeSet::from([2, 3]))])
    );

    let base = Base::new();
    let same = base.with(&[]);
    assert_eq!(
        base.room.resolve(&[same.clone(), same.clone()]),
        same,
        "nothing to resolve"
    );
}

#[test]
fn power_levels_run_from_the_shallowest_and_stop_at_the_first_refused() {
    // Fork: Alice demotes Bob to 0 on one side; Bob lowers `state_default` (allowed at 50)
    // on the other. Whichever is shallower goes first; Alice's passes after Bob's, but Bob's
    // fails after Alice's (he is at 0 now): Alice's stands in both orders.
    for (alice_depth, bob_depth) in [(6, 7), (7, 6)] {
        let mut base = Base::new();
        let demote = base.room.state(
            &format!("demote{alice_depth}"),
            ("m.room.power_levels", ""),
            ALICE,
            &power_levels(0),
            alice_depth,
        );
        let mut lowered = power_levels(50);
        lowered["state_default"] = json!(40);
        let bobs = base.room.state(
            &format!("lower{bob_depth}"),
            ("m.room.power_levels", ""),
            BOB,
            &lowered,
            bob_depth,
        );
        let resolved = base
            .room
            .resolve(&[base.with(&[&demote]), base.with(&[&bobs])]);
        assert_eq!(
            entry(&resolved, "m.room.power_levels", ""),
            demote,
            "Alice at depth {alice_depth}, Bob at {bob_depth}"
        );
    }
}

#[test]
fn the_first_refused_power_levels_end_the_pass_though_a_deeper_one_would_pass() {
    // Three sides: Alice demotes Bob (6), Bob lowers `state_default` (7), Alice sets Bob to
    // 10 (8). Bob's fails after Alice's demotion, and the pass stops there: Alice's deeper
    // change is never weighed.
    let mut base = Base::new();
    let demote = base.room.state(
        "demote",
        ("m.room.power_levels", ""),
        ALICE,
        &power_levels(0),
        6,
    );
    let mut lowered = power_levels(50);
    lowered["state_default"] = json!(40);
    let bobs = base
        .room
        .state("lower", ("m.room.power_levels", ""), BOB, &lowered, 7);
    let later = base.room.state(
        "later",
        ("m.room.power_levels", ""),
        ALICE,
        &power_levels(10),
        8,
    );
    let resolved = base.room.resolve(&[
        base.with(&[&demote]),
        base.with(&[&bobs]),
        base.with(&[&later]),
    ]);
    assert_eq!(entry(&resolved, "m.room.power_levels", ""), demote);
}

#[test]
fn power_levels_of_one_depth_that_all_pass_end_with_the_lowest_sha1() {
    // Sorted by descending SHA-1 within a depth, every event passes: the last (lowest) stands.
    let mut base = Base::new();
    let one = base.room.state(
        "levels-one",
        ("m.room.power_levels", ""),
        ALICE,
        &power_levels(10),
        6,
    );
    let two = base.room.state(
        "levels-two",
        ("m.room.power_levels", ""),
        ALICE,
        &power_levels(20),
        6,
    );
    let resolved = base.room.resolve(&[base.with(&[&one]), base.with(&[&two])]);
    assert_eq!(
        entry(&resolved, "m.room.power_levels", ""),
        lower_sha1(&base.room, &one, &two).as_str()
    );
}

#[test]
fn join_rules_are_checked_against_the_resolved_power_levels() {
    // Alice demotes Bob on one side; Bob makes the room invite-only on the other. The power
    // levels resolve first (Alice's), and under them Bob may not change the join rules: the
    // earlier `public` stands although Bob's event is deeper.
    let mut base = Base::new();
    let demote = base.room.state(
        "demote",
        ("m.room.power_levels", ""),
        ALICE,
        &power_levels(0),
        6,
    );
    let invite_only = base.room.state(
        "invite-only",
        ("m.room.join_rules", ""),
        BOB,
        &json!({ "join_rule": "invite" }),
        7,
    );
    let resolved = base
        .room
        .resolve(&[base.with(&[&demote]), base.with(&[&invite_only])]);
    assert_eq!(entry(&resolved, "m.room.power_levels", ""), demote);
    assert_eq!(entry(&resolved, "m.room.join_rules", ""), base.join_rules);

    // Without the demotion Bob's change passes, and being deeper it stands.
    let mut again = Base::new();
    let invite_only = again.room.state(
        "invite-only",
        ("m.room.join_rules", ""),
        BOB,
        &json!({ "join_rule": "invite" }),
        7,
    );
    let other = again.room.member("carol", CAROL, CAROL, "join", 6);
    let resolved = again
        .room
        .resolve(&[again.with(&[&other]), again.with(&[&invite_only])]);
    assert_eq!(entry(&resolved, "m.room.join_rules", ""), invite_only);
}

#[test]
fn a_ban_beats_a_concurrent_join_whichever_is_deeper() {
    // Alice bans Carol on one side while Carol joins on the other. Join first: the ban
    // passes after it. Ban first: the join fails after it. The ban stands both ways.
    for (ban_depth, join_depth) in [(7, 6), (6, 7)] {
        let mut base = Base::new();
        let ban = base
            .room
            .member(&format!("ban{ban_depth}"), CAROL, ALICE, "ban", ban_depth);
        let join = base.room.member(
            &format!("join{join_depth}"),
            CAROL,
            CAROL,
            "join",
            join_depth,
        );
        let resolved = base
            .room
            .resolve(&[base.with(&[&ban]), base.with(&[&join])]);
        assert_eq!(
            entry(&resolved, "m.room.member", CAROL),
            ban,
            "ban at depth {ban_depth}, join at {join_depth}"
        );
    }
}

#[test]
fn member_keys_of_one_pass_do_not_see_each_other() {
    // Bob left and came back on one side, so his key is disputed; on the other, Bob kicked
    // Dave. Resolved on its own Bob's key would say `join` (enough to kick), but keys of one
    // pass join R together at its end: while Dave's key is weighed Bob has no membership in
    // R, the kick fails, and Dave's join stands, whichever key goes first.
    let mut base = Base::new();
    let left = base.room.member("bob-out", BOB, BOB, "leave", 6);
    let back = base.room.member("bob-back", BOB, BOB, "join", 7);
    let dave = "@dave:y.test";
    let joined = base.room.member("dave-in", dave, dave, "join", 8);
    let kicked = base.room.member("dave-kicked", dave, BOB, "leave", 9);
    let resolved = base.room.resolve(&[
        base.with(&[&left, &back, &joined]),
        base.with(&[&joined, &kicked]),
    ]);
    assert_eq!(entry(&resolved, "m.room.member", BOB), back);
    assert_eq!(entry(&resolved, "m.room.member", dave), joined);
}

#[test]
fn members_resolve_under_the_resolved_join_rules() {
    // Alice makes the room invite-only on one side; Carol, never in the room before, joins
    // on the other. Her key is named by one side only, so it is not in conflict and her
    // join stands although the resolved rules would refuse it (room version 1's known
    // weakness: only conflicts are checked).
    let mut base = Base::new();
    let invite_only = base.room.state(
        "invite-only",
        ("m.room.join_rules", ""),
        ALICE,
        &json!({ "join_rule": "invite" }),
        6,
    );
    let join = base.room.member("carol", CAROL, CAROL, "join", 6);
    let resolved = base
        .room
        .resolve(&[base.with(&[&invite_only]), base.with(&[&join])]);
    assert_eq!(entry(&resolved, "m.room.join_rules", ""), invite_only);
    assert_eq!(entry(&resolved, "m.room.member", CAROL), join);

    // Carol had left before the fork: now her key is disputed, the leave goes first, and
    // the join fails under the invite-only rules.
    let mut base = Base::new();
    let joined = base.room.member("carol-in", CAROL, CAROL, "join", 6);
    let left = base.room.member("carol-out", CAROL, CAROL, "leave", 7);
    let invite_only = base.room.state(
        "invite-only",
        ("m.room.join_rules", ""),
        ALICE,
        &json!({ "join_rule": "invite" }),
        8,
    );
    let rejoin = base.room.member("carol-again", CAROL, CAROL, "join", 8);
    let resolved = base.room.resolve(&[
        base.with(&[&joined, &left, &invite_only]),
        base.with(&[&joined, &left, &rejoin]),
    ]);
    assert_eq!(entry(&resolved, "m.room.join_rules", ""), invite_only);
    assert_eq!(entry(&resolved, "m.room.member", CAROL), left);
}

#[test]
fn other_keys_take_the_deepest_authorized_event_then_the_lowest_sha1() {
    let topic = |room: &mut Room, id: &str, sender: &str, depth: u64| {
        room.state(
            id,
            ("m.room.topic", ""),
            sender,
            &json!({ "topic": id }),
            depth,
        )
    };
    // Deeper wins.
    let mut base = Base::new();
    let shallow = topic(&mut base.room, "shallow", ALICE, 6);
    let deep = topic(&mut base.room, "deep", BOB, 9);
    let resolved = base
        .room
        .resolve(&[base.with(&[&shallow]), base.with(&[&deep])]);
    assert_eq!(entry(&resolved, "m.room.topic", ""), deep);

    // Same depth: the lower SHA-1 of the event ID.
    let mut base = Base::new();
    let one = topic(&mut base.room, "topic-one", ALICE, 6);
    let two = topic(&mut base.room, "topic-two", BOB, 6);
    let resolved = base.room.resolve(&[base.with(&[&one]), base.with(&[&two])]);
    assert_eq!(
        entry(&resolved, "m.room.topic", ""),
        lower_sha1(&base.room, &one, &two).as_str()
    );

    // The deepest fails in R (Bob was demoted, as the power levels resolve): the next one.
    let mut base = Base::new();
    let demote = base.room.state(
        "demote",
        ("m.room.power_levels", ""),
        ALICE,
        &power_levels(0),
        6,
    );
    let alices = topic(&mut base.room, "alices", ALICE, 7);
    let bobs = topic(&mut base.room, "bobs", BOB, 9);
    let resolved = base
        .room
        .resolve(&[base.with(&[&demote, &alices]), base.with(&[&bobs])]);
    assert_eq!(entry(&resolved, "m.room.topic", ""), alices);

    // None passes (both senders demoted): the last in the order, the shallowest.
    let mut base = Base::new();
    let demote = base.room.state(
        "demote",
        ("m.room.power_levels", ""),
        ALICE,
        &json!({ "users": { ALICE: 100 }, "events": { "m.room.topic": 100 } }),
        6,
    );
    let first = topic(&mut base.room, "first", BOB, 7);
    let second = topic(&mut base.room, "second", BOB, 8);
    let resolved = base
        .room
        .resolve(&[base.with(&[&demote, &first]), base.with(&[&second])]);
    assert_eq!(entry(&resolved, "m.room.topic", ""), first);
}

#[test]
fn a_disputed_create_event_leaves_nothing_authorized_and_does_not_panic() {
    // Hostile input: two create events. No other event can pass without a create event in
    // R; the resolution still gives an answer for every key.
    let mut base = Base::new();
    let other_create = base.room.state(
        "create-two",
        ("m.room.create", ""),
        BOB,
        &json!({ "creator": BOB }),
        1,
    );
    let topic_a = base
        .room
        .state("t-a", ("m.room.topic", ""), ALICE, &json!({}), 6);
    let topic_b = base
        .room
        .state("t-b", ("m.room.topic", ""), ALICE, &json!({}), 7);
    let mut second = base.with(&[&topic_b]);
    second.insert(("m.room.create".to_owned(), String::new()), other_create);
    let resolved = base.room.resolve(&[base.with(&[&topic_a]), second]);
    assert_ne!(entry(&resolved, "m.room.create", ""), "(none)");
    // Both topics fail without a create event: the shallower is kept.
    assert_eq!(entry(&resolved, "m.room.topic", ""), topic_a);
}

mod stored {
    //! The storage half: states by short IDs, events read back from the database.

    use super::*;
    use crate::storage::Storage;
    use crate::storage::snapshots;

    fn store(storage: &Storage, event: &Pdu) {
        let json = json!({
            "event_id": event.event_id, "room_id": event.room_id, "sender": event.sender,
            "type": event.kind.to_string(), "state_key": event.state_key,
            "content": serde_json::from_str::<Value>(event.content.get()).expect("content"),
            "prev_events": [], "auth_events": [], "depth": event.depth,
            "origin_server_ts": 1, "hashes": { "sha256": "x" }, "signatures": {},
        });
        storage
            .eventid_pdu
            .insert(&event.event_id.to_string(), &json.to_string())
            .expect("store");
    }

    fn short_state(storage: &Storage, named: &Named) -> snapshots::StateMap {
        named
            .iter()
            .map(|((kind, state_key), id)| {
                (
                    snapshots::short_state_key(storage, kind, state_key).expect("key"),
                    snapshots::short_event_id(storage, id).expect("event"),
                )
            })
            .collect()
    }

    #[test]
    fn stored_states_resolve_as_the_pure_algorithm_does() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let mut base = Base::new();
        let demote = base.room.state(
            "demote",
            ("m.room.power_levels", ""),
            ALICE,
            &power_levels(0),
            6,
        );
        let invite_only = base.room.state(
            "invite-only",
            ("m.room.join_rules", ""),
            BOB,
            &json!({ "join_rule": "invite" }),
            7,
        );
        let topic = base
            .room
            .state("topic", ("m.room.topic", ""), BOB, &json!({}), 8);
        let name = base
            .room
            .state("name", ("m.room.name", ""), BOB, &json!({}), 8);
        for event in base.room.events.values() {
            store(&storage, event);
        }
        let first = base.with(&[&demote]);
        let second = base.with(&[&invite_only, &topic, &name]);
        // The name is disputed by an event not stored here: it is left out of the
        // weighing, and the one stored stands.
        let mut with_missing = first.clone();
        with_missing.insert(
            ("m.room.name".to_owned(), String::new()),
            "$missing:x.test".to_owned(),
        );

        let states = [
            short_state(&storage, &with_missing),
            short_state(&storage, &second),
        ];
        let rules = RoomVersionRules::V1;
        let resolved =
            resolve_stored(EventSource::stored(&storage, &rules), &states).expect("resolve");
        let named: Named = snapshots::named(&storage, &resolved)
            .expect("named")
            .into_iter()
            .collect();
        assert_eq!(named, base.room.resolve(&[first, second]));
        assert_eq!(entry(&named, "m.room.name", ""), name);
        assert_eq!(entry(&named, "m.room.power_levels", ""), demote);
        assert_eq!(entry(&named, "m.room.join_rules", ""), base.join_rules);
        assert_eq!(entry(&named, "m.room.topic", ""), topic);
    }

    #[test]
    fn the_incoming_event_takes_part_before_it_is_stored() {
        // An event from another server is stored only after its checks, but the room's
        // state after it is resolved during them: it must be weighed, not left out.
        let (_dir, storage) = crate::storage::testing::temporary();
        let mut base = Base::new();
        let ours = base
            .room
            .state("ours", ("m.room.topic", ""), ALICE, &json!({}), 6);
        let incoming = base
            .room
            .state("incoming", ("m.room.topic", ""), BOB, &json!({}), 7);
        for event in base.room.events.values() {
            if *event.event_id != *incoming.as_str() {
                store(&storage, event);
            }
        }
        let states = [
            short_state(&storage, &base.with(&[&ours])),
            short_state(&storage, &base.with(&[&incoming])),
        ];
        let rules = RoomVersionRules::V1;
        let topic = |resolved: &snapshots::StateMap| -> String {
            let named: Named = snapshots::named(&storage, resolved)
                .expect("named")
                .into_iter()
                .collect();
            entry(&named, "m.room.topic", "").to_owned()
        };
        let stored_only = EventSource::stored(&storage, &rules);
        let without = resolve_stored(stored_only, &states).expect("resolve");
        assert_eq!(topic(&without), ours, "an event not here cannot be weighed");
        let with_incoming = EventSource {
            incoming: Some(&base.room.events[&incoming]),
            ..stored_only
        };
        let resolved = resolve_stored(with_incoming, &states).expect("resolve");
        assert_eq!(topic(&resolved), incoming, "the deeper, authorized topic");
    }

    #[test]
    fn a_key_left_with_one_stored_event_is_not_seen_by_the_checks() {
        // Bob's membership is disputed by an event not stored here, so his join is its only
        // event: it stands in the result, but (as in Synapse, with which servers must agree)
        // the checks read the undisputed state, where Bob has no membership. His deeper
        // topic fails there, and Alice's stands.
        let (_dir, storage) = crate::storage::testing::temporary();
        let mut base = Base::new();
        let alices = base
            .room
            .state("alices", ("m.room.topic", ""), ALICE, &json!({}), 6);
        let bobs = base
            .room
            .state("bobs", ("m.room.topic", ""), BOB, &json!({}), 7);
        for event in base.room.events.values() {
            store(&storage, event);
        }
        let mut second = base.with(&[&bobs]);
        second.insert(
            ("m.room.member".to_owned(), BOB.to_owned()),
            "$missing:x.test".to_owned(),
        );
        let states = [
            short_state(&storage, &base.with(&[&alices])),
            short_state(&storage, &second),
        ];
        let rules = RoomVersionRules::V1;
        let resolved =
            resolve_stored(EventSource::stored(&storage, &rules), &states).expect("resolve");
        let named: Named = snapshots::named(&storage, &resolved)
            .expect("named")
            .into_iter()
            .collect();
        assert_eq!(entry(&named, "m.room.member", BOB), base.bob);
        assert_eq!(entry(&named, "m.room.topic", ""), alices);
    }

    #[test]
    fn too_many_conflicted_events_are_refused_before_any_is_read() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let keys = u64::try_from(MAX_CONFLICTED_EVENTS / 2 + 1).expect("fits");
        let first: snapshots::StateMap = (0..keys).map(|key| (key, 1)).collect();
        let second: snapshots::StateMap = (0..keys).map(|key| (key, 2)).collect();
        let err = resolve_stored(
            EventSource::stored(&storage, &RoomVersionRules::V1),
            &[first, second],
        )
        .expect_err("refused");
        assert!(matches!(err, Refused::Invalid(_)), "{err}");
    }

    #[test]
    fn events_of_another_room_are_refused() {
        let (_dir, storage) = crate::storage::testing::temporary();
        let mut base = Base::new();
        let ours = base
            .room
            .state("ours", ("m.room.topic", ""), ALICE, &json!({}), 6);
        let theirs = base
            .room
            .state("theirs", ("m.room.topic", ""), ALICE, &json!({}), 6);
        if let Some(event) = base.room.events.get_mut(&theirs) {
            event.room_id = Some("!elsewhere:x.test".try_into().expect("room"));
        }
        for event in base.room.events.values() {
            store(&storage, event);
        }
        let states = [
            short_state(&storage, &base.with(&[&ours])),
            short_state(&storage, &base.with(&[&theirs])),
        ];
        let err = resolve_stored(
            EventSource::stored(&storage, &RoomVersionRules::V1),
            &states,
        )
        .expect_err("refused");
        assert!(err.to_string().contains("not of the room"), "{err}");
    }
}
