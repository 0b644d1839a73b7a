//! Restricted rooms across two real Hearth servers (spec: server-server API, "Restricted
//! rooms"): server A holds a room S and a room R whose join rules let S's members in. A
//! user of B in S joins R through A, which names one of its users in
//! `join_authorised_via_users_server` and signs the join; users in none of the allowed rooms
//! are refused with the spec's codes, and hand-forged joins naming a user of A who cannot
//! vouch are refused.

mod common;

use common::federation::{self, PASSWORD, Signer, signing_key};
use common::{Server, errcode, ok, query_encode};
use serde_json::{Value, json};

struct Pair {
    a: Server,
    b: Server,
    name_a: String,
    name_b: String,
    _certificates: tempfile::TempDir,
}

/// A holds `alice` (who creates the rooms), `dave` and `erin`; B holds `bob` and `mallory`.
fn pair() -> Pair {
    let federation::Pair {
        a,
        b,
        name_a,
        name_b,
        certificates,
    } = federation::Pair::start(&["alice", "dave", "erin"], &["bob", "mallory"]);
    Pair {
        a,
        b,
        name_a,
        name_b,
        _certificates: certificates,
    }
}

fn call(server: &Server, method: &str, path: &str, token: &str, body: Value) -> Value {
    ok(server.client().json(method, path, Some(token), &body))
}

/// Creates a room on `server` as `token`'s user; returns its ID.
fn create(server: &Server, token: &str, body: Value) -> String {
    call(server, "POST", "/_matrix/client/v3/createRoom", token, body)["room_id"]
        .as_str()
        .expect("room")
        .to_owned()
}

/// A room of `version` on `server` whose members may join only if they are in `allowed`
/// (with `join_rule`), and where inviting takes power level 50.
fn restricted_room(
    server: &Server,
    token: &str,
    version: &str,
    join_rule: &str,
    allowed: &str,
) -> String {
    create(
        server,
        token,
        json!({
            "room_version": version,
            "preset": "private_chat",
            "power_level_content_override": { "invite": 50 },
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": join_rule,
                             "allow": [{ "type": "m.room_membership", "room_id": allowed }] }
            }],
        }),
    )
}

/// `POST /join/{room}?via=…` as `token`'s user: the raw answer.
fn join(server: &Server, token: &str, room: &str, via: &str) -> common::http::Response {
    server.client().json(
        "POST",
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            query_encode(room),
            query_encode(via)
        ),
        Some(token),
        &json!({}),
    )
}

fn joined_members(server: &Server, token: &str, room: &str) -> Vec<String> {
    let members = call(
        server,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        token,
        json!(null),
    );
    let mut users: Vec<String> = members["joined"]
        .as_object()
        .expect("joined")
        .keys()
        .cloned()
        .collect();
    users.sort();
    users
}

fn member_event(server: &Server, token: &str, room: &str, user: &str) -> Value {
    let state = call(
        server,
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/state"),
        token,
        json!(null),
    );
    state
        .as_array()
        .expect("state")
        .iter()
        .find(|event| event["type"] == "m.room.member" && event["state_key"] == user)
        .cloned()
        .unwrap_or_else(|| panic!("no member event of {user} in {state}"))
}

