//! Events other servers send us (`/send` transactions, and the events of joins): the first
//! checks on receipt of a PDU (format, signatures, content hash), before the room service
//! runs the authorization checks and stores it ([`crate::rooms::remote`]).

use std::collections::BTreeMap;

use ruma::canonical_json::redact;
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, Verified};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId};

use super::{Federation, Transport};
use crate::matrix::events::Pdu;
use crate::rooms::remote::{Outcome, Refused};
use crate::rooms::rules_of;
use crate::storage::Storage;

/// How many times the PDUs of one transaction may make us fetch the state at a gap: each
/// fetch can cost many requests and checks, and a transaction holds up to 50 PDUs. A PDU
/// past the budget is refused as missing events; its server sends it again later.
pub struct GapBudget(std::sync::atomic::AtomicUsize);

impl GapBudget {
    /// One fetch: what a transaction of an honest server needs (its other PDUs then build
    /// on what that fetch brought).
    pub fn per_transaction() -> GapBudget {
        GapBudget(std::sync::atomic::AtomicUsize::new(1))
    }

    fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }
}

/// Takes one PDU of a room we are in: checks its format and signatures (redacting it if its
/// content hash does not match), then hands it to the room service.
pub async fn receive_pdu(
    fed: &Federation,
    origin: &str,
    gaps: &GapBudget,
    json: CanonicalJsonObject,
) -> (Option<OwnedEventId>, Result<Outcome, Refused>) {
    let (rules, room_id) = match room_of(&fed.storage, &json) {
        Ok(found) => found,
        Err(err) => return (None, Err(err)),
    };
    let event_id = Pdu::from_json(&json, &rules).ok().map(|pdu| pdu.event_id);
    let result = async {
        let (json, pdu) = checked(fed, json, &rules).await?;
        // The room's server ACL: neither the sending server nor the sender's may be denied.
        for server in [origin, pdu.sender.server_name().as_str()] {
            if !super::acl::room_allows(&fed.storage, &room_id, server)? {
                return Err(Refused::Unauthorized(format!(
                    "{server} is denied by the room's server ACL"
                )));
            }
        }
        let store = || {
            fed.rooms
                .store_remote(&room_id, json.clone(), pdu.clone(), false)
        };
        let mut result = store().await;
        // A gap before it: ask the sender for the events we miss, then try again.
        if matches!(result, Err(Refused::Missing(_))) && has_unknown_prev(fed, &pdu)? {
            fill_gap(fed, origin, &room_id, &rules, &pdu).await;
            result = store().await;
        }
        // Still missing: ask for the state before it instead, and try once more.
        if let Err(Refused::Missing(what)) = &result
            && gaps.take()
        {
            tracing::info!(%room_id, event = %pdu.event_id, "fetching the state at a gap ({what})");
            let gap =
                super::gap_state::fetch_state_at_gap(fed, origin, &room_id, &rules, &pdu).await?;
            result = fed
                .rooms
                .store_remote_at_gap(&room_id, (json.clone(), pdu.clone()), false, &gap)
                .await;
        }
        result
    }
    .await;
    (event_id, result)
}

