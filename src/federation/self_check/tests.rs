//! The judgements of `hearth check`, on answers built by hand; the whole check runs against
//! real servers in `tests/check.rs`.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::judge::*;
use super::*;
use crate::matrix::crypto::{KeyId, sign_json};

fn response(status: u16, headers: &[(&str, &str)], body: &Value) -> RawResponse {
    RawResponse {
        status,
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        body: serde_json::to_vec(body).expect("json"),
    }
}

fn key(version: &str) -> SigningKey {
    SigningKey::from_seed(KeyId::ed25519(version).expect("id"), [7; 32])
}

fn key_answer(name: &str, key: &SigningKey, valid_until_ts: u64) -> Value {
    let mut answer = serde_json::json!({
        "server_name": name,
        "verify_keys": { key.key_id().as_str(): { "key": key.public_key_base64() } },
        "old_verify_keys": {},
        "valid_until_ts": valid_until_ts,
    });
    let object = answer.as_object_mut().expect("object");
    sign_json(object, name, key).expect("sign");
    answer
}

fn settings<'a>(key: &'a SigningKey) -> Settings<'a> {
    Settings {
        server_name: "example.org",
        signing_key: key,
        signing_key_path: Path::new("/data/signing.key"),
        extra_ca_file: None,
        well_known_port: 443,
    }
}

const NOW: u64 = 1_800_000_000_000;

#[test]
fn our_own_key_answer_passes() {
    let ours = key("a");
    let answer = response(200, &[], &key_answer("example.org", &ours, NOW + 3_600_000));
    let (mark, text) = judge_keys(&settings(&ours), &answer, NOW);
    assert_eq!(mark, Mark::Pass, "{text}");
    assert!(
        text.contains("ed25519:a matches /data/signing.key"),
        "{text}"
    );
}

#[test]
fn another_servers_key_fails() {
    let ours = key("a");
    let theirs = SigningKey::from_seed(KeyId::ed25519("a").expect("id"), [8; 32]);
    let answer = response(
        200,
        &[],
        &key_answer("example.org", &theirs, NOW + 3_600_000),
    );
    let (mark, text) = judge_keys(&settings(&ours), &answer, NOW);
    assert_eq!(mark, Mark::Fail);
    assert!(text.contains("not our key ed25519:a"), "{text}");
}

#[test]
fn a_key_answer_for_another_name_expired_or_unsigned_fails() {
    let ours = key("a");
    let settings = settings(&ours);
    let other = response(200, &[], &key_answer("other.org", &ours, NOW + 1));
    assert!(
        judge_keys(&settings, &other, NOW)
            .1
            .contains("not example.org")
    );
    let old = response(200, &[], &key_answer("example.org", &ours, NOW - 1));
    let (mark, text) = judge_keys(&settings, &old, NOW);
    assert_eq!(mark, Mark::Fail);
    assert!(text.contains("in the past"), "{text}");
    let mut unsigned = key_answer("example.org", &ours, NOW + 1);
    unsigned["valid_until_ts"] = (NOW + 2).into();
    // Changed after signing: the self-signature no longer covers it.
    let (mark, text) = judge_keys(&settings, &response(200, &[], &unsigned), NOW);
    assert_eq!(mark, Mark::Fail);
    assert!(text.contains("does not verify"), "{text}");
    let missing = response(404, &[], &Value::Null);
    assert_eq!(judge_keys(&settings, &missing, NOW).0, Mark::Fail);
}

#[test]
fn client_well_known_needs_a_base_url() {
    let good = serde_json::json!({"m.homeserver": {"base_url": "https://matrix.example.org"}});
    assert_eq!(
        client_base_url(&response(200, &[], &good)).as_deref(),
        Ok("https://matrix.example.org")
    );
    for bad in [
        serde_json::json!({}),
        serde_json::json!({"m.homeserver": {"base_url": 3}}),
        serde_json::json!({"m.homeserver": {"base_url": "matrix.example.org"}}),
        serde_json::json!({"m.homeserver": {"base_url": "ftp://matrix.example.org"}}),
    ] {
        assert!(client_base_url(&response(200, &[], &bad)).is_err(), "{bad}");
    }
    assert!(client_base_url(&response(404, &[], &good)).is_err());
}

#[test]
fn versions_need_cors() {
    let body = serde_json::json!({"versions": ["v1.11", "v1.12"]});
    let cors = [("access-control-allow-origin", "*")];
    assert_eq!(
        judge_versions(&response(200, &cors, &body), Scheme::Https).0,
        Mark::Pass
    );
    let (mark, text) = judge_versions(&response(200, &[], &body), Scheme::Https);
    assert_eq!(mark, Mark::Fail);
    assert!(text.contains("Access-Control-Allow-Origin"), "{text}");
    let narrow = [("access-control-allow-origin", "https://app.example.org")];
    assert_eq!(
        judge_versions(&response(200, &narrow, &body), Scheme::Https).0,
        Mark::Fail
    );
    assert_eq!(
        judge_versions(&response(200, &cors, &body), Scheme::Http).0,
        Mark::Warn
    );
    let not_matrix = serde_json::json!({"hello": 1});
    assert_eq!(
        judge_versions(&response(200, &cors, &not_matrix), Scheme::Https).0,
        Mark::Fail
    );
}

#[test]
fn the_clock_is_judged_by_the_worst_date() {
    let dates = |skews: &[f64]| -> Vec<(String, f64)> {
        skews
            .iter()
            .map(|skew| ("keys".to_owned(), *skew))
            .collect()
    };
    assert_eq!(judge_clock(&dates(&[0.4, -0.9])).0, Mark::Pass);
    assert_eq!(judge_clock(&dates(&[0.4, -45.0])).0, Mark::Warn);
    assert!(judge_clock(&dates(&[-45.0])).1.contains("45s behind"));
    assert_eq!(judge_clock(&dates(&[0.0, 301.0])).0, Mark::Fail);
    assert!(judge_clock(&dates(&[301.0])).1.contains("301s ahead of"));
    assert_eq!(judge_clock(&[]).0, Mark::Warn);
}

#[test]
fn expiry_is_judged_in_days() {
    let certificate = |days: i64| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["example.org".to_owned()]).expect("params");
        let now = std::time::SystemTime::now();
        let at = |offset: i64| {
            let seconds = i64::try_from(now.duration_since(UNIX_EPOCH).expect("now").as_secs())
                .expect("seconds")
                + offset;
            rcgen::date_time_ymd(1970, 1, 1)
                + Duration::from_secs(u64::try_from(seconds).expect("after 1970"))
        };
        params.not_before = at(-86_400);
        params.not_after = at(days * 86_400);
        params.self_signed(&key).expect("cert").der().to_vec()
    };
    assert_eq!(expiry(Some(&certificate(90))).0, Mark::Pass);
    let (mark, text) = expiry(Some(&certificate(5)));
    assert_eq!(mark, Mark::Warn);
    assert!(
        text.contains("in 4 days") || text.contains("in 5 days"),
        "{text}"
    );
    assert_eq!(expiry(Some(&certificate(-1))).0, Mark::Fail);
    assert_eq!(expiry(None).0, Mark::Warn);
}
