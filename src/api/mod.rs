//! HTTP: the actix application. Handlers are thin (extract, call a service, respond), one file
//! per area of the spec. Every answer is JSON; every route that exists answers other methods
//! with `405 M_UNRECOGNIZED`, and every route that does not with `404 M_UNRECOGNIZED`.

pub(crate) mod app;
pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod federation;
pub(crate) mod json;
pub(crate) mod keys;
pub(crate) mod middleware;
pub(crate) mod path;
pub(crate) mod ratelimit;
pub(crate) mod well_known;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{App, FromRequest, Handler, HttpResponse, Responder, ResponseError as _, web};

use crate::error::{Error, ErrorKind};

pub(crate) use json::{BodyLimit, MatrixJson};

/// The whole application, as each worker builds it.
pub(crate) fn app(
    app: web::Data<app::Services>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let body_limit = BodyLimit(app.config.limits.max_request_body_bytes);
    let federation_enabled = app.config.federation.enabled;
    App::new()
        .app_data(app)
        .app_data(body_limit)
        .app_data(web::QueryConfig::default().error_handler(|err, _| parameter_error(&err).into()))
        .app_data(web::PathConfig::default().error_handler(|err, _| parameter_error(&err).into()))
        .configure(move |config| routes(config, federation_enabled))
        .default_service(web::to(unrecognized))
        .wrap(actix_web::middleware::from_fn(middleware::limit_body))
        .wrap(actix_web::middleware::from_fn(middleware::cors))
        .wrap(actix_web::middleware::from_fn(middleware::log_request))
}

/// Account and device requests are small; a tighter body limit keeps a hostile client from
/// making the server parse megabytes before anything is checked.
const ACCOUNT_BODY_LIMIT: BodyLimit = BodyLimit(64 * 1024);

