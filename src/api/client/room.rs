//! Rooms: creating them, sending events, reading state and events, membership
//! (spec: client-server API, "Rooms", "Events", "Room membership").

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::matrix::events::builder::NewEvent;
use crate::rooms::create::CreateRoomRequest;
use crate::rooms::format::client_event;
use crate::rooms::{self, load_json};

/// # POST /_matrix/client/v3/createRoom
pub async fn create_room(
    app: web::Data<Services>,
    auth: Authenticated,
    MatrixJson(mut body): MatrixJson<CreateRoomRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias = crate::directory::local_alias(
                &app.config.server.server_name,
                &format!("#{name}:{}", app.config.server.server_name),
            )?;
            if crate::directory::resolve(&app.storage, &alias)?.is_some() {
                return Err(Error::new(
                    ErrorKind::RoomInUse,
                    format!("The alias {alias} is taken"),
                ));
            }
            Some(alias)
        }
        None => None,
    };
    body.canonical_alias = alias.as_ref().map(ToString::to_string);
    let publish = body.visibility.as_deref() == Some("public");
    let room_id = app
        .rooms
        .create_room(
            &app.storage,
            &app.signing_key,
            &auth.user_id,
            body,
            crate::matrix::events::DEFAULT_ROOM_VERSION,
        )
        .await?;
    if let Some(alias) = &alias
        && !crate::directory::create_alias(&app.storage, alias, &room_id, &auth.user_id)?
    {
        tracing::warn!(%alias, %room_id, "the alias was taken while the room was made");
    }
    if publish {
        crate::directory::set_published(&app.storage, &room_id, true)?;
    }
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({ "room_id": room_id })))
}

/// # GET /_matrix/client/v3/joined_rooms
pub async fn joined_rooms(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let joined: Vec<OwnedRoomId> = rooms::memberships(&app.storage, &auth.user_id)?
        .into_iter()
        .filter(|(_, record)| record.membership == "join")
        .map(|(room_id, _)| room_id)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "joined_rooms": joined })))
}

fn parse_room_id(text: &str) -> Result<OwnedRoomId, Error> {
    OwnedRoomId::try_from(text).map_err(|_| {
        Error::new(
            ErrorKind::InvalidParam,
            format!("`{text}` is not a room ID"),
        )
    })
}

/// The sender must be joined to read or write a room. Rooms the user was never in look the
/// same as rooms that do not exist: `403`, as the spec asks, so IDs cannot be probed.
fn require_joined(app: &Services, user_id: &UserId, room_id: &RoomId) -> Result<(), Error> {
    match rooms::membership(&app.storage, user_id, room_id)? {
        Some(record) if record.membership == "join" => Ok(()),
        _ => Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
    }
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
pub async fn send_message(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, txn_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
    // The same request path from the same device is the same message, sent once.
    let txn_key = (
        auth.user_id.to_string(),
        auth.device_id.clone(),
        format!("{room_id}\u{0}{kind}\u{0}{txn_id}"),
    );
    if let Some(event_id) = app.storage.txn_eventid.get(&txn_key)? {
        return Ok(HttpResponse::Ok().json(json!({ "event_id": event_id })));
    }
    require_joined(&app, &auth.user_id, &room_id)?;
    let mut new = NewEvent::message(&kind, Value::Object(content.clone()));
    if kind == "m.room.redaction" {
        let redacts = content
            .get("redacts")
            .and_then(Value::as_str)
            .and_then(|id| ruma::OwnedEventId::try_from(id).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::BadJson,
                    "A redaction needs `redacts`: the event to redact",
                )
            })?;
        if !is_own_event(&app, &auth.user_id, &redacts)? {
            auth.ensure_not_suspended()?;
        }
        check_may_redact(&app, &auth.user_id, &room_id, &redacts)?;
        new.redacts = Some(redacts);
    } else {
        auth.ensure_not_suspended()?;
    }
    let event_id = app
        .rooms
        .append_with_txn(
            &app.storage,
            &app.signing_key,
            &room_id,
            &auth.user_id,
            new,
            (txn_key, txn_id),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "event_id": event_id })))
}

/// Whether `event_id` was sent by `user_id`: a suspended user may still redact their own
/// events, not others'.
fn is_own_event(app: &Services, user_id: &UserId, event_id: &ruma::EventId) -> Result<bool, Error> {
    Ok(
        load_json(&app.storage, event_id.as_str())?.is_some_and(|json| {
            json.get("sender").and_then(|sender| sender.as_str()) == Some(user_id.as_str())
        }),
    )
}

