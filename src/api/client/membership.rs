//! Memberships (spec: client-server API, "Room membership"): joining (here or through
//! another server), leaving, inviting, kicking, banning, knocking, forgetting, and who is in a
//! room.

use actix_web::{HttpResponse, web};
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::room::require_joined;
use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::path;
use crate::error::{Error, ErrorKind};
use crate::matrix::events::builder::NewEvent;
use crate::rooms::format::client_event;

/// # GET /_matrix/client/v3/rooms/{roomId}/joined_members
pub(crate) async fn joined_members(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    let mut joined = Map::new();
    for ((kind, user), event_id) in app.rooms.current_state(&room_id)? {
        if kind != "m.room.member" {
            continue;
        }
        let Some(json) = app.rooms.load_json(&event_id)? else {
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
pub(crate) struct MembershipRequest {
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
    let room_id: OwnedRoomId = path::id(room_id)?;
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
    let current = app
        .rooms
        .membership(&target, &room_id)?
        .map(|record| record.membership);
    let current = current.as_deref().unwrap_or("leave");
    let allowed = match action {
        Action::Invite => {
            if !app.users.is_active(&target)? {
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
    app.rooms.append(&room_id, &auth.user_id, new).await?;
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
pub(crate) async fn invite(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<MembershipRequest>,
) -> Result<HttpResponse, Error> {
    change_other_membership(&app, &auth, &room_id, body, Action::Invite).await
}

/// # POST /_matrix/client/v3/rooms/{roomId}/kick
pub(crate) async fn kick(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<MembershipRequest>,
) -> Result<HttpResponse, Error> {
    change_other_membership(&app, &auth, &room_id, body, Action::Kick).await
}

/// # POST /_matrix/client/v3/rooms/{roomId}/ban
pub(crate) async fn ban(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<MembershipRequest>,
) -> Result<HttpResponse, Error> {
    change_other_membership(&app, &auth, &room_id, body, Action::Ban).await
}

/// # POST /_matrix/client/v3/rooms/{roomId}/unban
pub(crate) async fn unban(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<MembershipRequest>,
) -> Result<HttpResponse, Error> {
    change_other_membership(&app, &auth, &room_id, body, Action::Unban).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct OwnMembershipRequest {
    reason: Option<String>,
}

/// Joining, leaving or knocking in a room this server holds ([`Rooms::change_own_membership`],
/// with the user's profile for a join). Whoever leaves or knocks stops typing there.
///
/// [`Rooms::change_own_membership`]: crate::rooms::Rooms::change_own_membership
async fn change_own_membership(
    app: &Services,
    auth: &Authenticated,
    room_id: &RoomId,
    membership: &str,
    reason: Option<String>,
) -> Result<(), Error> {
    let profile = app.users.profile(&auth.user_id)?.unwrap_or_default();
    app.rooms
        .change_own_membership(&auth.user_id, room_id, membership, reason, &profile)
        .await?;
    if membership != "join" {
        app.ephemeral.set_typing(room_id, &auth.user_id, None);
    }
    Ok(())
}

/// # POST /_matrix/client/v3/rooms/{roomId}/join
pub(crate) async fn join(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<OwnMembershipRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let room_id: OwnedRoomId = path::id(&room_id)?;
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
pub(crate) async fn join_by_id_or_alias(
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
        _ => app.directory.room_id_or_alias(&room)?,
    };
    join_here_or_remote(&app, &auth, &room_id, &via, body.reason).await?;
    Ok(HttpResponse::Ok().json(json!({ "room_id": room_id })))
}

/// # POST /_matrix/client/v3/rooms/{roomId}/leave
pub(crate) async fn leave(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    MatrixJson(body): MatrixJson<OwnMembershipRequest>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    // Declining an invite to a room held elsewhere (or one we hold but have left, whose
    // state is stale) goes through the inviter's server.
    if crate::federation::join::needs_remote_join(&app.federation, &room_id)?
        && app
            .rooms
            .membership(&auth.user_id, &room_id)?
            .is_some_and(|record| record.membership == "invite")
    {
        let servers =
            crate::federation::join::servers_for(&app.federation, &auth.user_id, &room_id, &[]);
        crate::federation::join::leave_remote(&app.federation, &auth.user_id, &room_id, &servers)
            .await?;
        return Ok(HttpResponse::Ok().json(json!({})));
    }
    match app.rooms.membership(&auth.user_id, &room_id)? {
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
pub(crate) struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// # GET /_matrix/client/v3/rooms/{roomId}/members
///
/// With `at`, the memberships as they were at that point of the timeline (from the room's
/// state history).
pub(crate) async fn members(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
    query: web::Query<MembersQuery>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    require_joined(&app, &auth.user_id, &room_id)?;
    let event_ids: Vec<String> = match &query.at {
        None => app
            .rooms
            .current_state(&room_id)?
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
            // The members at a point the user may not see are history they may not
            // read (who was there before they could see the room).
            let view = app.rooms.visibility(&room_id, auth.user_id.as_str())?;
            if !view.allows(at) {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    "You may not see the room's members at that point",
                ));
            }
            members_at(&app, &room_id, at)?
        }
    };
    let mut chunk = Vec::new();
    for event_id in event_ids {
        let Some(event) = app
            .rooms
            .event_for_client(&event_id, Some(room_id.as_str()), None)?
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
    Ok(app
        .rooms
        .state_at(room_id, at)?
        .into_iter()
        .filter(|((kind, _), _)| kind == "m.room.member")
        .map(|(_, event_id)| event_id)
        .collect())
}

/// # POST /_matrix/client/v3/rooms/{roomId}/forget
///
/// A room one has left disappears from one's view: sync, `/messages`, joined and left lists.
pub(crate) async fn forget(
    app: web::Data<Services>,
    auth: Authenticated,
    room_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let room_id: OwnedRoomId = path::id(&room_id)?;
    app.rooms.forget(&auth.user_id, &room_id).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// # POST /_matrix/client/v3/knock/{roomIdOrAlias}
///
/// Asks to be let into a room whose join rule is `knock` (room version 7 and later); its
/// members then see the knock and may invite. Rooms on other servers need federation.
pub(crate) async fn knock(
    app: web::Data<Services>,
    request: actix_web::HttpRequest,
    auth: Authenticated,
    room: web::Path<String>,
    MatrixJson(body): MatrixJson<OwnMembershipRequest>,
) -> Result<HttpResponse, Error> {
    auth.ensure_not_suspended()?;
    let room_id = app.directory.room_id_or_alias(&room)?;
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