fn body_text(response: &common::http::Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

#[test]
fn a_member_of_an_allowed_room_joins_a_restricted_room_through_its_resident_server() {
    let pair = pair();
    let alice = common::login_token(&pair.a, "alice", PASSWORD);
    let dave = common::login_token(&pair.a, "dave", PASSWORD);
    let erin = common::login_token(&pair.a, "erin", PASSWORD);
    let bob = common::login_token(&pair.b, "bob", PASSWORD);
    let mallory = common::login_token(&pair.b, "mallory", PASSWORD);
    let alice_id = format!("@alice:{}", pair.name_a);
    let bob_id = format!("@bob:{}", pair.name_b);
    let dave_id = format!("@dave:{}", pair.name_a);
    let mallory_id = format!("@mallory:{}", pair.name_b);
    let key_b = signing_key(&pair.b);
    let signer = Signer {
        origin: &pair.name_b,
        key: &key_b,
        destination: &pair.name_a,
    };
    let cases = [
        ("8", "restricted"),
        ("9", "restricted"),
        ("10", "restricted"),
        ("10", "knock_restricted"),
        ("11", "restricted"),
        ("12", "knock_restricted"),
    ];
    for (version, join_rule) in cases {
        let case = format!("version {version}, {join_rule}");
        let space = create(
            &pair.a,
            &alice,
            json!({ "room_version": version, "preset": "public_chat",
                    "creation_content": { "type": "m.space" } }),
        );
        let room = restricted_room(&pair.a, &alice, version, join_rule, &space);

        // Bob, in none of the allowed rooms, is refused by A: 403 M_FORBIDDEN.
        let refused = join(&pair.b, &bob, &room, &pair.name_a);
        assert_eq!(refused.status, 403, "{case}: {}", body_text(&refused));

        // Bob joins the space, then the room: A vouches for him.
        ok(join(&pair.b, &bob, &space, &pair.name_a));
        let joined = join(&pair.b, &bob, &room, &pair.name_a);
        assert_eq!(joined.status, 200, "{case}: {}", body_text(&joined));
        assert_eq!(
            joined_members(&pair.a, &alice, &room),
            [alice_id.clone(), bob_id.clone()],
            "{case}"
        );
        assert_eq!(
            joined_members(&pair.b, &bob, &room),
            [alice_id.clone(), bob_id.clone()],
            "{case}"
        );
        let on_a = member_event(&pair.a, &alice, &room, &bob_id);
        assert_eq!(
            on_a["content"]["join_authorised_via_users_server"], alice_id,
            "{case}: {on_a}"
        );
        // The join as both servers hold it carries A's signature as well as B's.
        let event_id = on_a["event_id"].as_str().expect("event ID");
        let pdu = ok(signer.get(&pair.a, &format!("/_matrix/federation/v1/event/{event_id}")));
        let signatures = &pdu["pdus"][0]["signatures"];
        assert!(
            signatures.get(&pair.name_a).is_some() && signatures.get(&pair.name_b).is_some(),
            "{case}: {pdu}"
        );
        let on_b = member_event(&pair.b, &bob, &room, &bob_id);
        assert_eq!(on_b["event_id"], event_id, "{case}");

        // Mallory, on B but in no allowed room, is still refused; the room is unchanged.
        let refused = join(&pair.b, &mallory, &room, &pair.name_a);
        assert_eq!(refused.status, 403, "{case}: {}", body_text(&refused));
        assert_eq!(errcode(&refused), "M_FORBIDDEN", "{case}");

        // Mallory joins the space: B holds the room now, but Bob may not invite, so B asks
        // A to vouch for her.
        ok(join(&pair.b, &mallory, &space, &pair.name_a));
        wait_until(&format!("{case}: A sees Mallory in the space"), || {
            joined_members(&pair.a, &alice, &space).contains(&mallory_id)
        });
        let joined = join(&pair.b, &mallory, &room, &pair.name_a);
        assert_eq!(joined.status, 200, "{case}: {}", body_text(&joined));
        let mallory_member = member_event(&pair.b, &bob, &room, &mallory_id);
        assert_eq!(
            mallory_member["content"]["join_authorised_via_users_server"], alice_id,
            "{case}: {mallory_member}"
        );
        assert!(
            joined_members(&pair.a, &alice, &room).contains(&mallory_id),
            "{case}"
        );

        // The same rules for A's own users: Dave, in the space, joins; Erin, not, cannot.
        ok(join(&pair.a, &dave, &space, &pair.name_a));
        ok(join(&pair.a, &dave, &room, &pair.name_a));
        let dave_member = member_event(&pair.a, &alice, &room, &dave_id);
        assert_eq!(
            dave_member["content"]["join_authorised_via_users_server"], alice_id,
            "{case}: {dave_member}"
        );
        let refused = join(&pair.a, &erin, &room, &pair.name_a);
        assert_eq!(refused.status, 403, "{case}: {}", body_text(&refused));
        assert_eq!(
            joined_members(&pair.a, &alice, &room),
            [
                alice_id.clone(),
                bob_id.clone(),
                dave_id.clone(),
                mallory_id.clone()
            ],
            "{case}"
        );
    }
}

/// Waits until `done` holds (federation is asynchronous), failing after a while.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting: {what}");
}

/// `make_join` as B would send it, for `user` in `room`.
fn make_join(
    signer: &Signer<'_>,
    server: &Server,
    room: &str,
    user: &str,
) -> common::http::Response {
    let versions: String = (1..=12).map(|v| format!("&ver={v}")).collect();
    signer.get(
        server,
        &format!(
            "/_matrix/federation/v1/make_join/{}/{}?{}",
            query_encode(room),
            query_encode(user),
            &versions[1..]
        ),
    )
}

