//! Reading request bodies. [`read_body`] is the one place a body is read: it refuses a
//! declared `Content-Length` over the endpoint's cap before reading anything, stops at the cap
//! (`413 M_TOO_LARGE`), gives up when the whole body has not arrived within
//! `limits.body_timeout_seconds` (`408`, connection closed: a slow sender holds nothing
//! longer), and counts an unauthenticated body's bytes against the server-wide budget
//! (`429 M_LIMIT_EXCEEDED` when it is spent).
//!
//! [`MatrixJson`] is the JSON body extractor on top. It tells apart the spec's two JSON
//! errors (`M_NOT_JSON`: not JSON at all; `M_BAD_JSON`: JSON of the wrong shape), and does
//! not care about `Content-Type`, which real clients do not always send. An empty body reads
//! as `{}`, as several endpoints allow.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::{self, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use crate::api::app::Services;
use crate::error::{Error, ErrorKind};

/// The largest body an endpoint accepts. The application sets [`DEFAULT_BODY_LIMIT`]; routes
/// that carry more (a federation transaction) or less (account requests) set their own, and
/// `limits.max_request_body_bytes` caps them all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// What an endpoint without its own cap accepts: a client request carries at most a few
/// events of 64 KiB (`createRoom`'s initial state) or a filter, push rule or account data
/// object, all far smaller than this.
pub(crate) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The body time limit when no services are around (unit tests of extractors).
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A request body parsed as JSON into `T`.
#[derive(Debug)]
pub(crate) struct MatrixJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for MatrixJson<T> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let reader = BodyReader::new(req, !carries_credentials(req));
        let payload = payload.take();
        Box::pin(async move {
            let body = reader?.read(payload).await?;
            // The bytes stay counted until parsing is done with them.
            parse_body(&body.bytes).map(MatrixJson)
        })
    }
}

/// A request with an access token is checked by the handler's `Auth` extractor, which runs
/// alongside the body and drops it when the token is wrong; one without (login, registration,
/// key queries) is a stranger's, and its body counts against the unauthenticated budget.
fn carries_credentials(req: &HttpRequest) -> bool {
    req.headers().contains_key(header::AUTHORIZATION)
        || req
            .query_string()
            .split('&')
            .any(|pair| pair.starts_with("access_token="))
}

/// A body as read, and the unauthenticated bytes it holds (given back on drop).
pub(crate) struct Body {
    pub(crate) bytes: BytesMut,
    held: Option<OwnedSemaphorePermit>,
}

impl Body {
    /// Gives the bytes back to the unauthenticated budget: the request is now known.
    pub(crate) fn authenticated(&mut self) {
        self.held = None;
    }
}

/// How one request's body is to be read, decided from the request before any of it is.
pub(crate) struct BodyReader {
    limit: usize,
    declared: Option<usize>,
    timeout: Duration,
    services: Option<web::Data<Services>>,
    unauthenticated: bool,
}

impl BodyReader {
    /// The rules for `req`'s body. A declared `Content-Length` over the cap is refused here,
    /// before a byte of the body is read.
    pub(crate) fn new(req: &HttpRequest, unauthenticated: bool) -> Result<BodyReader, Error> {
        let services = req.app_data::<web::Data<Services>>().cloned();
        let ceiling = services
            .as_ref()
            .map_or(usize::MAX, |app| app.config.limits.max_request_body_bytes);
        let limit = req
            .app_data::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT, |limit| limit.0)
            .min(ceiling);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large(limit));
        }
        Ok(BodyReader {
            limit,
            // Below the limit, so it fits.
            declared: declared.and_then(|length| usize::try_from(length).ok()),
            timeout: services
                .as_ref()
                .map_or(DEFAULT_BODY_TIMEOUT, |app| app.strangers.body_timeout),
            services,
            unauthenticated,
        })
    }

    /// Reads the whole body within the time limit.
    pub(crate) async fn read(self, payload: Payload) -> Result<Body, Error> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.read_all(payload))
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::RequestTimeout,
                    format!(
                        "The request body did not arrive within {} seconds",
                        timeout.as_secs()
                    ),
                ))
            })
    }

    async fn read_all(self, mut payload: Payload) -> Result<Body, Error> {
        // Reserved, not yet written: memory is only touched as bytes arrive.
        let mut body = Body {
            bytes: BytesMut::with_capacity(self.declared.unwrap_or(0)),
            held: None,
        };
        let budget = self
            .services
            .as_ref()
            .filter(|_| self.unauthenticated)
            .map(|app| &app.strangers);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(payload_error)?;
            if body.bytes.len() + chunk.len() > self.limit {
                return Err(too_large(self.limit));
            }
            if let Some(strangers) = budget {
                strangers.hold_bytes(&mut body.held, chunk.len())?;
            }
            body.bytes.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Parses a JSON body, mapping serde's error classes to the spec's error codes.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|err| {
        use serde_json::error::Category;
        match err.classify() {
            Category::Data => {
                Error::new(ErrorKind::BadJson, format!("Invalid request body: {err}"))
            }
            Category::Syntax | Category::Eof | Category::Io => Error::new(
                ErrorKind::NotJson,
                format!("The request body is not valid JSON: {err}"),
            ),
        }
    })
}

