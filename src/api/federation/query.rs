//! Queries other servers make about our users (spec: "Querying for information").

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::origin::FederationOrigin;
use crate::api::app::Services;
use crate::error::{Error, ErrorKind};

#[derive(Debug, Deserialize)]
pub(crate) struct ProfileQuery {
    user_id: String,
    field: Option<String>,
}

/// # GET /_matrix/federation/v1/query/profile
pub(crate) async fn profile(
    app: web::Data<Services>,
    origin: FederationOrigin,
    query: web::Query<ProfileQuery>,
) -> Result<HttpResponse, Error> {
    let user_id = ruma::UserId::parse(&query.user_id)
        .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid user_id"))?;
    if user_id.server_name() != app.config.server.server_name {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The user is not on this server",
        ));
    }
    tracing::debug!(origin = %origin.0, user = %user_id, "profile query");
    let profile = app
        .users
        .profile(&user_id)?
        .ok_or_else(|| Error::not_found("No such user"))?;
    // A field the user has not set is a `404`, as the client API's
    // `GET /profile/{userId}/{keyName}` answers: an empty object would read as "no such field".
    let answer: Map<String, Value> = match &query.field {
        Some(field) => {
            let value = profile
                .get(field)
                .cloned()
                .ok_or_else(|| Error::not_found("The user has not set that profile field"))?;
            Map::from_iter([(field.clone(), value)])
        }
        None => profile,
    };
    Ok(HttpResponse::Ok().json(answer))
}

#[derive(Debug, Deserialize)]
pub(crate) struct DirectoryQuery {
    room_alias: String,
}

/// # GET /_matrix/federation/v1/query/directory
pub(crate) async fn directory(
    app: web::Data<Services>,
    origin: FederationOrigin,
    query: web::Query<DirectoryQuery>,
) -> Result<HttpResponse, Error> {
    tracing::debug!(origin = %origin.0, alias = %query.room_alias, "directory query");
    let answer = crate::federation::directory::resolve_alias(&app.federation, &query.room_alias)?;
    Ok(HttpResponse::Ok().json(answer))
}

/// # GET /_matrix/federation/v1/query/{queryType}
///
/// The generic query endpoint, for the query types not defined (those that are have their
/// own routes, registered first): the caller is authenticated, then told there is no such
/// query here.
pub(crate) async fn unknown(
    _origin: FederationOrigin,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    Err(Error::not_found(format!(
        "No query of type {:?} here",
        path.into_inner()
    )))
}
