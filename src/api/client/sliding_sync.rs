//! Simplified sliding sync (MSC4186), under the unstable prefix Synapse serves it at and
//! Element X asks for.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::api::MatrixJson;
use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::api::json::BodyLimit;
use crate::error::{Error, ErrorKind};
use crate::sync::sliding::{Asker, SlidingRequest, sliding_sync as answer};

/// A sliding sync body is a few kilobytes (Element X's, with subscriptions, ~5 KiB).
pub(crate) const BODY_LIMIT: BodyLimit = BodyLimit(256 * 1024);

#[derive(Debug, Deserialize)]
pub(crate) struct SlidingQuery {
    pos: Option<String>,
    timeout: Option<u64>,
    set_presence: Option<String>,
}

/// # POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync
///
/// `pos` and `timeout` come in the query (matrix-rust-sdk) or in the body (the MSC's
/// latest text); the query wins.
pub(crate) async fn sliding_sync(
    app: web::Data<Services>,
    auth: Authenticated,
    query: web::Query<SlidingQuery>,
    MatrixJson(mut request): MatrixJson<SlidingRequest>,
) -> Result<HttpResponse, Error> {
    let query = query.into_inner();
    if query.pos.is_some() {
        request.pos = query.pos;
    }
    let timeout = query.timeout.or(request.timeout).unwrap_or(0);
    match query.set_presence.as_deref() {
        None | Some("online") => app
            .sync
            .ephemeral
            .set_presence(&auth.user_id, "online", None),
        Some("unavailable") => {
            app.sync
                .ephemeral
                .set_presence(&auth.user_id, "unavailable", None);
        }
        Some("offline") => {}
        Some(other) => {
            return Err(Error::new(
                ErrorKind::InvalidParam,
                format!("Unknown presence {other}"),
            ));
        }
    }
    let asker = Asker {
        user_id: &auth.user_id,
        device_id: &auth.device_id,
        timeout: Duration::from_millis(timeout),
    };
    let body = answer(&app.sync, &asker, &request).await?;
    Ok(HttpResponse::Ok().json(body))
}
