//! The state at a gap `get_missing_events` could not close (spec: server-server API,
//! "Retrieving events"): for each prev event of a new event whose state we lack, the
//! sending server is asked for the state before it (`/state_ids?event_id=`), the events we
//! miss of it (and the prev event itself) come with `/event` one by one, or with one
//! `/state` when many are missing. The whole is checked as a `send_join` answer is
//! ([`super::room_state`]: each event's format, signatures and hash, then one room, one
//! event per key, its create event, every event authorized by its own auth events) and
//! kept as outliers (outside the timeline, never shown), the state as the state before the
//! prev event. The new event's own missing auth events are fetched and checked the same
//! way. The room service then authorizes the new event against the state after its prev
//! events, as for any other.
//!
//! Everything is bounded against a hostile server: how many prev events are looked into,
//! how many IDs an answer may name, how many events are fetched one by one, how large a
//! `/state` answer may be.

use std::collections::{BTreeSet, HashMap};

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, EventId, OwnedEventId, RoomId};
use serde_json::value::RawValue;

use super::inbound::{RawList, raw_object};
use super::pdu_checks::checked;
use super::room_state::{self, NamedState};
use super::transport::encode;
use crate::federation::Federation;
use crate::matrix::events::Pdu;
use crate::rooms::load_pdu;
use crate::rooms::remote::Refused;

/// Prev events of one event whose state is fetched, at most (an event may name 20).
const MAX_PREVS: usize = 2;

/// State and auth chain IDs one `/state_ids` answer may name, at most: a bound on the
/// bytes in flight of one answer (and the IDs held while its events are checked), set
/// above the rooms of 100,000 state events and their auth chains that must not be refused.
const MAX_IDS: usize = 250_000;

/// Events fetched one by one (`/event`) for one event, at most; past this, `/state`.
const MAX_SINGLE_FETCHES: usize = 50;

/// The largest `/state` answer read.
const STATE_ANSWER_LIMIT: usize = 64 * 1024 * 1024;

/// The largest `/state_ids` answer read: [`MAX_IDS`] event IDs of a usual length (44
/// characters from room version 4, 47 written as JSON strings) take ~12 MB.
const STATE_IDS_ANSWER_LIMIT: usize = 16 * 1024 * 1024;

/// The largest `/event` answer read: one event of the largest size the spec allows
/// (64 KiB), with room for the envelope and escapes written longer than canonical JSON's.
/// (It was read up to the transport's 16 MiB, into a JSON tree, for each of up to
/// [`MAX_SINGLE_FETCHES`] events.)
const EVENT_ANSWER_LIMIT: usize = 256 * 1024;

/// The state before prev events, as fetched at a gap: used for the one event that
/// needed it, never kept as the state of the prev events themselves (one server's word
/// about a room's past would otherwise judge every later event building on it).
pub(crate) type GapStates = Vec<(OwnedEventId, NamedState)>;

/// Fetches and checks the state before each prev event of `pdu` whose state we lack (the
/// events stored as outliers, the states returned), and stores `pdu`'s missing auth events,
/// from `origin`. An error says why the gap stays.
pub(crate) async fn fetch_state_at_gap(
    fed: &Federation,
    origin: &str,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    pdu: &Pdu,
) -> Result<GapStates, Refused> {
    let storage = &fed.storage;
    let version = storage
        .roomid_room
        .get(&room_id.to_string())?
        .ok_or_else(|| Refused::Invalid(format!("this server is not in {room_id}")))?
        .version;
    let mut prevs = Vec::new();
    for prev in &pdu.prev_events {
        if storage
            .eventid_statebefore
            .get(&prev.to_string())?
            .is_none()
        {
            prevs.push(prev.clone());
        }
    }
    if prevs.len() > MAX_PREVS {
        return Err(Refused::Missing(format!(
            "the state at {} prev events (at most {MAX_PREVS} are fetched)",
            prevs.len()
        )));
    }
    let mut fetches = Fetches {
        fed,
        origin,
        room_id,
        rules,
        left: MAX_SINGLE_FETCHES,
    };
    let mut states = GapStates::new();
    for prev in &prevs {
        let named = fetches.state_before(&version, prev).await?;
        states.push((prev.clone(), named));
    }
    let mut missing_auth = BTreeSet::new();
    for id in &pdu.auth_events {
        if !storage.eventid_pdu.contains_key(&id.to_string())? {
            missing_auth.insert(id.clone());
        }
    }
    if !missing_auth.is_empty() {
        let fetched = fetches.one_by_one(&missing_auth).await;
        fetches.store_checked(fetched, &missing_auth).await?;
    }
    Ok(states)
}

/// The fetches made for one event: from whom, for which room, and how many more events may
/// be fetched one by one.
struct Fetches<'a> {
    fed: &'a Federation,
    origin: &'a str,
    room_id: &'a RoomId,
    rules: &'a RoomVersionRules,
    left: usize,
}

