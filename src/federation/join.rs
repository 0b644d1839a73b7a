//! Joining rooms over federation (spec: server-server API, "Joining Rooms"): our users
//! joining rooms held by other servers (`make_join`, then `send_join` v2, whose answer
//! [`super::join_answer`] checks and stores), and other servers' users joining ours.

use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
    UserId,
};
use serde_json::{Value, json};

use super::join_stream::AnswerFile;
use super::transport::{encode, to_object};
use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::matrix::events::Pdu;
use crate::matrix::events::signing::hash_and_sign;
use crate::rooms::load_json;
use crate::rooms::remote::Refused;

/// The room versions we can join, for `make_join`'s `ver` parameters.
const SUPPORTED_VERSIONS: [&str; 12] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];

/// How long a `send_join` answer may take to arrive in all (each pause is bounded too): a
/// room of 100,000 state events sends 100-200 MB, minutes on a slow link.
pub(super) const SEND_JOIN_TIME: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Joins `user_id` to a room held elsewhere, asking `servers` in turn; returns the join
/// event's ID once the room, its state and the join are stored here.
pub(crate) async fn join_remote(
    fed: &Federation,
    user_id: &UserId,
    room_id: &RoomId,
    servers: &[String],
) -> Result<OwnedEventId, Error> {
    crate::rooms::blocked::refuse_if_blocked(&fed.storage, room_id)?;
    first_server(fed, room_id, servers, "joining", async |server: &str| {
        let made = make_and_sign(fed, user_id, room_id, server, "join").await?;
        let body = serde_json::to_value(&made.event).map_err(Error::internal)?;
        let path = send_path("v2/send_join", room_id, &made.event_id);
        // The answer of a large room is hundreds of MB: it goes to a file, not to memory.
        let (answer, mut file) = AnswerFile::create(&fed.config.database.path)
            .await
            .map_err(Error::internal)?;
        let bound = (fed.config.federation.max_join_answer_bytes, SEND_JOIN_TIME);
        fed.transport
            .put_to_writer(server, &path, &body, &mut file, bound)
            .await?;
        drop(file);
        super::join_answer::store_joined_room(
            fed,
            room_id,
            (&made.version, &made.rules),
            made.event,
            &answer.path,
        )
        .await?;
        Ok(made.event_id)
    })
    .await
}

/// Asks `servers` in turn (ours left out) until `attempt` succeeds with one; logs each
/// failure and returns the last.
pub(super) async fn first_server<T>(
    fed: &Federation,
    room_id: &RoomId,
    servers: &[String],
    what: &str,
    attempt: impl AsyncFn(&str) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut last_error = Error::not_found("No server to ask about this room");
    for server in servers {
        if server == fed.transport.origin.as_str() {
            continue;
        }
        match attempt(server).await {
            Ok(done) => return Ok(done),
            Err(err) => {
                tracing::info!(%room_id, %server, "{what} through this server failed: {err}");
                last_error = err;
            }
        }
    }
    Err(last_error)
}

/// A membership event made by a resident server (`make_join`, `make_leave`, `make_knock`)
/// and signed by us, with the room's version.
pub(super) struct Made {
    version: String,
    rules: RoomVersionRules,
    pub(super) event_id: OwnedEventId,
    pub(super) event: CanonicalJsonObject,
}

/// Asks `server` for a `membership` template for our user and fills it in and signs it.
pub(super) async fn make_and_sign(
    fed: &Federation,
    user_id: &UserId,
    room_id: &RoomId,
    server: &str,
    membership: &str,
) -> Result<Made, Error> {
    let mut path = format!(
        "/_matrix/federation/v1/make_{membership}/{}/{}",
        encode(room_id.as_str()),
        encode(user_id.as_str())
    );
    // Joins and knocks say which room versions we can take part in.
    if membership != "leave" {
        let versions: Vec<String> = SUPPORTED_VERSIONS
            .iter()
            .map(|v| format!("ver={v}"))
            .collect();
        path.push('?');
        path.push_str(&versions.join("&"));
    }
    let answer = fed
        .transport
        .request_json(server, "GET", &path, None)
        .await?;
    let version = answer["room_version"].as_str().unwrap_or("1").to_owned();
    let rules = RoomVersionId::try_from(version.as_str())
        .ok()
        .and_then(|v| v.rules())
        .ok_or_else(|| Error::new(ErrorKind::IncompatibleRoomVersion, "Unknown room version"))?;
    // A room's version never changes: a template of another version is for another room.
    if let Some(held) = fed.storage.roomid_room.get(&room_id.to_string())?
        && held.version != version
    {
        return Err(Error::new(
            ErrorKind::BadJson,
            format!(
                "Bad make_{membership} answer: room version {version}, but the room is version {}",
                held.version
            ),
        ));
    }
    let (event_id, event) = sign_membership(
        fed,
        &rules,
        &answer["event"],
        (room_id, user_id),
        membership,
    )?;
    Ok(Made {
        version,
        rules,
        event_id,
        event,
    })
}