fn too_large(limit: usize) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("The request body is larger than the limit of {limit} bytes"),
    )
}

pub(crate) fn payload_error(err: PayloadError) -> Error {
    match err {
        PayloadError::Overflow => Error::new(ErrorKind::TooLarge, "The request body is too large"),
        other => Error::new(
            ErrorKind::NotJson,
            format!("Could not read the request body: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as actix_test;
    use actix_web::{App, HttpResponse, web};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
        #[serde(default)]
        count: u32,
    }

    async fn echo(MatrixJson(body): MatrixJson<Body>) -> HttpResponse {
        HttpResponse::Ok().json(serde_json::json!({ "name": body.name, "count": body.count }))
    }

    async fn call(body: &'static [u8]) -> (u16, serde_json::Value) {
        let app = actix_test::init_service(
            App::new()
                .app_data(BodyLimit(64))
                .route("/echo", web::post().to(echo)),
        )
        .await;
        let req = actix_test::TestRequest::post()
            .uri("/echo")
            .set_payload(body)
            .to_request();
        let res = actix_test::call_service(&app, req).await;
        let status = res.status().as_u16();
        let json = serde_json::from_slice(&actix_test::read_body(res).await).unwrap_or_default();
        (status, json)
    }

    #[actix_web::test]
    async fn well_formed_bodies_parse() {
        let (status, json) = call(br#"{"name": "alice", "count": 2}"#).await;
        assert_eq!(status, 200);
        assert_eq!(json["count"], 2);
    }

    #[actix_web::test]
    async fn malformed_json_is_not_json() {
        for body in [
            &b"{\"name\": "[..],
            b"not json",
            b"{\"name\":\"a\"} trailing",
            b"\xff\xfe",
        ] {
            let (status, json) = call(body).await;
            assert_eq!(status, 400);
            assert_eq!(json["errcode"], "M_NOT_JSON", "{body:?}");
        }
    }

    #[actix_web::test]
    async fn wrong_shapes_are_bad_json() {
        for body in [
            &br#"{"name": 5}"#[..],
            br#"[1, 2]"#,
            br#"{"count": 1}"#,
            br#"{"name":"a","x":1}"#,
            br#"{"name":"a","count":-1}"#,
        ] {
            let (status, json) = call(body).await;
            assert_eq!(status, 400);
            assert_eq!(json["errcode"], "M_BAD_JSON", "{body:?}");
        }
    }

    #[actix_web::test]
    async fn bodies_over_the_limit_are_too_large() {
        let (status, json) =
            call(br#"{"name": "a very long name that goes over the sixty-four byte limit"}"#).await;
        assert_eq!(status, 413);
        assert_eq!(json["errcode"], "M_TOO_LARGE");
    }

    #[test]
    fn error_messages_do_not_echo_long_values() {
        let body = format!(r#"{{"name": 5, "x": "{}"}}"#, "s".repeat(10_000));
        let err = parse_body::<Body>(body.as_bytes()).expect_err("wrong type");
        assert!(err.message.chars().count() < 300, "{}", err.message);
        let body = format!(r#"{{"name": "{}"#, "s".repeat(10_000));
        let err = parse_body::<Body>(body.as_bytes()).expect_err("unterminated");
        assert!(err.message.chars().count() < 300, "{}", err.message);
    }

    #[test]
    fn an_empty_body_reads_as_an_empty_object() {
        let value: serde_json::Value = parse_body(b"").expect("empty is {}");
        assert_eq!(value, serde_json::json!({}));
    }
}