/// The `make_join` template of `answer` filled in as `user` by B, with `authoriser` (or no
/// one) named in `join_authorised_via_users_server`; signed with B's key. Returns the event
/// and its ID.
fn forged_join(
    answer: &Value,
    user: &str,
    authoriser: Option<&str>,
    (origin, key): (&str, &hearth::matrix::crypto::SigningKey),
) -> (Value, String) {
    let version = answer["room_version"].as_str().expect("version");
    let rules = ruma::RoomVersionId::try_from(version)
        .expect("version")
        .rules()
        .expect("rules");
    let mut event = answer["event"].clone();
    event["sender"] = json!(user);
    event["state_key"] = json!(user);
    match authoriser {
        Some(authoriser) => {
            event["content"]["join_authorised_via_users_server"] = json!(authoriser);
        }
        None => {
            event["content"]
                .as_object_mut()
                .expect("content")
                .remove("join_authorised_via_users_server");
        }
    }
    let Ok(ruma::CanonicalJsonValue::Object(mut object)) =
        ruma::CanonicalJsonValue::try_from(event)
    else {
        panic!("object");
    };
    hearth::matrix::events::signing::hash_and_sign(&mut object, &rules, origin, key).expect("sign");
    let id = hearth::matrix::events::signing::event_id_for(&object, &rules)
        .expect("id")
        .expect("hashed IDs");
    (
        serde_json::to_value(ruma::CanonicalJsonValue::Object(object)).expect("json"),
        id.to_string(),
    )
}

#[test]
fn the_resident_server_refuses_joins_it_cannot_vouch_for_with_the_specs_codes() {
    let pair = pair();
    let alice = common::login_token(&pair.a, "alice", PASSWORD);
    let dave = common::login_token(&pair.a, "dave", PASSWORD);
    let bob = common::login_token(&pair.b, "bob", PASSWORD);
    let alice_id = format!("@alice:{}", pair.name_a);
    let bob_id = format!("@bob:{}", pair.name_b);
    let mallory_id = format!("@mallory:{}", pair.name_b);
    let dave_id = format!("@dave:{}", pair.name_a);
    let key_b = signing_key(&pair.b);
    let signer = Signer {
        origin: &pair.name_b,
        key: &key_b,
        destination: &pair.name_a,
    };
    let b = (pair.name_b.as_str(), &key_b);
    let space = create(
        &pair.a,
        &alice,
        json!({ "room_version": "10", "preset": "public_chat" }),
    );
    let room = restricted_room(&pair.a, &alice, "10", "restricted", &space);
    ok(join(&pair.b, &bob, &space, &pair.name_a));
    // Dave is in the room (through the space) but may not invite.
    ok(join(&pair.a, &dave, &space, &pair.name_a));
    ok(join(&pair.a, &dave, &room, &pair.name_a));

    // make_join: Bob gets a template naming Alice; Mallory (in no allowed room) is refused.
    let template = ok(make_join(&signer, &pair.a, &room, &bob_id));
    assert_eq!(
        template["event"]["content"]["join_authorised_via_users_server"], alice_id,
        "{template}"
    );
    let refused = make_join(&signer, &pair.a, &room, &mallory_id);
    assert_eq!(refused.status, 403, "{}", body_text(&refused));
    assert_eq!(errcode(&refused), "M_FORBIDDEN");

    // A room allowing only members of a room A is not in: A cannot tell, 400.
    let elsewhere = format!("!nowhere:{}", pair.name_b);
    let unknowable = restricted_room(&pair.a, &alice, "10", "restricted", &elsewhere);
    let refused = make_join(&signer, &pair.a, &unknowable, &bob_id);
    assert_eq!(refused.status, 400, "{}", body_text(&refused));
    assert_eq!(errcode(&refused), "M_UNABLE_TO_AUTHORISE_JOIN");
    // The client joining through A is told the same.
    let refused = join(&pair.b, &bob, &unknowable, &pair.name_a);
    assert_eq!(
        errcode(&refused),
        "M_UNABLE_TO_AUTHORISE_JOIN",
        "{}",
        body_text(&refused)
    );

    // A room where no user of A may invite: Bob qualifies, but A cannot vouch, 400.
    let powerless = create(
        &pair.a,
        &alice,
        json!({
            "room_version": "10", "preset": "private_chat",
            "power_level_content_override": {
                "invite": 50, "state_default": 0, "events": {},
                "users": { alice_id.clone(): 10 }
            },
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": "restricted",
                             "allow": [{ "type": "m.room_membership", "room_id": space }] }
            }],
        }),
    );
    let refused = make_join(&signer, &pair.a, &powerless, &bob_id);
    assert_eq!(refused.status, 400, "{}", body_text(&refused));
    assert_eq!(errcode(&refused), "M_UNABLE_TO_GRANT_JOIN");

    // send_join with hand-made joins: naming Dave (cannot invite), a user of A not in the
    // room, nobody, or Alice for Mallory (in no allowed room): each refused, nothing stored.
    let send_join = |(event, id): &(Value, String)| {
        signer.send(
            &pair.a,
            "PUT",
            &format!(
                "/_matrix/federation/v2/send_join/{}/{}",
                query_encode(&room),
                query_encode(id)
            ),
            Some(event),
        )
    };
    let stranger = format!("@nobody:{}", pair.name_a);
    for (user, authoriser, why) in [
        (
            &bob_id,
            Some(dave_id.as_str()),
            "a member who may not invite",
        ),
        (&bob_id, Some(stranger.as_str()), "a user not in the room"),
        (&bob_id, None, "no one"),
        (
            &mallory_id,
            Some(alice_id.as_str()),
            "a user in no allowed room",
        ),
    ] {
        let refused = send_join(&forged_join(&template, user, authoriser, b));
        assert_eq!(refused.status, 403, "{why}: {}", body_text(&refused));
        assert_eq!(errcode(&refused), "M_FORBIDDEN", "{why}");
    }
    assert_eq!(
        joined_members(&pair.a, &alice, &room),
        [alice_id.clone(), dave_id.clone()]
    );

    // The honest join, sent by hand: A answers with the event it signed.
    let honest = forged_join(&template, &bob_id, Some(&alice_id), b);
    let answer = ok(send_join(&honest));
    let event = &answer["event"];
    assert_eq!(
        event["content"]["join_authorised_via_users_server"], alice_id,
        "{answer}"
    );
    assert!(event["signatures"].get(&pair.name_a).is_some(), "{event}");
    assert!(event["signatures"].get(&pair.name_b).is_some(), "{event}");
    assert_eq!(
        joined_members(&pair.a, &alice, &room),
        [alice_id, bob_id, dave_id]
    );
}

