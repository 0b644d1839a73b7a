//! Our side of a remote join's last step: `send_join`'s answer (the room's state and auth
//! chain from the resident server), read event by event, checked one by one and as a whole
//! ([`super::room_state`]), and stored as the room we joined, or refused with nothing kept.

use std::collections::HashMap;

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, UserId};

use super::pdu_checks::checked;
use super::room_state;
use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::matrix::events::Pdu;
use crate::rooms::remote;

/// `send_join`'s answer, read without building a tree of it: each event stays raw text
/// until it is checked, one at a time.
#[derive(serde::Deserialize)]
struct SendJoinAnswer<'a> {
    #[serde(borrow, default)]
    state: Vec<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    auth_chain: Vec<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a serde_json::value::RawValue>,
}

/// How many checked events are written to storage at a time while joining.
const JOIN_WRITE_BATCH: usize = 500;

/// Checks `send_join`'s answer (every event's format, signatures and auth; the answer's
/// coherence, see [`super::room_state`]; the join against the state) and stores the room:
/// its auth chain and state as events outside the timeline (written as they are checked,
/// in batches: the answer of a large room is never held twice), the state as the room's
/// state before our join, and the join in the timeline. An answer refused leaves nothing
/// behind: the events written while checking it are removed again.
pub(super) async fn store_joined_room(
    fed: &Federation,
    room_id: &RoomId,
    version: &str,
    rules: &RoomVersionRules,
    join: CanonicalJsonObject,
    body: Vec<u8>,
) -> Result<(), Error> {
    crate::storage::memory::log_usage("join: answer received");
    let answer: SendJoinAnswer<'_> = serde_json::from_slice(&body)
        .map_err(|err| Error::new(ErrorKind::BadJson, format!("Bad send_join answer: {err}")))?;
    // A restricted room's resident server signs the join too; take its copy when given.
    let join = match answer.event {
        Some(raw) => {
            let signed = serde_json::from_str::<CanonicalJsonObject>(raw.get()).map_err(|err| {
                Error::new(ErrorKind::BadJson, format!("Bad send_join event: {err}"))
            })?;
            resident_copy(&join, &signed)?
        }
        None => join,
    };
    let mut written = Vec::new();
    let joining = fed.rooms.joining(room_id).await;
    let checked = check_events(fed, room_id, rules, answer, &mut written).await;
    // Every event is parsed and written out: the answer's text (tens of MB for a large
    // room) is not needed any more while the state is checked and stored.
    drop(body);
    crate::storage::memory::log_usage("join: answer dropped");
    let result = match checked {
        Ok(checked) => store_checked(fed, room_id, version, rules, join, checked, &written).await,
        Err(err) => Err(err),
    };
    if result.is_err() {
        forget_outliers(fed, room_id, &written).await;
    }
    drop(joining);
    // A large join frees much memory at once: hand it back to the system.
    crate::storage::memory::log_usage("join: stored");
    fed.storage.collect_garbage();
    crate::storage::memory::log_usage("join: garbage collected");
    crate::storage::memory::release_freed();
    crate::storage::memory::log_usage("join: freed memory released");
    result
}

/// The error refusing a `send_join` answer that does not make a coherent room.
fn incoherent(why: &str) -> Error {
    Error::new(
        ErrorKind::Forbidden,
        format!("The resident server's answer is refused: {why}"),
    )
}

/// The events of an answer, checked one by one and written out.
struct CheckedEvents {
    /// Each checked event, with only what the auth rules and the room's indexes read.
    events: HashMap<OwnedEventId, Pdu>,
    state_ids: Vec<OwnedEventId>,
    refused: usize,
    first_refusal: Option<String>,
}

