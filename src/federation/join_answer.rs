//! Our side of a remote join's last step: `send_join`'s answer (the room's state and auth
//! chain from the resident server), read event by event from the file it was written to
//! ([`super::join_stream`]), each event checked and written to storage as it comes, then
//! the whole checked ([`super::join_graph`]: auth rules, one state, the create event) and
//! stored as the room we joined, or refused with nothing kept. Memory holds a few bytes per
//! event (short IDs), never the answer: rooms of any size are joined.

use std::path::Path;

use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomId, UserId};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::join_graph::JoinGraph;
use super::join_stream::{CHANNEL_EVENTS, Item, read_answer};
use super::pdu_checks::checked;
use super::room_state;
use crate::error::{Error, ErrorKind};
use crate::federation::Federation;
use crate::rooms::remote;
use crate::storage::snapshots;

/// How many checked events are written to storage at a time while joining.
const JOIN_WRITE_BATCH: usize = 500;

/// Checks `send_join`'s answer in `answer` (every event's format, size, signatures and
/// hash as it is read, written out in batches; then the auth rules for each against its own
/// auth events, the state as a whole, our join against it) and stores the room: its auth
/// chain and state as events outside the timeline, the state as the room's state before
/// our join, and the join in the timeline. An answer refused leaves nothing behind: the
/// events written while checking it are removed again.
pub(super) async fn store_joined_room(
    fed: &Federation,
    room_id: &RoomId,
    (version, rules): (&str, &RoomVersionRules),
    join: CanonicalJsonObject,
    answer: &Path,
) -> Result<(), Error> {
    crate::storage::memory::log_usage("join: answer received");
    let joining = fed.rooms.joining(room_id).await;
    let mut graph = JoinGraph::default();
    let result = match receive_events(fed, room_id, rules, answer, &mut graph).await {
        Ok((resident_join, refused)) => {
            crate::storage::memory::log_usage("join: events checked and written");
            store_checked(
                fed,
                room_id,
                (version, rules),
                (join, resident_join),
                &mut graph,
                refused,
            )
            .await
        }
        Err(err) => Err(err),
    };
    if result.is_err() {
        let written: Vec<u64> = graph.written().collect();
        forget_outliers(fed, room_id, &written).await;
    }
    drop(graph);
    drop(joining);
    // A large join frees much memory at once: hand it back to the system.
    crate::storage::memory::log_usage("join: stored");
    fed.storage.collect_garbage();
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

fn bad_answer(why: &str) -> Error {
    Error::new(ErrorKind::BadJson, format!("Bad send_join answer: {why}"))
}

/// Events of the answer refused on their own (format, signatures): how many, the first why.
#[derive(Default)]
struct Refused {
    count: usize,
    first: Option<String>,
}

impl Refused {
    fn add(&mut self, why: String) {
        self.count += 1;
        self.first.get_or_insert(why);
    }
}

/// Reads the answer event by event: each checked on its own and written out (recorded in
/// `graph`, with whether it was new). Returns the resident's copy of our join, if sent.
async fn receive_events(
    fed: &Federation,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    answer: &Path,
    graph: &mut JoinGraph,
) -> Result<(Option<Box<RawValue>>, Refused), Error> {
    let file = std::fs::File::open(answer).map_err(Error::internal)?;
    let (sender, mut items) = mpsc::channel(CHANNEL_EVENTS);
    let reading = tokio::task::spawn_blocking(move || read_answer(file, &sender));
    let mut received = Received {
        fed,
        room: room_id.to_string(),
        batch: crate::storage::Batch::new(),
        in_batch: 0,
        refused: Refused::default(),
    };
    let mut resident_join = None;
    let mut outcome = Ok(());
    while let Some(item) = items.recv().await {
        match item {
            Item::Join(raw) => resident_join = Some(raw),
            Item::Event { raw, in_state } => {
                outcome = received.event(room_id, rules, &raw, in_state, graph).await;
                if outcome.is_err() {
                    break;
                }
            }
        }
    }
    // The reader stops when the channel is gone.
    drop(items);
    let read = reading.await.map_err(Error::internal)?;
    outcome?;
    read.map_err(|why| bad_answer(&why))?;
    fed.storage.apply(received.batch)?;
    if received.refused.count > 0 {
        tracing::info!(
            %room_id, refused = received.refused.count,
            "events of send_join refused, first: {:?}", received.refused.first
        );
    }
    Ok((resident_join, received.refused))
}

/// The events of an answer being read.
struct Received<'a> {
    fed: &'a Federation,
    room: String,
    batch: crate::storage::Batch,
    in_batch: usize,
    refused: Refused,
}

