//! Relations and threads (spec: client-server API, "Relationships", "Threading"): the
//! events that relate to an event (replies in a thread, reactions, edits, references), and a
//! room's threads, newest activity first.

use actix_web::{HttpResponse, web};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::json;

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::rooms::timeline::history_start;
use crate::rooms::{self, format::stored_event_for_client};
use crate::storage::pair_prefix;
use crate::sync::parse_token;

/// How deep `recurse=true` follows relations of relations (the spec asks for at least 3).
const MAX_DEPTH: usize = 3;
const MAX_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    dir: Option<String>,
    recurse: Option<bool>,
}

fn room(text: &str) -> Result<OwnedRoomId, Error> {
    OwnedRoomId::try_from(text).map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid room ID"))
}

/// The room's event `event_id`, if the user may see it.
fn visible_event(
    app: &Services,
    auth: &Authenticated,
    room_id: &OwnedRoomId,
    event_id: &str,
) -> Result<u64, Error> {
    let not_found = || Error::not_found("No such event in this room");
    let record = match rooms::membership(&app.storage, &auth.user_id, room_id)? {
        Some(record) if record.membership == "join" => record,
        _ => return Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
    };
    let meta = app
        .storage
        .eventid_meta
        .get(&event_id.to_owned())?
        .ok_or_else(not_found)?;
    if meta.room_id != room_id.as_str()
        || meta.stream < history_start(&app.storage, room_id, &record)?
    {
        return Err(not_found());
    }
    Ok(meta.stream)
}

/// # GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
pub async fn relations(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<Vec<String>>,
    query: web::Query<RelationsQuery>,
) -> Result<HttpResponse, Error> {
    let parts = path.into_inner();
    let (room_id, event_id) = (room(&parts[0])?, parts[1].clone());
    let rel_type = parts.get(2).cloned();
    let event_type = parts.get(3).cloned();
    visible_event(&app, &auth, &room_id, &event_id)?;
    let backwards = match query.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(Error::new(ErrorKind::InvalidParam, "dir must be b or f")),
    };
    let position = |token: &Option<String>| -> Result<Option<u64>, Error> {
        token
            .as_deref()
            .map(|token| {
                parse_token(token)
                    .map(|(p, _)| p)
                    .ok_or_else(|| Error::new(ErrorKind::InvalidParam, "Invalid token"))
            })
            .transpose()
    };
    let (from, to) = (position(&query.from)?, position(&query.to)?);
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let depth = if query.recurse.unwrap_or(false) {
        MAX_DEPTH
    } else {
        1
    };

    // Children (and, recursing, their children), each with its position.
    let mut found: Vec<(u64, String)> = Vec::new();
    let mut parents = vec![event_id.clone()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for parent in &parents {
            for entry in app.storage.parent_child.scan_prefix(&pair_prefix(parent)) {
                let ((_, position), child) = entry?;
                next.push(child.clone());
                found.push((position, child));
            }
        }
        if next.is_empty() {
            break;
        }
        parents = next;
    }
    found.sort_by_key(|(position, _)| *position);
    if backwards {
        found.reverse();
    }
    let mut chunk = Vec::new();
    let mut next_batch = None;
    for (position, child) in found {
        let in_range = if backwards {
            from.is_none_or(|from| position <= from) && to.is_none_or(|to| position > to)
        } else {
            from.is_none_or(|from| position >= from) && to.is_none_or(|to| position < to)
        };
        if !in_range {
            continue;
        }
        let Some(event) = stored_event_for_client(
            &app.storage,
            &child,
            Some(room_id.as_str()),
            Some(&auth.device_id),
        )?
        else {
            continue;
        };
        let relation = &event["content"]["m.relates_to"];
        if rel_type
            .as_deref()
            .is_some_and(|wanted| relation["rel_type"] != wanted)
            || event_type
                .as_deref()
                .is_some_and(|wanted| event["type"] != wanted)
        {
            continue;
        }
        if chunk.len() == limit {
            next_batch = Some(position.to_string());
            break;
        }
        chunk.push(event);
    }
    let mut response = json!({ "chunk": chunk });
    if let Some(next_batch) = next_batch {
        response["next_batch"] = json!(next_batch);
    }
    if depth > 1 {
        response["recursion_depth"] = json!(depth);
    }
    Ok(HttpResponse::Ok().json(response))
}

#[derive(Debug, Deserialize)]
pub struct ThreadsQuery {
    include: Option<String>,
    from: Option<String>,
    limit: Option<usize>,
}

/// # GET /_matrix/client/v1/rooms/{roomId}/threads
pub async fn threads(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    query: web::Query<ThreadsQuery>,
) -> Result<HttpResponse, Error> {
    let room_id = room(&room_id)?;
    let record = match rooms::membership(&app.storage, &auth.user_id, &room_id)? {
        Some(record) if record.membership == "join" => record,
        _ => return Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
    };
    let participated_only = match query.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "include must be all or participated",
            ));
        }
    };
    let start = history_start(&app.storage, &room_id, &record)?;
    let skip: usize = match query.from.as_deref() {
        Some(token) => token
            .parse()
            .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid from token"))?,
        None => 0,
    };
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_PAGE);
    let mut roots: Vec<(u64, String)> = Vec::new();
    for entry in app
        .storage
        .roomthread_latest
        .scan_prefix(&pair_prefix(room_id.as_str()))
    {
        let ((_, root), latest) = entry?;
        roots.push((latest, root));
    }
    roots.sort_by_key(|(latest, _)| std::cmp::Reverse(*latest));
    let mut chunk = Vec::new();
    let mut seen = 0;
    let mut next_batch = None;
    for (_, root) in roots {
        let Some(meta) = app.storage.eventid_meta.get(&root)? else {
            continue;
        };
        if meta.stream < start {
            continue;
        }
        let Some(mut event) =
            stored_event_for_client(&app.storage, &root, Some(room_id.as_str()), None)?
        else {
            continue;
        };
        let children = rooms::aggregations::children(&app.storage, &event, auth.user_id.as_str())?;
        let summary = rooms::aggregations::thread_summary(&event, &children, auth.user_id.as_str());
        let participated = summary
            .as_ref()
            .is_some_and(|summary| summary["current_user_participated"] == true);
        if participated_only && !participated {
            continue;
        }
        seen += 1;
        if seen <= skip {
            continue;
        }
        if chunk.len() == limit {
            next_batch = Some((skip + limit).to_string());
            break;
        }
        rooms::aggregations::bundle(&app.storage, auth.user_id.as_str(), &mut event)?;
        chunk.push(event);
    }
    let mut response = json!({ "chunk": chunk });
    if let Some(next_batch) = next_batch {
        response["next_batch"] = json!(next_batch);
    }
    Ok(HttpResponse::Ok().json(response))
}