/// Checks each event of the answer and writes it out (recording in `written` what was not
/// here before).
async fn check_events(
    fed: &Federation,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    answer: SendJoinAnswer<'_>,
    written: &mut Vec<String>,
) -> Result<CheckedEvents, Error> {
    let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
    let mut state_ids = Vec::new();
    let mut refused = 0usize;
    let mut first_refusal = None;
    let mut batch = crate::storage::Batch::new();
    let mut in_batch = 0;
    let room = room_id.to_string();
    let total = answer.state.len() + answer.auth_chain.len();
    tracing::info!(%room_id, total, "checking the state and auth chain of the room joined");
    let lists = [(answer.auth_chain, false), (answer.state, true)];
    for (list, is_state) in lists {
        for raw in list {
            let Ok(json) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
                refused += 1;
                continue;
            };
            let (json, mut pdu) = match checked(fed, json, rules).await {
                Ok(checked) => checked,
                Err(err) => {
                    refused += 1;
                    first_refusal.get_or_insert(err.to_string());
                    continue;
                }
            };
            if !room_state::is_of_room(&pdu, room_id, rules) {
                fed.storage.apply(std::mem::take(&mut batch))?;
                return Err(incoherent(&format!(
                    "event {} is not of this room",
                    pdu.event_id
                )));
            }
            if is_state {
                state_ids.push(pdu.event_id.clone());
            }
            let id = pdu.event_id.to_string();
            if fed.storage.eventid_pdu.get(&id)?.is_none() && !events.contains_key(&pdu.event_id) {
                let text = CanonicalJsonValue::Object(json).to_string();
                remote::stage_outlier(&fed.storage, &mut batch, &room, &id, &text)?;
                written.push(id);
                in_batch += 1;
            }
            if in_batch >= JOIN_WRITE_BATCH {
                fed.storage.apply(std::mem::take(&mut batch))?;
                // Written out now: the database keeps unwritten pages in memory.
                fed.storage.flush().await?;
                fed.storage.collect_garbage();
                in_batch = 0;
                tracing::info!(%room_id, checked = events.len(), total, "joining: events checked");
                crate::storage::memory::log_usage("join: batch written");
            }
            keep_what_auth_reads(&mut pdu);
            events.insert(pdu.event_id.clone(), pdu);
        }
    }
    fed.storage.apply(batch)?;
    crate::storage::memory::log_usage("join: events checked and written");
    if refused > 0 {
        tracing::info!(%room_id, refused, "events of send_join refused, first: {first_refusal:?}");
    }
    Ok(CheckedEvents {
        events,
        state_ids,
        refused,
        first_refusal,
    })
}

/// Empties what nothing reads once an event is checked and written, for the answer of a
/// large room to be held in less memory: the content of events whose content the auth
/// rules never read (they read the create event, power levels, join rules, memberships
/// and third-party invites; other events only by their type, state key and sender). The
/// `prev_events` stay: the rule for the room creator's first join reads them.
fn keep_what_auth_reads(pdu: &mut Pdu) {
    use ruma::events::TimelineEventType as Kind;
    let read = matches!(
        pdu.kind,
        Kind::RoomCreate
            | Kind::RoomPowerLevels
            | Kind::RoomJoinRules
            | Kind::RoomMember
            | Kind::RoomThirdPartyInvite
    );
    if !read && let Ok(empty) = serde_json::value::RawValue::from_string("{}".to_owned()) {
        pdu.content = empty;
    }
}

/// Checks the whole of the checked events and stores the room.
async fn store_checked(
    fed: &Federation,
    room_id: &RoomId,
    version: &str,
    rules: &RoomVersionRules,
    join: CanonicalJsonObject,
    checked_events: CheckedEvents,
    written: &[String],
) -> Result<(), Error> {
    let CheckedEvents {
        mut events,
        state_ids,
        refused,
        first_refusal,
    } = checked_events;
    let (join_json, join_pdu) = checked(fed, join, rules)
        .await
        .map_err(|err| Error::new(ErrorKind::Forbidden, format!("Our join was refused: {err}")))?;
    room_state::named_state(room_id, version, rules, &events, &state_ids).map_err(|why| {
        incoherent(&format!(
            "{why} ({refused} events refused; first: {})",
            first_refusal.unwrap_or_default()
        ))
    })?;
    let checked_events = (&mut events, state_ids.as_slice());
    authorize_all(fed, room_id, rules, checked_events, &join_pdu, written).await?;
    crate::storage::memory::log_usage("join: state authorized");
    let version = version.to_owned();
    fed.rooms
        .store_joined(room_id, &version, events, state_ids, (join_json, join_pdu))
        .await
        .map_err(|err| Error::new(ErrorKind::Forbidden, err.to_string()))
}