/// A join refused by the room's current state (it became invite-only after `make_join`)
/// stays refused when sent again: it is stored (soft-failed), but not as accepted, so no
/// state and no signature come back.
#[test]
fn a_refused_join_sent_again_is_refused_again() {
    let pair = pair();
    let alice = common::login_token(&pair.a, "alice", PASSWORD);
    let bob = common::login_token(&pair.b, "bob", PASSWORD);
    let alice_id = format!("@alice:{}", pair.name_a);
    let bob_id = format!("@bob:{}", pair.name_b);
    let key_b = signing_key(&pair.b);
    let signer = Signer {
        origin: &pair.name_b,
        key: &key_b,
        destination: &pair.name_a,
    };
    let b = (pair.name_b.as_str(), &key_b);
    let space = create(
        &pair.a,
        &alice,
        json!({ "room_version": "10", "preset": "public_chat" }),
    );
    let room = restricted_room(&pair.a, &alice, "10", "restricted", &space);
    ok(join(&pair.b, &bob, &space, &pair.name_a));
    let template = ok(make_join(&signer, &pair.a, &room, &bob_id));
    call(
        &pair.a,
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.join_rules/"),
        &alice,
        json!({ "join_rule": "invite" }),
    );
    let send_join = |(event, id): &(Value, String)| {
        signer.send(
            &pair.a,
            "PUT",
            &format!(
                "/_matrix/federation/v2/send_join/{}/{}",
                query_encode(&room),
                query_encode(id)
            ),
            Some(event),
        )
    };
    let join_event = forged_join(&template, &bob_id, Some(&alice_id), b);
    for attempt in ["first", "second"] {
        let refused = send_join(&join_event);
        assert_eq!(refused.status, 403, "{attempt}: {}", body_text(&refused));
    }
}

/// Room versions before 10 let power levels be strings of integers ("100"): A reads them as
/// the auth rules do, so it still finds Alice able to vouch, and the join it signs passes.
#[test]
fn power_levels_written_as_strings_count_before_version_10() {
    let pair = pair();
    let alice = common::login_token(&pair.a, "alice", PASSWORD);
    let bob = common::login_token(&pair.b, "bob", PASSWORD);
    let alice_id = format!("@alice:{}", pair.name_a);
    let bob_id = format!("@bob:{}", pair.name_b);
    let space = create(
        &pair.a,
        &alice,
        json!({ "room_version": "9", "preset": "public_chat" }),
    );
    let room = restricted_room(&pair.a, &alice, "9", "restricted", &space);
    let levels_path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/");
    let mut levels = call(&pair.a, "GET", &levels_path, &alice, json!(null));
    levels["users"] = json!({ alice_id.clone(): "100" });
    levels["invite"] = json!(" +50 ");
    call(&pair.a, "PUT", &levels_path, &alice, levels);

    ok(join(&pair.b, &bob, &space, &pair.name_a));
    let joined = join(&pair.b, &bob, &room, &pair.name_a);
    assert_eq!(joined.status, 200, "{}", body_text(&joined));
    let on_a = member_event(&pair.a, &alice, &room, &bob_id);
    assert_eq!(
        on_a["content"]["join_authorised_via_users_server"], alice_id,
        "{on_a}"
    );
    assert_eq!(joined_members(&pair.a, &alice, &room), [alice_id, bob_id]);
}
