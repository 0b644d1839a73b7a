//! The server-server API, one file per area of the spec. Handlers that need to know which
//! server asks take [`origin::FederationOrigin`] or [`origin::SignedJson`].

pub(crate) mod directory;
pub(crate) mod events;
pub(crate) mod media;
pub(crate) mod membership;
pub(crate) mod origin;
pub(crate) mod query;
pub(crate) mod send;
mod streamed_body;
pub(crate) mod user;
pub(crate) mod version;

use actix_web::web;

use super::{BodyLimit, get, method_not_allowed, post, put};

/// One PDU (`send_join`, `send_leave`, `send_knock`): at most 64 KiB as canonical JSON, with
/// room for a longer spelling of it.
const PDU_BODY_LIMIT: BodyLimit = BodyLimit(128 * 1024);
/// Queries naming a few events or servers (`get_missing_events`, key and directory queries).
const QUERY_BODY_LIMIT: BodyLimit = BodyLimit(64 * 1024);
/// Device key queries and claims name users and devices, perhaps a whole room's.
const KEYS_BODY_LIMIT: BodyLimit = BodyLimit(256 * 1024);
// Invites carry the event and the room's stripped state: the default (1 MiB) fits them.

/// The server-server API's routes (and the key server's).
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .service(get("/_matrix/federation/v1/version", version::get))
        .service(get("/_matrix/key/v2/server", super::keys::get_server_keys))
        .service(get(
            "/_matrix/key/v2/query/{serverName}",
            super::keys::query_one,
        ))
        .service(post("/_matrix/key/v2/query", super::keys::query_batch).app_data(QUERY_BODY_LIMIT))
        .service(get("/_matrix/federation/v1/query/profile", query::profile))
        .service(get(
            "/_matrix/federation/v1/media/download/{mediaId}",
            media::download,
        ))
        .service(get(
            "/_matrix/federation/v1/media/thumbnail/{mediaId}",
            media::thumbnail,
        ))
        .service(
            put("/_matrix/federation/v1/send/{txnId}", send::send)
                .app_data(BodyLimit(send::TRANSACTION_BODY_LIMIT)),
        )
        .service(get(
            "/_matrix/federation/v1/make_join/{roomId}/{userId}",
            membership::make_join,
        ))
        .service(
            put(
                "/_matrix/federation/v2/send_join/{roomId}/{eventId}",
                membership::send_join,
            )
            .app_data(PDU_BODY_LIMIT),
        )
        .service(put(
            "/_matrix/federation/v2/invite/{roomId}/{eventId}",
            membership::invite,
        ))
        .service(put(
            "/_matrix/federation/v1/invite/{roomId}/{eventId}",
            membership::invite_v1,
        ))
        .service(get(
            "/_matrix/federation/v1/make_leave/{roomId}/{userId}",
            membership::make_leave,
        ))
        .service(
            put(
                "/_matrix/federation/v2/send_leave/{roomId}/{eventId}",
                membership::send_leave,
            )
            .app_data(PDU_BODY_LIMIT),
        )
        .service(get(
            "/_matrix/federation/v1/make_knock/{roomId}/{userId}",
            membership::make_knock,
        ))
        .service(
            put(
                "/_matrix/federation/v1/send_knock/{roomId}/{eventId}",
                membership::send_knock,
            )
            .app_data(PDU_BODY_LIMIT),
        )
        .configure(serving_routes);
}

/// The server-server endpoints that serve our rooms, users and directory to other servers.
fn serving_routes(config: &mut web::ServiceConfig) {
    use self::{directory, events, query, user};
    config
        .service(get("/_matrix/federation/v1/event/{eventId}", events::event))
        .service(get("/_matrix/federation/v1/state/{roomId}", events::state))
        .service(get(
            "/_matrix/federation/v1/state_ids/{roomId}",
            events::state_ids,
        ))
        .service(get(
            "/_matrix/federation/v1/event_auth/{roomId}/{eventId}",
            events::event_auth,
        ))
        .service(get(
            "/_matrix/federation/v1/backfill/{roomId}",
            events::backfill,
        ))
        .service(
            post(
                "/_matrix/federation/v1/get_missing_events/{roomId}",
                events::get_missing_events,
            )
            .app_data(QUERY_BODY_LIMIT),
        )
        .service(get(
            "/_matrix/federation/v1/timestamp_to_event/{roomId}",
            events::timestamp_to_event,
        ))
        .service(get(
            "/_matrix/federation/v1/query/directory",
            query::directory,
        ))
        .service(get(
            "/_matrix/federation/v1/query/{queryType}",
            query::unknown,
        ))
        .service(
            web::resource("/_matrix/federation/v1/publicRooms")
                .route(web::get().to(directory::public_rooms))
                .route(web::post().to(directory::search_public_rooms))
                .default_service(web::to(|| async { method_not_allowed("GET, POST") }))
                .app_data(QUERY_BODY_LIMIT),
        )
        .service(get(
            "/_matrix/federation/v1/hierarchy/{roomId}",
            directory::hierarchy,
        ))
        .service(get(
            "/_matrix/federation/v1/openid/userinfo",
            user::openid_userinfo,
        ))
        .service(get(
            "/_matrix/federation/v1/user/devices/{userId}",
            user::devices,
        ))
        .service(
            post("/_matrix/federation/v1/user/keys/query", user::query_keys)
                .app_data(KEYS_BODY_LIMIT),
        )
        .service(
            post("/_matrix/federation/v1/user/keys/claim", user::claim_keys)
                .app_data(KEYS_BODY_LIMIT),
        );
}