/// Every state event, and our join's auth events, must pass the auth rules against their
/// own auth events, all of which must be in the answer; a state that fails is refused
/// whole. Events of the auth chain alone that fail are dropped (and removed again from
/// storage): nothing of the room rests on them.
async fn authorize_all(
    fed: &Federation,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    (events, state_ids): (&mut HashMap<OwnedEventId, Pdu>, &[OwnedEventId]),
    join: &Pdu,
    written: &[String],
) -> Result<(), Error> {
    for id in room_state::auth_ids(join, rules) {
        if !events.contains_key(&id) {
            return Err(incoherent(&format!(
                "our join's auth event {id} is neither in the state nor in the auth chain"
            )));
        }
    }
    let failing = room_state::failing_auth(rules, events, |_| None);
    let needed = state_ids.iter().chain(&join.auth_events);
    for id in needed {
        if let Some(why) = failing.get(id) {
            return Err(incoherent(&format!("state event {id} fails auth: {why}")));
        }
    }
    if !failing.is_empty() {
        tracing::info!(%room_id, failing = failing.len(), "auth chain events failing auth dropped");
        // Only what this answer brought goes: an event here before stays.
        let dropped: Vec<String> = written
            .iter()
            .filter(|id| {
                OwnedEventId::try_from(id.as_str()).is_ok_and(|id| failing.contains_key(&id))
            })
            .cloned()
            .collect();
        events.retain(|id, _| !failing.contains_key(id));
        forget_outliers(fed, room_id, &dropped).await;
    }
    Ok(())
}

/// Removes events written outside the timeline while checking an answer that was then
/// refused (or that failed auth). Only events of this room still without a place in the
/// timeline are removed.
async fn forget_outliers(fed: &Federation, room_id: &RoomId, ids: &[String]) {
    let result = remote::forget_outliers(&fed.storage, room_id, ids, JOIN_WRITE_BATCH).await;
    if let Err(err) = result {
        tracing::warn!(%room_id, "events of a refused join could not be removed: {err}");
    }
}

/// The key of a join's content naming the member who vouches for it.
pub(super) const AUTHORISED_VIA: &str = "join_authorised_via_users_server";

/// The joining side: our join with the resident server's signature (from `send_join`'s
/// `event`) added. Its copy must be our event with signatures added, as anything else the
/// resident changed would be an event we never signed; and of that copy only the signature
/// of the server whose user vouches (`join_authorised_via_users_server`) is taken, the one
/// the auth rules ask for. The rest of its `signatures` and its `unsigned` are not: a
/// resident could otherwise drop our own signature or have us store and serve its data.
pub(super) fn resident_copy(
    ours: &CanonicalJsonObject,
    theirs: &CanonicalJsonObject,
) -> Result<CanonicalJsonObject, Error> {
    let unsigned = |event: &CanonicalJsonObject| {
        let mut event = event.clone();
        event.remove("signatures");
        event.remove("unsigned");
        event
    };
    if unsigned(ours) != unsigned(theirs) {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "The resident server answered with another join event than ours",
        ));
    }
    let Some(authoriser) = content_field(ours, AUTHORISED_VIA)
        .and_then(CanonicalJsonValue::as_str)
        .and_then(|user| UserId::parse(user).ok())
    else {
        return Ok(ours.clone());
    };
    let server = authoriser.server_name().as_str();
    let signature = theirs
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|signatures| signatures.get(server))
        .filter(|signature| signature.as_object().is_some())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Forbidden,
                format!("The resident server's copy of our join has no signature of {server}"),
            )
        })?;
    let mut signed = ours.clone();
    let signatures = signed
        .entry("signatures".to_owned())
        .or_insert_with(|| CanonicalJsonValue::Object(CanonicalJsonObject::new()));
    if let CanonicalJsonValue::Object(signatures) = signatures {
        signatures.insert(server.to_owned(), signature.clone());
    }
    Ok(signed)
}

pub(super) fn content_field<'a>(
    event: &'a CanonicalJsonObject,
    key: &str,
) -> Option<&'a CanonicalJsonValue> {
    event
        .get("content")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|content| content.get(key))
}
