//! The legacy `r0` paths. Clients written before the spec's v1.1 (Hydrogen, older bots and
//! bridges) call `/_matrix/client/r0/...` and `/_matrix/media/r0/...`; v1.1 renamed `r0` to
//! `v3` without changing what those endpoints do. So a request under `r0` for an endpoint that
//! existed in the r0 releases is answered by its `v3` route, rewritten here before routing:
//! one list, no second registration, and a route another area adds under `v3` needs only a
//! line in [`R0_CLIENT`]. An endpoint added after r0 (`v3/knock`, `v3/refresh`, key backup,
//! cross-signing, ...) stays `404 M_UNRECOGNIZED` under `r0`, as it never existed there.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::Uri;
use actix_web::http::uri::PathAndQuery;
use actix_web::middleware::Next;
use actix_web::web::Bytes;

use super::method_not_allowed;

/// An endpoint's path pattern (`*`: one segment) and the methods it took, as an `Allow`
/// header lists them.
pub(crate) type Endpoint = (&'static str, &'static str);

type Response<B> = Result<ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error>;

/// The client-server endpoints of the r0 releases (r0.0.1 to r0.6.1, from the spec's API
/// definitions at each release tag), after `/_matrix/client/r0/`, with the methods each took.
/// `*` is one path segment. Left out: what r0 removed again before r0.6.1 and Hearth never
/// served (`tokenrefresh`, `presence/list`, CAS login).
pub(crate) const R0_CLIENT: &[Endpoint] = &[
    ("account/3pid", "GET, POST"),
    ("account/3pid/add", "POST"),
    ("account/3pid/bind", "POST"),
    ("account/3pid/delete", "POST"),
    ("account/3pid/email/requestToken", "POST"),
    ("account/3pid/msisdn/requestToken", "POST"),
    ("account/3pid/unbind", "POST"),
    ("account/deactivate", "POST"),
    ("account/password", "POST"),
    ("account/password/email/requestToken", "POST"),
    ("account/password/msisdn/requestToken", "POST"),
    ("account/whoami", "GET"),
    ("admin/whois/*", "GET"),
    ("capabilities", "GET"),
    ("createRoom", "POST"),
    ("delete_devices", "POST"),
    ("devices", "GET"),
    ("devices/*", "GET, PUT, DELETE"),
    ("directory/list/appservice/*/*", "PUT"),
    ("directory/list/room/*", "GET, PUT"),
    ("directory/room/*", "GET, PUT, DELETE"),
    ("events", "GET"),
    ("events/*", "GET"),
    ("initialSync", "GET"),
    ("join/*", "POST"),
    ("joined_rooms", "GET"),
    ("keys/changes", "GET"),
    ("keys/claim", "POST"),
    ("keys/query", "POST"),
    ("keys/upload", "POST"),
    ("login", "GET, POST"),
    ("login/sso/redirect", "GET"),
    ("logout", "POST"),
    ("logout/all", "POST"),
    ("notifications", "GET"),
    ("presence/*/status", "GET, PUT"),
    ("profile/*", "GET"),
    ("profile/*/avatar_url", "GET, PUT"),
    ("profile/*/displayname", "GET, PUT"),
    ("publicRooms", "GET, POST"),
    ("pushers", "GET"),
    ("pushers/set", "POST"),
    ("pushrules/", "GET"),
    // The r0 push module's prose names the global rule set's own path.
    ("pushrules/global/", "GET"),
    ("pushrules/*/*/*", "GET, PUT, DELETE"),
    ("pushrules/*/*/*/actions", "GET, PUT"),
    ("pushrules/*/*/*/enabled", "GET, PUT"),
    ("register", "POST"),
    ("register/available", "GET"),
    ("register/email/requestToken", "POST"),
    ("register/msisdn/requestToken", "POST"),
    ("rooms/*/aliases", "GET"),
    ("rooms/*/ban", "POST"),
    ("rooms/*/context/*", "GET"),
    ("rooms/*/event/*", "GET"),
    ("rooms/*/forget", "POST"),
    ("rooms/*/initialSync", "GET"),
    ("rooms/*/invite", "POST"),
    ("rooms/*/join", "POST"),
    ("rooms/*/joined_members", "GET"),
    ("rooms/*/kick", "POST"),
    ("rooms/*/leave", "POST"),
    ("rooms/*/members", "GET"),
    ("rooms/*/messages", "GET"),
    ("rooms/*/read_markers", "POST"),
    ("rooms/*/receipt/*/*", "POST"),
    ("rooms/*/redact/*/*", "PUT"),
    ("rooms/*/report/*", "POST"),
    ("rooms/*/send/*/*", "PUT"),
    ("rooms/*/state", "GET"),
    // The empty state key: r0.0.1 to r0.2.0 had `state/{eventType}`; clients send it as
    // a trailing slash too.
    ("rooms/*/state/*", "GET, PUT"),
    ("rooms/*/state/*/", "GET, PUT"),
    ("rooms/*/state/*/*", "GET, PUT"),
    ("rooms/*/typing/*", "PUT"),
    ("rooms/*/unban", "POST"),
    ("rooms/*/upgrade", "POST"),
    ("search", "POST"),
    ("sendToDevice/*/*", "PUT"),
    ("sync", "GET"),
    ("thirdparty/location", "GET"),
    ("thirdparty/location/*", "GET"),
    ("thirdparty/protocol/*", "GET"),
    ("thirdparty/protocols", "GET"),
    ("thirdparty/user", "GET"),
    ("thirdparty/user/*", "GET"),
    ("user/*/account_data/*", "GET, PUT"),
    ("user/*/filter", "POST"),
    ("user/*/filter/*", "GET"),
    ("user/*/openid/request_token", "POST"),
    ("user/*/rooms/*/account_data/*", "GET, PUT"),
    ("user/*/rooms/*/tags", "GET"),
    ("user/*/rooms/*/tags/*", "PUT, DELETE"),
    ("user_directory/search", "POST"),
    ("voip/turnServer", "GET"),
];

