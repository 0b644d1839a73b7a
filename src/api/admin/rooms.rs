//! Rooms (Synapse's rooms admin API): the list, a room's details, members and state, and
//! deleting a room (`DELETE /v2/rooms/{roomId}`, asynchronous with a `delete_id` and a
//! status, as in Synapse).
//!
//! Deleting a room here makes every local user leave it, removes its local aliases and
//! takes it off the public list; with `purge` (the default) every local user then forgets
//! it, so it is gone from their clients, and the content of every one of its events is
//! pruned in place (`Rooms::purge_all_content`: the room version's redaction, current state
//! included, notifications gone). The pruned skeleton stays: event IDs, graph, hashes and
//! signatures, so other servers that still hold the room can ask us about it. A purge
//! waits for every local member to be out unless `force_purge` is set. With `block`,
//! nobody of ours may join it again and no other server may join it through us.
//! `new_room_user_id` is refused with `400` rather than ignored.

use std::collections::VecDeque;
use std::sync::Mutex;

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ServerAdmin, get, page};
use crate::api::app::Services;
use crate::api::{MatrixJson, path};
use crate::directory::admin::RoomOverview;
use crate::error::{Error, ErrorKind};

/// The room endpoints.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .service(get("/_synapse/admin/v1/rooms", list))
        .service(get("/_synapse/admin/v1/rooms/{roomId}", details))
        .service(get("/_synapse/admin/v1/rooms/{roomId}/members", members))
        .service(get("/_synapse/admin/v1/rooms/{roomId}/state", state))
        .service(
            web::resource("/_synapse/admin/v2/rooms/{roomId}")
                .route(web::delete().to(delete))
                .default_service(web::to(|| async {
                    crate::api::method_not_allowed("DELETE")
                })),
        )
        .service(
            web::resource("/_synapse/admin/v1/rooms/{roomId}/block")
                .route(web::get().to(block_status))
                .route(web::put().to(block))
                .default_service(web::to(|| async {
                    crate::api::method_not_allowed("GET, PUT")
                })),
        )
        .service(get(
            "/_synapse/admin/v2/rooms/{roomId}/delete_status",
            status_by_room,
        ))
        .service(get(
            "/_synapse/admin/v2/rooms/delete_status/{deleteId}",
            status_by_id,
        ));
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    from: Option<usize>,
    limit: Option<usize>,
    order_by: Option<String>,
    dir: Option<String>,
    search_term: Option<String>,
    public_rooms: Option<bool>,
    empty_rooms: Option<bool>,
}

/// # GET /_synapse/admin/v1/rooms
pub(crate) async fn list(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, Error> {
    let mut rooms: Vec<RoomOverview> = app
        .directory
        .admin_rooms()?
        .into_iter()
        .filter(|room| matches(room, &query))
        .collect();
    sort(&mut rooms, query.order_by.as_deref(), query.dir.as_deref())?;
    let from = query.from.unwrap_or(0);
    let (rooms, total, next) = page(rooms, from, query.limit.unwrap_or(100));
    let mut answer = json!({
        "rooms": rooms.iter().map(RoomOverview::listed).collect::<Vec<_>>(),
        "offset": from,
        "total_rooms": total,
    });
    if let Some(next) = next {
        answer["next_batch"] = json!(next);
    }
    if from > 0 {
        answer["prev_batch"] = json!(from.saturating_sub(query.limit.unwrap_or(100)));
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// Synapse's `search_term`: in the name, the canonical alias's localpart, or the room ID.
fn matches(room: &RoomOverview, query: &ListQuery) -> bool {
    let term_found = query.search_term.as_deref().is_none_or(|term| {
        room.name.as_deref().is_some_and(|name| name.contains(term))
            || room
                .canonical_alias
                .as_deref()
                .and_then(|alias| alias.split(':').next())
                .is_some_and(|localpart| localpart.contains(term))
            || room.room_id.as_str().contains(term)
    });
    term_found
        && query
            .public_rooms
            .is_none_or(|public| public == room.public)
        && query
            .empty_rooms
            .is_none_or(|empty| empty == (room.joined_members == 0))
}

/// Orders by `order_by` (Synapse's names; counts largest first), `dir=b` reversing it;
/// ties keep room ID order.
fn sort(
    rooms: &mut [RoomOverview],
    order_by: Option<&str>,
    dir: Option<&str>,
) -> Result<(), Error> {
    use std::cmp::Reverse;
    match order_by.unwrap_or("name") {
        "name" | "alphabetical" => rooms.sort_by(|a, b| a.name.cmp(&b.name)),
        "canonical_alias" => rooms.sort_by(|a, b| a.canonical_alias.cmp(&b.canonical_alias)),
        "joined_members" | "size" => rooms.sort_by_key(|room| Reverse(room.joined_members)),
        "joined_local_members" => rooms.sort_by_key(|room| Reverse(room.joined_local_members)),
        "version" => rooms.sort_by(|a, b| b.version.cmp(&a.version)),
        "creator" => rooms.sort_by(|a, b| a.creator.cmp(&b.creator)),
        "encryption" => rooms.sort_by(|a, b| a.encryption.cmp(&b.encryption)),
        "federatable" => rooms.sort_by_key(|room| room.federatable),
        "public" => rooms.sort_by_key(|room| room.public),
        "join_rules" => rooms.sort_by(|a, b| a.join_rules.cmp(&b.join_rules)),
        "guest_access" => rooms.sort_by(|a, b| a.guest_access.cmp(&b.guest_access)),
        "history_visibility" => {
            rooms.sort_by(|a, b| a.history_visibility.cmp(&b.history_visibility))
        }
        "state_events" => rooms.sort_by_key(|room| Reverse(room.state_events)),
        other => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                format!("Unknown value for order_by: {other}"),
            ));
        }
    }
    match dir.unwrap_or("f") {
        "f" => Ok(()),
        "b" => {
            rooms.reverse();
            Ok(())
        }
        _ => Err(Error::new(
            ErrorKind::InvalidParam,
            "dir must be `f` or `b`",
        )),
    }
}

