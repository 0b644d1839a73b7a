//! What other servers may ask about our rooms without being in them (spec: server-server
//! API, "Querying for information", "Published Room Directory", "Spaces"): where an alias
//! points, the rooms we publish, and the children of our spaces.

use std::collections::BTreeSet;

use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomId, ServerName};
use serde_json::{Value, json};

use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::rooms;
use crate::storage::pair_prefix;

/// The most rooms one page of the directory holds.
pub(crate) const MAX_PAGE: usize = 100;
/// The most servers named as holding a room: enough to join through, small to send.
const MAX_RESIDENT_SERVERS: usize = 50;

/// # `/query/directory`: the room an alias of ours points at, with servers in the room
/// (ours first). Aliases of other servers, and unknown ones, are `404 M_NOT_FOUND`.
pub(crate) fn resolve_alias(fed: &Federation, alias: &str) -> Result<Value, Error> {
    let alias = OwnedRoomAliasId::try_from(alias)
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room alias"))?;
    if alias.server_name() != fed.config.server.server_name {
        return Err(Error::not_found("This alias is not one of this server's"));
    }
    let record = crate::directory::resolve(&fed.storage, &alias)?
        .ok_or_else(|| Error::not_found("Unknown room alias"))?;
    let room_id = OwnedRoomId::try_from(record.room_id).map_err(Error::internal)?;
    let servers = resident_servers(fed, &room_id)?;
    Ok(json!({ "room_id": room_id, "servers": servers }))
}

/// Our server, then the servers of the room's joined members, in name order.
fn resident_servers(fed: &Federation, room_id: &RoomId) -> Result<Vec<String>, Error> {
    let ours = fed.config.server.server_name.to_string();
    let mut others = BTreeSet::new();
    for entry in fed
        .storage
        .roomuser_membership
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        let ((_, user), membership) = entry?;
        if membership != "join" {
            continue;
        }
        if let Some((_, server)) = user.split_once(':')
            && server != ours
            && others.len() < MAX_RESIDENT_SERVERS - 1
        {
            others.insert(server.to_owned());
        }
    }
    Ok(std::iter::once(ours).chain(others).collect())
}

/// What a server asks of `/publicRooms` (`GET` query or `POST` body).
#[derive(Debug, Default)]
pub(crate) struct PublicRoomsRequest {
    pub(crate) limit: Option<u64>,
    pub(crate) since: Option<String>,
    pub(crate) search: Option<String>,
    /// Room types to keep (`None` in the list: rooms without a type); none: every room.
    pub(crate) room_types: Option<Vec<Option<String>>>,
}

/// # `/publicRooms`: a page of the rooms published here (largest first), filtered.
/// `since` tokens are the index of a page's first room.
pub(crate) fn public_rooms(fed: &Federation, request: &PublicRoomsRequest) -> Result<Value, Error> {
    let mut rooms = crate::directory::public_rooms(&fed.storage, request.search.as_deref())?;
    if let Some(types) = &request.room_types {
        rooms.retain(|room| {
            let room_type = room["room_type"].as_str().map(str::to_owned);
            types.contains(&room_type)
        });
    }
    let start: usize = match &request.since {
        Some(token) => token
            .parse()
            .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid since token"))?,
        None => 0,
    };
    // `limit` 0 or absent is "no limit" in the spec; a page is still bounded.
    let limit = request
        .limit
        .and_then(|limit| usize::try_from(limit).ok())
        .filter(|&limit| limit > 0)
        .unwrap_or(MAX_PAGE)
        .min(MAX_PAGE);
    let total = rooms.len();
    let chunk: Vec<Value> = rooms.into_iter().skip(start).take(limit).collect();
    let mut answer = json!({ "chunk": chunk, "total_room_count_estimate": total });
    if start.saturating_add(limit) < total {
        answer["next_batch"] = json!((start + limit).to_string());
    }
    if start > 0 {
        answer["prev_batch"] = json!(start.saturating_sub(limit).to_string());
    }
    Ok(answer)
}

/// Whether `origin` could peek into or join a room of ours: world-readable, a join rule
/// that lets outsiders in or knock (`restricted` too: the asking server checks the
/// allowed rooms it is told), or one of its users joined or invited. The ACL comes first.
fn server_may_preview(
    fed: &Federation,
    origin: &ServerName,
    room_id: &RoomId,
) -> Result<bool, Error> {
    let content = |kind: &str| rooms::state_content(&fed.storage, room_id, kind, "");
    if !super::acl::allows(content("m.room.server_acl")?.as_ref(), origin.as_str()) {
        return Ok(false);
    }
    if content("m.room.history_visibility")?
        .is_some_and(|c| c["history_visibility"] == "world_readable")
    {
        return Ok(true);
    }
    let join_rules = content("m.room.join_rules")?.unwrap_or_default();
    if matches!(
        join_rules["join_rule"].as_str(),
        Some("public" | "knock" | "knock_restricted" | "restricted")
    ) {
        return Ok(true);
    }
    for entry in fed
        .storage
        .roomuser_membership
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        let ((_, user), membership) = entry?;
        if matches!(membership.as_str(), "join" | "invite")
            && user.split_once(':').map(|(_, server)| server) == Some(origin.as_str())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether a room is here and one of our users is in it.
fn is_ours(fed: &Federation, room_id: &RoomId) -> Result<bool, Error> {
    Ok(fed.storage.roomid_room.get(&room_id.to_string())?.is_some()
        && super::serve::has_local_member(&fed.storage, room_id, &fed.config.server.server_name)?)
}

/// # `/hierarchy/{roomId}`: a space of ours and its direct children, unpaginated. The
/// space must be one the asking server may preview (`404 M_NOT_FOUND` otherwise, as for
/// an unknown room). Children it may not preview are listed by ID only
/// (`inaccessible_children`); children we are not in are left out.
pub(crate) fn hierarchy(
    fed: &Federation,
    origin: &ServerName,
    root: &RoomId,
    suggested_only: bool,
) -> Result<Value, Error> {
    if !is_ours(fed, root)? || !server_may_preview(fed, origin, root)? {
        return Err(Error::not_found("Unknown room, or not one you may preview"));
    }
    let space_children = crate::directory::spaces::children(&fed.storage, root)?;
    let mut room = crate::directory::summary(&fed.storage, root)?;
    room["children_state"] = Value::Array(
        space_children
            .iter()
            .map(|child| child.stripped.clone())
            .collect(),
    );
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for child in space_children {
        if suggested_only && !child.suggested {
            continue;
        }
        if !is_ours(fed, &child.room_id)? {
            continue;
        }
        if server_may_preview(fed, origin, &child.room_id)? {
            children.push(crate::directory::summary(&fed.storage, &child.room_id)?);
        } else {
            inaccessible.push(child.room_id.to_string());
        }
    }
    Ok(json!({
        "room": room,
        "children": children,
        "inaccessible_children": inaccessible,
    }))
}
