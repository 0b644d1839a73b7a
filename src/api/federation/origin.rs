//! Who is asking, for federation endpoints: [`FederationOrigin`] (requests without a body)
//! and [`SignedJson`] (requests with one) check the `X-Matrix` signatures and give the handler
//! the origin server. Every failure is `401 M_UNAUTHORIZED`, as the spec asks for a wrong
//! destination; the message says what was wrong, the log says more.
//!
//! A stranger is refused as cheaply as we can: the header is checked and the origin's key
//! found *before* a byte of the body is read, so a request naming an origin without a usable
//! key (or one whose key server never answers) holds no body at all. Only then is the body
//! read, within its endpoint's cap and time limit and counted against the server-wide budget
//! of unauthenticated bytes, and its signature checked over canonical JSON written straight
//! from the text (`matrix::canonical_bytes`, about twice the body at most, where a
//! `serde_json::Value` tree of it took about 17 times). Once verified, the request takes one
//! of its origin's few places (one for a transaction) for as long as it is handled; taking it
//! before verification would let anyone who names an origin use up that origin's places.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use ruma::OwnedServerName;
use serde::de::DeserializeOwned;

use crate::api::app::Services;
use crate::api::json::{BodyReader, parse_body};
use crate::error::{Error, ErrorKind};
use crate::federation::auth::XMatrix;
use crate::matrix::canonical_bytes::canonical_from_slice;
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
        Box::pin(async move {
            let app = services(&req)?;
            let signer = Signer::from_request(&req)?;
            let keys = signer.keys(&app).await?;
            signer.verify(&req, &keys, None)?;
            signer.enter(&req, &app)
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for SignedJson<T> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        // Checked now: a declared length over the cap is refused before anything else.
        let reader = BodyReader::new(&req, true);
        let payload = payload.take();
        Box::pin(async move {
            let app = services(&req)?;
            let reader = reader?;
            let signer = Signer::from_request(&req)?;
            let keys = signer.keys(&app).await?;
            let mut body = reader.read(payload).await?;
            let text: &[u8] = if body.bytes.iter().all(u8::is_ascii_whitespace) {
                b"{}"
            } else {
                &body.bytes
            };
            let canonical = canonical_from_slice(text).map_err(|err| json_error(&err))?;
            signer.verify(&req, &keys, Some(&canonical))?;
            drop(canonical);
            let parsed = parse_body(&body.bytes)?;
            body.authenticated();
            drop(body);
            let origin = signer.enter(&req, &app)?;
            Ok(SignedJson {
                origin: origin.0,
                body: parsed,
            })
        })
    }
}

fn services(req: &HttpRequest) -> Result<web::Data<Services>, Error> {
    req.app_data::<web::Data<Services>>()
        .cloned()
        .ok_or_else(|| Error::internal("no application state"))
}

/// The same classes as [`parse_body`]: text that is not JSON, and JSON that canonical JSON
/// cannot hold (fractions, integers out of range), which no signature can cover.
fn json_error(err: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    match err.classify() {
        Category::Data => Error::new(ErrorKind::BadJson, format!("Invalid request body: {err}")),
        Category::Syntax | Category::Eof | Category::Io => Error::new(
            ErrorKind::NotJson,
            format!("The request body is not valid JSON: {err}"),
        ),
    }
}

/// A request's `X-Matrix` headers, checked for consistency but not yet verified.
struct Signer {
    origin: String,
    headers: Vec<XMatrix>,
}

impl Signer {
    /// Every header must name the same origin and, when it names one, us as destination.
    fn from_request(req: &HttpRequest) -> Result<Signer, Error> {
        let app = services(req)?;
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
        Ok(Signer { origin, headers })
    }

    /// The public key of each header we can get one for; at least one, or the request is
    /// refused (before its body is read).
    async fn keys(&self, app: &Services) -> Result<Vec<(usize, [u8; 32])>, Error> {
        let mut keys = Vec::new();
        for (index, header) in self.headers.iter().enumerate() {
            match app
                .federation
                .request_key(&self.origin, header.key.as_str(), now_ms())
                .await
            {
                Ok(key) => keys.push((index, key)),
                Err(err) => {
                    tracing::debug!(origin = %self.origin, key = %header.key, "no usable key: {err}");
                }
            }
        }
        if keys.is_empty() {
            return Err(unauthorized("Unknown or expired signing key"));
        }
        Ok(keys)
    }

    /// Each signature whose key we have must verify over the request and its canonical body.
    fn verify(
        &self,
        req: &HttpRequest,
        keys: &[(usize, [u8; 32])],
        content: Option<&[u8]>,
    ) -> Result<(), Error> {
        let app = services(req)?;
        let ours = app.config.server.server_name.to_string();
        let uri = req
            .uri()
            .path_and_query()
            .map_or(req.path(), |target| target.as_str());
        let method = req.method().as_str();
        for (index, key) in keys {
            let header = &self.headers[*index];
            if let Err(err) = header.verify_canonical(method, uri, &ours, content, key) {
                tracing::info!(origin = %self.origin, key = %header.key, "refused a federation request: {err}");
                return Err(unauthorized("Invalid signature"));
            }
        }
        // The keys verified a request of their server: now worth keeping on disk (keys
        // fetched for a name nobody signs with stay in a small in-memory cache only).
        if let Err(err) = app.federation.confirm_keys(&self.origin, now_ms()) {
            tracing::warn!(origin = %self.origin, "could not store the origin's keys: {err}");
        }
        Ok(())
    }

    /// Takes one of the verified origin's places for the rest of the request (kept in the
    /// request's extensions, which live until the answer is sent).
    fn enter(self, req: &HttpRequest, app: &Services) -> Result<FederationOrigin, Error> {
        let origin =
            OwnedServerName::try_from(self.origin).map_err(|_| unauthorized("Invalid origin"))?;
        let transaction = req.path().starts_with("/_matrix/federation/v1/send/");
        let slot = app.strangers.enter_origin(origin.as_str(), transaction)?;
        req.extensions_mut().insert(slot);
        Ok(FederationOrigin(origin))
    }
}

fn unauthorized(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Unauthorized, message)
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
