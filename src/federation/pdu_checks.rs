//! Checks 1 to 3 of receiving a PDU (spec: server-server API, "Checks performed on
//! receipt of a PDU"): the room version's format, the signatures of the servers that must
//! sign (their keys fetched as needed), the content hash. Every way a remote event reaches
//! us (`/send`, joins, invites, backfill, the state at a gap) runs them first, so they sit
//! in a file of their own rather than in any one of those.

use std::collections::BTreeMap;

use ruma::canonical_json::redact;
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, Verified};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};

use super::{Federation, Transport};
use crate::federation::keys::ServerKeys;
use crate::matrix::events::Pdu;
use crate::rooms::remote::Refused;
use crate::storage::Storage;

/// Checks 1 to 3: the PDU format of the room version, the signatures of the servers that
/// must sign, and the content hash (a mismatch redacts the event rather than refusing it).
pub(crate) async fn checked(
    fed: &Federation,
    json: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(CanonicalJsonObject, Pdu), Refused> {
    let pdu = Pdu::from_json(&json, rules).map_err(|err| Refused::Invalid(err.to_string()))?;
    checked_parsed(fed, (json, pdu), rules, None).await
}

/// [`checked`] for a PDU already parsed from `json` (its event ID computed: the reference
/// hash is not taken twice), with the signing keys already read for its transaction in
/// `keys`, if given (a transaction's PDUs are mostly signed by one server with one key).
pub(crate) async fn checked_parsed(
    fed: &Federation,
    (json, pdu): (CanonicalJsonObject, Pdu),
    rules: &RoomVersionRules,
    keys: Option<&TransactionKeys>,
) -> Result<(CanonicalJsonObject, Pdu), Refused> {
    ruma::state_res::check_pdu_format(&json, &rules.event_format).map_err(Refused::Invalid)?;
    let keys = public_keys_for(&fed.transport, &fed.storage, &json, keys).await?;
    let verified = ruma::signatures::verify_event(&keys, &json, rules)
        .map_err(|err| Refused::Signature(err.to_string()))?;
    match verified {
        Verified::All => Ok((json, pdu)),
        Verified::Signatures => {
            tracing::warn!(event = %pdu.event_id, "content hash mismatch: stored redacted");
            let json = redact(json, &rules.redaction, None)
                .map_err(|err| Refused::Invalid(err.to_string()))?;
            let pdu =
                Pdu::from_json(&json, rules).map_err(|err| Refused::Invalid(err.to_string()))?;
            Ok((json, pdu))
        }
    }
}

/// The servers' keys read for one transaction, by server: its PDUs are checked with keys
/// read once, not once per PDU. A key a PDU names that is not among them is looked up
/// (and fetched) as for a PDU on its own.
#[derive(Default)]
pub(crate) struct TransactionKeys {
    by_server: std::sync::Mutex<BTreeMap<String, ServerKeys>>,
}

impl TransactionKeys {
    fn get(&self, server: &str, wanted: &[&String]) -> Option<ServerKeys> {
        self.lock()
            .get(server)
            .filter(|keys| knows_all(keys, wanted))
            .cloned()
    }

    fn keep(&self, server: &str, keys: &ServerKeys) {
        // A hostile transaction could name many servers: a few are kept.
        let mut by_server = self.lock();
        if by_server.len() < 8 || by_server.contains_key(server) {
            by_server.insert(server.to_owned(), keys.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ServerKeys>> {
        self.by_server
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn knows_all(keys: &ServerKeys, wanted: &[&String]) -> bool {
    wanted.iter().all(|id| keys.keys.contains_key(id.as_str()))
}

/// The public keys of every server that signed `json`, as the keys were when they signed:
/// stored ones, else fetched (directly or through a notary). A server we cannot get keys
/// for is left out, and the signature check then fails if its signature was required.
async fn public_keys_for(
    federation: &Transport,
    storage: &Storage,
    json: &CanonicalJsonObject,
    read: Option<&TransactionKeys>,
) -> Result<PublicKeyMap, Refused> {
    let mut map = PublicKeyMap::new();
    let Some(CanonicalJsonValue::Object(signatures)) = json.get("signatures") else {
        return Err(Refused::Signature("the event is not signed".to_owned()));
    };
    let ts = json
        .get("origin_server_ts")
        .and_then(CanonicalJsonValue::as_integer)
        .and_then(|ts| u64::try_from(i64::from(ts)).ok())
        .unwrap_or(0);
    // A hostile event could name many servers: only a few are ever needed.
    for (server, by_key) in signatures.iter().take(8) {
        let Some(by_key) = by_key.as_object() else {
            continue;
        };
        let wanted: Vec<&String> = by_key.keys().collect();
        let keys = match keys_of(federation, storage, (server, &wanted, ts), read).await {
            Ok(keys) => keys,
            Err(err) => {
                tracing::debug!(%server, "no keys for a signature: {err}");
                continue;
            }
        };
        map.insert(server.clone(), keys);
    }
    Ok(map)
}

/// `server`'s keys that were valid at `ts` (old keys included), fetching them when one of
/// `wanted` is unknown.
async fn keys_of(
    federation: &Transport,
    storage: &Storage,
    (server, wanted, ts): (&str, &[&String], u64),
    read: Option<&TransactionKeys>,
) -> Result<BTreeMap<String, Base64>, Refused> {
    if server == federation.origin.as_str() {
        let key = federation.signing_key();
        return Ok(BTreeMap::from([(
            key.key_id().to_string(),
            Base64::new(key.public_key().to_vec()),
        )]));
    }
    let mut stored = match read.and_then(|read| read.get(server, wanted)) {
        Some(keys) => Some(keys),
        None => storage.servername_keys.get(&server.to_owned())?,
    };
    let knows =
        |keys: &Option<ServerKeys>| keys.as_ref().is_some_and(|keys| knows_all(keys, wanted));
    if !knows(&stored) {
        let now = crate::matrix::time::now_ms();
        match federation.refresh_keys(storage, server, now).await {
            Ok(fresh) => stored = Some(fresh),
            Err(err) => {
                // Another request may be fetching them right now (fetches are limited to
                // one a minute per server): wait a little for its answer.
                tracing::debug!(%server, "refreshing keys: {err}");
                let racing = err.to_string().contains("too recently");
                for _ in 0..if racing { 10 } else { 0 } {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    stored = storage.servername_keys.get(&server.to_owned())?;
                    if knows(&stored) {
                        break;
                    }
                }
            }
        }
    }
    if let (Some(read), Some(keys)) = (read, &stored)
        && knows_all(keys, wanted)
    {
        read.keep(server, keys);
    }
    let stored = stored.ok_or_else(|| Refused::Signature(format!("no keys of {server}")))?;
    Ok(stored
        .keys
        .iter()
        .filter(|(_, key)| key.expired_ts.is_none_or(|expired| expired > ts))
        .filter_map(|(id, key)| {
            crate::matrix::crypto::decode_base64(&key.key)
                .map(|bytes| (id.clone(), Base64::new(bytes)))
        })
        .collect())
}
