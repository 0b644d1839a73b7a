//! What our users ask of other servers through us (spec: server-server API, "Querying for
//! information", "Public Room Directory"): remote users' profiles, remote room aliases, and
//! other servers' public room directories.

use ruma::{OwnedRoomId, RoomAliasId, UserId};
use serde_json::{Map, Value, json};

use super::transport::encode;
use crate::error::{Error, ErrorKind};
use crate::federation::Federation;

/// The most a query answer may weigh.
const QUERY_LIMIT: usize = 1024 * 1024;

/// A remote user's profile (or one field of it), from their server.
pub(crate) async fn remote_profile(
    fed: &Federation,
    user_id: &UserId,
    field: Option<&str>,
) -> Result<Map<String, Value>, Error> {
    let mut path = format!(
        "/_matrix/federation/v1/query/profile?user_id={}",
        encode(user_id.as_str())
    );
    if let Some(field) = field {
        path.push_str(&format!("&field={}", encode(field)));
    }
    let answer = remote_query(fed, user_id.server_name().as_str(), &path).await?;
    // Only the fields of a profile, as strings: a server cannot inject anything else.
    Ok(answer
        .as_object()
        .map(|profile| {
            profile
                .iter()
                .filter(|(_, value)| value.is_string())
                .take(32)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default())
}

/// A remote alias: the room it names and servers to join it through.
pub(crate) async fn remote_alias(
    fed: &Federation,
    alias: &RoomAliasId,
) -> Result<(OwnedRoomId, Vec<String>), Error> {
    let path = format!(
        "/_matrix/federation/v1/query/directory?room_alias={}",
        encode(alias.as_str())
    );
    let answer = remote_query(fed, alias.server_name().as_str(), &path).await?;
    let room_id = answer["room_id"]
        .as_str()
        .and_then(|id| OwnedRoomId::try_from(id).ok())
        .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
    let servers = answer["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .take(16)
        .map(str::to_owned)
        .collect();
    Ok((room_id, servers))
}

/// A page of another server's public room directory.
pub(crate) async fn remote_public_rooms(
    fed: &Federation,
    server: &str,
    limit: Option<usize>,
    since: Option<&str>,
    search: Option<&str>,
) -> Result<Value, Error> {
    let mut body = json!({});
    if let Some(limit) = limit {
        body["limit"] = json!(limit.min(100));
    }
    if let Some(since) = since {
        body["since"] = json!(since);
    }
    if let Some(search) = search {
        body["filter"] = json!({ "generic_search_term": search });
    }
    fed.transport
        .request_json(
            server,
            "POST",
            "/_matrix/federation/v1/publicRooms",
            Some(&body),
        )
        .await
}

async fn remote_query(fed: &Federation, server: &str, path: &str) -> Result<Value, Error> {
    if !fed.config.federation.enabled {
        return Err(Error::not_found("Federation is off on this server"));
    }
    let response = fed
        .transport
        .signed_request(server, "GET", path, None, QUERY_LIMIT)
        .await
        .map_err(|err| super::transport::unreachable(server, &err))?;
    let value: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    match response.status {
        200 => Ok(value),
        404 => Err(Error::not_found(
            value["error"].as_str().unwrap_or("Not found").to_owned(),
        )),
        status => Err(Error::new(
            ErrorKind::RemoteUnavailable,
            format!("{server} answered {status}"),
        )),
    }
}
