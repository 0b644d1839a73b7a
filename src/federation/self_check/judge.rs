//! The judgements of `hearth check`: what an answer, a certificate or a failed handshake
//! means, and what to tell the owner. Pure, so tested on answers built by hand.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::certificate;
use super::{Mark, Settings};
use crate::federation::client::{RawResponse, Scheme};
use crate::federation::keys::verify_response;

/// A certificate expiring sooner than this is a warning: renewal has failed somewhere.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// A clock further off than this is a warning...
const CLOCK_WARNING: Duration = Duration::from_secs(30);
/// ...and further than this a failure.
const CLOCK_FAILURE: Duration = Duration::from_secs(5 * 60);

/// How the leaf certificate's expiry looks; a leaf we cannot read is a warning, as the
/// handshake verified it already.
pub(super) fn expiry(leaf: Option<&[u8]>) -> (Mark, String) {
    let Some((_, not_after)) = leaf.and_then(certificate::validity) else {
        return (Mark::Warn, "expiry unreadable".to_owned());
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default();
    let until = UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or_default());
    let date = httpdate::fmt_http_date(until);
    let left = not_after.saturating_sub(i64::try_from(now).unwrap_or(i64::MAX));
    let days = left / 86_400;
    if left <= 0 {
        (Mark::Fail, format!("expired on {date}. Fix: renew it"))
    } else if left < i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX) {
        (
            Mark::Warn,
            format!(
                "expires on {date}, in {days} days. Fix: renew it (is certbot's timer running?)"
            ),
        )
    } else {
        (Mark::Pass, format!("expires on {date} ({days} days)"))
    }
}

/// What to tell the owner about a failed handshake.
pub(super) fn tls_advice(err: &std::io::Error, name: &str) -> String {
    use rustls::{CertificateError, Error as TlsError};
    let tls = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>());
    match tls {
        Some(TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the certificate is not valid for {name}. Fix: get a certificate that names {name} \
             ([tls] certificate)"
        ),
        Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
            "the certificate is not signed by a trusted CA (self-signed?). Fix: use one from a \
             public CA such as Let's Encrypt; a private federation puts its CA in \
             federation.extra_ca_file on every server ({err})"
        ),
        Some(TlsError::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "the certificate has expired. Fix: renew it".to_owned(),
        Some(other) => format!("TLS failed: {other}"),
        None => match err.kind() {
            std::io::ErrorKind::ConnectionRefused => format!(
                "connection refused. Fix: a TLS listener must be on this port (and the port \
                 forwarded to this box): {err}"
            ),
            _ => format!("{err}"),
        },
    }
}

/// Whether the key answer is ours: for our name, self-signed, still valid, our key.
pub(super) fn judge_keys(
    settings: &Settings<'_>,
    response: &RawResponse,
    now: u64,
) -> (Mark, String) {
    let name = settings.server_name;
    if response.status != 200 {
        return (
            Mark::Fail,
            format!("/_matrix/key/v2/server answered {}", response.status),
        );
    }
    let value: Value = match serde_json::from_slice(&response.body) {
        Ok(value) => value,
        Err(err) => return (Mark::Fail, format!("the answer is not JSON: {err}")),
    };
    let served_name = value.get("server_name").and_then(Value::as_str);
    if served_name != Some(name) {
        return (
            Mark::Fail,
            format!(
                "the answer is for {}, not {name}: another server answers at this address. \
                 Fix: point the name (or its delegation) at this server",
                served_name.unwrap_or("no server")
            ),
        );
    }
    let keys = match verify_response(&value, name, now) {
        Ok(keys) => keys,
        Err(why) => return (Mark::Fail, format!("the answer does not verify: {why}")),
    };
    let ours = settings.signing_key;
    let key_id = ours.key_id().as_str();
    let ours_served = keys
        .keys
        .get(key_id)
        .is_some_and(|known| known.expired_ts.is_none() && known.key == ours.public_key_base64());
    let path = settings.signing_key_path.display();
    if !ours_served {
        let served: Vec<&str> = keys.keys.keys().map(String::as_str).collect();
        return (
            Mark::Fail,
            format!(
                "the server serves {}, not our key {key_id} from {path}: another server (or \
                 one with another key file) answers for {name}. Fix: make the name reach this \
                 server, or give that server this key",
                served.join(", ")
            ),
        );
    }
    let valid_until_ts = value
        .get("valid_until_ts")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    let until = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(valid_until_ts));
    if valid_until_ts <= now {
        return (
            Mark::Fail,
            format!(
                "valid_until_ts is in the past ({until}): other servers will refetch and refuse"
            ),
        );
    }
    (
        Mark::Pass,
        format!("{key_id} matches {path}, self-signed for {name}, valid until {until}"),
    )
}