/// The path of a `send_*` endpoint (`v2/send_join`, …) for an event of a room.
pub(super) fn send_path(endpoint: &str, room_id: &RoomId, event_id: &OwnedEventId) -> String {
    format!(
        "/_matrix/federation/{endpoint}/{}/{}",
        encode(room_id.as_str()),
        encode(event_id.as_str())
    )
}

/// Declines an invite to a room held elsewhere (`make_leave`, `send_leave` v2 through the
/// servers given), then records the user's leave here. When no server can be reached the
/// invite is declined here only: the user asked to be rid of it.
pub(crate) async fn leave_remote(
    fed: &Federation,
    user_id: &UserId,
    room_id: &RoomId,
    servers: &[String],
) -> Result<(), Error> {
    let signed = first_server(fed, room_id, servers, "declining", async |server: &str| {
        let made = make_and_sign(fed, user_id, room_id, server, "leave").await?;
        let body = serde_json::to_value(&made.event).map_err(Error::internal)?;
        let path = send_path("v2/send_leave", room_id, &made.event_id);
        fed.transport
            .request_json(server, "PUT", &path, Some(&body))
            .await?;
        Ok((made.event_id, made.event))
    })
    .await
    .ok();
    record_leave(fed, user_id, room_id, signed).await
}

/// Records that our user left (declined) a room we do not hold, with the signed leave
/// event when there is one.
async fn record_leave(
    fed: &Federation,
    user_id: &UserId,
    room_id: &RoomId,
    signed: Option<(OwnedEventId, CanonicalJsonObject)>,
) -> Result<(), Error> {
    let event =
        signed.map(|(id, json)| (id.to_string(), CanonicalJsonValue::Object(json).to_string()));
    fed.rooms
        .store_outside_membership(room_id, user_id, event, "leave", None)
        .await
}

/// Knocks on a room held elsewhere (`make_knock`, `send_knock` through the servers given)
/// and keeps the knock, with the room's stripped state, until it is answered.
pub(crate) async fn knock_remote(
    fed: &Federation,
    user_id: &UserId,
    room_id: &RoomId,
    servers: &[String],
) -> Result<(), Error> {
    first_server(fed, room_id, servers, "knocking", async |server: &str| {
        let made = make_and_sign(fed, user_id, room_id, server, "knock").await?;
        let body = serde_json::to_value(&made.event).map_err(Error::internal)?;
        let path = send_path("v1/send_knock", room_id, &made.event_id);
        let answer = fed
            .transport
            .request_json(server, "PUT", &path, Some(&body))
            .await?;
        let stripped: Vec<Value> = answer["knock_room_state"]
            .as_array()
            .into_iter()
            .flatten()
            .take(64)
            .map(super::invite::strip)
            .collect();
        let pdu = Pdu::from_json(&made.event, &made.rules)
            .map_err(|err| Error::internal(err.to_string()))?;
        super::invite::store_outside_membership(
            fed,
            room_id,
            user_id,
            (&made.event, &pdu),
            "knock",
            stripped,
        )
        .await
    })
    .await
}

