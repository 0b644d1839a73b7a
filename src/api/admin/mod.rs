//! The server administration API of Synapse (`/_synapse/admin/…`), the part that existing
//! tools use (the synapse-admin web UI, scripts): the same paths and JSON shapes, so they
//! work against Hearth unchanged. Every endpoint is for server administrators only: `401`
//! without a valid access token, `403 M_FORBIDDEN` for anyone else ([`ServerAdmin`]).
//! One file per area: [`users`], [`tokens`] (registration tokens), [`rooms`].

pub(crate) mod media;
pub(crate) mod rooms;
pub(crate) mod tokens;
pub(crate) mod users;

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use ruma::OwnedUserId;
use serde_json::json;

use super::app::Services;
use super::auth::Authenticated;
use super::{ACCOUNT_BODY_LIMIT, get, method_not_allowed, post};
use crate::error::{Error, ErrorKind};

/// The most entries one page of a list holds, whatever `limit` asks.
pub(crate) const MAX_PAGE: usize = 1000;

/// An authenticated server administrator.
pub(crate) struct ServerAdmin(pub(crate) Authenticated);

impl FromRequest for ServerAdmin {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let admin = Authenticated::from_request(req, payload)
            .into_inner()
            .and_then(|auth| {
                let app = req
                    .app_data::<web::Data<Services>>()
                    .ok_or_else(|| Error::internal("no application state"))?;
                if app.users.is_admin(&auth.user_id)? {
                    Ok(ServerAdmin(auth))
                } else {
                    Err(Error::new(
                        ErrorKind::Forbidden,
                        "You are not a server admin",
                    ))
                }
            });
        ready(admin)
    }
}

/// A user ID from the path that must be one of ours (`400 M_INVALID_PARAM` otherwise, as
/// Synapse answers: only local accounts are administered here).
pub(crate) fn local_user(app: &Services, text: &str) -> Result<OwnedUserId, Error> {
    let user: OwnedUserId = super::path::id(text)?;
    if user.server_name() != app.config.server.server_name {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "Only local users can be administered here",
        ));
    }
    Ok(user)
}

/// The page `[from, from + limit)` of `items`, with Synapse's paging fields: `total`, and
/// `next_token` when more follow.
pub(crate) fn page<T>(items: Vec<T>, from: usize, limit: usize) -> (Vec<T>, usize, Option<usize>) {
    let total = items.len();
    let limit = limit.min(MAX_PAGE);
    let page: Vec<T> = items.into_iter().skip(from).take(limit).collect();
    let next = (from.saturating_add(page.len()) < total).then(|| from + page.len());
    (page, total, next)
}

/// # GET /_synapse/admin/v1/server_version
async fn server_version(_admin: ServerAdmin) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "server_version": format!("{} {}", crate::SERVER_SOFTWARE, crate::VERSION),
    }))
}

/// The administration API's routes.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    let small = |resource: actix_web::Resource| resource.app_data(ACCOUNT_BODY_LIMIT);
    config
        .service(get("/_synapse/admin/v1/server_version", server_version))
        .service(
            web::resource("/_synapse/admin/v1/users/{userId}/media")
                .route(web::get().to(media::list))
                .route(web::delete().to(media::delete_for_user))
                .default_service(web::to(|| async { method_not_allowed("GET, DELETE") })),
        )
        .service(
            web::resource("/_synapse/admin/v1/media/{serverName}/{mediaId}")
                .route(web::delete().to(media::delete_one))
                .default_service(web::to(|| async { method_not_allowed("DELETE") })),
        )
        .service(get("/_synapse/admin/v2/users", users::list))
        .service(small(
            web::resource("/_synapse/admin/v2/users/{userId}")
                .route(web::get().to(users::query))
                .route(web::put().to(users::create_or_modify))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT") })),
        ))
        .service(small(post(
            "/_synapse/admin/v1/deactivate/{userId}",
            users::deactivate,
        )))
        .service(small(post(
            "/_synapse/admin/v1/reset_password/{userId}",
            users::reset_password,
        )))
        .service(get("/_synapse/admin/v1/whois/{userId}", users::whois))
        .service(get(
            "/_synapse/admin/v2/users/{userId}/devices",
            users::devices,
        ))
        .service(small(post(
            "/_synapse/admin/v2/users/{userId}/delete_devices",
            users::delete_devices,
        )))
        .service(small(
            web::resource("/_synapse/admin/v2/users/{userId}/devices/{deviceId}")
                .route(web::get().to(users::device))
                .route(web::put().to(users::rename_device))
                .route(web::delete().to(users::delete_device))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        ))
        .service(get("/_synapse/admin/v1/registration_tokens", tokens::list))
        .service(small(post(
            "/_synapse/admin/v1/registration_tokens/new",
            tokens::create,
        )))
        .service(small(
            web::resource("/_synapse/admin/v1/registration_tokens/{token}")
                .route(web::get().to(tokens::get))
                .route(web::put().to(tokens::update))
                .route(web::delete().to(tokens::delete))
                .default_service(web::to(|| async { method_not_allowed("GET, PUT, DELETE") })),
        ));
    rooms::routes(config);
}