/// The room's auth rules let any member send a redaction from room version 3 on, trusting
/// each server to check this: one may redact one's own events, or others' with the power
/// level `redact`.
fn check_may_redact(
    app: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    target: &ruma::EventId,
) -> Result<(), Error> {
    if is_own_event(app, user_id, target)? {
        return Ok(());
    }
    let needed = rooms::power_level_for(&app.storage, room_id, |content| {
        content.get("redact").and_then(Value::as_i64).unwrap_or(50)
    })?;
    if rooms::user_power_level(&app.storage, room_id, user_id)? >= needed {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Forbidden,
            "You may only redact your own events here",
        ))
    }
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
pub async fn put_state(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, state_key) = path.into_inner();
    put_state_event(&app, &auth, &room_id, &kind, &state_key, content).await
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}
pub async fn put_state_empty_key(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind) = path.into_inner();
    put_state_event(&app, &auth, &room_id, &kind, "", content).await
}

async fn put_state_event(
    app: &Services,
    auth: &Authenticated,
    room_id: &str,
    kind: &str,
    state_key: &str,
    content: Map<String, Value>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let room_id = parse_room_id(room_id)?;
    require_joined(app, &auth.user_id, &room_id)?;
    if kind == "m.room.member" {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "Change memberships with /invite, /join, /leave, /kick and /ban",
        ));
    }
    if kind == "m.room.redaction" {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "Redactions are not state: use /redact",
        ));
    }
    let new = NewEvent::state(kind, state_key, Value::Object(content));
    let pdu = app
        .rooms
        .append(&app.storage, &app.signing_key, &room_id, &auth.user_id, new)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "event_id": pdu.event_id })))
}

#[derive(Debug, Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

/// # GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
pub async fn get_state(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    query: web::Query<FormatQuery>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, state_key) = path.into_inner();
    get_state_event(
        &app,
        &auth,
        &room_id,
        &kind,
        &state_key,
        query.format.as_deref(),
    )
}

/// # GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}
pub async fn get_state_empty_key(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    query: web::Query<FormatQuery>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind) = path.into_inner();
    get_state_event(&app, &auth, &room_id, &kind, "", query.format.as_deref())
}

fn get_state_event(
    app: &Services,
    auth: &Authenticated,
    room_id: &str,
    kind: &str,
    state_key: &str,
    format: Option<&str>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(room_id)?;
    require_joined(app, &auth.user_id, &room_id)?;
    let event_id = rooms::state_event(&app.storage, &room_id, kind, state_key)?
        .ok_or_else(|| Error::not_found("No such state event"))?;
    let event = crate::rooms::format::stored_event_for_client(
        &app.storage,
        &event_id,
        Some(room_id.as_str()),
        None,
    )?
    .ok_or_else(|| Error::internal("state event missing"))?;
    match format {
        Some("event") => Ok(HttpResponse::Ok().json(event)),
        None | Some("content") => Ok(HttpResponse::Ok().json(&event["content"])),
        Some(other) => Err(Error::new(
            ErrorKind::InvalidParam,
            format!("Unknown format {other}"),
        )),
    }
}

/// # GET /_matrix/client/v3/rooms/{roomId}/state
pub async fn get_all_state(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    let mut events = Vec::new();
    for (_, event_id) in rooms::current_state(&app.storage, &room_id)? {
        if let Some(event) = crate::rooms::format::stored_event_for_client(
            &app.storage,
            &event_id,
            Some(room_id.as_str()),
            None,
        )? {
            events.push(event);
        }
    }
    Ok(HttpResponse::Ok().json(events))
}

/// # GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
pub async fn get_event(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Error> {
    let (room_id, event_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    let not_found = || Error::not_found("No such event in this room");
    let meta = app
        .storage
        .eventid_meta
        .get(&event_id)?
        .ok_or_else(not_found)?;
    if meta.room_id != room_id.as_str() {
        return Err(not_found());
    }
    let view = crate::rooms::visibility::Visibility::for_user(
        &app.storage,
        &room_id,
        auth.user_id.as_str(),
    )?;
    if !view.allows(meta.stream) {
        return Err(not_found());
    }
    let reader = crate::rooms::timeline::Reader {
        user_id: auth.user_id.as_str(),
        device_id: &auth.device_id,
    };
    let event = crate::rooms::timeline::timeline_form(
        &app.storage,
        &event_id,
        Some(room_id.as_str()),
        Some(reader),
    )?
    .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(event))
}

/// # GET /_matrix/client/v3/rooms/{roomId}/joined_members
pub async fn joined_members(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    let mut joined = Map::new();
    for ((kind, user), event_id) in rooms::current_state(&app.storage, &room_id)? {
        if kind != "m.room.member" {
            continue;
        }
        let Some(json) = load_json(&app.storage, &event_id)? else {
            continue;
        };
        let content = client_event(&json, &event_id, None)["content"].clone();
        if content["membership"] == "join" {
            let mut member = Map::new();
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = content.get(field).filter(|value| value.is_string()) {
                    member.insert(field.to_owned(), value.clone());
                }
            }
            joined.insert(user, Value::Object(member));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "joined": joined })))
}

#[derive(Debug, Deserialize)]
pub struct MembershipRequest {
    user_id: Option<OwnedUserId>,
    reason: Option<String>,
}

/// `invite`, `kick`, `ban`, `unban`: a membership event about another user, sent by a member.
async fn change_other_membership(
    app: &Services,
    auth: &Authenticated,
    room_id: &str,
    body: MembershipRequest,
    action: Action,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let room_id = parse_room_id(room_id)?;
    let target = body
        .user_id
        .ok_or_else(|| Error::new(ErrorKind::MissingParam, "Missing user_id"))?;
    require_joined(app, &auth.user_id, &room_id)?;
    if action == Action::Invite && target.server_name() != auth.user_id.server_name() {
        if !app.config.federation.enabled {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "Federation is off on this server: only its own users can be invited",
            ));
        }
        let mut content = json!({ "membership": "invite" });
        if let Some(reason) = body.reason {
            content["reason"] = json!(reason);
        }
        crate::federation::invite::invite_remote(
            &app.federation,
            &room_id,
            &auth.user_id,
            &target,
            content,
        )
        .await?;
        return Ok(HttpResponse::Ok().json(json!({})));
    }
    // Each action has its own starting points: a kick acts on members (and invites and
    // knocks), an unban only on a ban, an invite only on an account that exists.
    let current =
        rooms::membership(&app.storage, &target, &room_id)?.map(|record| record.membership);
    let current = current.as_deref().unwrap_or("leave");
    let allowed = match action {
        Action::Invite => {
            let exists = crate::users::accounts::get(&app.storage, &target)
                .map_err(|err| Error::internal(err.to_string()))?
                .is_some_and(|account| !account.deactivated);
            if !exists {
                return Err(Error::not_found(format!("There is no user {target}")));
            }
            true
        }
        Action::Kick => matches!(current, "join" | "invite" | "knock"),
        Action::Ban => true,
        Action::Unban => current == "ban",
    };
    if !allowed {
        return Err(Error::new(
            ErrorKind::Forbidden,
            format!("{target} is not in a state this action applies to ({current})"),
        ));
    }
    let mut content = json!({ "membership": action.membership() });
    if let Some(reason) = body.reason {
        content["reason"] = json!(reason);
    }
    let new = NewEvent::state("m.room.member", target.as_str(), content);
    app.rooms
        .append(&app.storage, &app.signing_key, &room_id, &auth.user_id, new)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// A membership change about another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Invite,
    Kick,
    Ban,
    Unban,
}

impl Action {
    fn membership(self) -> &'static str {
        match self {
            Action::Invite => "invite",
            Action::Ban => "ban",
            Action::Kick | Action::Unban => "leave",
        }
    }
}

/// # POST /_matrix/client/v3/rooms/{roomId}/invite
pub async fn invite(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<MembershipRequest>,
) -> Result<HttpResponse, Error> {
    change_other_membership(&app, &auth, &room_id, body, Action::Invite).await
}

/// # POST /_matrix/client/v3/rooms/{roomId}/kick
pub async fn kick(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<MembershipRequest>,
) -> Result<HttpResponse, Error> {
    change_other_membership(&app, &auth, &room_id, body, Action::Kick).await
}

/// # POST /_matrix/client/v3/rooms/{roomId}/ban
pub async fn ban(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<MembershipRequest>,
) -> Result<HttpResponse, Error> {
    change_other_membership(&app, &auth, &room_id, body, Action::Ban).await
}

