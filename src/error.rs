//! Errors. [`Error`] is what a request can fail with: a Matrix `errcode`, a message meant for
//! the client, and (decided in one `match`) the HTTP status. Internal details (I/O, sled) are
//! logged, never sent. What stops the server from starting is a different error, kept
//! apart: `server::StartupError`.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// The Matrix error codes Hearth answers with. The HTTP status of each is decided in
/// [`ErrorKind::status`], and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// No such endpoint (404).
    Unrecognized,
    /// The endpoint exists, but not for this method (405, still `M_UNRECOGNIZED`).
    MethodNotAllowed,
    /// The body is not JSON at all.
    NotJson,
    /// The body is JSON of the wrong shape.
    BadJson,
    /// Account data the server manages itself (`m.fully_read`, `m.push_rules`) set by hand:
    /// the spec's `405 M_BAD_JSON`.
    ManagedByServer,
    /// The body is larger than the configured limit.
    TooLarge,
    /// The body did not arrive in time (408, `M_UNKNOWN`); the connection is closed after.
    RequestTimeout,
    /// A query or path parameter is invalid.
    InvalidParam,
    /// A required parameter is missing.
    MissingParam,
    /// A signature on uploaded keys does not verify (400).
    InvalidSignature,
    /// The requested resource does not exist.
    NotFound,
    /// The requester may not do this.
    Forbidden,
    /// A federation request is not (validly) signed by the server it claims to come from.
    Unauthorized,
    /// Too many requests: retry after this many milliseconds.
    LimitExceeded { retry_after_ms: u64 },
    /// No access token was given.
    MissingToken,
    /// The access token is not (or no longer) valid.
    UnknownToken,
    /// The account is deactivated.
    UserDeactivated,
    /// A server administrator has locked the account (401, with `soft_logout: true`).
    UserLocked,
    /// A server administrator has suspended the account: it may read, not act (403).
    UserSuspended,
    /// The desired user name is taken.
    UserInUse,
    /// The desired user name is not valid.
    InvalidUsername,
    /// The password is too weak.
    WeakPassword,
    /// Guests may not do this.
    GuestAccessForbidden,
    /// User-interactive authentication is needed: the answer carries the flows (401).
    UserInteractiveAuth,
    /// The requested room version is not one this server supports.
    UnsupportedRoomVersion,
    /// A server asked to join a room of a version it does not support (400).
    IncompatibleRoomVersion,
    /// A restricted room's resident server cannot check any of the room's allow
    /// conditions: it is in none of the rooms they name (400).
    UnableToAuthoriseJoin,
    /// The joining user meets a restricted room's allow condition, but none of our users
    /// in the room may invite: another resident server should be asked (400).
    UnableToGrantJoin,
    /// A profile would grow past its size limit (400).
    ProfileTooLarge,
    /// A profile key is longer than 255 bytes (400).
    KeyTooLarge,
    /// The server does not accept this third-party identifier.
    ThreepidDenied,
    /// The thing to create exists already (409, `M_UNKNOWN`).
    Conflict,
    /// The alias asked for in `createRoom` is taken.
    RoomInUse,
    /// A request the server cannot act on for another reason (400 `M_UNKNOWN`), such as an
    /// unsupported login type.
    BadRequest,
    /// Something went wrong on our side; details are in the log.
    Unknown,
    /// A key backup write named a backup version that is not the user's current one (403;
    /// the answer carries `current_version`).
    WrongRoomKeysVersion,
    /// Another server could not be reached, or answered with something unusable (502,
    /// `M_UNKNOWN`). The message names the server only: connection details stay in the log.
    RemoteUnavailable,
}