/// Events fetched and passing their own checks: format, signatures, hash, of this room.
type Fetched = HashMap<OwnedEventId, (CanonicalJsonObject, Pdu)>;

impl Fetches<'_> {
    /// The state before `prev`, and `prev` itself, fetched, checked and stored (as
    /// outliers); the state returned.
    async fn state_before(
        &mut self,
        version: &str,
        prev: &OwnedEventId,
    ) -> Result<NamedState, Refused> {
        let storage = &self.fed.storage;
        let path = format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            encode(self.room_id.as_str()),
            encode(prev.as_str())
        );
        let body = self
            .fed
            .transport
            .request_raw(self.origin, "GET", &path, None, STATE_IDS_ANSWER_LIMIT)
            .await
            .map_err(|err| Refused::Missing(format!("the state at {prev}: {err}")))?;
        let answer: StateIdsAnswer<'_> = serde_json::from_slice(&body)
            .map_err(|err| Refused::Invalid(format!("the state IDs at {prev}: {err}")))?;
        let pdu_ids = event_ids(&answer.pdu_ids.0)?;
        let chain_ids = event_ids(&answer.auth_chain_ids.0)?;
        drop(body);
        if pdu_ids.len() + chain_ids.len() > MAX_IDS {
            return Err(Refused::Invalid(format!(
                "the state at {prev} names more than {MAX_IDS} events"
            )));
        }
        let mut wanted = BTreeSet::new();
        for id in pdu_ids.iter().chain(&chain_ids).chain([prev]) {
            if !storage.eventid_pdu.contains_key(&id.to_string())? {
                wanted.insert(id.clone());
            }
        }
        let fetched = if wanted.len() <= self.left {
            self.one_by_one(&wanted).await
        } else {
            let mut fetched = self.whole_state(prev, &wanted).await?;
            if !fetched.contains_key(prev) && storage.eventid_pdu.get(&prev.to_string())?.is_none()
            {
                let prev_only = BTreeSet::from([prev.clone()]);
                fetched.extend(self.one_by_one(&prev_only).await);
            }
            fetched
        };
        let needed: BTreeSet<OwnedEventId> = pdu_ids.iter().chain([prev]).cloned().collect();
        let named = self.named_state(version, &pdu_ids, &fetched)?;
        self.store_checked(fetched, &needed).await?;
        Ok(named)
    }

    /// The state `pdu_ids` names, of events fetched or already here.
    fn named_state(
        &self,
        version: &str,
        pdu_ids: &[OwnedEventId],
        fetched: &Fetched,
    ) -> Result<NamedState, Refused> {
        let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
        for id in pdu_ids {
            let pdu = match fetched.get(id) {
                Some((_, pdu)) => pdu.clone(),
                None => load_pdu(&self.fed.storage, id.as_str(), self.rules)?
                    .ok_or_else(|| Refused::Missing(format!("state event {id}")))?,
            };
            if !room_state::is_of_room(&pdu, self.room_id, self.rules) {
                return Err(Refused::Invalid(format!(
                    "state event {id} is of another room"
                )));
            }
            events.insert(id.clone(), pdu);
        }
        room_state::named_state(self.room_id, version, self.rules, &events, pdu_ids)
            .map_err(|why| Refused::Invalid(format!("the state at the gap: {why}")))
    }

    /// Checks `fetched` by their own auth events (fetched or here); every event of `needed`
    /// must be here or pass. Then stores those passing as outliers. Events failing that
    /// nothing needs are dropped.
    async fn store_checked(
        &self,
        fetched: Fetched,
        needed: &BTreeSet<OwnedEventId>,
    ) -> Result<(), Refused> {
        let storage = &self.fed.storage;
        let pdus: HashMap<OwnedEventId, Pdu> = fetched
            .iter()
            .map(|(id, (_, pdu))| (id.clone(), pdu.clone()))
            .collect();
        let known = |id: &EventId| load_pdu(storage, id.as_str(), self.rules).ok().flatten();
        let failing = room_state::failing_auth(self.rules, &pdus, known);
        for id in needed {
            if let Some(why) = failing.get(id) {
                return Err(Refused::Unauthorized(format!(
                    "{id}, fetched for a gap, fails auth: {why}"
                )));
            }
            if !pdus.contains_key(id) && !storage.eventid_pdu.contains_key(&id.to_string())? {
                return Err(Refused::Missing(format!("{id} could not be fetched")));
            }
        }
        let outliers = fetched
            .into_iter()
            .filter(|(id, _)| !failing.contains_key(id))
            .map(|(_, event)| event)
            .collect();
        self.fed.rooms.store_outliers(self.room_id, outliers).await
    }

    /// `ids` fetched with `/event` one at a time, while the budget lasts; those that do not
    /// come, or do not pass their own checks, are left out (and logged).
    async fn one_by_one(&mut self, ids: &BTreeSet<OwnedEventId>) -> Fetched {
        let mut fetched = Fetched::new();
        for id in ids {
            if self.left == 0 {
                break;
            }
            self.left -= 1;
            let path = format!("/_matrix/federation/v1/event/{}", encode(id.as_str()));
            let answer = match self
                .fed
                .transport
                .request_raw(self.origin, "GET", &path, None, EVENT_ANSWER_LIMIT)
                .await
            {
                Ok(answer) => answer,
                Err(err) => {
                    tracing::info!(room_id = %self.room_id, event = %id, "fetching an event for a gap failed: {err}");
                    continue;
                }
            };
            let first = serde_json::from_slice::<EventAnswer<'_>>(&answer)
                .ok()
                .and_then(|answer| answer.pdus.0.first().and_then(|raw| raw_object(raw)));
            let Some(json) = first else {
                continue;
            };
            if let Some((json, pdu)) = self.check(json).await
                && &pdu.event_id == id
            {
                fetched.insert(pdu.event_id.clone(), (json, pdu));
            }
        }
        fetched
    }

    /// The events of `wanted` among the state and auth chain `/state` gives at `prev`.
    async fn whole_state(
        &self,
        prev: &OwnedEventId,
        wanted: &BTreeSet<OwnedEventId>,
    ) -> Result<Fetched, Refused> {
        #[derive(serde::Deserialize)]
        struct StateAnswer<'a> {
            // Each list bounded while it is read: 64 MiB of `{}` would be millions.
            #[serde(borrow, default)]
            pdus: RawList<'a, MAX_IDS, false>,
            #[serde(borrow, default)]
            auth_chain: RawList<'a, MAX_IDS, false>,
        }
        let path = format!(
            "/_matrix/federation/v1/state/{}?event_id={}",
            encode(self.room_id.as_str()),
            encode(prev.as_str())
        );
        let body = self
            .fed
            .transport
            .request_raw(self.origin, "GET", &path, None, STATE_ANSWER_LIMIT)
            .await
            .map_err(|err| Refused::Missing(format!("the state at {prev}: {err}")))?;
        let answer: StateAnswer<'_> = serde_json::from_slice(&body)
            .map_err(|err| Refused::Invalid(format!("the state at {prev}: {err}")))?;
        if answer.pdus.0.len() + answer.auth_chain.0.len() > MAX_IDS {
            return Err(Refused::Invalid(format!(
                "the state at {prev} holds more than {MAX_IDS} events"
            )));
        }
        let mut fetched = Fetched::new();
        for raw in answer.pdus.0.into_iter().chain(answer.auth_chain.0) {
            let Ok(json) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
                continue;
            };
            // Only the events we miss are checked: a signature check may mean fetching
            // keys, which an answer full of strangers' events must not make us do.
            let is_wanted = Pdu::from_json(&json, self.rules).is_ok_and(|pdu| {
                wanted.contains(&pdu.event_id) && !fetched.contains_key(&pdu.event_id)
            });
            if is_wanted && let Some((json, pdu)) = self.check(json).await {
                fetched.insert(pdu.event_id.clone(), (json, pdu));
            }
        }
        Ok(fetched)
    }

    /// Checks 1 to 3 on one fetched event, and that it is of this room.
    async fn check(&self, json: CanonicalJsonObject) -> Option<(CanonicalJsonObject, Pdu)> {
        match checked(self.fed, json, self.rules).await {
            Ok((json, pdu)) if room_state::is_of_room(&pdu, self.room_id, self.rules) => {
                Some((json, pdu))
            }
            Ok((_, pdu)) => {
                tracing::info!(room_id = %self.room_id, event = %pdu.event_id, "an event fetched for a gap is of another room");
                None
            }
            Err(err) => {
                tracing::info!(room_id = %self.room_id, "an event fetched for a gap was refused: {err}");
                None
            }
        }
    }
}

/// A `/state_ids` answer, borrowed from its bytes: both lists required, each of at most
/// [`MAX_IDS`] elements (a longer one is refused while it is read).
#[derive(serde::Deserialize)]
struct StateIdsAnswer<'a> {
    #[serde(borrow)]
    pdu_ids: RawList<'a, MAX_IDS, false>,
    #[serde(borrow)]
    auth_chain_ids: RawList<'a, MAX_IDS, false>,
}

/// An `/event` answer: only its first PDU is read.
#[derive(serde::Deserialize)]
struct EventAnswer<'a> {
    #[serde(borrow, default)]
    pdus: RawList<'a, 1, true>,
}

/// The event IDs of a list of an answer.
fn event_ids(list: &[&RawValue]) -> Result<Vec<OwnedEventId>, Refused> {
    list.iter()
        .map(|raw| {
            serde_json::from_str::<&str>(raw.get())
                .ok()
                .and_then(|id| OwnedEventId::try_from(id).ok())
                .ok_or_else(|| Refused::Invalid(format!("{} is not an event ID", raw.get())))
        })
        .collect()
}
