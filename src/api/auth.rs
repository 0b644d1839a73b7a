//! Who is asking: the access-token extractor ([`Authenticated`]) and the client's address
//! (for rate limits and the devices list).

use std::future::{Ready, ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use crate::api::app::Services;
use crate::error::{Error, ErrorKind};
use crate::users::accounts::sessions;

/// The session behind a valid access token. Taken from `Authorization: Bearer`, or from the
/// deprecated `access_token` query parameter that some clients still send.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub sessions::Session);

impl std::ops::Deref for Authenticated {
    type Target = sessions::Session;

    fn deref(&self) -> &sessions::Session {
        &self.0
    }
}

impl FromRequest for Authenticated {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    /// A locked account's requests end here with `401 M_USER_LOCKED`, whatever the
    /// endpoint: only logout ([`EvenIfLocked`]) is exempt.
    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|auth| {
            if auth.locked {
                Err(Error::user_locked())
            } else {
                Ok(auth)
            }
        }))
    }
}

impl Authenticated {
    /// Refuses with `403 M_USER_SUSPENDED` if the account is suspended. Handlers of the
    /// actions the spec recommends forbidding (joining, knocking, inviting, sending,
    /// creating rooms, changing the profile, redacting others' events) call this first;
    /// reading, syncing and leaving do not.
    pub(crate) fn ensure_not_suspended(&self) -> Result<(), Error> {
        if self.suspended {
            Err(Error::user_suspended())
        } else {
            Ok(())
        }
    }
}

/// The session behind a valid access token, locked or not: the spec lets a locked account
/// log out (`/logout`, `/logout/all`) and nothing else.
#[derive(Debug, Clone)]
pub(crate) struct EvenIfLocked(pub Authenticated);

impl FromRequest for EvenIfLocked {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(authenticate(req).map(EvenIfLocked))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Authenticated, Error> {
    let app = req
        .app_data::<web::Data<Services>>()
        .ok_or_else(|| Error::internal("no application state"))?;
    let token = access_token(req)
        .ok_or_else(|| Error::new(ErrorKind::MissingToken, "Missing access token"))?;
    let ip = client_ip(req, app.config.limits.trust_forwarded_for).map(|ip| ip.to_string());
    let session = app
        .users
        .authenticate(&token, ip.as_deref())?
        .ok_or_else(Error::unknown_token)?;
    Ok(Authenticated(session))
}

fn access_token(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|token| !token.is_empty());
    }
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()?
        .get("access_token")
        .filter(|token| !token.is_empty())
        .cloned()
}

/// The client's address: the peer, or, when the peer is a reverse proxy on this machine and
/// the config trusts it, the address that proxy saw. Proxies append the address they saw to
/// `X-Forwarded-For`, after whatever the client wrote there itself: only the last entry of
/// the last header line is the proxy's word.
pub(crate) fn client_ip(req: &HttpRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip().to_canonical();
    if trust_forwarded_for && peer.is_loopback() {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .last()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|last| last.trim().parse::<IpAddr>().ok());
        if let Some(address) = forwarded {
            return Some(address.to_canonical());
        }
    }
    Some(peer)
}

/// Refuses the request with `429` if `req`'s address has used up its login and registration
/// attempts.
pub(crate) fn check_auth_rate_limit(req: &HttpRequest, app: &Services) -> Result<(), Error> {
    let Some(address) = client_ip(req, app.config.limits.trust_forwarded_for) else {
        return Ok(());
    };
    app.auth_rate_limit
        .check(crate::api::ratelimit::address_key(address))
        .map_err(too_many_attempts)
}

/// Refuses a password check for `user_id` from `address` (its limiting key) if that pair
/// has had too many lately. Keyed by account *and* address: guesses from one place slow
/// that place, never the owner elsewhere. (Guesses spread over many addresses are bounded
/// per account by `users::accounts::login_attempts`, which spares the owner's addresses.)
pub(crate) fn check_account_rate_limit(
    user_id: &str,
    address: Option<IpAddr>,
    app: &Services,
) -> Result<(), Error> {
    let key = match address {
        Some(address) => format!("{user_id} {address}"),
        None => user_id.to_owned(),
    };
    app.account_rate_limit.check(key).map_err(too_many_attempts)
}

/// `429 M_LIMIT_EXCEEDED`, asking the client to wait `retry_after_ms`.
pub(crate) fn too_many_attempts(retry_after_ms: u64) -> Error {
    Error::new(
        ErrorKind::LimitExceeded { retry_after_ms },
        "Too many attempts; try again later",
    )
}
