//! Middleware every request passes through: a log line without secrets, the CORS headers the
//! spec asks for (and pre-flight answers), an early `413` for bodies declared larger than any
//! endpoint takes, a cap on the requests in flight from one address, and closing the
//! connection of a chunked body left unread; and the count of requests for the metrics.

use std::time::Instant;

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::HttpMessage as _;
use actix_web::HttpResponse;
use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use futures_util::Stream as _;

use actix_web::http::ConnectionType;
use actix_web::web;

use super::app::Services;
use super::auth::client_ip;
use super::metrics::Group;
use crate::error::{Error, ErrorKind};

type Response<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

/// Logs method, path (never the query string: it may hold an access token), status and time,
/// and counts the request for the metrics listener when it is on ([`super::metrics`]).
pub(crate) async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let metrics = req
        .app_data::<web::Data<Services>>()
        .filter(|app| app.http_metrics.enabled())
        .cloned();
    let response = next.call(req).await;
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros();
    if let Some(app) = metrics {
        let status = match &response {
            Ok(res) => res.status(),
            Err(err) => err.as_response_error().status_code(),
        };
        app.http_metrics
            .record(Group::of(&path), status.as_u16(), elapsed);
    }
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

/// Refuses a body whose declared `Content-Length` is over the server's ceiling
/// (`limits.max_request_body_bytes`) before reading any of it. Each endpoint's own, smaller
/// cap is checked the same way by the extractor that reads the body ([`super::json`]).
pub(crate) async fn limit_body<B: MessageBody>(req: ServiceRequest, next: Next<B>) -> Response<B> {
    // Uploads have their own cap, `media.max_upload_size`, checked as they stream to disk.
    let upload = super::media::is_upload_path(req.path());
    let limit = req
        .app_data::<web::Data<Services>>()
        .map_or(usize::MAX, |app| {
            if upload {
                usize::try_from(app.config.media.max_upload_size).unwrap_or(usize::MAX)
            } else {
                app.config.limits.max_request_body_bytes
            }
        });
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        let error = Error::new(
            ErrorKind::TooLarge,
            format!("The request body is larger than the limit of {limit} bytes"),
        );
        return Ok(req.error_response(error).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// At most `limits.max_requests_per_address` requests in flight from one address (the one a
/// reverse proxy on loopback forwards, when trusted; an IPv6 /64), so that one address cannot
/// take every connection with bodies it never finishes. Over it the answer is an immediate
/// `429` that closes the connection: the slot is what the sender wants to keep.
pub(crate) async fn limit_address<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Response<B> {
    let Some(app) = req.app_data::<web::Data<Services>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let address = client_ip(req.request(), app.config.limits.trust_forwarded_for);
    let slot = match address.map(|address| app.strangers.enter_address(address)) {
        Some(Ok(slot)) => Some(slot),
        Some(Err(error)) => {
            let mut response = req.error_response(error);
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            return Ok(response.map_into_right_body());
        }
        // No peer address (a test request): nothing to count.
        None => None,
    };
    let response = next.call(req).await;
    drop(slot);
    Ok(response?.map_into_left_body())
}

/// Keeps the connection of a chunked request whose body was not read to the end (an endpoint
/// that takes none, an error, a body cut at its time limit) from staying open. actix-http
/// drains such a body for as long as it keeps coming, with no time limit, once the request's
/// payload is dropped; while the payload is still alive when the answer goes out, it closes
/// the connection instead (after a short linger, `client_disconnect_timeout`). So the payload
/// is held here, and handed to the answer's body to keep until it is sent. A body with a
/// `Content-Length` needs none of this: actix closes the connection after an answer that
/// left it unread.
pub(crate) async fn close_unread_chunked_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<HoldingBody>, actix_web::Error> {
    if !req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Ok(next.call(req).await?.map_body(|_, body| HoldingBody {
            body: BoxBody::new(body),
            _payload: None,
        }));
    }
    let held = Rc::new(RefCell::new(req.take_payload()));
    let reader = held.clone();
    let stream = futures_util::stream::poll_fn(move |cx| {
        let mut payload = reader.borrow_mut();
        Pin::new(&mut *payload).poll_next(cx)
    });
    let stream: Pin<Box<dyn futures_util::Stream<Item = _>>> = Box::pin(stream);
    req.set_payload(Payload::Stream { payload: stream });
    Ok(next.call(req).await?.map_body(|_, body| HoldingBody {
        body: BoxBody::new(body),
        _payload: Some(held),
    }))
}

/// An answer's body, holding its request's payload until it is sent.
pub(crate) struct HoldingBody {
    body: BoxBody,
    _payload: Option<Rc<RefCell<Payload>>>,
}

impl MessageBody for HoldingBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