/// A room this server holds, or `404 M_NOT_FOUND`.
fn held_room(app: &Services, text: &str) -> Result<(OwnedRoomId, RoomOverview), Error> {
    let room_id: OwnedRoomId = path::id(text)?;
    let overview = app
        .directory
        .admin_room(&room_id)?
        .ok_or_else(|| Error::not_found("Room not found"))?;
    Ok((room_id, overview))
}

/// # GET /_synapse/admin/v1/rooms/{roomId}
pub(crate) async fn details(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    room: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (room_id, overview) = held_room(&app, &room)?;
    let mut devices = 0;
    for user in &overview.local_members {
        if let Ok(user) = UserId::parse(user.as_str()) {
            devices += app.users.devices(&user)?.len();
        }
    }
    let mut answer = overview.listed();
    answer["topic"] = json!(overview.topic);
    answer["avatar"] = json!(overview.avatar);
    answer["joined_local_devices"] = json!(devices);
    answer["forgotten"] = json!(app.directory.admin_room_forgotten(&room_id)?);
    answer["tombstoned"] = json!(overview.tombstoned);
    answer["replacement_room"] = json!(overview.replacement_room);
    Ok(HttpResponse::Ok().json(answer))
}

/// # GET /_synapse/admin/v1/rooms/{roomId}/members
pub(crate) async fn members(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    room: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (room_id, _) = held_room(&app, &room)?;
    let members = app.directory.admin_room_members(&room_id)?;
    Ok(HttpResponse::Ok().json(json!({ "total": members.len(), "members": members })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StateQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// # GET /_synapse/admin/v1/rooms/{roomId}/state
pub(crate) async fn state(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    room: web::Path<String>,
    query: web::Query<StateQuery>,
) -> Result<HttpResponse, Error> {
    let (room_id, _) = held_room(&app, &room)?;
    let state: Vec<Value> = app
        .rooms
        .state_for_client(&room_id)?
        .into_iter()
        .filter(|event| {
            query
                .kind
                .as_deref()
                .is_none_or(|kind| event["type"].as_str() == Some(kind))
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "state": state })))
}

/// The room deletions asked for since the server started, newest last: at most
/// [`KEPT_DELETIONS`], a finished one making way for a new one.
#[derive(Default)]
pub(crate) struct RoomDeletions {
    deletions: Mutex<VecDeque<Deletion>>,
}

/// How many deletions' statuses are kept.
const KEPT_DELETIONS: usize = 64;
/// How many deletions may run at once.
const RUNNING_DELETIONS: usize = 4;

#[derive(Debug, Clone)]
struct Deletion {
    delete_id: String,
    room_id: OwnedRoomId,
    status: &'static str,
    error: Option<String>,
    kicked_users: Vec<String>,
    failed_to_kick_users: Vec<String>,
    local_aliases: Vec<String>,
}

/// Synapse's statuses of a deletion: members being made to leave, then the purge, then
/// `complete` or `failed`.
const SHUTTING_DOWN: &str = "shutting_down";
const PURGING: &str = "purging";

impl Deletion {
    fn running(&self) -> bool {
        matches!(self.status, SHUTTING_DOWN | PURGING)
    }

    fn to_json(&self) -> Value {
        let mut answer = json!({
            "delete_id": self.delete_id,
            "room_id": self.room_id,
            "status": self.status,
            "shutdown_room": {
                "kicked_users": self.kicked_users,
                "failed_to_kick_users": self.failed_to_kick_users,
                "local_aliases": self.local_aliases,
                "new_room_id": null,
            },
        });
        if let Some(error) = &self.error {
            answer["error"] = json!(error);
        }
        answer
    }
}

impl RoomDeletions {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Deletion>> {
        self.deletions
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records a new deletion, or refuses when too many are running.
    fn start(&self, room_id: &OwnedRoomId) -> Result<String, Error> {
        let mut deletions = self.lock();
        let running = deletions.iter().filter(|d| d.running()).count();
        if running >= RUNNING_DELETIONS {
            return Err(Error::new(
                ErrorKind::Unknown,
                "Too many room deletions are running; try again later",
            ));
        }
        if deletions.len() >= KEPT_DELETIONS {
            match deletions.iter().position(|d| !d.running()) {
                Some(finished) => {
                    deletions.remove(finished);
                }
                None => {
                    return Err(Error::new(ErrorKind::Unknown, "Too many room deletions"));
                }
            }
        }
        let delete_id = crate::users::accounts::registration::random_token(16);
        deletions.push_back(Deletion {
            delete_id: delete_id.clone(),
            room_id: room_id.clone(),
            status: SHUTTING_DOWN,
            error: None,
            kicked_users: Vec::new(),
            failed_to_kick_users: Vec::new(),
            local_aliases: Vec::new(),
        });
        Ok(delete_id)
    }

    fn update(&self, delete_id: &str, change: impl FnOnce(&mut Deletion)) {
        if let Some(deletion) = self.lock().iter_mut().find(|d| d.delete_id == delete_id) {
            change(deletion);
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteRequest {
    new_room_user_id: Option<String>,
    #[serde(default)]
    block: bool,
    purge: Option<bool>,
    #[serde(default)]
    force_purge: bool,
    #[allow(dead_code)]
    room_name: Option<String>,
    #[allow(dead_code)]
    message: Option<String>,
}

/// # DELETE /_synapse/admin/v2/rooms/{roomId}
///
/// Starts the deletion and answers its `delete_id` at once; the status endpoints follow it.
pub(crate) async fn delete(
    app: web::Data<Services>,
    admin: ServerAdmin,
    room: web::Path<String>,
    MatrixJson(body): MatrixJson<DeleteRequest>,
) -> Result<HttpResponse, Error> {
    if body.new_room_user_id.is_some() {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "Moving members to a new room (`new_room_user_id`) is not supported by Hearth",
        ));
    }
    let (room_id, overview) = held_room(&app, &room)?;
    let delete_id = app.room_deletions.start(&room_id)?;
    // Blocked first, so nobody joins again while the members are made to leave.
    if body.block {
        app.rooms
            .set_blocked(&room_id, Some(&admin.0.user_id))
            .await?;
    }
    tracing::info!(admin = %admin.0.user_id, %room_id, %delete_id, "admin API: deleting a room");
    let purge = body.purge.unwrap_or(true);
    let task_app = app;
    let task_id = delete_id.clone();
    actix_web::rt::spawn(async move {
        let purge = purge.then_some(Purge {
            force: body.force_purge,
        });
        let outcome = shut_down(&task_app, &task_id, &room_id, &overview, purge).await;
        task_app
            .room_deletions
            .update(&task_id, |deletion| match outcome {
                Ok(()) => deletion.status = "complete",
                Err(err) => {
                    tracing::warn!(%room_id, "admin API: room deletion failed: {err}");
                    deletion.status = "failed";
                    deletion.error = Some(err.message.into_owned());
                }
            });
    });
    Ok(HttpResponse::Ok().json(json!({ "delete_id": delete_id })))
}

/// A purge asked for with a deletion.
#[derive(Debug, Clone, Copy)]
struct Purge {
    /// Whether it goes ahead even with local users still joined.
    force: bool,
}

/// The deletion's work: every local member leaves (their status recorded as it goes), the
/// aliases and listing go, and with `purge` every local user forgets the room and its
/// events' content is pruned.
async fn shut_down(
    app: &Services,
    delete_id: &str,
    room_id: &OwnedRoomId,
    overview: &RoomOverview,
    purge: Option<Purge>,
) -> Result<(), Error> {
    let no_profile = serde_json::Map::new();
    for user in &overview.local_members {
        let Ok(user_id) = UserId::parse(user.as_str()) else {
            continue;
        };
        let left = app
            .rooms
            .change_own_membership(&user_id, room_id, "leave", None, &no_profile)
            .await;
        app.room_deletions
            .update(delete_id, |deletion| match &left {
                Ok(()) => deletion.kicked_users.push(user.clone()),
                Err(_) => deletion.failed_to_kick_users.push(user.clone()),
            });
        if left.is_ok() {
            app.ephemeral.set_typing(room_id, &user_id, None);
        }
    }
    let aliases = app.directory.withdraw_room(room_id).await?;
    app.room_deletions
        .update(delete_id, |deletion| deletion.local_aliases = aliases);
    let Some(purge) = purge else {
        return Ok(());
    };
    app.room_deletions
        .update(delete_id, |deletion| deletion.status = PURGING);
    for user in &overview.local_members {
        if let Ok(user_id) = UserId::parse(user.as_str()) {
            // Refused only if the user joined again meanwhile: they keep the room.
            let _ = app.rooms.forget(&user_id, room_id).await;
        }
    }
    let still_joined = app
        .directory
        .admin_room(room_id)?
        .map_or(0, |room| room.joined_local_members);
    if still_joined > 0 && !purge.force {
        return Err(Error::new(
            ErrorKind::Unknown,
            format!(
                "{still_joined} local user(s) are still in the room; its events were not \
                 purged (force_purge purges anyway)"
            ),
        ));
    }
    let pruned = app.rooms.purge_all_content(room_id).await?;
    tracing::info!(%room_id, pruned, "admin API: purged the content of a deleted room");
    Ok(())
}

/// # GET /_synapse/admin/v2/rooms/{roomId}/delete_status
pub(crate) async fn status_by_room(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    room: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room)?;
    let results: Vec<Value> = app
        .room_deletions
        .lock()
        .iter()
        .filter(|deletion| deletion.room_id == room_id)
        .map(Deletion::to_json)
        .collect();
    if results.is_empty() {
        return Err(Error::not_found("No delete task for room"));
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

/// # GET /_synapse/admin/v2/rooms/delete_status/{deleteId}
pub(crate) async fn status_by_id(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    delete_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let deletion = app
        .room_deletions
        .lock()
        .iter()
        .find(|deletion| deletion.delete_id == *delete_id)
        .map(Deletion::to_json)
        .ok_or_else(|| Error::not_found("delete id not found"))?;
    Ok(HttpResponse::Ok().json(deletion))
}

/// # GET /_synapse/admin/v1/rooms/{roomId}/block
pub(crate) async fn block_status(
    app: web::Data<Services>,
    _admin: ServerAdmin,
    room: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room)?;
    Ok(
        HttpResponse::Ok().json(match app.rooms.blocked_by(&room_id)? {
            Some(admin) => json!({ "block": true, "user_id": admin }),
            None => json!({ "block": false }),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct BlockRequest {
    block: bool,
}

/// # PUT /_synapse/admin/v1/rooms/{roomId}/block
///
/// Blocks a room (known here or not) or lifts the block; members already in it stay
/// (deleting the room makes them leave).
pub(crate) async fn block(
    app: web::Data<Services>,
    admin: ServerAdmin,
    room: web::Path<String>,
    MatrixJson(body): MatrixJson<BlockRequest>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room)?;
    let by = body.block.then_some(admin.0.user_id.as_ref());
    app.rooms.set_blocked(&room_id, by).await?;
    tracing::info!(admin = %admin.0.user_id, %room_id, block = body.block, "admin API: room block");
    Ok(HttpResponse::Ok().json(json!({ "block": body.block })))
}
