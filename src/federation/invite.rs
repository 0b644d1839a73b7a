//! Invites across servers (spec: server-server API, "Inviting to a room", `/invite` v2):
//! our users inviting users of other servers (the invite goes to their server to be
//! co-signed before it joins the room), and other servers inviting our users to rooms we
//! do not hold (kept with the room's stripped state until the user joins or declines).

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

use super::pdu_checks::checked;
use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::matrix::events::Pdu;
use crate::matrix::events::builder::NewEvent;
use crate::matrix::events::signing::hash_and_sign;
use crate::rooms::format::INVITE_STATE_TYPES;
use crate::rooms::remote::Outcome;
use crate::rooms::{build_in_room, load_json, rules_of};

/// The stripped state of a room we hold, for an invite sent by `inviter`: the spec's
/// types, then the inviter's membership. With `full_create`, the create event is given
/// whole (room version 12 invites need it so the invited server can check the room ID).
pub(crate) fn stripped_state(
    fed: &Federation,
    room_id: &RoomId,
    inviter: &str,
    full_create: bool,
) -> Result<Vec<Value>, Error> {
    let mut events = Vec::new();
    for kind in INVITE_STATE_TYPES {
        if let Some(event_id) = crate::rooms::state_event(&fed.storage, room_id, kind, "")?
            && let Some(json) = load_json(&fed.storage, &event_id)?
        {
            if full_create && kind == "m.room.create" {
                events.push(
                    serde_json::to_value(CanonicalJsonValue::Object(json)).unwrap_or_default(),
                );
            } else {
                events.push(crate::rooms::format::stripped_event(&json));
            }
        }
    }
    if let Some(event_id) =
        crate::rooms::state_event(&fed.storage, room_id, "m.room.member", inviter)?
        && let Some(member) = load_json(&fed.storage, &event_id)?
    {
        events.push(crate::rooms::format::stripped_event(&member));
    }
    Ok(events)
}

/// Invites `target`, a user of another server, to our room: builds and signs the invite,
/// has the target's server co-sign it, and stores it in the room.
pub(crate) async fn invite_remote(
    fed: &Federation,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    content: Value,
) -> Result<(), Error> {
    let room = fed
        .storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Error::not_found("No such room"))?;
    let rules = rules_of(&room)?;
    let new = NewEvent::state("m.room.member", target.as_str(), content);
    // Built without the room's lock: no cached auth events, which are kept only for the
    // room's current record.
    let (pdu, json) = build_in_room(
        &fed.storage,
        None,
        &fed.signing_key,
        &rules,
        (room_id, &room),
        sender,
        &new,
    )?;
    let invite_room_state = stripped_state(fed, room_id, sender.as_str(), true)?;
    let body = json!({
        "event": serde_json::to_value(CanonicalJsonValue::Object(json)).map_err(Error::internal)?,
        "room_version": room.version,
        "invite_room_state": invite_room_state,
    });
    let server = target.server_name().as_str();
    let path = format!(
        "/_matrix/federation/v2/invite/{}/{}",
        super::transport::encode(room_id.as_str()),
        super::transport::encode(pdu.event_id.as_str())
    );
    let answer = fed
        .transport
        .request_json(server, "PUT", &path, Some(&body))
        .await?;
    let signed = answer
        .get("event")
        .and_then(super::transport::to_object)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::BadJson,
                format!("{server} sent no signed invite"),
            )
        })?;
    let (signed, signed_pdu) = checked(fed, signed, &rules).await.map_err(|err| {
        Error::new(
            ErrorKind::Forbidden,
            format!("The invite came back wrong: {err}"),
        )
    })?;
    if signed_pdu.event_id != pdu.event_id {
        return Err(Error::new(
            ErrorKind::Forbidden,
            format!("{server} changed the invite"),
        ));
    }
    let outcome = fed
        .rooms
        .store_remote(room_id, signed, signed_pdu, false)
        .await?;
    if outcome == Outcome::SoftFailed {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "The room changed and no longer allows this invite",
        ));
    }
    Ok(())
}

