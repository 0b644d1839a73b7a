//! Server-side search over room events (spec: client-server API, "Server Side Search",
//! category `room_events`): message bodies, room names and topics of the rooms a user is in
//! or has left, as far as they may read them.
//!
//! There is no index: a search reads the timelines, newest first across rooms, at most
//! [`MAX_SCANNED`] events, and ranks what matches ([`rank`]). That is fine for a family's
//! history on a Raspberry Pi and bounded for anyone else; it is the place to add an index
//! when histories grow.
//!
//! Pages: results come `recent` (newest first) or by `rank` (the spec's default: highest
//! rank, ties newest first). A `next_batch` token ([`token`]) says where the next page
//! starts, so the server keeps nothing between pages.

pub(crate) mod context;
pub(crate) mod groups;
pub(crate) mod rank;
mod scan;
pub(crate) mod token;

use std::collections::{BTreeMap, BTreeSet};

use ruma::UserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::context::EventContext;
use self::groups::Groupings;
use self::rank::SearchKey;
use self::scan::Window;
use self::token::{Cursor, Order, Scope};
use crate::error::{Error, ErrorKind};
use crate::rooms::timeline::{Reader, client_form, timeline_form};
use crate::storage::Storage;
use crate::users::filter::RoomEventFilter;

/// Results per page when the filter does not say, and the most per page.
pub(crate) const DEFAULT_RESULTS: u64 = 10;
pub(crate) const MAX_RESULTS: u64 = 50;
/// The most events one search request reads. Each is loaded and its text split into words:
/// on a Raspberry Pi 4, some hundreds of milliseconds for the full amount. A `rank` search
/// reads the newest this many on every page (ranking needs them all); a `recent` search
/// reads from where the last page ended, so its pages reach further back.
pub(crate) const MAX_SCANNED: usize = 100_000;

/// `search_categories.room_events` of a request.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RoomEventsCriteria {
    pub(crate) search_term: String,
    /// Fields to search; none (or an empty list) means all of them.
    pub(crate) keys: Option<Vec<SearchKey>>,
    pub(crate) filter: Option<RoomEventFilter>,
    pub(crate) order_by: Option<Order>,
    pub(crate) event_context: Option<EventContext>,
    pub(crate) include_state: Option<bool>,
    pub(crate) groupings: Option<Groupings>,
}

/// An event that matched.
#[derive(Debug, Clone)]
pub(crate) struct Match {
    pub(crate) position: u64,
    pub(crate) rank: u64,
    pub(crate) event_id: String,
    pub(crate) room_id: String,
    pub(crate) sender: String,
    /// The index of its room's [`Window`].
    pub(crate) window: usize,
    /// The words of its text that matched.
    pub(crate) matched: BTreeSet<String>,
}

/// One page of ordered matches, what follows it, and the `count` to report.
#[derive(Debug)]
struct Page {
    results: Vec<Match>,
    rest: Vec<Match>,
    count: u64,
}

/// The search service: it reads the rooms' timelines (no index), a bounded number of events
/// per request.
pub(crate) struct Search {
    pub(crate) storage: std::sync::Arc<Storage>,
    pub(crate) rooms: std::sync::Arc<crate::rooms::Rooms>,
}

impl Search {
    /// Answers `room_events` for `user_id` (reading from `device_id`), starting at
    /// `next_batch` when given.
    pub(crate) fn room_events(
        &self,
        user_id: &UserId,
        device_id: &str,
        criteria: &RoomEventsCriteria,
        next_batch: Option<&str>,
    ) -> Result<Value, Error> {
        room_events(
            &self.storage,
            &self.rooms,
            user_id,
            device_id,
            criteria,
            next_batch,
        )
    }
}

