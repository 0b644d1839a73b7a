//! Events other servers send us (`/send` transactions, and the events of joins): the first
//! checks on receipt of a PDU (format, signatures, content hash), before the room service
//! runs the authorization checks and stores it ([`crate::rooms::remote`]).
//!
//! What a PDU may make us do is bounded, for a hostile server in the room: the events it
//! needs are fetched with no room lock held (the room service takes it only to check and
//! store, and checks again then what changed), within the budget of its transaction
//! ([`GapBudget`]), one PDU of a server at a time ([`OriginWork`]); its checks (state
//! resolution, auth chain walks) run on the room service's bounded blocking pool, never
//! on an HTTP worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId};
use serde_json::value::RawValue;

use super::Federation;
use super::pdu_checks::{TransactionKeys, checked, checked_parsed};
use crate::matrix::events::Pdu;
use crate::rooms::Unflushed;
use crate::rooms::remote::{Outcome, Refused};
use crate::rooms::rules_of;
use crate::storage::Storage;

/// What the PDUs of one transaction may make us do beyond checking them, shared by all of
/// them: each limit bounds what one transaction of a hostile server in the room may cost,
/// and is well above what an honest server's transaction needs (its PDUs mostly build on
/// each other, so one gap, filled once, serves all of them). A PDU past a budget is refused
/// as missing events: its server does not resend it, but the next event building on it
/// brings it through `get_missing_events` (in a later transaction, with a fresh budget).
pub(crate) struct GapBudget {
    /// Fetches of the state at a gap ([`super::gap_state`]).
    state_fetches: AtomicUsize,
    /// `get_missing_events` requests.
    missing_fetches: AtomicUsize,
    /// Bytes of `get_missing_events` answers.
    missing_bytes: AtomicUsize,
    /// Prev events of PDUs naming more than one (each may bring its own state into a state
    /// resolution).
    forked_prevs: AtomicUsize,
    /// The signing keys read for the transaction's PDUs (not a budget: shared the same way).
    keys: TransactionKeys,
}

/// Fetches of the state at a gap per transaction: each can cost many requests and checks,
/// and what an honest transaction needs is one (its other PDUs then build on what that
/// fetch brought).
const STATE_FETCHES_PER_TRANSACTION: usize = 1;

/// `get_missing_events` requests per transaction (up to 50 PDUs could each ask one): one gap
/// per transaction is usual, a few rooms with a gap each in one transaction happen after an
/// outage.
const MISSING_FETCHES_PER_TRANSACTION: usize = 5;

/// The largest `get_missing_events` answer read: [`MISSING_EVENTS_LIMIT`] events of the
/// largest size the spec allows (64 KiB), with room for the envelope. (The transport
/// default would read 4 MiB, the answer limit of some servers 16 MiB.)
const MISSING_ANSWER_LIMIT: usize = MISSING_EVENTS_LIMIT * 64 * 1024 + 256 * 1024;

/// Bytes of `get_missing_events` answers read per transaction: about three answers of the
/// largest events (honest answers are a few KiB per event). The answer is held only while
/// it is read, its events parsed one at a time.
const MISSING_BYTES_PER_TRANSACTION: usize = 4 * 1024 * 1024;

/// Prev events of forking PDUs per transaction: two PDUs naming the spec's 20 prev events
/// each. A state resolution of 20 forked states in a large room walks each state's auth
/// chain (bounded by time, [`crate::rooms::auth_chain::WALK_TIME`]): that work runs on
/// the bounded pool of the room service, and this bounds how much of it one transaction
/// queues. Honest events name one to a few prev events.
const FORKED_PREVS_PER_TRANSACTION: usize = 40;

impl GapBudget {
    /// The budget of one transaction (or of one event received on its own, as a join).
    pub(crate) fn per_transaction() -> GapBudget {
        GapBudget {
            state_fetches: AtomicUsize::new(STATE_FETCHES_PER_TRANSACTION),
            missing_fetches: AtomicUsize::new(MISSING_FETCHES_PER_TRANSACTION),
            missing_bytes: AtomicUsize::new(MISSING_BYTES_PER_TRANSACTION),
            forked_prevs: AtomicUsize::new(FORKED_PREVS_PER_TRANSACTION),
            keys: TransactionKeys::default(),
        }
    }

