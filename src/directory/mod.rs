//! Room aliases and the public room directory (spec: client-server API, "Room aliases",
//! "Listing rooms"), room summaries and who may preview a room, and the space hierarchy
//! ([`spaces`]). Only this server's aliases and rooms: others' need federation.
//!
//! [`Directory`] (in `service`) is what the HTTP layer asks; the free functions here are the
//! rules it applies, over `&Storage`, shared with federation's directory answers.

pub(crate) mod admin;
mod service;
pub(crate) mod spaces;

pub(crate) use service::Directory;

use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, ServerName, UserId};
use serde_json::{Value, json};

use crate::error::{Error, ErrorKind};
use crate::rooms;
use crate::storage::{Storage, StorageError};

pub(crate) use crate::storage::records::AliasRecord;

/// An alias of this server, or `M_INVALID_PARAM`.
pub(crate) fn local_alias(our_server: &ServerName, text: &str) -> Result<OwnedRoomAliasId, Error> {
    let alias = OwnedRoomAliasId::try_from(text).map_err(|_| {
        Error::new(
            ErrorKind::InvalidParam,
            format!("`{text}` is not a room alias"),
        )
    })?;
    if alias.server_name() != our_server {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "Aliases of other servers cannot be made here",
        ));
    }
    Ok(alias)
}

/// The room a `roomIdOrAlias` path segment names: an ID as is, a local alias resolved.
pub(crate) fn room_id_or_alias(storage: &Storage, text: &str) -> Result<OwnedRoomId, Error> {
    if text.starts_with('#') {
        let alias = OwnedRoomAliasId::try_from(text)
            .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room alias"))?;
        let record = resolve(storage, &alias)?.ok_or_else(|| {
            Error::not_found(
                "No room has this alias here (aliases of other servers need federation)",
            )
        })?;
        OwnedRoomId::try_from(record.room_id).map_err(Error::internal)
    } else {
        OwnedRoomId::try_from(text)
            .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room ID"))
    }
}

/// Points `alias` at `room_id`; `false` if the alias exists already.
pub(crate) fn create_alias(
    storage: &Storage,
    alias: &RoomAliasId,
    room_id: &RoomId,
    creator: &UserId,
) -> Result<bool, StorageError> {
    let record = AliasRecord {
        room_id: room_id.to_string(),
        creator: creator.to_string(),
    };
    storage.alias_room.insert_new(&alias.to_string(), &record)
}

pub(crate) fn resolve(
    storage: &Storage,
    alias: &RoomAliasId,
) -> Result<Option<AliasRecord>, StorageError> {
    storage.alias_room.get(&alias.to_string())
}

pub(crate) fn delete_alias(storage: &Storage, alias: &RoomAliasId) -> Result<(), StorageError> {
    storage.alias_room.remove(&alias.to_string())
}

/// The local aliases of a room.
pub(crate) fn aliases_of(storage: &Storage, room_id: &RoomId) -> Result<Vec<String>, StorageError> {
    let mut aliases = Vec::new();
    for entry in storage.alias_room.iter() {
        let (alias, record) = entry?;
        if record.room_id == room_id.as_str() {
            aliases.push(alias);
        }
    }
    Ok(aliases)
}

pub(crate) fn is_published(storage: &Storage, room_id: &RoomId) -> Result<bool, StorageError> {
    storage.roomid_published.contains_key(&room_id.to_string())
}

pub(crate) fn set_published(
    storage: &Storage,
    room_id: &RoomId,
    published: bool,
) -> Result<(), StorageError> {
    if published {
        storage.roomid_published.insert(&room_id.to_string(), &1)
    } else {
        storage.roomid_published.remove(&room_id.to_string())
    }
}

