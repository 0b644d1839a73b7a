//! Calls: TURN credentials for one-to-one calls (spec: client-server API, "Voice over IP")
//! and the MatrixRTC transports Element Call uses for group calls (MSC4143, with the
//! LiveKit transport of MSC4195), both from the `[voip]` config section.

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::api::app::Services;
use crate::api::auth::Authenticated;
use crate::config::VoipConfig;
use crate::error::Error;

/// # GET /_matrix/client/v3/voip/turnServer
///
/// With a shared secret, coturn's REST credentials (its `use-auth-secret` mode): valid until
/// `now + ttl`, checked by coturn without asking us. With a static user, that user. With
/// nothing configured, an empty object, which clients read as "no TURN server".
pub(crate) async fn turn_server(
    app: web::Data<Services>,
    auth: Authenticated,
) -> Result<HttpResponse, Error> {
    let now_seconds = crate::matrix::time::now_ms() / 1000;
    let answer = turn_answer(&app.config.voip, auth.user_id.as_str(), now_seconds);
    Ok(HttpResponse::Ok().json(answer))
}

/// # GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports
///
/// The LiveKit service clients get call tokens from, when one is configured.
pub(crate) async fn rtc_transports(
    app: web::Data<Services>,
    _auth: Authenticated,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(json!({ "rtc_transports": rtc_foci(&app.config.voip) })))
}

/// The LiveKit transports (`rtc_transports`, and `org.matrix.msc4143.rtc_foci` in
/// `/.well-known/matrix/client`): empty without `voip.livekit_url`.
pub(crate) fn rtc_foci(voip: &VoipConfig) -> Vec<Value> {
    voip.livekit_url
        .iter()
        .map(|url| json!({ "type": "livekit", "livekit_service_url": url }))
        .collect()
}

fn turn_answer(voip: &VoipConfig, user_id: &str, now_seconds: u64) -> Value {
    let ttl = voip.turn_ttl();
    let (username, password) = match (&voip.turn_shared_secret, &voip.turn_username) {
        (Some(secret), _) => {
            let username = format!("{}:{user_id}", now_seconds + ttl);
            let password = coturn_password(secret, &username);
            (username, password)
        }
        (None, Some(username)) => (
            username.clone(),
            voip.turn_password.clone().unwrap_or_default(),
        ),
        (None, None) => return json!({}),
    };
    json!({
        "username": username,
        "password": password,
        "uris": voip.turn_uris,
        "ttl": ttl,
    })
}

/// coturn's REST API password: base64(HMAC-SHA1(secret, username)).
fn coturn_password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coturn_password_matches_a_known_value() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        assert_eq!(
            coturn_password("Jefe", "what do ya want for nothing?"),
            base64::engine::general_purpose::STANDARD
                .encode(hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"))
        );
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn nothing_configured_is_an_empty_answer() {
        assert_eq!(turn_answer(&VoipConfig::default(), "@a:b", 0), json!({}));
    }
}
