//! HTTP: the actix application. Handlers are thin (extract, call a service, respond), one file
//! per area of the spec. Every answer is JSON; every route that exists answers other methods
//! with `405 M_UNRECOGNIZED`, and every route that does not with `404 M_UNRECOGNIZED`.

pub mod client;
pub mod federation;
pub mod json;
pub mod keys;
pub mod middleware;
pub mod well_known;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpResponse, Route, web};

use crate::error::Error;
use crate::state::AppState;

pub use json::{BodyLimit, MatrixJson};

/// The whole application, as each worker builds it.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let body_limit = BodyLimit(state.config.limits.max_request_body_bytes);
    App::new()
        .app_data(state)
        .app_data(body_limit)
        .configure(routes)
        .default_service(web::to(unrecognized))
        .wrap(actix_web::middleware::from_fn(middleware::limit_body))
        .wrap(actix_web::middleware::from_fn(middleware::cors))
        .wrap(actix_web::middleware::from_fn(middleware::log_request))
}

fn routes(config: &mut web::ServiceConfig) {
    config
        .service(resource(
            "/_matrix/client/versions",
            web::get().to(client::versions::get),
        ))
        .service(resource(
            "/_matrix/federation/v1/version",
            web::get().to(federation::version::get),
        ))
        .service(resource(
            "/_matrix/key/v2/server",
            web::get().to(keys::get_server_keys),
        ))
        .service(resource(
            "/.well-known/matrix/client",
            web::get().to(well_known::client),
        ))
        .service(resource(
            "/.well-known/matrix/server",
            web::get().to(well_known::server),
        ));
}

/// A route that answers methods it does not know with `405 M_UNRECOGNIZED`.
fn resource(path: &str, route: Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(method_not_allowed))
}

async fn unrecognized() -> Result<HttpResponse, Error> {
    Err(Error::unrecognized())
}

async fn method_not_allowed() -> Result<HttpResponse, Error> {
    Err(Error::method_not_allowed())
}
