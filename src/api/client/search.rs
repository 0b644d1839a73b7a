//! `/search` over room events (spec: client-server API, "Server Side Search"): the messages,
//! names and topics of the rooms the user is in, newest first. It reads the timelines
//! directly (no index yet): fine for a family's history, to be indexed when that grows.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::MatrixJson;
use crate::api::auth::Authenticated;
use crate::error::{Error, ErrorKind};
use crate::rooms::{self, format::stored_event_for_client};
use crate::state::AppState;
use crate::sync::history_start;

#[derive(Debug, Deserialize)]
pub struct SearchRequest {
    search_categories: Categories,
}

#[derive(Debug, Deserialize)]
pub struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Debug, Deserialize)]
pub struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<SearchFilter>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchFilter {
    limit: Option<usize>,
    rooms: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    next_batch: Option<String>,
}

/// The most results per page, and the most events read per search.
const MAX_RESULTS: usize = 50;
const MAX_SCANNED: usize = 100_000;

/// # POST /_matrix/client/v3/search
pub async fn search(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<SearchQuery>,
    MatrixJson(body): MatrixJson<SearchRequest>,
) -> Result<HttpResponse, Error> {
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(HttpResponse::Ok().json(json!({ "search_categories": {} })));
    };
    let words: Vec<String> = criteria
        .search_term
        .to_lowercase()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The search term is empty",
        ));
    }
    let keys = criteria.keys.unwrap_or_else(|| {
        vec![
            "content.body".into(),
            "content.name".into(),
            "content.topic".into(),
        ]
    });
    if let Some(key) = keys.iter().find(|key| {
        !matches!(
            key.as_str(),
            "content.body" | "content.name" | "content.topic"
        )
    }) {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("Unknown search key {key}"),
        ));
    }
    let filter = criteria.filter.unwrap_or_default();
    let limit = filter.limit.unwrap_or(10).clamp(1, MAX_RESULTS);
    let before = match query.next_batch.as_deref() {
        Some(token) => token
            .parse::<u64>()
            .map_err(|_| Error::new(ErrorKind::InvalidParam, "Invalid next_batch"))?,
        None => u64::MAX,
    };
    let upto = state.rooms.visible_position().min(before.saturating_sub(1));

    let mut matches: Vec<(u64, String, String)> = Vec::new();
    let mut scanned = 0;
    for (room_id, record) in rooms::memberships(&state.storage, &auth.user_id)? {
        if record.membership != "join"
            || filter
                .rooms
                .as_ref()
                .is_some_and(|rooms| !rooms.iter().any(|r| r == room_id.as_str()))
        {
            continue;
        }
        let from = history_start(&state, &room_id, &record)?;
        let room = room_id.to_string();
        for entry in state
            .storage
            .roomstream_eventid
            .range(&(room.clone(), from), &(room.clone(), upto))
            .rev()
        {
            scanned += 1;
            if scanned > MAX_SCANNED {
                break;
            }
            let ((_, position), event_id) = entry?;
            let Some(event) =
                stored_event_for_client(&state.storage, &event_id, Some(&room), None)?
            else {
                continue;
            };
            if matches_words(&event, &keys, &words) {
                matches.push((position, event_id, room.clone()));
            }
        }
    }
    matches.sort_by_key(|(position, _, _)| std::cmp::Reverse(*position));
    let count = matches.len();
    let page: Vec<_> = matches.into_iter().take(limit).collect();
    let next_batch = (count > limit)
        .then(|| page.last().map(|(position, _, _)| position.to_string()))
        .flatten();
    let mut results = Vec::new();
    for (_, event_id, room) in &page {
        if let Some(event) =
            stored_event_for_client(&state.storage, event_id, Some(room), Some(&auth.device_id))?
        {
            results.push(json!({ "rank": 1.0, "result": event }));
        }
    }
    let mut room_events = json!({ "count": count, "results": results, "highlights": words });
    if let Some(next_batch) = next_batch {
        room_events["next_batch"] = json!(next_batch);
    }
    Ok(HttpResponse::Ok().json(json!({ "search_categories": { "room_events": room_events } })))
}

/// Whether every word appears in one of the event's searched fields.
fn matches_words(event: &Value, keys: &[String], words: &[String]) -> bool {
    let text: String = keys
        .iter()
        .filter_map(|key| {
            key.strip_prefix("content.")
                .and_then(|field| event["content"][field].as_str())
        })
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    !text.is_empty() && words.iter().all(|word| text.contains(word.as_str()))
}
