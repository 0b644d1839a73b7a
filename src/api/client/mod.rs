//! The client-server API, one file per area of the spec.

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod context;
pub(crate) mod cross_signing;
pub(crate) mod dehydrated;
pub(crate) mod device;
pub(crate) mod directory;
pub(crate) mod key_backup;
pub(crate) mod keys;
pub(crate) mod media;
pub(crate) mod membership;
pub(crate) mod mutual_rooms;
pub(crate) mod not_offered;
pub(crate) mod openid;
pub(crate) mod push;
pub(crate) mod read_markers;
pub(crate) mod relations;
pub(crate) mod report;
pub(crate) mod room;
pub(crate) mod search;
pub(crate) mod session;
pub(crate) mod sliding_sync;
pub(crate) mod space;
pub(crate) mod state_content;
pub(crate) mod summary;
pub(crate) mod sync;
pub(crate) mod tags;
pub(crate) mod to_device;
pub(crate) mod upgrade;
pub(crate) mod url_preview;
pub(crate) mod user;
pub(crate) mod user_directory;
pub(crate) mod versions;
pub(crate) mod voip;

use actix_web::web;

use super::{ACCOUNT_BODY_LIMIT, get, method_not_allowed, post, put};

/// The client-server API's routes.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    key_backup_routes(config);
    media_routes(config);
    let small = |resource: actix_web::Resource| resource.app_data(ACCOUNT_BODY_LIMIT);
    config
        .service(get("/_matrix/client/versions", versions::get))
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
        .service(get("/_matrix/client/v3/sync", sync::get_sync))
        .service(
            post(
                "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
                sliding_sync::sliding_sync,
            )
            .app_data(sliding_sync::BODY_LIMIT),
        )
        .service(put(
            "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}",
            room::send_message,
        ))
        .service(put(
            "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}",
            to_device::send_to_device,
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
            sync::messages,
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
        .service(small(post("/_matrix/client/v3/search", search::search)))
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
            relations::relations,
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}",
            relations::relations,
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}",
            relations::relations,
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/threads",
            relations::threads,
        ))
        .service(get("/_matrix/client/v3/admin/whois/{userId}", admin::whois))
        .service(small(
            web::resource("/_matrix/client/v1/admin/lock/{userId}")
                .route(web::get().to(admin::get_lock))
                .route(web::put().to(admin::put_lock))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(small(
            web::resource("/_matrix/client/v1/admin/suspend/{userId}")
                .route(web::get().to(admin::get_suspension))
                .route(web::put().to(admin::put_suspension))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/hierarchy",
            space::hierarchy,
        ))
        .service(get("/_matrix/client/v3/voip/turnServer", voip::turn_server))
        .service(get(
            "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports",
            voip::rtc_transports,
        ))
        .service(post("/_matrix/client/v3/refresh", not_offered::refresh))
        .service(get(
            "/.well-known/matrix/policy_server",
            not_offered::policy_server,
        ))
        .service(post(
            "/_matrix/client/v3/register/email/requestToken",
            not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/register/msisdn/requestToken",
            not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/account/password/email/requestToken",
            not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/account/password/msisdn/requestToken",
            not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/email/requestToken",
            not_offered::no_third_party_validation,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/msisdn/requestToken",
            not_offered::no_third_party_validation,
        ))
        .service(get("/_matrix/client/v3/pushrules/", push::get_all))
        .service(get(
            "/_matrix/client/v3/pushrules/global/",
            push::get_global,
        ))
        .service(small(
            web::resource("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}")
                .route(web::get().to(push::get_rule))
                .route(web::put().to(push::put_rule))
                .route(web::delete().to(push::delete_rule))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        ))
        .service(small(
            web::resource("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/{attribute}")
                .route(web::get().to(push::get_attribute))
                .route(web::put().to(push::put_attribute))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(get("/_matrix/client/v3/pushers", push::get_pushers))
        .service(get("/_matrix/client/v3/notifications", push::notifications))
        .service(small(post(
            "/_matrix/client/v3/pushers/set",
            push::set_pusher,
        )))
        .service(get(
            "/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags",
            tags::get_tags,
        ))
        .service(small(
            web::resource("/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}")
                .route(web::put().to(tags::put_tag))
                .route(web::delete().to(tags::delete_tag))
                .default_service(web::to(|| async { method_not_allowed("PUT, DELETE") })),
        ))
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/context/{eventId}",
            context::context,
        ))
        .service(get(
            "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event",
            context::timestamp_to_event,
        ))
        .service(small(post(
            "/_matrix/client/v3/user_directory/search",
            user_directory::search_users,
        )))
        .service(post(
            "/_matrix/client/v3/user/{userId}/openid/request_token",
            openid::request_token,
        ))
        .service(post(
            "/_matrix/client/v3/users/{userId}/report",
            report::report_user,
        ))
        .service(get(
            "/_matrix/client/v1/media/preview_url",
            url_preview::preview_url,
        ))
        .service(get(
            "/_matrix/media/v3/preview_url",
            url_preview::preview_url,
        ))
        .service(get(
            "/_matrix/client/v1/mutual_rooms",
            mutual_rooms::mutual_rooms,
        ))
        .service(get(
            "/_matrix/client/v1/room_summary/{roomIdOrAlias}",
            summary::room_summary,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/protocol/{protocol}",
            not_offered::unknown_protocol,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/location/{protocol}",
            not_offered::unknown_protocol,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/user/{protocol}",
            not_offered::unknown_protocol,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/location",
            not_offered::no_third_party_matches,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/user",
            not_offered::no_third_party_matches,
        ))
        .service(get("/.well-known/matrix/support", not_offered::support))
        .service(small(
            web::resource("/_matrix/client/v3/presence/{userId}/status")
                .route(web::get().to(user::get_presence))
                .route(web::put().to(user::set_presence))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(
            web::resource("/_matrix/client/v3/directory/room/{roomAlias}")
                .route(web::get().to(directory::get_alias))
                .route(web::put().to(directory::put_alias))
                .route(web::delete().to(directory::delete_alias))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        )
        .service(get(
            "/_matrix/client/v3/rooms/{roomId}/aliases",
            directory::room_aliases,
        ))
        .service(
            web::resource("/_matrix/client/v3/directory/list/room/{roomId}")
                .route(web::get().to(directory::get_visibility))
                .route(web::put().to(directory::set_visibility))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        )
        .service(
            web::resource("/_matrix/client/v3/publicRooms")
                .route(web::get().to(directory::public_rooms))
                .route(web::post().to(directory::search_public_rooms))
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
            user::third_party_ids,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/add",
            user::add_third_party_id,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/bind",
            user::add_third_party_id,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/delete",
            user::remove_third_party_id,
        ))
        .service(post(
            "/_matrix/client/v3/account/3pid/unbind",
            user::remove_third_party_id,
        ))
        .service(get(
            "/_matrix/client/v3/thirdparty/protocols",
            user::third_party_protocols,
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
        .service(get("/_matrix/client/v3/capabilities", user::capabilities))
        .service(get(
            "/_matrix/client/v3/profile/{userId}",
            user::get_profile,
        ))
        .service(small(
            web::resource("/_matrix/client/v3/profile/{userId}/{keyName}")
                .route(web::get().to(user::get_profile_field))
                .route(web::put().to(user::set_profile_field))
                .route(web::delete().to(user::delete_profile_field))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        ))
        .service(small(
            web::resource("/_matrix/client/v3/user/{userId}/account_data/{type}")
                .route(web::get().to(user::get_account_data))
                .route(web::put().to(user::set_account_data))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(small(
            web::resource("/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}")
                .route(web::get().to(user::get_room_account_data))
                .route(web::put().to(user::set_room_account_data))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(small(post(
            "/_matrix/client/v3/user/{userId}/filter",
            user::create_filter,
        )))
        .service(get(
            "/_matrix/client/v3/user/{userId}/filter/{filterId}",
            user::get_filter,
        ));
    // Device keys, also under `unstable/`, where Synapse answers them too and clients of the
    // last years still call them.
    for prefix in ["/_matrix/client/v3", "/_matrix/client/unstable"] {
        config
            .service(post(&format!("{prefix}/keys/upload"), keys::upload))
            .service(post(&format!("{prefix}/keys/query"), keys::query))
            .service(post(&format!("{prefix}/keys/claim"), keys::claim))
            .service(post(
                &format!("{prefix}/keys/device_signing/upload"),
                cross_signing::upload_device_signing,
            ))
            .service(post(
                &format!("{prefix}/keys/signatures/upload"),
                cross_signing::upload_signatures,
            ))
            .service(get(&format!("{prefix}/keys/changes"), keys::changes));
    }
    dehydrated_routes(config);
}

/// Dehydrated devices (MSC3814), under the MSC's unstable prefix only.
fn dehydrated_routes(config: &mut web::ServiceConfig) {
    use dehydrated::PREFIX;
    config
        .service(
            web::resource(format!("{PREFIX}/dehydrated_device"))
                .route(web::get().to(dehydrated::get))
                .route(web::put().to(dehydrated::put))
                .route(web::delete().to(dehydrated::delete))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        )
        .service(post(
            &format!("{PREFIX}/dehydrated_device/{{deviceId}}/events"),
            dehydrated::events,
        ));
}

/// Server-side key backup, under `v3` and under `unstable`, where Synapse answers too and
/// older clients still call.
fn key_backup_routes(config: &mut web::ServiceConfig) {
    let small = |resource: actix_web::Resource| resource.app_data(ACCOUNT_BODY_LIMIT);
    for prefix in ["/_matrix/client/v3", "/_matrix/client/unstable"] {
        config
            .service(small(
                web::resource(format!("{prefix}/room_keys/version"))
                    .route(web::get().to(key_backup::get_current_version))
                    .route(web::post().to(key_backup::create_version))
                    .default_service(web::to(|| async { method_not_allowed("GET, POST") })),
            ))
            .service(small(
                web::resource(format!("{prefix}/room_keys/version/{{version}}"))
                    .route(web::get().to(key_backup::get_version))
                    .route(web::put().to(key_backup::update_version))
                    .route(web::delete().to(key_backup::delete_version))
                    .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
            ))
            .service(
                web::resource(format!("{prefix}/room_keys/keys"))
                    .route(web::get().to(key_backup::get_all_keys))
                    .route(web::put().to(key_backup::put_all_keys))
                    .route(web::delete().to(key_backup::delete_all_keys))
                    .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
            )
            .service(
                web::resource(format!("{prefix}/room_keys/keys/{{roomId}}"))
                    .route(web::get().to(key_backup::get_room_keys))
                    .route(web::put().to(key_backup::put_room_keys))
                    .route(web::delete().to(key_backup::delete_room_keys))
                    .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
            )
            .service(
                web::resource(format!("{prefix}/room_keys/keys/{{roomId}}/{{sessionId}}"))
                    .route(web::get().to(key_backup::get_session_key))
                    .route(web::put().to(key_backup::put_session_key))
                    .route(web::delete().to(key_backup::delete_session_key))
                    .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
            );
    }
}

/// The content repository's routes (uploads read their own bodies: see `api::media`).
fn media_routes(config: &mut web::ServiceConfig) {
    config
        .service(get("/_matrix/client/v1/media/config", media::config))
        .service(get("/_matrix/media/v3/config", media::config))
        .service(get(
            "/_matrix/client/v1/media/download/{serverName}/{mediaId}",
            media::download,
        ))
        .service(get(
            "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}",
            media::download_named,
        ))
        .service(get(
            "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}",
            media::thumbnail,
        ))
        .service(post("/_matrix/media/v3/upload", media::upload))
        .service(post("/_matrix/media/v1/create", media::create))
        .service(put(
            "/_matrix/media/v3/upload/{serverName}/{mediaId}",
            media::upload_to,
        ))
        .service(get(
            "/_matrix/media/v3/download/{serverName}/{mediaId}",
            media::frozen,
        ))
        .service(get(
            "/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}",
            media::frozen,
        ))
        .service(get(
            "/_matrix/media/v3/thumbnail/{serverName}/{mediaId}",
            media::frozen,
        ));
}
