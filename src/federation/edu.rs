//! Inbound EDUs (spec: server-server API, "EDUs", "Typing Notifications", "Receipts",
//! "Presence", "Device Management", "Send-to-device messaging"): what another server's
//! transaction says besides events. [`receive_edus`] is called by `/send` once the request's
//! `X-Matrix` signature named the origin.
//!
//! A server may only speak for its own users, and only about rooms they are joined to here:
//! anything else is ignored (with a debug log), as the spec asks for typing and receipts.
//! - `m.typing`: into [`crate::sync::ephemeral`], timing out on our clock.
//! - `m.receipt`: stored like our users' receipts, so `/sync` shows them.
//! - `m.presence`: only with `federation.receive_presence`, and only for users who share a
//!   room with ours (the presence map stays as small as the rooms).
//! - `m.direct_to_device`: into our users' devices' inboxes ([`crate::users::to_device`]),
//!   for their next `/sync`.
//! - `m.signing_key_update`: a remote user's new master and self-signing keys, checked
//!   and kept ([`crate::users::cross_signing::store_remote`]) for users who share a room
//!   with us, so `/keys/query` has them when their server is away.
//! - `m.device_list_update`: **kept raw** in `seq_keptedu` (the newest [`MAX_KEPT`]) for
//!   the device-list work to consume.

use std::time::Duration;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, ServerName, UserId};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::storage::Batch;

/// End-to-end encryption EDUs kept, at most (the oldest go first).
pub(crate) const MAX_KEPT: u64 = 2000;

/// The largest EDU kept, serialized.
const MAX_KEPT_BYTES: usize = 64 * 1024;

/// EDUs read from one transaction, at most (the spec's limit).
const MAX_EDUS: usize = 100;

/// Receipts stored from one transaction, at most: each is a durable write.
const MAX_RECEIPTS: usize = 200;

/// Presence updates read from one EDU, at most.
const MAX_PRESENCE_UPDATES: usize = 100;

/// How long another server's "typing" lasts here unless repeated: `m.typing` carries no
/// timeout, and a server that goes away must not leave someone typing forever.
const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) use crate::storage::records::KeptEdu;

/// Applies the EDUs of a transaction from `origin`. Each EDU stands alone: one that is
/// invalid, or not `origin`'s to send, is skipped and logged, and the others still apply.
pub(crate) async fn receive_edus(fed: &Federation, origin: &ServerName, edus: Vec<Value>) {
    let mut receipts_left = MAX_RECEIPTS;
    let mut kept = 0;
    for edu in edus.into_iter().take(MAX_EDUS) {
        let kind = edu
            .get("edu_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let content = edu.get("content").cloned().unwrap_or(Value::Null);
        let result = match kind.as_str() {
            "m.typing" => typing(fed, origin, &content),
            "m.receipt" => receipts(fed, origin, &content, &mut receipts_left).await,
            "m.presence" => presence(fed, origin, &content),
            "m.direct_to_device" => direct_to_device(fed, origin, &content).await,
            "m.device_list_update" => keep(fed, origin, edu).map(|()| kept += 1),
            "m.signing_key_update" => signing_key_update(fed, origin, &content).map(|()| kept += 1),
            _ => Err(Error::new(ErrorKind::BadJson, "unknown EDU type")),
        };
        if let Err(err) = result {
            tracing::debug!(%origin, edu_type = %kind, "federation: EDU ignored: {err}");
        }
    }
    if kept > 0
        && let Err(err) = fed.storage.flush().await
    {
        tracing::warn!(%origin, "federation: kept EDUs not flushed: {err}");
    }
}

/// `m.typing`: `{room_id, user_id, typing}`.
fn typing(fed: &Federation, origin: &ServerName, content: &Value) -> Result<(), Error> {
    let room_id = parse_room_id(&content["room_id"])?;
    let user_id = parse_user_id(&content["user_id"])?;
    let typing = content["typing"]
        .as_bool()
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "typing must be a boolean"))?;
    ensure_joined(fed, origin, &user_id, &room_id)?;
    let timeout = typing.then_some(REMOTE_TYPING_TIMEOUT);
    fed.ephemeral.set_typing(&room_id, &user_id, timeout);
    Ok(())
}