/// Answers `room_events` for `user_id` (reading from `device_id`), starting at
/// `next_batch` when given.
fn room_events(
    storage: &Storage,
    rooms: &crate::rooms::Rooms,
    user_id: &UserId,
    device_id: &str,
    criteria: &RoomEventsCriteria,
    next_batch: Option<&str>,
) -> Result<Value, Error> {
    let words = rank::search_words(&criteria.search_term);
    if words.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "The search term has no words",
        ));
    }
    let keys = match &criteria.keys {
        Some(keys) if !keys.is_empty() => keys.clone(),
        _ => SearchKey::ALL.to_vec(),
    };
    let filter = criteria.filter.clone().unwrap_or_default();
    let order = criteria.order_by.unwrap_or_default();
    let cursor = next_batch.map(Cursor::decode).transpose()?;
    if cursor.as_ref().is_some_and(|cursor| cursor.order != order) {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            "next_batch was given for another order_by",
        ));
    }
    let now = rooms.visible_position();
    let snapshot = cursor
        .as_ref()
        .map_or(now, |cursor| cursor.snapshot.min(now));
    let scope = cursor.as_ref().and_then(|cursor| cursor.scope.clone());
    let windows =
        scan::readable_windows(storage, rooms, user_id, &filter, scope.as_ref(), snapshot)?;
    // Under `recent`, everything newer than the cursor was on earlier pages: not read again.
    let below = match (&cursor, order) {
        (Some(cursor), Order::Recent) => Some(cursor.position),
        _ => None,
    };
    let (found, cut_short) = find_matches(
        storage,
        &windows,
        below,
        (&words, &keys),
        &filter,
        scope.as_ref(),
    )?;
    if cut_short {
        tracing::debug!("search stopped after {MAX_SCANNED} events; older ones were not read");
    }
    let limit = filter
        .limit
        .unwrap_or(DEFAULT_RESULTS)
        .clamp(1, MAX_RESULTS) as usize;
    let page = paginate(found, order, cursor.as_ref(), limit);

    let offset = cursor.as_ref().map_or(0, |cursor| cursor.offset);
    let token_after = |last: &Match, scope: Option<Scope>, shown: u64| {
        Cursor {
            order,
            snapshot,
            rank: last.rank,
            position: last.position,
            offset: shown,
            scope,
        }
        .encode()
    };
    let reader = Reader {
        user_id: user_id.as_str(),
        device_id,
    };
    let mut results = Vec::new();
    let mut highlights = BTreeSet::new();
    for found in &page.results {
        let Some(window) = windows.get(found.window) else {
            continue;
        };
        let Some(event) =
            timeline_form(storage, &found.event_id, Some(&found.room_id), Some(reader))?
        else {
            continue;
        };
        let mut result = json!({ "rank": found.rank as f64, "result": event });
        if let Some(wanted) = &criteria.event_context {
            result["context"] = context::event_context(
                storage,
                reader,
                window,
                (found.position, &result["result"]),
                wanted,
            )?;
        }
        results.push(result);
        highlights.extend(found.matched.iter().cloned());
    }
    let mut room_events = json!({
        "count": page.count,
        "results": results,
        "highlights": highlights,
    });
    if let Some(last) = page.results.last()
        && !page.rest.is_empty()
    {
        let shown = offset + page.results.len() as u64;
        room_events["next_batch"] = json!(token_after(last, scope.clone(), shown));
    }
    if criteria.include_state == Some(true) {
        room_events["state"] = states_of(storage, &windows, &page.results)?;
    }
    if let Some(groupings) = &criteria.groupings {
        let keys: Vec<_> = groupings.group_by.iter().map(|group| group.key).collect();
        room_events["groups"] =
            groups::groups(&keys, &page.results, &page.rest, |last, group, shown| {
                // Within the group a token came from, results before this page count too.
                let before = if scope.as_ref() == Some(&group) {
                    offset
                } else {
                    0
                };
                token_after(last, Some(group), before + shown)
            });
    }
    Ok(json!({ "search_categories": { "room_events": room_events } }))
}

/// Reads the windows (below `below` when given) and keeps the events that pass `filter` and
/// the token's group, are not redacted (a redacted event has no text left to match, and
/// must not be found by the words it had), and contain every search word in one of
/// `keys`. Returns them unordered, and whether [`MAX_SCANNED`] cut the reading short.
fn find_matches(
    storage: &Storage,
    windows: &[Window],
    below: Option<u64>,
    (words, keys): (&[String], &[SearchKey]),
    filter: &RoomEventFilter,
    scope: Option<&Scope>,
) -> Result<(Vec<Match>, bool), Error> {
    let mut found = Vec::new();
    let cut_short = scan::newest_first(
        storage,
        windows,
        below,
        MAX_SCANNED,
        |index, window, position, event_id| {
            let Some(event) = client_form(storage, &event_id, None, None)? else {
                return Ok(());
            };
            let redacted = event["unsigned"].get("redacted_because").is_some();
            let sender = event["sender"].as_str().unwrap_or_default();
            let in_scope = match scope {
                Some(Scope::Sender(wanted)) => wanted == sender,
                _ => true,
            };
            if redacted || !in_scope || !filter.allows(&event) {
                return Ok(());
            }
            let texts = rank::searchable_texts(&event, keys);
            if let Some(score) = rank::score(&texts, words) {
                found.push(Match {
                    position,
                    rank: score.rank,
                    event_id,
                    room_id: window.room_id.to_string(),
                    sender: sender.to_owned(),
                    window: index,
                    matched: score.matched,
                });
            }
            Ok(())
        },
    )?;
    Ok((found, cut_short))
}