    /// Takes `amount` from `budget` if it has that much left.
    fn take(budget: &AtomicUsize, amount: usize) -> bool {
        budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(amount)
            })
            .is_ok()
    }

    /// Takes what is left of `budget`, at most `amount`; returns what was taken.
    fn take_up_to(budget: &AtomicUsize, amount: usize) -> usize {
        let before = budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                Some(left.saturating_sub(amount))
            })
            .unwrap_or(0);
        before.min(amount)
    }

    /// Gives back to `budget` what was taken and not used.
    fn give_back(budget: &AtomicUsize, amount: usize) {
        budget.fetch_add(amount, Ordering::SeqCst);
    }
}

/// The inbound work in progress per origin: one PDU of a server is taken in at a time (the
/// spec has a server send one transaction at a time), so a server whose events make us
/// fetch, check and resolve much, or whose answers come slowly, holds up only itself, and
/// never more than one of the room service's [`crate::rooms::REMOTE_CHECK_WORKERS`].
#[derive(Default)]
pub(crate) struct OriginWork {
    busy: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An origin's turn: the others wait until it is dropped.
struct OriginTurn<'a> {
    work: &'a OriginWork,
    origin: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl OriginWork {
    async fn turn(&self, origin: &str) -> OriginTurn<'_> {
        let lock = {
            let mut busy = self
                .busy
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            busy.entry(origin.to_owned()).or_default().clone()
        };
        OriginTurn {
            work: self,
            origin: origin.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for OriginTurn<'_> {
    /// Ends the turn, and forgets the origin when nobody waits for it (the map holds only
    /// origins with work in progress).
    fn drop(&mut self) {
        self.guard = None;
        let mut busy = self
            .work
            .busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if busy
            .get(&self.origin)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            busy.remove(&self.origin);
        }
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
    receive_pdu_in(fed, origin, gaps, json, None).await
}

/// [`receive_pdu`] for one PDU of a transaction: with `unflushed`, the PDU (if stored) is
/// neither flushed nor made visible here, but by [`crate::rooms::Rooms::make_durable`]
/// before the transaction is answered.
pub(crate) async fn receive_pdu_in(
    fed: &Federation,
    origin: &str,
    gaps: &GapBudget,
    json: CanonicalJsonObject,
    unflushed: Option<&Unflushed>,
) -> (Option<OwnedEventId>, Result<Outcome, Refused>) {
    let (rules, room_id) = match room_of(&fed.storage, &json) {
        Ok(found) => found,
        Err(err) => return (None, Err(err)),
    };
    let parsed = Pdu::from_json(&json, &rules);
    let event_id = parsed.as_ref().ok().map(|pdu| pdu.event_id.clone());
    let _turn = fed.inbound.turn(origin).await;
    let result = async {
        let pdu = parsed.map_err(|err| Refused::Invalid(err.to_string()))?;
        let (json, pdu) = checked_parsed(fed, (json, pdu), &rules, Some(&gaps.keys)).await?;
        if pdu.prev_events.len() > 1 && !GapBudget::take(&gaps.forked_prevs, pdu.prev_events.len())
        {
            return Err(Refused::Missing(format!(
                "its {} prev events are past this transaction's budget of forked prev events",
                pdu.prev_events.len()
            )));
        }
        // The room's server ACL: neither the sending server nor the sender's may be denied.
        for server in [origin, pdu.sender.server_name().as_str()] {
            if !super::acl::room_allows(&fed.storage, &room_id, server)? {
                return Err(Refused::Unauthorized(format!(
                    "{server} is denied by the room's server ACL"
                )));
            }
        }
        let store = || async {
            match unflushed {
                Some(unflushed) => {
                    fed.rooms
                        .store_remote_unflushed(
                            &room_id,
                            (json.clone(), pdu.clone()),
                            &[],
                            unflushed,
                        )
                        .await
                }
                None => {
                    fed.rooms
                        .store_remote(&room_id, json.clone(), pdu.clone(), false)
                        .await
                }
            }
        };
        let mut result = store().await;
        // A gap before it: ask the sender for the events we miss, then try again.
        if matches!(result, Err(Refused::Missing(_))) && has_unknown_prev(fed, &pdu)? {
            fill_gap(fed, origin, gaps, (&room_id, &rules), &pdu).await;
            result = store().await;
        }
        // Still missing: ask for the state before it instead, and try once more.
        if let Err(Refused::Missing(what)) = &result
            && GapBudget::take(&gaps.state_fetches, 1)
        {
            tracing::info!(%room_id, event = %pdu.event_id, "fetching the state at a gap ({what})");
            let gap =
                super::gap_state::fetch_state_at_gap(fed, origin, &room_id, &rules, &pdu).await?;
            let at_gap = (json.clone(), pdu.clone());
            result = match unflushed {
                Some(unflushed) => {
                    fed.rooms
                        .store_remote_unflushed(&room_id, at_gap, &gap, unflushed)
                        .await
                }
                None => {
                    fed.rooms
                        .store_remote_at_gap(&room_id, at_gap, false, &gap)
                        .await
                }
            };
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
/// (`get_missing_events`) and takes them in, oldest first, within the transaction's
/// budget. Events they depend on that are still missing are not chased further: the state
/// at the gap is fetched instead ([`super::gap_state`]). The answer is read as raw bytes
/// (at most [`MISSING_ANSWER_LIMIT`]) and only its first [`MISSING_EVENTS_LIMIT`] events
/// are parsed, one at a time: no JSON tree of the whole answer.
async fn fill_gap(
    fed: &Federation,
    origin: &str,
    gaps: &GapBudget,
    (room_id, rules): (&ruma::RoomId, &RoomVersionRules),
    pdu: &Pdu,
) {
    let Ok(Some(room)) = fed.storage.roomid_room.get(&room_id.to_string()) else {
        return;
    };
    if !GapBudget::take(&gaps.missing_fetches, 1) {
        tracing::info!(%room_id, %origin, "no get_missing_events left in this transaction's budget");
        return;
    }
    let limit = GapBudget::take_up_to(&gaps.missing_bytes, MISSING_ANSWER_LIMIT);
    if limit == 0 {
        tracing::info!(%room_id, %origin, "no bytes of missing events left in this transaction's budget");
        return;
    }
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
    // A failed request keeps what it took of the budget: an answer too large or too slow
    // is what the budget bounds.
    let answer = match fed
        .transport
        .request_raw(origin, "POST", &path, Some(&body), limit)
        .await
    {
        Ok(answer) => answer,
        Err(err) => {
            tracing::info!(%room_id, %origin, "get_missing_events failed: {err}");
            return;
        }
    };
    GapBudget::give_back(&gaps.missing_bytes, limit.saturating_sub(answer.len()));
    let events = match serde_json::from_slice::<MissingEvents<'_>>(&answer) {
        Ok(missing) => missing.events.0,
        Err(err) => {
            tracing::info!(%room_id, %origin, "a bad get_missing_events answer: {err}");
            return;
        }
    };
    let mut events: Vec<(u64, CanonicalJsonObject)> = events
        .into_iter()
        .filter_map(raw_object)
        .map(|json| {
            let depth = json
                .get("depth")
                .and_then(CanonicalJsonValue::as_integer)
                .and_then(|depth| u64::try_from(i64::from(depth)).ok())
                .unwrap_or(0);
            (depth, json)
        })
        .collect();
    drop(answer);
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

/// A `get_missing_events` answer, borrowed from its bytes.
#[derive(serde::Deserialize)]
struct MissingEvents<'a> {
    #[serde(borrow, default)]
    events: RawList<'a, MISSING_EVENTS_LIMIT, true>,
}

/// A JSON array of another server's answer, its elements unparsed (borrowed from the
/// answer's bytes), at most `MAX` of them: past `MAX`, the rest are skipped without being
/// kept (`SKIP_REST`) or the answer is refused. An answer of a million `{}` thus costs no
/// million entries, whatever its byte limit.
#[derive(Default)]
pub(crate) struct RawList<'a, const MAX: usize, const SKIP_REST: bool>(
    pub(crate) Vec<&'a RawValue>,
);

impl<'de: 'a, 'a, const MAX: usize, const SKIP_REST: bool> serde::Deserialize<'de>
    for RawList<'a, MAX, SKIP_REST>
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a, const MAX: usize, const SKIP_REST: bool>(
            std::marker::PhantomData<&'a ()>,
        );
        impl<'de: 'a, 'a, const MAX: usize, const SKIP_REST: bool> serde::de::Visitor<'de>
            for Visitor<'a, MAX, SKIP_REST>
        {
            type Value = RawList<'a, MAX, SKIP_REST>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a list of at most {MAX} elements")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut kept = Vec::new();
                while kept.len() < MAX {
                    match seq.next_element::<&'de RawValue>()? {
                        Some(raw) => kept.push(raw),
                        None => return Ok(RawList(kept)),
                    }
                }
                if !SKIP_REST {
                    if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX} elements"
                        )));
                    }
                    return Ok(RawList(kept));
                }
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(RawList(kept))
            }
        }
        deserializer.deserialize_seq(Visitor(std::marker::PhantomData))
    }
}