/// # POST /_matrix/client/v3/rooms/{roomId}/unban
pub async fn unban(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<MembershipRequest>,
) -> Result<HttpResponse, Error> {
    change_other_membership(&app, &auth, &room_id, body, Action::Unban).await
}

#[derive(Debug, Deserialize)]
pub struct OwnMembershipRequest {
    reason: Option<String>,
}

/// Joining or leaving: a membership event about oneself. Only rooms this server knows: a
/// room elsewhere needs federation.
async fn change_own_membership(
    app: &Services,
    auth: &Authenticated,
    room_id: &RoomId,
    membership: &str,
    reason: Option<String>,
) -> Result<(), Error> {
    if app.storage.roomid_room.get(&room_id.to_string())?.is_none() {
        return Err(Error::not_found(
            "This server is not in that room; joining rooms on other servers needs federation, which is not supported yet",
        ));
    }
    // Joining a room one is in already changes nothing (and sends nothing).
    let current = rooms::membership(&app.storage, &auth.user_id, room_id)?;
    if membership == "join" && current.is_some_and(|record| record.membership == "join") {
        return Ok(());
    }
    let profile = crate::users::profile::get(&app.storage, &auth.user_id)?.unwrap_or_default();
    let mut content = if membership == "join" {
        crate::users::profile::member_content(membership, &profile)
    } else {
        json!({ "membership": membership })
    };
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    // A restricted room lets our user in through a room they are in: one of our users in
    // the room vouches for the join (the auth rules ask for it, and our signature).
    if membership == "join"
        && let rooms::restricted::JoinAuthorisation::Via(authoriser) =
            rooms::restricted::authorise_join(
                &app.storage,
                room_id,
                &auth.user_id,
                auth.user_id.server_name(),
            )?
    {
        content["join_authorised_via_users_server"] = json!(authoriser);
    }
    let new = NewEvent::state("m.room.member", auth.user_id.as_str(), content);
    app.rooms
        .append(&app.storage, &app.signing_key, room_id, &auth.user_id, new)
        .await?;
    if membership != "join" {
        app.ephemeral.set_typing(room_id, &auth.user_id, None);
    }
    Ok(())
}

/// # POST /_matrix/client/v3/rooms/{roomId}/join
pub async fn join(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<OwnMembershipRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let room_id = parse_room_id(&room_id)?;
    join_here_or_remote(&app, &auth, &room_id, &[], body.reason).await?;
    Ok(HttpResponse::Ok().json(json!({ "room_id": room_id })))
}

/// Joins a room we hold locally, or (federation on) one held by other servers, asked in
/// turn: `via` first, then the room ID's own server.
async fn join_here_or_remote(
    app: &Services,
    auth: &Authenticated,
    room_id: &ruma::OwnedRoomId,
    via: &[String],
    reason: Option<String>,
) -> Result<(), Error> {
    if app.config.federation.enabled
        && crate::federation::join::needs_remote_join(&app.federation, room_id)?
    {
        let servers =
            crate::federation::join::servers_for(&app.federation, &auth.user_id, room_id, via);
        crate::federation::join::join_remote(&app.federation, &auth.user_id, room_id, &servers)
            .await?;
        return Ok(());
    }
    match change_own_membership(app, auth, room_id, "join", reason).await {
        // A restricted room none of our users in may vouch for: another resident server may.
        Err(err) if err.kind == ErrorKind::UnableToGrantJoin && app.config.federation.enabled => {
            crate::federation::restricted::join_through_resident(
                &app.federation,
                &auth.user_id,
                room_id,
                via,
            )
            .await?;
            Ok(())
        }
        other => other,
    }
}

/// The servers a client names to join or knock through: `via`, and the older
/// `server_name`, each repeated as needed.
fn via_servers(request: &actix_web::HttpRequest) -> Vec<String> {
    request
        .query_string()
        .split('&')
        .filter_map(|pair| {
            pair.strip_prefix("via=")
                .or_else(|| pair.strip_prefix("server_name="))
        })
        .map(|server| server.replace("%3A", ":").replace("%3a", ":"))
        .collect()
}