impl Received<'_> {
    /// Checks one event, writes it out if new, and adds it to `graph`.
    async fn event(
        &mut self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        raw: &RawValue,
        in_state: bool,
        graph: &mut JoinGraph,
    ) -> Result<(), Error> {
        let storage = &self.fed.storage;
        let json = match serde_json::from_str::<CanonicalJsonObject>(raw.get()) {
            Ok(json) => json,
            Err(err) => {
                self.refused.add(err.to_string());
                return Ok(());
            }
        };
        let (json, pdu) = match checked(self.fed, json, rules).await {
            Ok(checked) => checked,
            Err(err) => {
                self.refused.add(err.to_string());
                return Ok(());
            }
        };
        if !room_state::is_of_room(&pdu, room_id, rules) {
            return Err(incoherent(&format!(
                "event {} is not of this room",
                pdu.event_id
            )));
        }
        let id = pdu.event_id.to_string();
        let short = snapshots::short_event_id(storage, &id)?;
        let auth = room_state::auth_ids(&pdu, rules)
            .iter()
            .map(|id| snapshots::short_event_id(storage, id.as_str()))
            .collect::<Result<Vec<u64>, _>>()?;
        let new = !graph.has(short) && !storage.eventid_pdu.contains_key(&id)?;
        if new {
            let text = CanonicalJsonValue::Object(json).to_string();
            remote::stage_outlier(storage, &mut self.batch, &self.room, &id, &text)?;
            self.in_batch += 1;
        }
        graph.add(short, auth, in_state, new);
        if self.in_batch >= JOIN_WRITE_BATCH {
            storage.apply(std::mem::take(&mut self.batch))?;
            // Written out now: the database keeps unwritten pages in memory.
            storage.flush().await?;
            storage.collect_garbage();
            self.in_batch = 0;
            tracing::info!(%room_id, events = graph.len(), "joining: events checked");
            crate::storage::memory::log_usage("join: batch written");
        }
        Ok(())
    }
}

/// Checks the whole of the checked events and stores the room.
async fn store_checked(
    fed: &Federation,
    room_id: &RoomId,
    (version, rules): (&str, &RoomVersionRules),
    (join, resident_join): (CanonicalJsonObject, Option<Box<RawValue>>),
    graph: &mut JoinGraph,
    refused: Refused,
) -> Result<(), Error> {
    // A restricted room's resident server signs the join too; take its copy when given.
    let join = match resident_join {
        Some(raw) => {
            let signed = serde_json::from_str::<CanonicalJsonObject>(raw.get())
                .map_err(|err| bad_answer(&format!("its event: {err}")))?;
            resident_copy(&join, &signed)?
        }
        None => join,
    };
    let (join_json, join_pdu) = checked(fed, join, rules)
        .await
        .map_err(|err| Error::new(ErrorKind::Forbidden, format!("Our join was refused: {err}")))?;
    for id in room_state::auth_ids(&join_pdu, rules) {
        let given = fed
            .storage
            .eventid_short
            .get(&id.to_string())?
            .is_some_and(|short| graph.need(short));
        if !given {
            return Err(incoherent(&format!(
                "our join's auth event {id} is neither in the state nor in the auth chain"
            )));
        }
    }
    let authorized = graph
        .authorize(&fed.storage, (room_id, version, rules))?
        .map_err(|why| {
            incoherent(&format!(
                "{why} ({} events refused; first: {})",
                refused.count,
                refused.first.unwrap_or_default()
            ))
        })?;
    crate::storage::memory::log_usage("join: state authorized");
    if authorized.failed > 0 {
        // Events of the auth chain alone that fail are dropped: nothing of the room rests
        // on them. Only what this answer brought goes: an event here before stays.
        tracing::info!(%room_id, failing = authorized.failed, "auth chain events failing auth dropped");
        forget_outliers(fed, room_id, &authorized.failed_written).await;
    }
    fed.rooms
        .store_joined(room_id, version, authorized.state, (join_json, join_pdu))
        .await
        .map_err(|err| Error::new(ErrorKind::Forbidden, err.to_string()))
}

/// Removes events written outside the timeline while checking an answer that was then
/// refused (or that failed auth). Only events of this room still without a place in the
/// timeline are removed.
async fn forget_outliers(fed: &Federation, room_id: &RoomId, shorts: &[u64]) {
    for chunk in shorts.chunks(JOIN_WRITE_BATCH) {
        let ids: Vec<String> = chunk
            .iter()
            .filter_map(|short| fed.storage.short_eventid.get(short).ok().flatten())
            .collect();
        let result = remote::forget_outliers(&fed.storage, room_id, &ids, JOIN_WRITE_BATCH).await;
        if let Err(err) = result {
            tracing::warn!(%room_id, "events of a refused join could not be removed: {err}");
        }
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
