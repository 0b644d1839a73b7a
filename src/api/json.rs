//! [`MatrixJson`]: the JSON body extractor. It tells apart the spec's two JSON errors
//! (`M_NOT_JSON`: not JSON at all; `M_BAD_JSON`: JSON of the wrong shape), stops reading at
//! the body limit (`413 M_TOO_LARGE`), and does not care about `Content-Type`, which real
//! clients do not always send. An empty body reads as `{}`, as several endpoints allow.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};

/// The largest body accepted, from `limits.max_request_body_bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// A request body parsed as JSON into `T`.
#[derive(Debug)]
pub(crate) struct MatrixJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for MatrixJson<T> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<BodyLimit>()
            .map_or(1024 * 1024, |limit| limit.0);
        let mut payload = payload.take();
        Box::pin(async move {
            let mut body = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(payload_error)?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            parse_body(&body).map(MatrixJson)
        })
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

fn payload_error(err: PayloadError) -> Error {
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
