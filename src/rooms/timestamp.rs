//! Finding the event closest to a point in time (`/timestamp_to_event`, for clients and
//! for other servers alike).
//!
//! The rule, from the spec: the event nearest to `ts` in the direction asked — forwards,
//! the earliest sent at or after `ts`; backwards, the latest sent at or before it. Events
//! with the same `origin_server_ts` are told apart by stream order: forwards the first of
//! them in the timeline, backwards the last, so that walking a timeline by time meets them
//! in the order the room shows them.

use ruma::{CanonicalJsonValue, RoomId};

use crate::storage::{Storage, StorageError};

/// How many events on each side of where a timestamp falls in the stream are compared:
/// timestamps follow the stream closely, not exactly (clocks differ between servers).
const TIMESTAMP_WINDOW: usize = 200;

/// The event of the room closest to `ts` in the direction asked (`forward`: at or after
/// `ts`, else at or before), among those at positions in `[from, upto]` that `visible`
/// allows, as its ID and `origin_server_ts`. A binary search finds where `ts` falls in the
/// stream; a window of events around that point is compared exactly.
pub(crate) fn closest_event(
    storage: &Storage,
    room_id: &RoomId,
    (ts, forward): (u64, bool),
    (from, upto): (u64, u64),
    visible: impl Fn(u64) -> bool,
) -> Result<Option<(String, u64)>, StorageError> {
    let room = room_id.to_string();
    let pivot = first_at_or_after(storage, &room, (from, upto), ts)?;
    // (Empty spans are skipped: a range must not run backwards.)
    let before: Vec<_> = if pivot > from {
        storage
            .roomstream_eventid
            .range(&(room.clone(), from), &(room.clone(), pivot - 1))
            .rev()
            .take(TIMESTAMP_WINDOW)
            .collect()
    } else {
        Vec::new()
    };
    let after: Vec<_> = if pivot <= upto {
        storage
            .roomstream_eventid
            .range(&(room.clone(), pivot), &(room, upto))
            .take(TIMESTAMP_WINDOW)
            .collect()
    } else {
        Vec::new()
    };
    let mut candidates = Vec::new();
    for entry in before.into_iter().chain(after) {
        let ((_, position), event_id) = entry?;
        if !visible(position) {
            continue;
        }
        if let Some(at) = event_ts(storage, &event_id)? {
            candidates.push(Candidate {
                ts: at,
                position,
                event_id,
            });
        }
    }
    Ok(closest(candidates, ts, forward).map(|found| (found.event_id, found.ts)))
}

/// An event compared by [`closest`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    ts: u64,
    position: u64,
    event_id: String,
}

/// The candidate on the asked side of `ts` nearest to it; ties by stream order (the module's
/// rule).
fn closest(candidates: Vec<Candidate>, ts: u64, forward: bool) -> Option<Candidate> {
    let on_side = candidates
        .into_iter()
        .filter(|c| if forward { c.ts >= ts } else { c.ts <= ts });
    if forward {
        on_side.min_by_key(|c| (c.ts, c.position))
    } else {
        on_side.max_by_key(|c| (c.ts, c.position))
    }
}

/// About the first stream position in `[from, upto]` whose event was sent at or after
/// `ts`: a binary search over positions, reading one event per step.
fn first_at_or_after(
    storage: &Storage,
    room: &str,
    (from, upto): (u64, u64),
    ts: u64,
) -> Result<u64, StorageError> {
    let (mut low, mut high) = (from, upto.saturating_add(1));
    while low < high {
        let middle = low + (high - low) / 2;
        let next = if middle <= upto {
            storage
                .roomstream_eventid
                .range(&(room.to_owned(), middle), &(room.to_owned(), upto))
                .next()
                .transpose()?
        } else {
            None
        };
        match next {
            Some(((_, position), event_id))
                if event_ts(storage, &event_id)?.is_some_and(|at| at < ts) =>
            {
                low = position.saturating_add(1);
            }
            _ => high = middle,
        }
    }
    Ok(low)
}

/// An event's `origin_server_ts`.
fn event_ts(storage: &Storage, event_id: &str) -> Result<Option<u64>, StorageError> {
    Ok(super::load_json(storage, event_id)?.and_then(|json| {
        json.get("origin_server_ts")
            .and_then(CanonicalJsonValue::as_integer)
            .and_then(|ts| u64::try_from(i64::from(ts)).ok())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(ts: u64, position: u64) -> Candidate {
        Candidate {
            ts,
            position,
            event_id: format!("${position}"),
        }
    }

    fn found(candidates: &[Candidate], ts: u64, forward: bool) -> Option<u64> {
        closest(candidates.to_vec(), ts, forward).map(|c| c.position)
    }

    #[test]
    fn the_nearest_event_on_the_asked_side_wins() {
        let events = [candidate(100, 1), candidate(200, 2), candidate(300, 3)];
        assert_eq!(found(&events, 150, true), Some(2));
        assert_eq!(found(&events, 150, false), Some(1));
        assert_eq!(found(&events, 200, true), Some(2));
        assert_eq!(found(&events, 200, false), Some(2));
        assert_eq!(found(&events, 301, true), None);
        assert_eq!(found(&events, 99, false), None);
    }

    #[test]
    fn equal_timestamps_are_told_apart_by_stream_order() {
        // Given in the order the window reads them: older ones newest first, then the rest.
        let events = [
            candidate(200, 5),
            candidate(200, 4),
            candidate(100, 3),
            candidate(200, 6),
            candidate(300, 7),
        ];
        // Forwards, the first of the events sent at 200; backwards, the last.
        assert_eq!(found(&events, 150, true), Some(4));
        assert_eq!(found(&events, 250, false), Some(6));
        assert_eq!(found(&events, 200, true), Some(4));
        assert_eq!(found(&events, 200, false), Some(6));
    }
}
