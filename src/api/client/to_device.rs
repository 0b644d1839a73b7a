//! Send-to-device messaging (spec: client-server API, "Send-to-Device messaging").

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::RequiredJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::error::Error;

#[derive(Debug, Deserialize)]
pub(crate) struct SendToDeviceBody {
    messages: Map<String, Value>,
}

/// # PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
///
/// The same transaction ID from the same device sends once: a retry gets `{}` again.
pub(crate) async fn send_to_device(
    app: web::Data<Services>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
    RequiredJson(body): RequiredJson<SendToDeviceBody>,
) -> Result<HttpResponse, Error> {
    let (kind, txn_id) = path.into_inner();
    app.users
        .send_to_device(
            &app.rooms.stream,
            &auth.user_id,
            &auth.device_id,
            &txn_id,
            &kind,
            &body.messages,
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