/// Every route Hearth serves. Federation routes exist only while federation is enabled.
fn routes(config: &mut web::ServiceConfig, federation_enabled: bool) {
    use client::{account, device, membership, read_markers, report, room, session, upgrade};
    let small = |resource: actix_web::Resource| resource.app_data(ACCOUNT_BODY_LIMIT);
    config
        .service(get("/_matrix/client/versions", client::versions::get))
        .service(small(
            web::resource("/_matrix/client/v3/login")
                .route(web::get().to(session::get_login_flows))
                .route(web::post().to(session::login))
                .default_service(web::to(|| async { method_not_allowed("GET, POST") })),
        ))
        .service(small(post("/_matrix/client/v3/logout", session::logout)))
        .service(small(post(
            "/_matrix/client/v3/logout/all",
            session::logout_all,
        )))
        .service(get("/_matrix/client/v3/account/whoami", session::whoami))
        .service(small(post(
            "/_matrix/client/v3/register",
            account::register,
        )))
        .service(get(
            "/_matrix/client/v3/register/available",
            account::available,
        ))
        .service(get(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            account::token_validity,
        ))
        .service(small(post(
            "/_matrix/client/v3/account/password",
            account::change_password,
        )))
        .service(small(post(
            "/_matrix/client/v3/account/deactivate",
            account::deactivate,
        )))
        .service(get("/_matrix/client/v3/devices", device::list))
        .service(small(
            web::resource("/_matrix/client/v3/devices/{deviceId}")
                .route(web::get().to(device::get))
                .route(web::put().to(device::rename))
                .route(web::delete().to(device::delete))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        ))
        .service(small(post(
            "/_matrix/client/v3/delete_devices",
            device::delete_many,
        )))
        .service(post("/_matrix/client/v3/createRoom", room::create_room))
        .service(get("/_matrix/client/v3/joined_rooms", room::joined_rooms))
        .service(get("/_matrix/client/v3/sync", client::sync::get_sync))
        .service(put(
            "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}",
            room::send_message,
        ))
        .service(
            web::resource("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}")
                .route(web::get().to(room::get_state))
                .route(web::put().to(room::put_state))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        )
        .service(
            web::resource("/_matrix/client/v3/rooms/{roomId}/state/{eventType}")
                .route(web::get().to(room::get_state_empty_key))
                .route(web::put().to(room::put_state_empty_key))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        )
        // Clients send an empty state key as a trailing slash.
        .service(
            web::resource("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/")
                .route(web::get().to(room::get_state_empty_key))
                .route(web::put().to(room::put_state_empty_key))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        )
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/state",
            room::get_all_state,
        ))
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/event/{eventId}",
            room::get_event,
        ))
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/joined_members",
            membership::joined_members,
        ))
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/messages",
            client::sync::messages,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/invite",
            membership::invite,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/kick",
            membership::kick,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/ban",
            membership::ban,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/unban",
            membership::unban,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/join",
            membership::join,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/leave",
            membership::leave,
        ))
        .service(post(
            "/_matrix/client/v3/join/{roomIdOrAlias}",
            membership::join_by_id_or_alias,
        ))
        .service(small(post(
            "/_matrix/client/v3/search",
            client::search::search,
        )))
        .service(small(post(
            "/_matrix/client/v3/knock/{roomIdOrAlias}",
            membership::knock,
        )))
        .service(small(post(
            "/_matrix/client/v3/rooms/{roomId}/upgrade",
            upgrade::upgrade,
        )))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}",
            client::relations::relations,
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}",
            client::relations::relations,
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}",
            client::relations::relations,
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/threads",
            client::relations::threads,
        ))
        .service(get(
            "/_matrix/client/v3/admin/whois/{userId}",
            client::admin::whois,
        ))
        .service(small(
            web::resource("/_matrix/client/v1/admin/lock/{userId}")
                .route(web::get().to(client::admin::get_lock))
                .route(web::put().to(client::admin::put_lock))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(small(
            web::resource("/_matrix/client/v1/admin/suspend/{userId}")
                .route(web::get().to(client::admin::get_suspension))
                .route(web::put().to(client::admin::put_suspension))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/hierarchy",
            client::space::hierarchy,
        ))
        .service(get(
            "/_matrix/client/v3/voip/turnServer",
            client::not_offered::turn_server,
        ))
        .service(post(
            "/_matrix/client/v3/refresh",
            client::not_offered::refresh,
        ))
        .service(get(
            "/.well-known/matrix/policy_server",
            client::not_offered::policy_server,
        ))
        .service(post(
            "/_matrix/client/v3/register/email/requestToken",
            client::not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/register/msisdn/requestToken",
            client::not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/account/password/email/requestToken",
            client::not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/account/password/msisdn/requestToken",
            client::not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/email/requestToken",
            client::not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/msisdn/requestToken",
            client::not_offered::no_third_party_validation,
        ))
        .service(get("/_matrix/client/v3/pushrules/", client::push::get_all))
        .service(get(
            "/_matrix/client/v3/pushrules/global/",
            client::push::get_global,
        ))
        .service(small(
            web::resource("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}")
                .route(web::get().to(client::push::get_rule))
                .route(web::put().to(client::push::put_rule))
                .route(web::delete().to(client::push::delete_rule))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        ))
        .service(small(
            web::resource("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/{attribute}")
                .route(web::get().to(client::push::get_attribute))
                .route(web::put().to(client::push::put_attribute))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(get("/_matrix/client/v3/pushers", client::push::get_pushers))
        .service(get(
            "/_matrix/client/v3/notifications",
            client::push::notifications,
        ))
        .service(small(post(
            "/_matrix/client/v3/pushers/set",
            client::push::set_pusher,
        )))
        .service(get(
            "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags",
            client::tags::get_tags,
        ))
        .service(small(
            web::resource("/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}")
                .route(web::put().to(client::tags::put_tag))
                .route(web::delete().to(client::tags::delete_tag))
                .default_service(web::to(|| async { method_not_allowed("PUT, DELETE") })),
        ))
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/context/{eventId}",
            client::context::context,
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event",
            client::context::timestamp_to_event,
        ))
        .service(small(post(
            "/_matrix/client/v3/user_directory/search",
            client::user_directory::search_users,
        )))
        .service(post(
            "/_matrix/client/v3/user/{userId}/openid/request_token",
            client::openid::request_token,
        ))
        .service(post(
            "/_matrix/client/v3/users/{userId}/report",
            report::report_user,
        ))
        .service(get(
            "/_matrix/client/v1/mutual_rooms",
            client::mutual_rooms::mutual_rooms,
        ))
        .service(get(
            "/_matrix/client/v1/room_summary/{roomIdOrAlias}",
            client::summary::room_summary,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/protocol/{protocol}",
            client::not_offered::unknown_protocol,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/location/{protocol}",
            client::not_offered::unknown_protocol,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/user/{protocol}",
            client::not_offered::unknown_protocol,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/location",
            client::not_offered::no_third_party_matches,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/user",
            client::not_offered::no_third_party_matches,
        ))
        .service(get(
            "/.well-known/matrix/support",
            client::not_offered::support,
        ))
        .service(small(
            web::resource("/_matrix/client/v3/presence/{userId}/status")
                .route(web::get().to(client::user::get_presence))
                .route(web::put().to(client::user::set_presence))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(
            web::resource("/_matrix/client/v3/directory/room/{roomAlias}")
                .route(web::get().to(client::directory::get_alias))
                .route(web::put().to(client::directory::put_alias))
                .route(web::delete().to(client::directory::delete_alias))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        )
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/aliases",
            client::directory::room_aliases,
        ))
        .service(
            web::resource("/_matrix/client/v3/directory/list/room/{roomId}")
                .route(web::get().to(client::directory::get_visibility))
                .route(web::put().to(client::directory::set_visibility))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        )
        .service(
            web::resource("/_matrix/client/v3/publicRooms")
                .route(web::get().to(client::directory::public_rooms))
                .route(web::post().to(client::directory::search_public_rooms))
                .default_service(web::to(|| async { method_not_allowed("GET, POST") })),
        )
        .service(put(
            "/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}",
            room::redact,
        ))
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/members",
            membership::members,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/forget",
            membership::forget,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/report/{eventId}",
            report::report_event,
        ))
        .service(post(
            "/_matrix/client/v3/rooms/{roomId}/report",
            report::report_room,
        ))
        .service(get(
            "/_matrix/client/v3/account/3pid",
            client::user::third_party_ids,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/add",
            client::user::add_third_party_id,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/bind",
            client::user::add_third_party_id,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/delete",
            client::user::remove_third_party_id,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/unbind",
            client::user::remove_third_party_id,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/protocols",
            client::user::third_party_protocols,
        ))
        .service(small(put(
            "/_matrix/client/v3/rooms/{roomId}/typing/{userId}",
            read_markers::typing,
        )))
        .service(small(post(
            "/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}",
            read_markers::receipt,
        )))
        .service(small(post(
            "/_matrix/client/v3/rooms/{roomId}/read_markers",
            read_markers::read_markers,
        )))
        .service(get(
            "/_matrix/client/v3/capabilities",
            client::user::capabilities,
        ))
        .service(get(
            "/_matrix/client/v3/profile/{userId}",
            client::user::get_profile,
        ))
        .service(small(
            web::resource("/_matrix/client/v3/profile/{userId}/{keyName}")
                .route(web::get().to(client::user::get_profile_field))
                .route(web::put().to(client::user::set_profile_field))
                .route(web::delete().to(client::user::delete_profile_field))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        ))
        .service(small(
            web::resource("/_matrix/client/v3/user/{userId}/account_data/{type}")
                .route(web::get().to(client::user::get_account_data))
                .route(web::put().to(client::user::set_account_data))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(small(
            web::resource("/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}")
                .route(web::get().to(client::user::get_room_account_data))
                .route(web::put().to(client::user::set_room_account_data))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(small(post(
            "/_matrix/client/v3/user/{userId}/filter",
            client::user::create_filter,
        )))
        .service(get(
            "/_matrix/client/v3/user/{userId}/filter/{filterId}",
            client::user::get_filter,
        ))
        .service(get("/.well-known/matrix/client", well_known::client))
        .service(get("/.well-known/matrix/server", well_known::server));
    if federation_enabled {
        config
            .service(get(
                "/_matrix/federation/v1/version",
                federation::version::get,
            ))
            .service(get("/_matrix/key/v2/server", keys::get_server_keys))
            .service(get("/_matrix/key/v2/query/{serverName}", keys::query_one))
            .service(post("/_matrix/key/v2/query", keys::query_batch))
            .service(get(
                "/_matrix/federation/v1/query/profile",
                federation::query::profile,
            ))
            .service(put(
                "/_matrix/federation/v1/send/{txnId}",
                federation::send::send,
            ))
            .service(get(
                "/_matrix/federation/v1/make_join/{roomId}/{userId}",
                federation::membership::make_join,
            ))
            .service(put(
                "/_matrix/federation/v2/send_join/{roomId}/{eventId}",
                federation::membership::send_join,
            ))
            .service(put(
                "/_matrix/federation/v2/invite/{roomId}/{eventId}",
                federation::membership::invite,
            ))
            .service(put(
                "/_matrix/federation/v1/invite/{roomId}/{eventId}",
                federation::membership::invite_v1,
            ))
            .service(get(
                "/_matrix/federation/v1/make_leave/{roomId}/{userId}",
                federation::membership::make_leave,
            ))
            .service(put(
                "/_matrix/federation/v2/send_leave/{roomId}/{eventId}",
                federation::membership::send_leave,
            ))
            .service(get(
                "/_matrix/federation/v1/make_knock/{roomId}/{userId}",
                federation::membership::make_knock,
            ))
            .service(put(
                "/_matrix/federation/v1/send_knock/{roomId}/{eventId}",
                federation::membership::send_knock,
            ))
            .configure(federation_serving_routes);
    }
}

/// The server-server endpoints that serve our rooms, users and directory to other servers.
fn federation_serving_routes(config: &mut web::ServiceConfig) {
    use federation::{directory, events, query, user};
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
        .service(post(
            "/_matrix/federation/v1/get_missing_events/{roomId}",
            events::get_missing_events,
        ))
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
                .default_service(web::to(|| async { method_not_allowed("GET, POST") })),
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
        .service(post(
            "/_matrix/federation/v1/user/keys/query",
            user::query_keys,
        ))
        .service(post(
            "/_matrix/federation/v1/user/keys/claim",
            user::claim_keys,
        ));
}

/// A `PUT` route; other methods get `405 M_UNRECOGNIZED` with an `Allow` header.
fn put<H, Args>(path: &str, handler: H) -> actix_web::Resource
where
    H: Handler<Args>,
    Args: FromRequest + 'static,
    H::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::put().to(handler))
        .default_service(web::to(|| async { method_not_allowed("PUT") }))
}

/// A `POST` route; other methods get `405 M_UNRECOGNIZED` with an `Allow` header.
fn post<H, Args>(path: &str, handler: H) -> actix_web::Resource
where
    H: Handler<Args>,
    Args: FromRequest + 'static,
    H::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|| async { method_not_allowed("POST") }))
}

/// A `GET` route (which answers `HEAD` too, without the body); other methods get
/// `405 M_UNRECOGNIZED` with an `Allow` header.
fn get<H, Args>(path: &str, handler: H) -> actix_web::Resource
where
    H: Handler<Args> + Clone,
    Args: FromRequest + 'static,
    H::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(|| async { method_not_allowed("GET, HEAD") }))
}

/// Bad query strings and path segments answer in JSON too: a missing parameter is
/// `M_MISSING_PARAM`, anything else `M_INVALID_PARAM`.
fn parameter_error(err: &dyn std::fmt::Display) -> Error {
    let message = err.to_string();
    let kind = if message.contains("missing field") {
        ErrorKind::MissingParam
    } else {
        ErrorKind::InvalidParam
    };
    Error::new(kind, message)
}

async fn unrecognized() -> Result<HttpResponse, Error> {
    Err(Error::unrecognized())
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = Error::method_not_allowed().error_response();
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}