/// Fills in a `make_join`/`make_leave`/`make_knock` template for our user and signs it.
/// The spec: the joining server MUST check the template's `type`, `room_id`, `sender`,
/// `state_key` and `content.membership` (the membership is ours to set); a server answering
/// with a template of another room would otherwise have us sign our user into it.
fn sign_membership(
    fed: &Federation,
    rules: &RoomVersionRules,
    template: &Value,
    (room_id, user_id): (&RoomId, &UserId),
    membership: &str,
) -> Result<(OwnedEventId, CanonicalJsonObject), Error> {
    let bad = |why: &str| {
        Error::new(
            ErrorKind::BadJson,
            format!("Bad make_{membership} answer: {why}"),
        )
    };
    let mut event = template.clone();
    let Some(object) = event.as_object_mut() else {
        return Err(bad("no event"));
    };
    if object.get("type").and_then(Value::as_str) != Some("m.room.member")
        || object.get("state_key").and_then(Value::as_str) != Some(user_id.as_str())
        || object.get("sender").and_then(Value::as_str) != Some(user_id.as_str())
    {
        return Err(bad("not a membership event of this user"));
    }
    if object.get("room_id").and_then(Value::as_str) != Some(room_id.as_str()) {
        return Err(bad("a template for another room"));
    }
    if object
        .get("content")
        .and_then(|content| content.get("membership"))
        .and_then(Value::as_str)
        .is_some_and(|given| given != membership)
    {
        return Err(bad("a template for another membership"));
    }
    object.remove("signatures");
    object.remove("hashes");
    object.remove("unsigned");
    object.insert(
        "origin_server_ts".into(),
        json!(crate::matrix::time::now_ms()),
    );
    object.insert("origin".into(), json!(fed.transport.origin.as_str()));
    let mut content = object
        .get("content")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    content.insert("membership".into(), json!(membership));
    if membership == "join"
        && let Some(profile) = fed.storage.userid_profile.get(&user_id.to_string())?
    {
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = profile.get(field) {
                content.insert(field.into(), value.clone());
            }
        }
    }
    object.insert("content".into(), Value::Object(content));
    if rules.event_id_format == ruma::room_version_rules::EventIdFormatVersion::V1 {
        object.insert(
            "event_id".into(),
            json!(format!(
                "${}:{}",
                crate::matrix::crypto::random_bytes::<12>()
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>(),
                fed.transport.origin
            )),
        );
    }
    let mut event = to_object(&event).ok_or_else(|| bad("not canonical JSON"))?;
    hash_and_sign(
        &mut event,
        rules,
        fed.transport.origin.as_str(),
        &fed.signing_key,
    )
    .map_err(|err| bad(&err.to_string()))?;
    let pdu = Pdu::from_json(&event, rules).map_err(|err| bad(&err.to_string()))?;
    Ok((pdu.event_id, event))
}

/// The servers to try when joining `room_id`: those the client named, the server of
/// whoever invited the user, then the room ID's own server (versions before 12 name one).
pub(crate) fn servers_for(
    fed: &Federation,
    user_id: &UserId,
    room_id: &RoomId,
    via: &[String],
) -> Vec<String> {
    let mut servers: Vec<String> = via.to_vec();
    let inviter = crate::rooms::membership(&fed.storage, user_id, room_id)
        .ok()
        .flatten()
        .filter(|record| record.membership == "invite")
        .and_then(|record| load_json(&fed.storage, &record.event_id).ok().flatten())
        .and_then(|json| {
            let sender = json.get("sender")?.as_str()?;
            UserId::parse(sender)
                .ok()
                .map(|user| user.server_name().to_string())
        });
    servers.extend(inviter);
    if let Some(server) = room_id.server_name() {
        servers.push(server.to_string());
    }
    // A room we held before (rejoining after a leave): the servers last known to be in it;
    // from room version 12 the room ID names no server to fall back on.
    if let Ok(known) = crate::federation::outbound::follower::room_servers(
        &fed.storage,
        room_id.as_str(),
        &fed.transport.origin,
    ) {
        servers.extend(known);
    }
    let mut seen = std::collections::HashSet::new();
    servers.retain(|server| seen.insert(server.clone()));
    servers
}

/// Whether a join of `room_id` (or declining an invite to it) must go through another
/// server: we do not hold the room, or none of our users is in it any more while other
/// servers' users are. Once our last user left, the other servers stopped sending us the
/// room's events: our copy of its state is stale, and a join made from it would fork the
/// room off events we never saw (and which could forbid the join), while the other servers
/// would not count us in until it reached them. A room no other server is known to be in
/// is joined here: nobody else could answer.
pub(crate) fn needs_remote_join(fed: &Federation, room_id: &OwnedRoomId) -> Result<bool, Error> {
    if fed.storage.roomid_room.get(&room_id.to_string())?.is_none() {
        return Ok(true);
    }
    let others = crate::federation::outbound::follower::room_servers(
        &fed.storage,
        room_id.as_str(),
        &fed.transport.origin,
    )?;
    Ok(
        !crate::rooms::is_resident(&fed.storage, &fed.transport.origin, room_id)?
            && !others.is_empty(),
    )
}