/// The directory entry of a published room, from its current state.
pub(crate) fn public_entry(storage: &Storage, room_id: &RoomId) -> Result<Value, StorageError> {
    let content = |kind: &str| rooms::state_content(storage, room_id, kind, "");
    let text = |value: Option<Value>, field: &str| {
        value.and_then(|c| c.get(field).and_then(Value::as_str).map(str::to_owned))
    };
    let joined = rooms::current_state(storage, room_id)?
        .into_iter()
        .filter(|((kind, _), _)| kind == "m.room.member")
        .filter(|(_, event_id)| {
            rooms::load_json(storage, event_id)
                .ok()
                .flatten()
                .and_then(|json| {
                    json.get("content")
                        .and_then(|c| c.as_object())
                        .and_then(|c| c.get("membership"))
                        .and_then(|m| m.as_str())
                        .map(|m| m == "join")
                })
                .unwrap_or(false)
        })
        .count();
    let mut entry = json!({
        "room_id": room_id,
        "num_joined_members": joined,
        "world_readable": text(content("m.room.history_visibility")?, "history_visibility").as_deref() == Some("world_readable"),
        "guest_can_join": text(content("m.room.guest_access")?, "guest_access").as_deref() == Some("can_join"),
        "join_rule": text(content("m.room.join_rules")?, "join_rule").unwrap_or_else(|| "invite".to_owned()),
    });
    for (kind, field, key) in [
        ("m.room.name", "name", "name"),
        ("m.room.topic", "topic", "topic"),
        ("m.room.canonical_alias", "alias", "canonical_alias"),
        ("m.room.avatar", "url", "avatar_url"),
    ] {
        if let Some(value) = text(content(kind)?, field) {
            entry[key] = json!(value);
        }
    }
    if let Some(room_type) = text(content("m.room.create")?, "type") {
        entry["room_type"] = json!(room_type);
    }
    Ok(entry)
}

/// Whether `user` may see what a room is (its summary, its place in a space) without being
/// in it. The spec gives the same answer for `/room_summary` and `/hierarchy`: members and
/// the invited (and whoever knocked); anyone when the room is `world_readable`, or when
/// its join rule lets anyone join or knock (`public`, `knock`, `knock_restricted`), or
/// is `restricted` and the user is in one of the rooms it allows. A published room is
/// listed for everyone anyway. A banned user sees nothing.
pub(crate) fn may_preview(
    storage: &Storage,
    user: &UserId,
    room_id: &RoomId,
) -> Result<bool, StorageError> {
    let membership = rooms::membership(storage, user, room_id)?.map(|r| r.membership);
    match membership.as_deref() {
        Some("join" | "invite" | "knock") => return Ok(true),
        Some("ban") => return Ok(false),
        _ => {}
    }
    let content = |kind: &str| rooms::state_content(storage, room_id, kind, "");
    if content("m.room.history_visibility")?
        .is_some_and(|c| c["history_visibility"] == "world_readable")
    {
        return Ok(true);
    }
    let join_rules = content("m.room.join_rules")?.unwrap_or_default();
    match join_rules["join_rule"].as_str() {
        Some("public" | "knock" | "knock_restricted") => return Ok(true),
        Some("restricted") => {
            for allowed in rooms::restricted::allowed_room_ids(&join_rules) {
                if rooms::membership(storage, user, &allowed)?
                    .is_some_and(|r| r.membership == "join")
                {
                    return Ok(true);
                }
            }
        }
        _ => {}
    }
    is_published(storage, room_id)
}

/// A room's summary (spec: `RoomSummary`): its directory entry, with its version, its
/// encryption and, for restricted rooms, the rooms that let one in.
pub(crate) fn summary(storage: &Storage, room_id: &RoomId) -> Result<Value, StorageError> {
    let mut summary = public_entry(storage, room_id)?;
    if let Some(room) = storage.roomid_room.get(&room_id.to_string())? {
        summary["room_version"] = json!(room.version);
    }
    if let Some(algorithm) = rooms::state_content(storage, room_id, "m.room.encryption", "")?
        .and_then(|c| c["algorithm"].as_str().map(str::to_owned))
    {
        summary["encryption"] = json!(algorithm);
    }
    let join_rules =
        rooms::state_content(storage, room_id, "m.room.join_rules", "")?.unwrap_or_default();
    if matches!(
        join_rules["join_rule"].as_str(),
        Some("restricted" | "knock_restricted")
    ) {
        summary["allowed_room_ids"] = json!(rooms::restricted::allowed_room_ids(&join_rules));
    }
    Ok(summary)
}

/// The published rooms, largest first, filtered by a search term in name, topic or alias.
pub(crate) fn public_rooms(
    storage: &Storage,
    search: Option<&str>,
) -> Result<Vec<Value>, StorageError> {
    let search = search.map(str::to_lowercase);
    let mut entries = Vec::new();
    for entry in storage.roomid_published.iter() {
        let (room_id, _) = entry?;
        let Ok(room_id) = OwnedRoomId::try_from(room_id) else {
            continue;
        };
        let entry = public_entry(storage, &room_id)?;
        let matches = search.as_deref().is_none_or(|term| {
            ["name", "topic", "canonical_alias"].iter().any(|field| {
                entry[field]
                    .as_str()
                    .is_some_and(|text| text.to_lowercase().contains(term))
            })
        });
        if matches {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| {
        b["num_joined_members"]
            .as_u64()
            .cmp(&a["num_joined_members"].as_u64())
            .then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
    });
    Ok(entries)
}