/// An event of another server's answer, parsed alone; `None` if it is no JSON object
/// (or not canonical: floats, numbers out of range).
pub(crate) fn raw_object(raw: &RawValue) -> Option<CanonicalJsonObject> {
    serde_json::from_str::<CanonicalJsonObject>(raw.get()).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_events_answer_keeps_its_first_events_unparsed_and_skips_the_rest() {
        // A million empty objects: only the first 20 are kept.
        let mut answer = String::from(r#"{"events":["#);
        answer.push_str(&vec![r#"{"n":1}"#; 1_000_000].join(","));
        answer.push_str(r#"],"other":{"deep":[1,2,3]}}"#);
        let parsed: MissingEvents<'_> = serde_json::from_str(&answer).expect("parse");
        assert_eq!(parsed.events.0.len(), MISSING_EVENTS_LIMIT);
        assert_eq!(parsed.events.0[0].get(), r#"{"n":1}"#);
        let few: MissingEvents<'_> =
            serde_json::from_str(r#"{"events":[{"a":1},{"b":2}]}"#).expect("parse");
        assert_eq!(few.events.0.len(), 2);
        let none: MissingEvents<'_> = serde_json::from_str("{}").expect("parse");
        assert!(none.events.0.is_empty());
        assert!(serde_json::from_str::<MissingEvents<'_>>(r#"{"events":{}}"#).is_err());
        assert!(serde_json::from_str::<MissingEvents<'_>>(r#"{"events":[1,"#).is_err());
        // A list that must not be longer is refused past its length.
        assert_eq!(
            serde_json::from_str::<RawList<'_, 2, false>>("[1,2]")
                .expect("two")
                .0
                .len(),
            2
        );
        assert!(serde_json::from_str::<RawList<'_, 2, false>>("[1,2,3]").is_err());
    }

    #[test]
    fn a_transaction_budget_is_taken_and_given_back() {
        let budget = GapBudget::per_transaction();
        assert!(GapBudget::take(&budget.forked_prevs, 20));
        assert!(GapBudget::take(&budget.forked_prevs, 20));
        assert!(!GapBudget::take(&budget.forked_prevs, 2));
        let first = GapBudget::take_up_to(&budget.missing_bytes, MISSING_ANSWER_LIMIT);
        assert_eq!(first, MISSING_ANSWER_LIMIT);
        GapBudget::give_back(&budget.missing_bytes, first - 1000);
        let mut taken = 1000;
        loop {
            let more = GapBudget::take_up_to(&budget.missing_bytes, MISSING_ANSWER_LIMIT);
            if more == 0 {
                break;
            }
            taken += more;
        }
        assert_eq!(taken, MISSING_BYTES_PER_TRANSACTION);
        assert!(GapBudget::take(&budget.state_fetches, 1));
        assert!(!GapBudget::take(&budget.state_fetches, 1));
    }
}