impl ErrorKind {
    pub(crate) fn errcode(self) -> &'static str {
        match self {
            ErrorKind::Unrecognized | ErrorKind::MethodNotAllowed => "M_UNRECOGNIZED",
            ErrorKind::NotJson => "M_NOT_JSON",
            ErrorKind::BadJson | ErrorKind::ManagedByServer => "M_BAD_JSON",
            ErrorKind::TooLarge => "M_TOO_LARGE",
            ErrorKind::RequestTimeout => "M_UNKNOWN",
            ErrorKind::InvalidParam => "M_INVALID_PARAM",
            ErrorKind::MissingParam => "M_MISSING_PARAM",
            ErrorKind::InvalidSignature => "M_INVALID_SIGNATURE",
            ErrorKind::NotFound => "M_NOT_FOUND",
            ErrorKind::Forbidden => "M_FORBIDDEN",
            ErrorKind::Unauthorized => "M_UNAUTHORIZED",
            ErrorKind::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            ErrorKind::MissingToken => "M_MISSING_TOKEN",
            ErrorKind::UnknownToken => "M_UNKNOWN_TOKEN",
            ErrorKind::UserDeactivated => "M_USER_DEACTIVATED",
            ErrorKind::UserLocked => "M_USER_LOCKED",
            ErrorKind::UserSuspended => "M_USER_SUSPENDED",
            ErrorKind::UserInUse => "M_USER_IN_USE",
            ErrorKind::InvalidUsername => "M_INVALID_USERNAME",
            ErrorKind::WeakPassword => "M_WEAK_PASSWORD",
            ErrorKind::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            ErrorKind::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            ErrorKind::IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
            ErrorKind::UnableToAuthoriseJoin => "M_UNABLE_TO_AUTHORISE_JOIN",
            ErrorKind::UnableToGrantJoin => "M_UNABLE_TO_GRANT_JOIN",
            ErrorKind::ProfileTooLarge => "M_PROFILE_TOO_LARGE",
            ErrorKind::KeyTooLarge => "M_KEY_TOO_LARGE",
            ErrorKind::ThreepidDenied => "M_THREEPID_DENIED",
            ErrorKind::Conflict => "M_UNKNOWN",
            ErrorKind::RoomInUse => "M_ROOM_IN_USE",
            ErrorKind::WrongRoomKeysVersion => "M_WRONG_ROOM_KEYS_VERSION",
            // A failed stage says why in the body; the first challenge has no error code.
            ErrorKind::UserInteractiveAuth => "M_FORBIDDEN",
            ErrorKind::BadRequest | ErrorKind::Unknown | ErrorKind::RemoteUnavailable => {
                "M_UNKNOWN"
            }
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            ErrorKind::Unrecognized | ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed | ErrorKind::ManagedByServer => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ErrorKind::NotJson
            | ErrorKind::BadJson
            | ErrorKind::InvalidParam
            | ErrorKind::MissingParam
            | ErrorKind::InvalidSignature
            | ErrorKind::BadRequest
            | ErrorKind::UnsupportedRoomVersion
            | ErrorKind::IncompatibleRoomVersion
            | ErrorKind::UnableToAuthoriseJoin
            | ErrorKind::UnableToGrantJoin
            | ErrorKind::ProfileTooLarge
            | ErrorKind::KeyTooLarge
            | ErrorKind::RoomInUse
            | ErrorKind::UserInUse
            | ErrorKind::InvalidUsername
            | ErrorKind::WeakPassword => StatusCode::BAD_REQUEST,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Forbidden
            | ErrorKind::UserDeactivated
            | ErrorKind::UserSuspended
            | ErrorKind::GuestAccessForbidden
            | ErrorKind::ThreepidDenied
            | ErrorKind::WrongRoomKeysVersion => StatusCode::FORBIDDEN,
            ErrorKind::MissingToken
            | ErrorKind::Unauthorized
            | ErrorKind::UnknownToken
            | ErrorKind::UserLocked
            | ErrorKind::UserInteractiveAuth => StatusCode::UNAUTHORIZED,
            ErrorKind::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::RemoteUnavailable => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A request error: what the client is told.
#[derive(Debug, Clone)]
pub(crate) struct Error {
    pub(crate) kind: ErrorKind,
    pub(crate) message: Cow<'static, str>,
    /// Fields added to the JSON body (`soft_logout`, the flows of user-interactive auth).
    pub(crate) extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            extra: None,
        }
    }

