//! Middleware every request passes through: a log line without secrets, the CORS headers the
//! spec asks for (and pre-flight answers), and an early `413` for bodies declared too large.

use std::time::Instant;

use actix_web::HttpResponse;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;

use super::json::BodyLimit;
use crate::error::{Error, ErrorKind};

type Response<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

/// Logs method, path (never the query string: it may hold an access token), status and time.
pub(crate) async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let response = next.call(req).await;
    let micros = started.elapsed().as_micros();
    match &response {
        Ok(res) if res.status().is_server_error() => {
            tracing::warn!(%method, %path, status = res.status().as_u16(), micros, "request failed");
        }
        Ok(res) => {
            tracing::debug!(%method, %path, status = res.status().as_u16(), micros, "request");
        }
        Err(err) => tracing::warn!(%method, %path, micros, "request error: {err}"),
    }
    response
}

/// The CORS headers of the spec's "Web Browser Clients" section on every answer, and an empty
/// `204` to every pre-flight `OPTIONS` request.
pub(crate) async fn cors<B: MessageBody>(req: ServiceRequest, next: Next<B>) -> Response<B> {
    if req.method() == Method::OPTIONS {
        let mut response = req.into_response(HttpResponse::NoContent().finish());
        add_cors_headers(response.headers_mut());
        return Ok(response.map_into_right_body());
    }
    // Errors from handlers are already responses here; only a failure inside actix itself
    // arrives as `Err`, and passes through.
    let mut response = next.call(req).await?.map_into_left_body();
    add_cors_headers(response.headers_mut());
    Ok(response)
}

fn add_cors_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
}

/// Refuses a body whose declared `Content-Length` is over the limit before reading any of
/// it. Bodies without a length are counted as they stream, in [`super::MatrixJson`].
pub(crate) async fn limit_body<B: MessageBody>(req: ServiceRequest, next: Next<B>) -> Response<B> {
    let limit = req
        .app_data::<BodyLimit>()
        .map_or(usize::MAX, |limit| limit.0);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        let error = Error::new(
            ErrorKind::TooLarge,
            format!("The request body is larger than the limit of {limit} bytes"),
        );
        return Ok(req.error_response(error).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