/// # POST /_matrix/client/v3/join/{roomIdOrAlias}
pub async fn join_by_id_or_alias(
    app: web::Data<Services>,
    request: actix_web::HttpRequest,
    auth: Authenticated,
    room: web::Path<String>,
    MatrixJson(body): MatrixJson<OwnMembershipRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    // `via` (and the older `server_name`) name servers to join through.
    let mut via = via_servers(&request);
    // An alias of another server is asked of that server, which also names servers to
    // join through.
    let remote_alias = ruma::OwnedRoomAliasId::try_from(room.as_str())
        .ok()
        .filter(|alias| alias.server_name() != app.config.server.server_name);
    let room_id = match remote_alias {
        Some(alias) if app.config.federation.enabled => {
            let (room_id, servers) =
                crate::federation::queries::remote_alias(&app.federation, &alias).await?;
            via.extend(servers);
            room_id
        }
        _ => crate::directory::room_id_or_alias(&app.storage, &room)?,
    };
    join_here_or_remote(&app, &auth, &room_id, &via, body.reason).await?;
    Ok(HttpResponse::Ok().json(json!({ "room_id": room_id })))
}

/// # POST /_matrix/client/v3/rooms/{roomId}/leave
pub async fn leave(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<OwnMembershipRequest>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    // Declining an invite to a room held elsewhere (or one we hold but have left, whose
    // state is stale) goes through the inviter's server.
    if crate::federation::join::needs_remote_join(&app.federation, &room_id)?
        && rooms::membership(&app.storage, &auth.user_id, &room_id)?
            .is_some_and(|record| record.membership == "invite")
    {
        let servers =
            crate::federation::join::servers_for(&app.federation, &auth.user_id, &room_id, &[]);
        crate::federation::join::leave_remote(&app.federation, &auth.user_id, &room_id, &servers)
            .await?;
        return Ok(HttpResponse::Ok().json(json!({})));
    }
    match rooms::membership(&app.storage, &auth.user_id, &room_id)? {
        Some(record)
            if record.membership == "join"
                || record.membership == "invite"
                || record.membership == "knock" =>
        {
            change_own_membership(&app, &auth, &room_id, "leave", body.reason).await?;
        }
        // Leaving a room one is not in is a success with nothing to do.
        Some(_) => {}
        None => return Err(Error::new(ErrorKind::Forbidden, "You are not in this room")),
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct TypingRequest {
    typing: bool,
    timeout: Option<u64>,
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
pub async fn typing(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(body): MatrixJson<TypingRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, user_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
    if user_id != auth.user_id.as_str() {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You can only say that you are typing",
        ));
    }
    require_joined(&app, &auth.user_id, &room_id)?;
    let timeout = body
        .typing
        .then(|| std::time::Duration::from_millis(body.timeout.unwrap_or(30_000)));
    app.ephemeral.set_typing(&room_id, &auth.user_id, timeout);
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Default, Deserialize)]
pub struct ReceiptRequest {
    thread_id: Option<String>,
}

/// The event must be one of the room's, for a receipt or read marker to point at it.
fn require_room_event(app: &Services, room_id: &RoomId, event_id: &str) -> Result<(), Error> {
    match app.storage.eventid_meta.get(&event_id.to_owned())? {
        Some(meta) if meta.room_id == room_id.as_str() => Ok(()),
        _ => Err(Error::not_found("No such event in this room")),
    }
}

/// # POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
pub async fn receipt(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<ReceiptRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, kind, event_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    require_room_event(&app, &room_id, &event_id)?;
    // A threaded receipt's event must be in that thread (`main`: in no thread).
    if let Some(thread) = &body.thread_id
        && kind != "m.fully_read"
        && thread.len() <= 255
    {
        let event_thread = crate::rooms::load_json(&app.storage, &event_id)?
            .map(|json| crate::rooms::notifications::thread_of(&app.storage, &room_id, &json))
            .transpose()?
            .flatten();
        let belongs = match event_thread {
            Some(root) => &root == thread,
            // The root of a thread is in the main timeline; so are unthreaded events.
            None => thread == crate::rooms::notifications::MAIN || thread == &event_id,
        };
        if !belongs {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "The event is not in the thread thread_id names",
            ));
        }
    }
    // A receipt's thread is `main` or the root event of a thread in this room.
    if let Some(thread) = &body.thread_id
        && thread != "main"
    {
        if kind == "m.fully_read" {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "m.fully_read takes no thread_id",
            ));
        }
        if thread.len() > 255 || require_room_event(&app, &room_id, thread).is_err() {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                "thread_id must be main or an event of this room",
            ));
        }
    }
    match kind.as_str() {
        crate::sync::receipts::PUBLIC | crate::sync::receipts::PRIVATE => {
            crate::sync::receipts::set(
                &app.storage,
                &app.rooms.stream,
                &room_id,
                &auth.user_id,
                &kind,
                &event_id,
                body.thread_id,
            )
            .await?;
        }
        "m.fully_read" => set_fully_read(&app, &auth.user_id, &room_id, &event_id).await?,
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                format!("Unknown receipt type {kind}"),
            ));
        }
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

