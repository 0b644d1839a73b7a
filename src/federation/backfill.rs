//! History from before we joined (spec: server-server API, "Backfilling and retrieving
//! missing events"): when a client pages back past the oldest event we hold of a room
//! joined over federation, older events are asked of the servers in the room (`/backfill`),
//! checked, and stored below the join, in the block of positions kept for them.

use std::collections::BTreeSet;

use ruma::{CanonicalJsonObject, RoomId};

use super::inbound::{RawList, raw_object};
use super::pdu_checks::checked;
use super::transport::encode;
use crate::error::Error;
use crate::federation::Federation;
use crate::matrix::events::Pdu;
use crate::rooms::rules_of;

/// The most events asked for at once.
const MAX_BACKFILL: usize = 100;

/// The largest `/backfill` answer read: [`MAX_BACKFILL`] events of the largest size the
/// spec allows (64 KiB), with room for the envelope. The answer is read as bytes and its
/// events parsed one at a time (no JSON tree of the whole).
const BACKFILL_ANSWER_LIMIT: usize = MAX_BACKFILL * 64 * 1024 + 256 * 1024;

/// A `/backfill` answer, borrowed from its bytes: its first [`MAX_BACKFILL`] events.
#[derive(serde::Deserialize)]
struct BackfillAnswer<'a> {
    #[serde(borrow, default)]
    pdus: RawList<'a, MAX_BACKFILL, true>,
}

/// Fetches up to `wanted` events older than what we hold of `room_id`, from a server in the
/// room; returns how many were stored.
pub(crate) async fn backfill(
    fed: &Federation,
    room_id: &RoomId,
    wanted: usize,
) -> Result<usize, Error> {
    let Some(room) = fed.storage.roomid_room.get(&room_id.to_string())? else {
        return Ok(0);
    };
    let Some(history) = room.backfill.clone() else {
        return Ok(0);
    };
    if history.frontier.is_empty() || history.next <= history.floor {
        return Ok(0);
    }
    let rules = rules_of(&room)?;
    let limit = wanted.clamp(1, MAX_BACKFILL);
    let ids: String = history
        .frontier
        .iter()
        .take(20)
        .map(|id| format!("v={}", encode(id.as_str())))
        .collect::<Vec<_>>()
        .join("&");
    let path = format!(
        "/_matrix/federation/v1/backfill/{}?{ids}&limit={limit}",
        encode(room_id.as_str())
    );
    for server in servers_in_room(fed, room_id)? {
        let body = match fed
            .transport
            .request_raw(&server, "GET", &path, None, BACKFILL_ANSWER_LIMIT)
            .await
        {
            Ok(body) => body,
            Err(err) => {
                tracing::info!(%room_id, %server, "backfill failed: {err}");
                continue;
            }
        };
        let answer = match serde_json::from_slice::<BackfillAnswer<'_>>(&body) {
            Ok(answer) => answer,
            Err(err) => {
                tracing::info!(%room_id, %server, "a bad backfill answer: {err}");
                continue;
            }
        };
        let mut events: Vec<(CanonicalJsonObject, Pdu)> = Vec::new();
        for raw in answer.pdus.0.into_iter().take(limit) {
            let Some(json) = raw_object(raw) else {
                continue;
            };
            match checked(fed, json, &rules).await {
                Ok((json, pdu)) if pdu.room_id.as_deref() == Some(room_id) => {
                    events.push((json, pdu))
                }
                Ok(_) => {}
                Err(err) => tracing::info!(%room_id, "a backfilled event was refused: {err}"),
            }
        }
        let stored = fed.rooms.store_backfilled(room_id, &rules, events).await?;
        return Ok(stored);
    }
    Ok(0)
}

/// The other servers with members joined to the room (a few: any of them can answer).
fn servers_in_room(fed: &Federation, room_id: &RoomId) -> Result<Vec<String>, Error> {
    let mut servers = BTreeSet::new();
    for entry in fed
        .storage
        .roomuser_membership
        .scan_prefix(&crate::storage::pair_prefix(room_id.as_str()))
    {
        let ((_, user), membership) = entry?;
        if membership != "join" {
            continue;
        }
        if let Some((_, server)) = user.split_once(':')
            && server != fed.transport.origin.as_str()
        {
            servers.insert(server.to_owned());
        }
        if servers.len() >= 5 {
            break;
        }
    }
    Ok(servers.into_iter().collect())
}