/// Whether one of `pdu`'s prev events is not here at all.
fn has_unknown_prev(fed: &Federation, pdu: &Pdu) -> Result<bool, Refused> {
    for prev in &pdu.prev_events {
        if !fed.storage.eventid_pdu.contains_key(&prev.to_string())? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How many missing events one gap may bring (the spec's default for the request).
const MISSING_EVENTS_LIMIT: usize = 20;

/// Asks `origin` for the events between our forward extremities and `pdu`
/// (`get_missing_events`) and takes them in, oldest first. Events they depend on that are
/// still missing are not chased further: the state at the gap is fetched instead
/// ([`super::gap_state`]).
async fn fill_gap(
    fed: &Federation,
    origin: &str,
    room_id: &ruma::RoomId,
    rules: &RoomVersionRules,
    pdu: &Pdu,
) {
    let Ok(Some(room)) = fed.storage.roomid_room.get(&room_id.to_string()) else {
        return;
    };
    let earliest: Vec<String> = room
        .extremities
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    let min_depth = room
        .extremities
        .iter()
        .map(|(_, depth)| *depth)
        .min()
        .unwrap_or(0);
    let body = serde_json::json!({
        "earliest_events": earliest,
        "latest_events": [pdu.event_id],
        "limit": MISSING_EVENTS_LIMIT,
        "min_depth": min_depth,
    });
    let path = format!(
        "/_matrix/federation/v1/get_missing_events/{}",
        super::transport::encode(room_id.as_str())
    );
    let answer = match fed
        .transport
        .request_json(origin, "POST", &path, Some(&body))
        .await
    {
        Ok(answer) => answer,
        Err(err) => {
            tracing::info!(%room_id, %origin, "get_missing_events failed: {err}");
            return;
        }
    };
    let mut events: Vec<(u64, CanonicalJsonObject)> = answer["events"]
        .as_array()
        .into_iter()
        .flatten()
        .take(MISSING_EVENTS_LIMIT)
        .filter_map(super::transport::to_object)
        .map(|json| {
            let depth = json
                .get("depth")
                .and_then(CanonicalJsonValue::as_integer)
                .and_then(|depth| u64::try_from(i64::from(depth)).ok())
                .unwrap_or(0);
            (depth, json)
        })
        .collect();
    events.sort_by_key(|(depth, _)| *depth);
    for (_, json) in events {
        let result = async {
            let (json, missing) = checked(fed, json, rules).await?;
            fed.rooms.store_remote(room_id, json, missing, false).await
        }
        .await;
        if let Err(err) = result {
            tracing::info!(%room_id, "a missing event was refused: {err}");
        }
    }
}

/// The room version rules and ID of the room a PDU names, if we hold that room.
pub fn room_of(
    storage: &Storage,
    json: &CanonicalJsonObject,
) -> Result<(RoomVersionRules, OwnedRoomId), Refused> {
    let room_id = json
        .get("room_id")
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|id| OwnedRoomId::try_from(id).ok())
        .ok_or_else(|| Refused::Invalid("no valid room_id".to_owned()))?;
    let record = storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Refused::Invalid(format!("this server is not in {room_id}")))?;
    let rules = rules_of(&record).map_err(|err| Refused::Invalid(err.to_string()))?;
    Ok((rules, room_id))
}

/// Checks 1 to 3: the PDU format of the room version, the signatures of the servers that
/// must sign, and the content hash (a mismatch redacts the event rather than refusing it).
pub async fn checked(
    fed: &Federation,
    json: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(CanonicalJsonObject, Pdu), Refused> {
    ruma::state_res::check_pdu_format(&json, &rules.event_format).map_err(Refused::Invalid)?;
    let pdu = Pdu::from_json(&json, rules).map_err(|err| Refused::Invalid(err.to_string()))?;
    let keys = public_keys_for(&fed.transport, &fed.storage, &json).await?;
    let verified = ruma::signatures::verify_event(&keys, &json, rules)
        .map_err(|err| Refused::Signature(err.to_string()))?;
    let json = match verified {
        Verified::All => json,
        Verified::Signatures => {
            tracing::warn!(event = %pdu.event_id, "content hash mismatch: stored redacted");
            redact(json, &rules.redaction, None).map_err(|err| Refused::Invalid(err.to_string()))?
        }
    };
    let pdu = Pdu::from_json(&json, rules).map_err(|err| Refused::Invalid(err.to_string()))?;
    Ok((json, pdu))
}

/// The public keys of every server that signed `json`, as the keys were when they signed:
/// stored ones, else fetched (directly or through a notary). A server we cannot get keys
/// for is left out, and the signature check then fails if its signature was required.
async fn public_keys_for(
    federation: &Transport,
    storage: &Storage,
    json: &CanonicalJsonObject,
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
        let keys = match keys_of(federation, storage, server, &wanted, ts).await {
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
    server: &str,
    wanted: &[&String],
    ts: u64,
) -> Result<BTreeMap<String, Base64>, Refused> {
    if server == federation.origin.as_str() {
        let key = federation.signing_key();
        return Ok(BTreeMap::from([(
            key.key_id().to_string(),
            Base64::new(key.public_key().to_vec()),
        )]));
    }
    let mut stored = storage.servername_keys.get(&server.to_owned())?;
    let knows_all = |keys: &Option<crate::federation::keys::ServerKeys>| {
        keys.as_ref()
            .is_some_and(|keys| wanted.iter().all(|id| keys.keys.contains_key(id.as_str())))
    };
    if !knows_all(&stored) {
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
                    if knows_all(&stored) {
                        break;
                    }
                }
            }
        }
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