/// Orders the matches, drops those up to the cursor, and cuts a page of `limit`.
///
/// `count` is exact over the events read, so an estimate only when [`MAX_SCANNED`] cut the
/// reading short (then it is a lower bound), as the spec allows. Under `rank` every page
/// reads all matches, so it counts them all; under `recent` a later page reads only what
/// is older than the cursor, and adds the results the token says came before.
fn paginate(mut found: Vec<Match>, order: Order, cursor: Option<&Cursor>, limit: usize) -> Page {
    match order {
        Order::Recent => found.sort_by_key(|m| std::cmp::Reverse(m.position)),
        Order::Rank => found.sort_by_key(|m| std::cmp::Reverse((m.rank, m.position))),
    }
    let count = match (order, cursor) {
        (Order::Recent, Some(cursor)) => cursor.offset.saturating_add(found.len() as u64),
        _ => found.len() as u64,
    };
    if let Some(cursor) = cursor {
        found.retain(|m| cursor.comes_after(m.rank, m.position));
    }
    let rest = found.split_off(limit.min(found.len()));
    Page {
        results: found,
        rest,
        count,
    }
}

/// `state` for `include_state`: room ID → state events, for each room with a result on
/// this page.
fn states_of(storage: &Storage, windows: &[Window], page: &[Match]) -> Result<Value, Error> {
    let rooms: BTreeMap<&str, usize> = page
        .iter()
        .map(|found| (found.room_id.as_str(), found.window))
        .collect();
    let mut states = Map::new();
    for (room_id, index) in rooms {
        if let Some(window) = windows.get(index) {
            states.insert(
                room_id.to_owned(),
                json!(context::room_state(storage, window)?),
            );
        }
    }
    Ok(Value::Object(states))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(position: u64, rank: u64) -> Match {
        Match {
            position,
            rank,
            event_id: format!("${position}"),
            room_id: "!r".into(),
            sender: "@s".into(),
            window: 0,
            matched: BTreeSet::new(),
        }
    }

    fn positions(matches: &[Match]) -> Vec<u64> {
        matches.iter().map(|m| m.position).collect()
    }

    #[test]
    fn rank_orders_by_rank_then_newest_and_resumes_after_the_cursor() {
        let all = || vec![found(1, 3), found(2, 9), found(3, 3), found(4, 1)];
        let first = paginate(all(), Order::Rank, None, 2);
        assert_eq!(positions(&first.results), vec![2, 3]);
        assert_eq!(positions(&first.rest), vec![1, 4]);
        assert_eq!(first.count, 4);
        let cursor = Cursor {
            order: Order::Rank,
            snapshot: 4,
            rank: 3,
            position: 3,
            offset: 2,
            scope: None,
        };
        let second = paginate(all(), Order::Rank, Some(&cursor), 2);
        assert_eq!(positions(&second.results), vec![1, 4]);
        assert!(second.rest.is_empty());
        assert_eq!(second.count, 4);
    }

    #[test]
    fn recent_orders_newest_first_and_counts_earlier_pages() {
        let first = paginate(
            vec![found(1, 9), found(3, 1), found(2, 5)],
            Order::Recent,
            None,
            2,
        );
        assert_eq!(positions(&first.results), vec![3, 2]);
        let cursor = Cursor {
            order: Order::Recent,
            snapshot: 3,
            rank: 5,
            position: 2,
            offset: 2,
            scope: None,
        };
        // The scan already skipped positions from the cursor up.
        let second = paginate(vec![found(1, 9)], Order::Recent, Some(&cursor), 2);
        assert_eq!(positions(&second.results), vec![1]);
        assert_eq!(second.count, 3);
    }
}
