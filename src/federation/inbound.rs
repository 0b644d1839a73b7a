//! Events other servers send us (`/send` transactions, and the events of joins): the first
//! checks on receipt of a PDU (format, signatures, content hash), before the room service
//! runs the authorization checks and stores it ([`crate::rooms::remote`]).

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId};

use super::Federation;
use super::pdu_checks::checked;
use crate::matrix::events::Pdu;
use crate::rooms::remote::{Outcome, Refused};
use crate::rooms::rules_of;
use crate::storage::Storage;

/// How many times the PDUs of one transaction may make us fetch the state at a gap: each
/// fetch can cost many requests and checks, and a transaction holds up to 50 PDUs. A PDU
/// past the budget is refused as missing events; its server sends it again later.
pub(crate) struct GapBudget(std::sync::atomic::AtomicUsize);

impl GapBudget {
    /// One fetch: what a transaction of an honest server needs (its other PDUs then build
    /// on what that fetch brought).
    pub(crate) fn per_transaction() -> GapBudget {
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
pub(crate) async fn receive_pdu(
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
pub(crate) fn room_of(
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