async fn set_fully_read(
    app: &Services,
    user_id: &UserId,
    room_id: &RoomId,
    event_id: &str,
) -> Result<(), Error> {
    let mut content = Map::new();
    content.insert("event_id".to_owned(), json!(event_id));
    crate::users::account_data::set_managed(
        &app.storage,
        &app.rooms.stream,
        user_id,
        Some(room_id),
        "m.fully_read",
        content,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct ReadMarkersRequest {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// # POST /_matrix/client/v3/rooms/{roomId}/read_markers
pub async fn read_markers(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<ReadMarkersRequest>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    for event_id in [&body.fully_read, &body.read, &body.read_private]
        .into_iter()
        .flatten()
    {
        require_room_event(&app, &room_id, event_id)?;
    }
    if let Some(event_id) = &body.fully_read {
        set_fully_read(&app, &auth.user_id, &room_id, event_id).await?;
    }
    if let Some(event_id) = &body.read {
        crate::sync::receipts::set(
            &app.storage,
            &app.rooms.stream,
            &room_id,
            &auth.user_id,
            crate::sync::receipts::PUBLIC,
            event_id,
            None,
        )
        .await?;
    }
    if let Some(event_id) = &body.read_private {
        crate::sync::receipts::set(
            &app.storage,
            &app.rooms.stream,
            &room_id,
            &auth.user_id,
            crate::sync::receipts::PRIVATE,
            event_id,
            None,
        )
        .await?;
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Default, Deserialize)]
pub struct RedactRequest {
    reason: Option<String>,
}

/// # PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
pub async fn redact(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
    MatrixJson(body): MatrixJson<RedactRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, target, txn_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
    let txn_key = (
        auth.user_id.to_string(),
        auth.device_id.clone(),
        format!("{room_id}\u{0}redact\u{0}{txn_id}"),
    );
    if let Some(event_id) = app.storage.txn_eventid.get(&txn_key)? {
        return Ok(HttpResponse::Ok().json(json!({ "event_id": event_id })));
    }
    require_joined(&app, &auth.user_id, &room_id)?;
    require_room_event(&app, &room_id, &target)?;
    let target = ruma::OwnedEventId::try_from(target.as_str())
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid event ID"))?;
    if !is_own_event(&app, &auth.user_id, &target)? {
        auth.ensure_not_suspended()?;
    }
    check_may_redact(&app, &auth.user_id, &room_id, &target)?;
    // From room version 11 `redacts` is part of the content; before, the builder puts it at
    // the top level. Older servers read either, so the content always carries it.
    let mut content = json!({ "redacts": target });
    if let Some(reason) = body.reason {
        content["reason"] = json!(reason);
    }
    let mut new = NewEvent::message("m.room.redaction", content);
    new.redacts = Some(target);
    let event_id = app
        .rooms
        .append_with_txn(
            &app.storage,
            &app.signing_key,
            &room_id,
            &auth.user_id,
            new,
            (txn_key, txn_id),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "event_id": event_id })))
}

#[derive(Debug, Deserialize)]
pub struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// # GET /_matrix/client/v3/rooms/{roomId}/members
///
/// With `at`, the memberships as they were at that point of the timeline (from the room's
/// state history).
pub async fn members(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    query: web::Query<MembersQuery>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    let event_ids: Vec<String> = match &query.at {
        None => rooms::current_state(&app.storage, &room_id)?
            .into_iter()
            .filter(|((kind, _), _)| kind == "m.room.member")
            .map(|(_, event_id)| event_id)
            .collect(),
        Some(at) => {
            let at = crate::sync::parse_token(at)
                .map(|(position, _)| position)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidParam,
                        "`at` is not a token from this server",
                    )
                })?;
            members_at(&app, &room_id, at)?
        }
    };
    let mut chunk = Vec::new();
    for event_id in event_ids {
        let Some(event) = crate::rooms::format::stored_event_for_client(
            &app.storage,
            &event_id,
            Some(room_id.as_str()),
            None,
        )?
        else {
            continue;
        };
        let membership = event["content"]["membership"].as_str().unwrap_or_default();
        if query
            .membership
            .as_deref()
            .is_some_and(|wanted| wanted != membership)
            || query.not_membership.as_deref() == Some(membership)
        {
            continue;
        }
        chunk.push(event);
    }
    Ok(HttpResponse::Ok().json(json!({ "chunk": chunk })))
}