/// `m.receipt`: `{room: {"m.read": {user: {event_ids: [one], data: {ts, thread_id?}}}}}`.
/// Only the receipts listed change, as the spec asks.
async fn receipts(
    fed: &Federation,
    origin: &ServerName,
    content: &Value,
    left: &mut usize,
) -> Result<(), Error> {
    let rooms = content
        .as_object()
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "content must be an object"))?;
    for (room, by_type) in rooms {
        let Some(reads) = by_type
            .get(crate::sync::receipts::PUBLIC)
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (user, receipt) in reads {
            if *left == 0 {
                return Err(Error::new(ErrorKind::TooLarge, "too many receipts"));
            }
            *left -= 1;
            if let Err(err) = read_receipt(fed, origin, room, user, receipt).await {
                tracing::debug!(%origin, %room, %user, "federation: receipt ignored: {err}");
            }
        }
    }
    Ok(())
}

/// One user's read receipt in one room.
async fn read_receipt(
    fed: &Federation,
    origin: &ServerName,
    room: &str,
    user: &str,
    receipt: &Value,
) -> Result<(), Error> {
    let room_id = parse_room_id(&Value::from(room))?;
    let user_id = parse_user_id(&Value::from(user))?;
    ensure_joined(fed, origin, &user_id, &room_id)?;
    let event_id = receipt["event_ids"]
        .get(0)
        .and_then(Value::as_str)
        .and_then(|id| OwnedEventId::try_from(id).ok())
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "event_ids must hold an event ID"))?;
    let data = &receipt["data"];
    let ts = data["ts"]
        .as_u64()
        .unwrap_or_else(crate::matrix::time::now_ms);
    let thread_id = match data.get("thread_id") {
        None => None,
        Some(Value::String(thread)) if thread.len() <= 255 => Some(thread.clone()),
        Some(_) => return Err(Error::new(ErrorKind::BadJson, "invalid thread_id")),
    };
    let kind = (crate::sync::receipts::PUBLIC, event_id.as_str());
    crate::sync::receipts::set_at(
        &fed.storage,
        &fed.rooms.stream,
        &room_id,
        &user_id,
        kind,
        thread_id,
        ts,
    )
    .await
}

/// `m.presence`: `{push: [{user_id, presence, status_msg?, ...}]}`, if configured.
fn presence(fed: &Federation, origin: &ServerName, content: &Value) -> Result<(), Error> {
    if !fed.config.federation.receive_presence {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "presence is off (federation.receive_presence)",
        ));
    }
    let updates = content["push"]
        .as_array()
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "push must be a list"))?;
    for update in updates.iter().take(MAX_PRESENCE_UPDATES) {
        if let Err(err) = presence_update(fed, origin, update) {
            tracing::debug!(%origin, "federation: presence ignored: {err}");
        }
    }
    Ok(())
}

fn presence_update(fed: &Federation, origin: &ServerName, update: &Value) -> Result<(), Error> {
    let user_id = parse_user_id(&update["user_id"])?;
    if user_id.server_name() != origin {
        return Err(Error::new(ErrorKind::Forbidden, "not a user of the sender"));
    }
    let presence = update["presence"]
        .as_str()
        .filter(|p| matches!(*p, "online" | "unavailable" | "offline"))
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "invalid presence"))?;
    let status_msg = match update.get("status_msg") {
        None | Some(Value::Null) => None,
        Some(Value::String(status)) if status.len() <= crate::sync::ephemeral::MAX_STATUS_BYTES => {
            Some(status.clone())
        }
        Some(_) => return Err(Error::new(ErrorKind::BadJson, "invalid status_msg")),
    };
    let shares_a_room = crate::rooms::memberships(&fed.storage, &user_id)?
        .iter()
        .any(|(_, record)| record.membership == "join");
    if !shares_a_room {
        return Err(Error::new(ErrorKind::Forbidden, "shares no room with us"));
    }
    fed.ephemeral
        .set_presence(&user_id, presence, Some(status_msg));
    Ok(())
}

