//! HTTP: the actix application. Handlers are thin (extract, call a service, respond), one file
//! per area of the spec. Every answer is JSON; every route that exists answers other methods
//! with `405 M_UNRECOGNIZED`, and every route that does not with `404 M_UNRECOGNIZED`.
//! Each area declares its own routes ([`client::routes`], [`federation::routes`]); this file
//! only puts them together, with the well-known files and the shared route helpers. Routes
//! are declared under `v3` only: [`legacy`] serves the old `r0` paths with them.

pub(crate) mod admin;
pub(crate) mod app;
pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod federation;
pub(crate) mod json;
pub(crate) mod keys;
pub(crate) mod legacy;
pub(crate) mod media;
pub mod metrics;
pub(crate) mod middleware;
pub(crate) mod path;
pub(crate) mod ratelimit;
pub(crate) mod strangers;
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
    let body_limit = BodyLimit(json::DEFAULT_BODY_LIMIT);
    let federation_enabled = app.config.federation.enabled;
    App::new()
        .app_data(app)
        .app_data(body_limit)
        .app_data(web::QueryConfig::default().error_handler(|err, _| parameter_error(&err).into()))
        .app_data(web::PathConfig::default().error_handler(|err, _| parameter_error(&err).into()))
        .configure(move |config| routes(config, federation_enabled))
        .default_service(web::to(unrecognized))
        .wrap(actix_web::middleware::from_fn(legacy::serve_r0_as_v3))
        .wrap(actix_web::middleware::from_fn(
            middleware::close_unread_chunked_body,
        ))
        .wrap(actix_web::middleware::from_fn(middleware::limit_address))
        .wrap(actix_web::middleware::from_fn(middleware::limit_body))
        .wrap(actix_web::middleware::from_fn(middleware::cors))
        .wrap(actix_web::middleware::from_fn(middleware::log_request))
}

/// Account and device requests are small; a tighter body limit keeps a hostile client from
/// making the server parse megabytes before anything is checked.
pub(crate) const ACCOUNT_BODY_LIMIT: BodyLimit = BodyLimit(64 * 1024);

/// Every route Hearth serves: each area's own, then the well-known files. Federation routes
/// exist only while federation is enabled.
fn routes(config: &mut web::ServiceConfig, federation_enabled: bool) {
    client::routes(config);
    admin::routes(config);
    config
        .service(get("/.well-known/matrix/client", well_known::client))
        .service(get("/.well-known/matrix/server", well_known::server));
    if federation_enabled {
        federation::routes(config);
    }
}

/// A `PUT` route; other methods get `405 M_UNRECOGNIZED` with an `Allow` header.
pub(crate) fn put<H, Args>(path: &str, handler: H) -> actix_web::Resource
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
pub(crate) fn post<H, Args>(path: &str, handler: H) -> actix_web::Resource
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
pub(crate) fn get<H, Args>(path: &str, handler: H) -> actix_web::Resource
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

pub(crate) fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = Error::method_not_allowed().error_response();
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}
