//! Dehydrated devices (MSC3814, under `/_matrix/client/unstable/org.matrix.msc3814.v1/`,
//! as Element X and matrix-rust-sdk call them). The rules are in
//! [`crate::users::dehydrated`].

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::client::body::RequiredJson;
use crate::error::Error;
use crate::users::dehydrated::NewDehydrated;
use crate::users::keys::Upload;

/// The MSC's path prefix.
pub(crate) const PREFIX: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1";

#[derive(Debug, Deserialize)]
pub(crate) struct PutBody {
    device_id: String,
    device_data: Map<String, Value>,
    #[serde(default)]
    initial_device_display_name: Option<String>,
    #[serde(default)]
    device_keys: Option<Map<String, Value>>,
    #[serde(default)]
    one_time_keys: Option<Map<String, Value>>,
    #[serde(default)]
    fallback_keys: Option<Map<String, Value>>,
}

/// # PUT …/dehydrated_device
pub(crate) async fn put(
    app: web::Data<Services>,
    auth: Authenticated,
    RequiredJson(body): RequiredJson<PutBody>,
) -> Result<HttpResponse, Error> {
    let new = NewDehydrated {
        device_id: body.device_id,
        device_data: body.device_data,
        display_name: body.initial_device_display_name,
        keys: Upload {
            device_keys: body.device_keys,
            one_time_keys: body.one_time_keys.unwrap_or_default(),
            fallback_keys: body.fallback_keys.unwrap_or_default(),
        },
    };
    let device_id = app.users.put_dehydrated_device(&auth.user_id, new).await?;
    Ok(HttpResponse::Ok().json(json!({ "device_id": device_id })))
}

/// # GET …/dehydrated_device
pub(crate) async fn get(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let record = app
        .users
        .dehydrated_device(&auth.user_id)?
        .ok_or_else(|| Error::not_found("No dehydrated device"))?;
    Ok(HttpResponse::Ok().json(json!({
        "device_id": record.device_id,
        "device_data": record.device_data,
    })))
}

/// # DELETE …/dehydrated_device
pub(crate) async fn delete(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let device_id = app.users.delete_dehydrated_device(&auth.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "device_id": device_id })))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsBody {
    #[serde(default)]
    next_batch: Option<String>,
}

/// # POST …/dehydrated_device/{deviceId}/events
///
/// The device's to-device messages, a page at a time; the client asks again with the
/// `next_batch` it got (which deletes the page it has) until a page is empty.
pub(crate) async fn events(
    app: web::Data<Services>,
    auth: Authenticated,
    device_id: web::Path<String>,
    MatrixJson(body): MatrixJson<EventsBody>,
) -> Result<HttpResponse, Error> {
    let (events, next_batch) = app.users.dehydrated_events(
        &auth.user_id,
        &device_id,
        body.next_batch.as_deref(),
        app.rooms.stream.visible_position(),
    )?;
    Ok(HttpResponse::Ok().json(json!({
        "events": events,
        "next_batch": next_batch.to_string(),
    })))
}