/// `m.direct_to_device`: `{sender, type, message_id, messages: {user: {device: content}}}`,
/// from one of `origin`'s users to ours, into their devices' inboxes (see
/// [`crate::users::to_device`]); a `message_id` seen before from the sender is not stored
/// twice.
async fn direct_to_device(
    fed: &Federation,
    origin: &ServerName,
    content: &Value,
) -> Result<(), Error> {
    let sender = parse_user_id(&content["sender"])?;
    if sender.server_name() != origin {
        return Err(Error::new(ErrorKind::Forbidden, "not a user of the sender"));
    }
    let kind = content["type"]
        .as_str()
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "type must be a string"))?;
    let message_id = content["message_id"]
        .as_str()
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "message_id must be a string"))?;
    let messages = content["messages"]
        .as_object()
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "messages must be an object"))?;
    crate::users::to_device::send(
        &fed.storage,
        &fed.rooms.stream,
        &fed.transport.origin,
        &sender,
        crate::users::to_device::Sender::Remote { message_id },
        kind,
        messages,
    )
    .await
}

/// `m.signing_key_update`: `{user_id, master_key?, self_signing_key?}` of a user of the
/// origin who is in one of our rooms; the keys are checked before they are kept.
fn signing_key_update(fed: &Federation, origin: &ServerName, content: &Value) -> Result<(), Error> {
    let user_id = parse_user_id(&content["user_id"])?;
    if user_id.server_name() != origin {
        return Err(Error::new(ErrorKind::Forbidden, "not the origin's user"));
    }
    let in_our_rooms = crate::rooms::memberships(&fed.storage, &user_id)?
        .iter()
        .any(|(_, record)| record.membership == "join");
    if !in_our_rooms {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "a user in none of our rooms",
        ));
    }
    let master = content.get("master_key").and_then(Value::as_object);
    let changed = crate::users::cross_signing::store_remote(
        &fed.storage,
        &user_id,
        master,
        content.get("self_signing_key").and_then(Value::as_object),
    )?;
    if changed {
        let master = master
            .and_then(crate::users::cross_signing::public_key_of)
            .unwrap_or_default();
        tracing::info!(%origin, %user_id, master, "federation: m.signing_key_update kept");
    }
    Ok(())
}

/// Keeps an end-to-end encryption EDU for later, if it is `origin`'s to send, replacing
/// the oldest once [`MAX_KEPT`] are kept.
fn keep(fed: &Federation, origin: &ServerName, edu: Value) -> Result<(), Error> {
    if parse_user_id(&edu["content"]["user_id"])?.server_name() != origin {
        return Err(Error::new(ErrorKind::Forbidden, "not a user of the sender"));
    }
    let size = serde_json::to_vec(&edu).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_KEPT_BYTES {
        return Err(Error::new(ErrorKind::TooLarge, "EDU too large to keep"));
    }
    let storage = &fed.storage;
    let seq = storage.next_id("kept_edu")?;
    let record = KeptEdu {
        origin: origin.to_string(),
        received_ms: crate::matrix::time::now_ms(),
        edu,
    };
    let mut batch = Batch::new();
    storage
        .seq_keptedu
        .batch_insert(&mut batch, &seq, &record)?;
    if let Some(oldest) = seq.checked_sub(MAX_KEPT) {
        storage.seq_keptedu.batch_remove(&mut batch, &oldest);
    }
    storage.apply(batch)?;
    Ok(())
}

/// The user must be `origin`'s and joined to the room here.
fn ensure_joined(
    fed: &Federation,
    origin: &ServerName,
    user_id: &UserId,
    room_id: &RoomId,
) -> Result<(), Error> {
    if user_id.server_name() != origin {
        return Err(Error::new(ErrorKind::Forbidden, "not a user of the sender"));
    }
    let joined = crate::rooms::membership(&fed.storage, user_id, room_id)?
        .is_some_and(|record| record.membership == "join");
    if !joined {
        return Err(Error::new(ErrorKind::Forbidden, "not joined to the room"));
    }
    Ok(())
}

fn parse_room_id(value: &Value) -> Result<OwnedRoomId, Error> {
    value
        .as_str()
        .and_then(|id| OwnedRoomId::try_from(id).ok())
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "invalid room_id"))
}

fn parse_user_id(value: &Value) -> Result<OwnedUserId, Error> {
    value
        .as_str()
        .and_then(|id| OwnedUserId::try_from(id).ok())
        .ok_or_else(|| Error::new(ErrorKind::BadJson, "invalid user_id"))
}

#[cfg(test)]
#[path = "edu_tests.rs"]
mod tests;