/// The content repository's r0 endpoints, after `/_matrix/media/r0/`: the legacy
/// unauthenticated media API, answered by its `/_matrix/media/v3/` routes.
pub(crate) const R0_MEDIA: &[Endpoint] = &[
    ("config", "GET"),
    ("download/*/*", "GET"),
    ("download/*/*/*", "GET"),
    ("preview_url", "GET"),
    ("thumbnail/*/*", "GET"),
    ("upload", "POST"),
];

/// The two legacy prefixes, the endpoints under each, and the prefix that answers them.
const PREFIXES: &[(&str, &[Endpoint], &str)] = &[
    ("/_matrix/client/r0/", R0_CLIENT, "/_matrix/client/v3/"),
    ("/_matrix/media/r0/", R0_MEDIA, "/_matrix/media/v3/"),
];

/// Serves an `r0` request for an r0 endpoint with its `v3` route; a method the endpoint did
/// not take in r0 gets `405` with the methods it did. Anything else passes untouched (and so
/// an `r0` path that never existed falls to the `404 M_UNRECOGNIZED` of unknown routes).
pub(crate) async fn serve_r0_as_v3<B: MessageBody>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Response<B> {
    match r0_endpoint(req.path()) {
        Some((v3_path, methods)) if takes(methods, req.method()) => {
            rewrite_path(&mut req, &v3_path);
        }
        Some((_, methods)) if req.method() != Method::OPTIONS => {
            let response = method_not_allowed(methods);
            return Ok(req.into_response(response).map_into_right_body());
        }
        _ => {}
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// The `v3` path answering `path` and the methods the endpoint took in r0, if `path` is
/// an r0 endpoint.
fn r0_endpoint(path: &str) -> Option<(String, &'static str)> {
    PREFIXES.iter().find_map(|(legacy, endpoints, current)| {
        let rest = path.strip_prefix(legacy)?;
        let (_, methods) = endpoints
            .iter()
            .find(|(pattern, _)| matches_pattern(pattern, rest))?;
        Some((format!("{current}{rest}"), *methods))
    })
}

/// Whether `path` (as sent, percent-encoded: an encoded `/` stays inside its segment) has
/// the pattern's segments, `*` standing for any one non-empty segment.
fn matches_pattern(pattern: &str, path: &str) -> bool {
    let mut segments = path.split('/');
    let mut expected = pattern.split('/');
    loop {
        match (expected.next(), segments.next()) {
            (None, None) => return true,
            (Some("*"), Some(segment)) if !segment.is_empty() => {}
            (Some(literal), Some(segment)) if literal == segment => {}
            _ => return false,
        }
    }
}

/// Whether an endpoint that took `methods` in r0 takes `method` (`HEAD` with `GET`, as the
/// `v3` routes do; a browser's pre-flight `OPTIONS` always).
fn takes(methods: &str, method: &Method) -> bool {
    let wanted = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    method == Method::OPTIONS || methods.split(", ").any(|taken| taken == wanted)
}

/// Points the request at `path`, keeping its query string, before the router sees it.
fn rewrite_path(req: &mut ServiceRequest, path: &str) {
    let head = req.head_mut();
    let mut parts = head.uri.clone().into_parts();
    let target = match parts.path_and_query.as_ref().and_then(|pq| pq.query()) {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let Ok(path_and_query) = PathAndQuery::from_maybe_shared(Bytes::from(target)) else {
        return;
    };
    parts.path_and_query = Some(path_and_query);
    let Ok(uri) = Uri::from_parts(parts) else {
        return;
    };
    req.match_info_mut().get_mut().update(&uri);
    req.head_mut().uri = uri;
}

/// What the client-server API's `/versions` lists for the r0 releases, as Synapse does.
pub(crate) const R0_VERSIONS: &[&str] = &[
    "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_r0_endpoint_maps_to_its_v3_path() {
        assert_eq!(
            r0_endpoint("/_matrix/client/r0/rooms/%21a%3Ab/send/m.room.message/t1"),
            Some((
                "/_matrix/client/v3/rooms/%21a%3Ab/send/m.room.message/t1".to_owned(),
                "PUT"
            ))
        );
        assert_eq!(
            r0_endpoint("/_matrix/media/r0/download/hs/abc").map(|(path, _)| path),
            Some("/_matrix/media/v3/download/hs/abc".to_owned())
        );
        assert!(r0_endpoint("/_matrix/client/r0/rooms/!a:b/state/m.room.name/").is_some());
    }

    #[test]
    fn what_r0_never_had_is_not_mapped() {
        for path in [
            "/_matrix/client/r0/knock/!a:b",
            "/_matrix/client/r0/refresh",
            "/_matrix/client/r0/room_keys/version",
            "/_matrix/client/r0/profile/@a:b/m.tz",
            "/_matrix/client/r0/rooms//send/x/y",
            "/_matrix/client/r0/sync/extra",
            "/_matrix/media/r0/create",
            "/_matrix/client/v3/sync",
        ] {
            assert_eq!(r0_endpoint(path), None, "{path}");
        }
    }

    #[test]
    fn methods_follow_the_r0_definitions() {
        assert!(takes("GET, PUT", &Method::HEAD));
        assert!(takes("POST", &Method::OPTIONS));
        assert!(!takes("GET, PUT", &Method::DELETE));
    }
}
