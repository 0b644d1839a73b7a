//! Devices (spec: client-server API, "Device management").

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::account::require_password;
use super::session::valid_device_field;
use crate::accounts::sessions::{self, Device};
use crate::api::MatrixJson;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::state::AppState;

fn device_json(device: &Device) -> Value {
    let mut value = json!({ "device_id": device.device_id });
    if let Some(name) = &device.display_name {
        value["display_name"] = json!(name);
    }
    if let Some(ip) = &device.last_seen_ip {
        value["last_seen_ip"] = json!(ip);
    }
    if let Some(ts) = device.last_seen_ts {
        value["last_seen_ts"] = json!(ts);
    }
    value
}

/// # GET /_matrix/client/v3/devices
pub async fn list(state: web::Data<AppState>, auth: Authenticated) -> Result<HttpResponse, Error> {
    let devices: Vec<Value> = sessions::list_devices(&state.storage, &auth.user_id)?
        .iter()
        .map(device_json)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "devices": devices })))
}

/// # GET /_matrix/client/v3/devices/{deviceId}
pub async fn get(
    state: web::Data<AppState>,
    auth: Authenticated,
    device_id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let device = sessions::get_device(&state.storage, &auth.user_id, &device_id)?
        .ok_or_else(|| Error::not_found("No such device"))?;
    Ok(HttpResponse::Ok().json(device_json(&device)))
}

#[derive(Debug, Deserialize)]
pub struct RenameRequest {
    display_name: Option<String>,
}

/// # PUT /_matrix/client/v3/devices/{deviceId}
pub async fn rename(
    state: web::Data<AppState>,
    auth: Authenticated,
    device_id: web::Path<String>,
    MatrixJson(body): MatrixJson<RenameRequest>,
) -> Result<HttpResponse, Error> {
    let display_name = body.display_name.map(valid_device_field).transpose()?;
    if !sessions::rename_device(&state.storage, &auth.user_id, &device_id, display_name)? {
        return Err(Error::not_found("No such device"));
    }
    state.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct DeleteRequest {
    auth: Option<Value>,
}

/// # DELETE /_matrix/client/v3/devices/{deviceId}
pub async fn delete(
    state: web::Data<AppState>,
    auth: Authenticated,
    device_id: web::Path<String>,
    MatrixJson(body): MatrixJson<DeleteRequest>,
) -> Result<HttpResponse, Error> {
    if sessions::get_device(&state.storage, &auth.user_id, &device_id)?.is_none() {
        return Err(Error::not_found("No such device"));
    }
    require_password(&state, &auth, body.auth.as_ref()).await?;
    sessions::remove_device(&state.storage, &auth.user_id, &device_id)?;
    state.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct DeleteManyRequest {
    auth: Option<Value>,
    devices: Vec<String>,
}

/// At most this many devices in one `delete_devices` request.
const MAX_DEVICES_PER_REQUEST: usize = 1000;

/// # POST /_matrix/client/v3/delete_devices
pub async fn delete_many(
    state: web::Data<AppState>,
    auth: Authenticated,
    MatrixJson(body): MatrixJson<DeleteManyRequest>,
) -> Result<HttpResponse, Error> {
    if body.devices.len() > MAX_DEVICES_PER_REQUEST {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("At most {MAX_DEVICES_PER_REQUEST} devices at a time"),
        ));
    }
    require_password(&state, &auth, body.auth.as_ref()).await?;
    for device_id in &body.devices {
        sessions::remove_device(&state.storage, &auth.user_id, device_id)?;
    }
    state.storage.flush().await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