    /// Adds fields to the JSON body.
    pub(crate) fn with_fields(
        mut self,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .extend(fields);
        self
    }

    /// `401 M_UNKNOWN_TOKEN`, with `soft_logout: false`: the client must log in again.
    pub(crate) fn unknown_token() -> Self {
        let mut fields = serde_json::Map::new();
        fields.insert("soft_logout".into(), false.into());
        Error::new(ErrorKind::UnknownToken, "Unknown access token").with_fields(fields)
    }

    /// `401 M_USER_LOCKED`, with `soft_logout: true`: the client keeps its session (and its
    /// keys) and may carry on once an administrator lifts the lock.
    pub(crate) fn user_locked() -> Self {
        let mut fields = serde_json::Map::new();
        fields.insert("soft_logout".into(), true.into());
        Error::new(ErrorKind::UserLocked, "This account has been locked").with_fields(fields)
    }

    /// `403 M_USER_SUSPENDED`: what a suspended account may not do.
    pub(crate) fn user_suspended() -> Self {
        Error::new(
            ErrorKind::UserSuspended,
            "You cannot perform this action while suspended",
        )
    }

    pub(crate) fn unrecognized() -> Self {
        Error::new(ErrorKind::Unrecognized, "Unrecognized request")
    }

    pub(crate) fn method_not_allowed() -> Self {
        Error::new(
            ErrorKind::MethodNotAllowed,
            "Method not allowed for this endpoint",
        )
    }

    pub(crate) fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// Logs `detail` (which may name files or database internals) and tells the client only
    /// that something failed on our side.
    pub(crate) fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Error::new(ErrorKind::Unknown, "Internal server error")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.errcode(), self.message)
    }
}

impl std::error::Error for Error {}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "errcode": self.kind.errcode(), "error": self.message });
        if let ErrorKind::LimitExceeded { retry_after_ms } = self.kind {
            body["retry_after_ms"] = retry_after_ms.into();
        }
        if let (Some(extra), Some(object)) = (&self.extra, body.as_object_mut()) {
            object.extend(
                extra
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone())),
            );
            // The first challenge of user-interactive auth is no error: it carries no code.
            if self.kind == ErrorKind::UserInteractiveAuth && self.message.is_empty() {
                object.remove("errcode");
                object.remove("error");
            }
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ErrorKind::LimitExceeded { retry_after_ms } = self.kind {
            response.insert_header(("Retry-After", retry_after_ms.div_ceil(1000).to_string()));
        }
        // The rest of a late body may still be on its way: the connection cannot carry
        // another request, and holding it open is what a slow sender wants.
        if self.kind == ErrorKind::RequestTimeout {
            response.force_close();
        }
        response.json(body)
    }
}

impl From<crate::storage::StorageError> for Error {
    fn from(err: crate::storage::StorageError) -> Self {
        Error::internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_web::test]
    async fn error_response_carries_errcode_and_status() {
        let response = Error::new(ErrorKind::TooLarge, "too big").error_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = to_bytes(response.into_body()).await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["errcode"], "M_TOO_LARGE");
        assert_eq!(json["error"], "too big");
    }

    #[actix_web::test]
    async fn limit_exceeded_says_when_to_retry() {
        let kind = ErrorKind::LimitExceeded {
            retry_after_ms: 1500,
        };
        let response = Error::new(kind, "slow down").error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = to_bytes(response.into_body()).await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["retry_after_ms"], 1500);
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let err = Error::internal("sled: corrupted page at /var/lib/hearth/db");
        assert_eq!(err.kind.errcode(), "M_UNKNOWN");
        assert!(!err.message.contains("sled"));
    }
}
