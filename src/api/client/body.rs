//! Two JSON body extractors for client endpoints that [`MatrixJson`](crate::api::MatrixJson)
//! does not fit. Both read the body as it does (stopping at the route's [`BodyLimit`]) and
//! parse it with the same error codes ([`parse_body`]).
//!
//! - [`RequiredJson`]: an endpoint whose body *is* the content (an event's content on
//!   `/send`) has no body to leave out, so an empty one is `400 M_NOT_JSON`, not `{}`.
//! - [`UiaJson`]: an endpoint behind user-interactive auth also gets a digest of its body
//!   without the `auth` object, so a completed auth session authorizes this body only (the
//!   spec: a client resubmits "the same request" with `auth` added at each stage).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::api::json::{BodyLimit, parse_body};
use crate::error::{Error, ErrorKind};

/// A request body that must be present, parsed as JSON into `T`.
#[derive(Debug)]
pub(crate) struct RequiredJson<T>(pub T);

/// A request body parsed as JSON into `T`, with the digest of the body without its `auth`
/// member (see [`body_digest`]).
#[derive(Debug)]
pub(crate) struct UiaJson<T> {
    pub(crate) body: T,
    pub(crate) digest: String,
}

impl<T: DeserializeOwned + 'static> FromRequest for RequiredJson<T> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let read = read_body(req, payload);
        Box::pin(async move {
            let body = read.await?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(Error::new(
                    ErrorKind::NotJson,
                    "This endpoint needs a JSON body",
                ));
            }
            parse_body(&body).map(RequiredJson)
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for UiaJson<T> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let read = read_body(req, payload);
        Box::pin(async move {
            let bytes = read.await?;
            let body = parse_body(&bytes)?;
            let digest = body_digest(&parse_body(&bytes)?);
            Ok(UiaJson { body, digest })
        })
    }
}

/// The SHA-256 (unpadded base64) of `body`'s canonical form without its top-level `auth`:
/// the same for every stage of one request, different for any other body. Keys are
/// sorted, so a client that orders them differently between stages still matches.
pub(crate) fn body_digest(body: &serde_json::Value) -> String {
    let mut body = body.clone();
    if let Some(members) = body.as_object_mut() {
        members.remove("auth");
    }
    let text = serde_json::to_vec(&sorted(body)).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &text);
    crate::matrix::crypto::encode_base64(digest.as_ref())
}

/// `value` with every object's keys in sorted order, whether or not `serde_json` keeps
/// insertion order (a dependency may turn `preserve_order` on). Floats, which canonical
/// JSON would refuse, are kept: this text is only hashed.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(members) => {
            let mut members: Vec<(String, Value)> = members.into_iter().collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                members
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Event content as canonical JSON will sign it: numbers written as `-0` or with an
/// exponent (`1e3`) are integers to the spec (appendices, "Canonical JSON": `-0` encodes as
/// `0`), so they are stored as such; fractions and integers out of range are `M_BAD_JSON`.
pub(crate) fn event_content(
    content: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let canonical = crate::matrix::canonical_json::from_json(serde_json::Value::Object(content))
        .map_err(|err| Error::new(ErrorKind::BadJson, format!("Invalid content: {err}")))?;
    match serde_json::Value::from(canonical) {
        serde_json::Value::Object(content) => Ok(content),
        _ => Err(Error::new(ErrorKind::BadJson, "Content must be an object")),
    }
}

/// Reads the whole body, refusing it with `413 M_TOO_LARGE` past the route's limit.
fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> impl Future<Output = Result<BytesMut, Error>> + 'static {
    let limit = req
        .app_data::<BodyLimit>()
        .map_or(1024 * 1024, |limit| limit.0);
    let mut payload = payload.take();
    async move {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|err| {
                Error::new(
                    ErrorKind::NotJson,
                    format!("Could not read the request body: {err}"),
                )
            })?;
            if body.len() + chunk.len() > limit {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("The request body is larger than the limit of {limit} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_digest_ignores_auth_and_key_order_but_not_the_rest() {
        let first = body_digest(&json!({ "new_password": "a", "logout_devices": true }));
        let staged = body_digest(&json!({
            "logout_devices": true, "new_password": "a", "auth": { "session": "s" }
        }));
        assert_eq!(first, staged);
        let other = body_digest(&json!({ "new_password": "b", "logout_devices": true }));
        assert_ne!(first, other);
    }
}