/// # The invited side: `/invite` v2.
///
/// Checks an invite of one of our users by a user of `origin` to a room we may not hold,
/// co-signs it, and keeps it (with the room's stripped state) until the user acts on it.
pub(crate) async fn accept_invite(
    fed: &Federation,
    origin: &str,
    room_id: &RoomId,
    event_id: &str,
    body: &Value,
) -> Result<Value, Error> {
    crate::rooms::blocked::refuse_if_blocked(&fed.storage, room_id)?;
    let version = body["room_version"].as_str().unwrap_or("1");
    let rules: RoomVersionRules = RoomVersionId::try_from(version)
        .ok()
        .and_then(|v| v.rules())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::IncompatibleRoomVersion,
                format!("Room version {version} is not supported here"),
            )
        })?;
    let json = super::transport::to_object(&body["event"])
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "`event` is not an event"))?;
    // The spec: servers SHOULD answer M_INVALID_PARAM to an invite failing these checks.
    let (mut json, pdu) = checked(fed, json, &rules)
        .await
        .map_err(|err| Error::new(ErrorKind::InvalidParam, err.to_string()))?;
    let target = pdu
        .state_key
        .as_deref()
        .and_then(|key| UserId::parse(key).ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidParam,
                "The invite has no user as state key",
            )
        })?;
    let is_invite = pdu.kind == ruma::events::TimelineEventType::RoomMember
        && crate::rooms::membership_of(&pdu) == "invite"
        && pdu.sender.server_name().as_str() == origin
        && pdu.room_id.as_deref() == Some(room_id)
        && pdu.event_id.as_str() == event_id
        && target.server_name() == fed.transport.origin.as_str();
    if !is_invite {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "Not an invite by a user of the sending server, of a user here, in this room",
        ));
    }
    let exists = crate::users::accounts::get(&fed.storage, &target)
        .map_err(|err| Error::internal(err.to_string()))?
        .is_some_and(|account| !account.deactivated);
    if !exists {
        return Err(Error::not_found(format!("There is no user {target}")));
    }
    hash_and_sign(
        &mut json,
        &rules,
        fed.transport.origin.as_str(),
        &fed.signing_key,
    )
    .map_err(|err| Error::internal(err.to_string()))?;
    let stripped: Vec<Value> = body["invite_room_state"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .take(64)
        .map(|event| strip(&event))
        .collect();
    store_invite(fed, room_id, &target, &json, &pdu, stripped).await?;
    Ok(
        json!({ "event": serde_json::to_value(CanonicalJsonValue::Object(json)).map_err(Error::internal)? }),
    )
}

/// Only the fields of stripped state (a full create event is stripped for clients).
pub(crate) fn strip(event: &Value) -> Value {
    let mut stripped = serde_json::Map::new();
    for field in ["type", "state_key", "sender", "content"] {
        if let Some(value) = event.get(field) {
            stripped.insert(field.to_owned(), value.clone());
        }
    }
    Value::Object(stripped)
}

/// Keeps an invite to a room we do not hold (or hold without our user): the event, the
/// user's membership, the stripped state, at a new stream position so `/sync` shows it.
async fn store_invite(
    fed: &Federation,
    room_id: &RoomId,
    target: &UserId,
    json: &CanonicalJsonObject,
    pdu: &Pdu,
    stripped: Vec<Value>,
) -> Result<(), Error> {
    store_outside_membership(fed, room_id, target, (json, pdu), "invite", stripped).await
}

/// Keeps a membership of our user (`invite`, `knock`) in a room we do not hold: the event,
/// the membership record and the room's stripped state, at a new stream position.
pub(crate) async fn store_outside_membership(
    fed: &Federation,
    room_id: &RoomId,
    target: &UserId,
    (json, pdu): (&CanonicalJsonObject, &Pdu),
    membership: &str,
    stripped: Vec<Value>,
) -> Result<(), Error> {
    if crate::rooms::is_resident(&fed.storage, &fed.transport.origin, room_id)? {
        // A room we are in gets the invite through the room itself (as the inviting server
        // sends it to every server in the room); nothing to keep apart. A room we hold but
        // have left (none of our users is joined) does not: its events no longer reach us.
        return Ok(());
    }
    let text = CanonicalJsonValue::Object(json.clone()).to_string();
    fed.rooms
        .store_outside_membership(
            room_id,
            target,
            Some((pdu.event_id.to_string(), text)),
            membership,
            Some(stripped),
        )
        .await
}