/// `m.homeserver.base_url` of a client well-known answer, or why there is none.
pub(super) fn client_base_url(response: &RawResponse) -> Result<String, String> {
    if response.status != 200 {
        return Err(format!("answered {}", response.status));
    }
    let value: Value =
        serde_json::from_slice(&response.body).map_err(|err| format!("not JSON: {err}"))?;
    let base_url = value
        .get("m.homeserver")
        .and_then(|homeserver| homeserver.get("base_url"))
        .and_then(Value::as_str)
        .ok_or("no m.homeserver.base_url")?;
    let parsed = url::Url::parse(base_url).map_err(|err| format!("base_url {base_url}: {err}"))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
        return Err(format!("base_url {base_url} is not an http(s) URL"));
    }
    Ok(base_url.to_owned())
}

/// A `/versions` answer: a list of versions and `Access-Control-Allow-Origin: *`.
pub(super) fn judge_versions(response: &RawResponse, scheme: Scheme) -> (Mark, String) {
    if response.status != 200 {
        return (Mark::Fail, format!("answered {}", response.status));
    }
    let versions = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|value| value.get("versions")?.as_array().map(Vec::len));
    let Some(count) = versions else {
        return (
            Mark::Fail,
            "the answer has no `versions` list: is this a Matrix server?".to_owned(),
        );
    };
    if response
        .header("access-control-allow-origin")
        .map(str::trim)
        != Some("*")
    {
        return (
            Mark::Fail,
            "no `Access-Control-Allow-Origin: *` header: web clients (Element Web) cannot \
             use the server. Fix: a reverse proxy in front must pass Hearth's CORS headers on"
                .to_owned(),
        );
    }
    if scheme == Scheme::Http {
        return (
            Mark::Warn,
            format!(
                "{count} versions, CORS allowed, but over plain HTTP: passwords and messages \
                 travel unencrypted. Fix: use an https base_url"
            ),
        );
    }
    (
        Mark::Pass,
        format!("{count} versions, Access-Control-Allow-Origin: *"),
    )
}

/// The clock against the answers' `Date` headers (`skew`: seconds ours is ahead).
pub(super) fn judge_clock(dates: &[(String, f64)]) -> (Mark, String) {
    let Some((source, skew)) = dates.iter().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())) else {
        return (
            Mark::Warn,
            "no answer carried a Date header to compare our clock with".to_owned(),
        );
    };
    let off = Duration::from_secs_f64(skew.abs());
    let direction = if *skew >= 0.0 { "ahead of" } else { "behind" };
    let why = "signed keys' valid_until_ts, events' timestamps and certificate validity are \
               judged by clocks; run NTP (systemd-timesyncd)";
    // `Date` has whole seconds: up to a second of difference is no difference.
    if off <= CLOCK_WARNING {
        (
            Mark::Pass,
            format!(
                "within {}s of the Date of {} answers",
                off.as_secs() + 1,
                dates.len()
            ),
        )
    } else if off <= CLOCK_FAILURE {
        (
            Mark::Warn,
            format!(
                "our clock is {}s {direction} the Date of the {source} answer: {why}",
                off.as_secs()
            ),
        )
    } else {
        (
            Mark::Fail,
            format!(
                "our clock is {}s {direction} the Date of the {source} answer: other servers \
                 will refuse what we sign. {why}",
                off.as_secs()
            ),
        )
    }
}
