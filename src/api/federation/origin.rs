//! Who is asking, for federation endpoints: [`FederationOrigin`] (requests without a body)
//! and [`SignedJson`] (requests with one) check the `X-Matrix` signatures and give the handler
//! the origin server. Every failure is `401 M_UNAUTHORIZED`, as the spec asks for a wrong
//! destination; the message says what was wrong, the log says more.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt as _;
use ruma::OwnedServerName;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::BodyLimit;
use crate::api::app::Services;
use crate::error::{Error, ErrorKind};
use crate::federation::auth::XMatrix;
use crate::matrix::time::now_ms;

/// The server that signed a request without a body (`GET`, `DELETE`).
#[derive(Debug, Clone)]
pub(crate) struct FederationOrigin(pub OwnedServerName);

/// A signed request's JSON body, parsed as `T`, and the server that signed it.
#[derive(Debug)]
pub(crate) struct SignedJson<T> {
    pub origin: OwnedServerName,
    pub(crate) body: T,
}

impl FromRequest for FederationOrigin {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate(&req, None).await.map(FederationOrigin) })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for SignedJson<T> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let limit = req
            .app_data::<BodyLimit>()
            .map_or(1024 * 1024, |limit| limit.0);
        let mut payload = payload.take();
        Box::pin(async move {
            let mut bytes = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|err| Error::new(ErrorKind::BadRequest, err.to_string()))?;
                if bytes.len() + chunk.len() > limit {
                    return Err(Error::new(ErrorKind::TooLarge, "Request body too large"));
                }
                bytes.extend_from_slice(&chunk);
            }
            let content: Value = crate::api::json::parse_body(&bytes)?;
            let origin = authenticate(&req, Some(&content)).await?;
            let body = serde_json::from_value(content).map_err(|err| {
                Error::new(ErrorKind::BadJson, format!("Invalid request body: {err}"))
            })?;
            Ok(SignedJson { origin, body })
        })
    }
}

fn unauthorized(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Unauthorized, message)
}

/// Checks every `X-Matrix` header of the request: all must name the same origin and, when
/// they name one, us as destination; each signature whose key we can get must verify, and
/// at least one must.
async fn authenticate(
    req: &HttpRequest,
    content: Option<&Value>,
) -> Result<OwnedServerName, Error> {
    let app = req
        .app_data::<web::Data<Services>>()
        .ok_or_else(|| Error::internal("no application state"))?;
    let headers = x_matrix_headers(req)?;
    let origin = headers[0].origin.clone();
    let ours = app.config.server.server_name.as_str();
    for header in &headers {
        if header.origin != origin {
            return Err(unauthorized("The X-Matrix headers name different origins"));
        }
        if header
            .destination
            .as_deref()
            .is_some_and(|destination| destination != ours)
        {
            return Err(unauthorized("The request is not for this server"));
        }
    }
    let uri = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |target| target.as_str());
    let method = req.method().as_str();
    let mut verified = false;
    for header in &headers {
        let key = app
            .federation
            .request_key(&origin, header.key.as_str(), now_ms())
            .await;
        let key = match key {
            Ok(key) => key,
            Err(err) => {
                tracing::debug!(origin, key = %header.key, "no usable key: {err}");
                continue;
            }
        };
        if let Err(err) = header.verify(method, uri, ours, content, &key) {
            tracing::info!(origin, key = %header.key, "refused a federation request: {err}");
            return Err(unauthorized("Invalid signature"));
        }
        verified = true;
    }
    if !verified {
        return Err(unauthorized("Unknown or expired signing key"));
    }
    OwnedServerName::try_from(origin).map_err(|_| unauthorized("Invalid origin"))
}

/// The request's `X-Matrix` headers; none, or a broken one, is an error.
fn x_matrix_headers(req: &HttpRequest) -> Result<Vec<XMatrix>, Error> {
    let mut found = Vec::new();
    // Several headers are allowed (one per key), but not so many that checking them is work.
    for value in req.headers().get_all(header::AUTHORIZATION).take(8) {
        let text = value
            .to_str()
            .map_err(|_| unauthorized("Malformed Authorization header"))?;
        match XMatrix::parse(text) {
            Ok(Some(parsed)) => found.push(parsed),
            Ok(None) => {}
            Err(err) => return Err(unauthorized(format!("Malformed X-Matrix header: {err}"))),
        }
    }
    if found.is_empty() {
        return Err(unauthorized("Missing X-Matrix authorization"));
    }
    Ok(found)
}
