//! Other servers' users' device keys, asked for on behalf of our clients (spec: server-server
//! API, "End-to-End Encryption": `/user/keys/query` and `/user/keys/claim`). One request per
//! server, all at once, each bounded by the client's `timeout`; a server that does not answer
//! in time (or at all) is reported in `failures` and the others' answers are kept.
//!
//! Answers are filtered to the users of the server that sent them: a server may speak only
//! for its own users' keys.

use std::collections::BTreeMap;
use std::time::Duration;

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::federation::Federation;

/// The most servers one client request fans out to.
pub(crate) const MAX_SERVERS: usize = 100;

/// The `timeout` when the client gives none (the spec's default: 10 seconds), and the most
/// it may ask for.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// What the other servers answered, merged, and the servers that failed.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    /// The answers' top-level fields (`device_keys`, `master_keys`, ... or
    /// `one_time_keys`), each user → value, only users of the answering server.
    pub(crate) fields: BTreeMap<String, Map<String, Value>>,
    /// Server name → `{}` for each server that failed, as the spec's `failures`.
    pub(crate) failures: Map<String, Value>,
}

/// The client's `timeout`, bounded.
pub(crate) fn timeout_of(timeout_ms: Option<u64>) -> Duration {
    timeout_ms.map_or(DEFAULT_TIMEOUT, |ms| {
        Duration::from_millis(ms).min(MAX_TIMEOUT)
    })
}

/// Sends `body_of(users)` to each server's `path`, at once, and merges the `fields` of the
/// answers. `wanted` maps each server to the part of the request for its users.
async fn fan_out(
    fed: &Federation,
    path: &'static str,
    wrapper: &'static str,
    wanted: BTreeMap<String, Map<String, Value>>,
    fields: &[&'static str],
    timeout: Duration,
) -> Fanout {
    let mut fanout = Fanout::default();
    if !fed.config.federation.enabled {
        for server in wanted.keys() {
            fanout.failures.insert(server.clone(), json!({}));
        }
        return fanout;
    }
    let requests = wanted
        .into_iter()
        .take(MAX_SERVERS)
        .map(|(server, users)| async move {
            let body = json!({ wrapper: users });
            let answer = tokio::time::timeout(
                timeout,
                fed.transport
                    .request_json(&server, "POST", path, Some(&body)),
            )
            .await;
            (server, answer)
        });
    for (server, answer) in futures_util::future::join_all(requests).await {
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                tracing::info!(server, path, "key request failed: {err}");
                fanout.failures.insert(server, json!({}));
                continue;
            }
            Err(_) => {
                tracing::info!(server, path, "key request timed out");
                fanout.failures.insert(server, json!({}));
                continue;
            }
        };
        for field in fields {
            let Some(by_user) = answer.get(*field).and_then(Value::as_object) else {
                continue;
            };
            let merged = fanout.fields.entry((*field).to_owned()).or_default();
            for (user, value) in by_user {
                let theirs = UserId::parse(user.as_str())
                    .is_ok_and(|user| user.server_name().as_str() == server);
                if theirs && value.is_object() {
                    merged.insert(user.clone(), value.clone());
                }
            }
        }
    }
    fanout
}

/// Device keys (and the cross-signing keys they come with) of remote users, grouped by
/// server: server → user → device IDs (empty for all).
pub(crate) async fn query(
    fed: &Federation,
    wanted: BTreeMap<String, Map<String, Value>>,
    timeout: Duration,
) -> Fanout {
    fan_out(
        fed,
        "/_matrix/federation/v1/user/keys/query",
        "device_keys",
        wanted,
        &["device_keys", "master_keys", "self_signing_keys"],
        timeout,
    )
    .await
}

/// One-time keys of remote users' devices: server → user → device → algorithm.
pub(crate) async fn claim(
    fed: &Federation,
    wanted: BTreeMap<String, Map<String, Value>>,
    timeout: Duration,
) -> Fanout {
    fan_out(
        fed,
        "/_matrix/federation/v1/user/keys/claim",
        "one_time_keys",
        wanted,
        &["one_time_keys"],
        timeout,
    )
    .await
}