impl From<Refused> for Error {
    fn from(err: Refused) -> Error {
        Error::new(ErrorKind::Forbidden, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::test_state::{SERVER_NAME, test_state};
    use crate::rooms::RoomRecord;

    #[test]
    fn templates_of_another_room_or_membership_are_not_signed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fed = test_state(dir.path(), "");
        let rules = ruma::RoomVersionId::V11.rules().expect("rules");
        let room_id = OwnedRoomId::try_from("!asked:there.test").expect("room id");
        let user_id = ruma::OwnedUserId::try_from(format!("@alice:{SERVER_NAME}")).expect("user");
        let template = |room: &str, membership: &str| {
            json!({
                "type": "m.room.member", "room_id": room, "sender": user_id.as_str(),
                "state_key": user_id.as_str(), "content": { "membership": membership },
                "depth": 5, "prev_events": ["$prev"], "auth_events": ["$create"],
                "origin_server_ts": 1,
            })
        };
        let sign = |template: &Value, membership: &str| {
            sign_membership(&fed, &rules, template, (&room_id, &user_id), membership)
        };
        assert!(sign(&template(room_id.as_str(), "join"), "join").is_ok());
        let other_room = sign(&template("!other:there.test", "join"), "join");
        assert!(other_room.is_err(), "a template of another room was signed");
        let other_membership = sign(&template(room_id.as_str(), "leave"), "join");
        assert!(
            other_membership.is_err(),
            "a leave template was signed as a join"
        );
    }

    /// Sets `user`'s membership of `room` in the room's membership index.
    /// (Through a batch, as the server writes it: the joined members' summary follows.)
    fn set_membership(fed: &Federation, room: &str, user: &str, membership: &str) {
        let mut batch = crate::storage::Batch::new();
        fed.storage
            .roomuser_membership
            .batch_insert(
                &mut batch,
                &(room.to_owned(), user.to_owned()),
                &membership.to_owned(),
            )
            .expect("stage");
        fed.storage.apply(batch).expect("apply");
    }

    #[test]
    fn a_room_our_users_all_left_is_rejoined_through_the_servers_still_in_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fed = test_state(dir.path(), "");
        let room_id = OwnedRoomId::try_from("!room:gone.test").expect("room id");
        let room = room_id.as_str();
        let ours = format!("@alice:{SERVER_NAME}");
        // Not held at all (the room ID names a server that left long ago).
        assert!(needs_remote_join(&fed, &room_id).expect("check"));
        let record = RoomRecord {
            version: "11".to_owned(),
            extremities: Vec::new(),
            state: None,
            backfill: None,
        };
        fed.storage
            .roomid_room
            .insert(&room.to_owned(), &record)
            .expect("insert");
        set_membership(&fed, room, &ours, "join");
        set_membership(&fed, room, "@carol:elsewhere.test", "join");
        assert!(
            crate::rooms::is_resident(&fed.storage, &fed.transport.origin, &room_id)
                .expect("check")
        );
        assert!(!needs_remote_join(&fed, &room_id).expect("check"));
        // Our last user left: the copy we hold is stale while others are still in.
        set_membership(&fed, room, &ours, "leave");
        assert!(
            !crate::rooms::is_resident(&fed.storage, &fed.transport.origin, &room_id)
                .expect("check")
        );
        assert!(needs_remote_join(&fed, &room_id).expect("check"));
        assert!(
            servers_for(
                &fed,
                &ours.parse::<ruma::OwnedUserId>().expect("user id"),
                &room_id,
                &[]
            )
            .contains(&"elsewhere.test".to_owned())
        );
        // Nobody else is in it either: nobody could answer but us.
        set_membership(&fed, room, "@carol:elsewhere.test", "leave");
        assert!(!needs_remote_join(&fed, &room_id).expect("check"));
    }
}