/// The member events of the room's state as of stream position `at`.
fn members_at(app: &Services, room_id: &RoomId, at: u64) -> Result<Vec<String>, Error> {
    Ok(crate::rooms::history::state_at(&app.storage, room_id, at)?
        .into_iter()
        .filter(|((kind, _), _)| kind == "m.room.member")
        .map(|(_, event_id)| event_id)
        .collect())
}

/// # POST /_matrix/client/v3/rooms/{roomId}/forget
///
/// A room one has left disappears from one's view: sync, `/messages`, joined and left lists.
pub async fn forget(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    // Removed only if still a leave or ban when written: a join racing in is kept.
    let mut outcome = Err(Error::not_found(
        "You have no membership in this room to forget",
    ));
    app.storage.userroom_membership.update(
        &(auth.user_id.to_string(), room_id.to_string()),
        |record| {
            let record = record?;
            if record.membership == "leave" || record.membership == "ban" {
                outcome = Ok(());
                None
            } else {
                outcome = Err(Error::new(
                    ErrorKind::BadRequest,
                    "Leave the room before forgetting it",
                ));
                Some(record)
            }
        },
    )?;
    outcome?;
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct ReportRequest {
    reason: Option<String>,
}

/// # POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}
///
/// Reports go to the server's administrator: the log, at warning level.
pub async fn report_event(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    MatrixJson(body): MatrixJson<ReportRequest>,
) -> Result<HttpResponse, Error> {
    let (room_id, event_id) = path.into_inner();
    let room_id = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    require_room_event(&app, &room_id, &event_id)?;
    let reason = body.reason.unwrap_or_default();
    tracing::warn!(reporter = %auth.user_id, %room_id, %event_id, reason = %reason.chars().take(500).collect::<String>(), "event reported");
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/rooms/{roomId}/report
pub async fn report_room(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<ReportRequest>,
) -> Result<HttpResponse, Error> {
    let room_id = parse_room_id(&room_id)?;
    if app.storage.roomid_room.get(&room_id.to_string())?.is_none() {
        return Err(Error::not_found("No such room"));
    }
    let reason = body.reason.unwrap_or_default();
    tracing::warn!(reporter = %auth.user_id, %room_id, reason = %reason.chars().take(500).collect::<String>(), "room reported");
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/knock/{roomIdOrAlias}
///
/// Asks to be let into a room whose join rule is `knock` (room version 7 and later); its
/// members then see the knock and may invite. Rooms on other servers need federation.
pub async fn knock(
    app: web::Data<Services>,
    request: actix_web::HttpRequest,
    auth: Authenticated,
    room: web::Path<String>,
    MatrixJson(body): MatrixJson<OwnMembershipRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let room_id = crate::directory::room_id_or_alias(&app.storage, &room)?;
    // A room held elsewhere is knocked on through `via` servers or the room ID's own.
    if app.config.federation.enabled
        && crate::federation::join::needs_remote_join(&app.federation, &room_id)?
    {
        let via = via_servers(&request);
        let servers =
            crate::federation::join::servers_for(&app.federation, &auth.user_id, &room_id, &via);
        crate::federation::join::knock_remote(&app.federation, &auth.user_id, &room_id, &servers)
            .await?;
        return Ok(HttpResponse::Ok().json(json!({ "room_id": room_id })));
    }
    change_own_membership(&app, &auth, &room_id, "knock", body.reason).await?;
    Ok(HttpResponse::Ok().json(json!({ "room_id": room_id })))
}

#[derive(Debug, Deserialize)]
pub struct UpgradeRequest {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

/// State carried over to the replacement room (spec: "Server behaviour" of room upgrades).
const UPGRADE_STATE: [&str; 9] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.canonical_alias",
];

/// # POST /_matrix/client/v3/rooms/{roomId}/upgrade
///
/// Makes a replacement room of `new_version` with the old room's settings and a
/// `predecessor`, moves the local aliases, then ends the old room with a tombstone and
/// restricts who may speak in it.
pub async fn upgrade(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<UpgradeRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let old = parse_room_id(&room_id)?;
    require_joined(&app, &auth.user_id, &old)?;
    if !rooms::may_send_state(&app.storage, &old, &auth.user_id, "m.room.tombstone")? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You may not upgrade this room",
        ));
    }
    let new_rules = ruma::RoomVersionId::try_from(body.new_version.as_str())
        .ok()
        .and_then(|version| version.rules())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::UnsupportedRoomVersion,
                format!(
                    "Room version {} is not supported; 1 to 12 are",
                    body.new_version
                ),
            )
        })?;

    let old_create =
        rooms::state_content(&app.storage, &old, "m.room.create", "")?.unwrap_or_default();
    let mut creation = Map::new();
    for field in ["m.federate", "type"] {
        if let Some(value) = old_create.get(field) {
            creation.insert(field.to_owned(), value.clone());
        }
    }
    creation.insert("predecessor".into(), json!({ "room_id": old }));
    if new_rules.authorization.additional_room_creators && !body.additional_creators.is_empty() {
        creation.insert(
            "additional_creators".into(),
            json!(body.additional_creators),
        );
    }
    let mut initial_state = Vec::new();
    for kind in UPGRADE_STATE {
        if let Some(content) = rooms::state_content(&app.storage, &old, kind, "")? {
            initial_state.push(json!({ "type": kind, "state_key": "", "content": content }));
        }
    }
    let mut levels =
        rooms::state_content(&app.storage, &old, "m.room.power_levels", "")?.unwrap_or_default();
    if let Some(users) = levels.get_mut("users").and_then(Value::as_object_mut) {
        if new_rules.authorization.explicitly_privilege_room_creators {
            // Creators of a version 12 room may not be listed; the upgrader is its creator.
            users.remove(auth.user_id.as_str());
            for creator in &body.additional_creators {
                users.remove(creator.as_str());
            }
        } else {
            users.insert(auth.user_id.to_string(), json!(100));
        }
    }
    let request: CreateRoomRequest = serde_json::from_value(json!({
        "room_version": body.new_version,
        "creation_content": creation,
        "initial_state": initial_state,
        "power_level_content_override": levels,
        "preset": "private_chat",
    }))
    .map_err(Error::internal)?;
    let new = app
        .rooms
        .create_room(
            &app.storage,
            &app.signing_key,
            &auth.user_id,
            request,
            &body.new_version,
        )
        .await?;
    for alias in crate::directory::aliases_of(&app.storage, &old)? {
        if let Ok(alias) = ruma::OwnedRoomAliasId::try_from(alias.as_str()) {
            crate::directory::delete_alias(&app.storage, &alias)?;
            crate::directory::create_alias(&app.storage, &alias, &new, &auth.user_id)?;
        }
    }
    if crate::directory::is_published(&app.storage, &old)? {
        crate::directory::set_published(&app.storage, &old, false)?;
        crate::directory::set_published(&app.storage, &new, true)?;
    }
    let tombstone = NewEvent::state(
        "m.room.tombstone",
        "",
        json!({ "body": "This room has been replaced", "replacement_room": new }),
    );
    app.rooms
        .append(
            &app.storage,
            &app.signing_key,
            &old,
            &auth.user_id,
            tombstone,
        )
        .await?;
    // Members are nudged to the new room: the old one takes no more messages or invites
    // from ordinary members.
    if let Some(mut old_levels) =
        rooms::state_content(&app.storage, &old, "m.room.power_levels", "")?
    {
        let users_default = old_levels["users_default"].as_i64().unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        old_levels["events_default"] = json!(restricted);
        old_levels["invite"] = json!(restricted);
        let restrict = NewEvent::state("m.room.power_levels", "", old_levels);
        if let Err(err) = app
            .rooms
            .append(
                &app.storage,
                &app.signing_key,
                &old,
                &auth.user_id,
                restrict,
            )
            .await
        {
            tracing::warn!(room_id = %old, "could not restrict the old room after its upgrade: {err}");
        }
    }
    app.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({ "replacement_room": new })))
}
