//! Reading a room's history in pages, as a member may see it: `/messages` (a page in
//! either direction from a token), `/context` (the events around one event, and the state
//! there) and `/timestamp_to_event` (the event nearest to a time). Tokens are stream
//! positions; every read goes through the one timeline scan ([`super::timeline::scan`]).

use std::collections::BTreeSet;

use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use super::Rooms;
use super::timeline::{self, DEFAULT_TIMELINE_LIMIT, Direction, Reader};
use crate::error::{Error, ErrorKind};
use crate::users::filter::RoomEventFilter;

/// A `/messages` request, its tokens read as stream positions.
#[derive(Debug)]
pub(crate) struct MessagesRequest {
    pub(crate) from: Option<u64>,
    pub(crate) to: Option<u64>,
    pub(crate) direction: Direction,
    pub(crate) filter: RoomEventFilter,
}

/// A page of `/messages`: the events in the order asked, the token it started from, where
/// to continue (none at the end of what may be read), and, when members are lazy-loaded,
/// the senders' member events.
#[derive(Debug)]
pub(crate) struct MessagesPage {
    pub(crate) chunk: Vec<Value>,
    pub(crate) start: u64,
    pub(crate) end: Option<u64>,
    pub(crate) state: Option<Vec<Value>>,
}

/// An event with the events around it (`/context`): `before` newest first, `after` oldest
/// first, the tokens at either end, and the room's state at the last event returned.
#[derive(Debug)]
pub(crate) struct EventContext {
    pub(crate) event: Value,
    pub(crate) before: Vec<Value>,
    pub(crate) after: Vec<Value>,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) state: Vec<Value>,
}

impl Rooms {
    /// A page of the room's timeline for `/messages`. A member reads from where the room's
    /// history visibility lets them; a former member up to when they left; someone never in
    /// the room, nothing.
    ///
    /// `request` reads the request (its tokens, direction and filter) once access is
    /// checked, so that a stranger's malformed request is refused as a stranger's.
    ///
    /// Going back from the newest page and finding nothing older, `fetch_older` is asked to
    /// bring in more history (over federation: a service above this one, so it is handed
    /// in) and the page is read again; the number of events it fetched says whether to.
    pub(crate) async fn messages(
        &self,
        reader: Reader<'_>,
        room_id: &RoomId,
        request: impl FnOnce() -> Result<MessagesRequest, Error>,
        fetch_older: impl AsyncFnOnce(usize) -> Result<usize, Error>,
    ) -> Result<MessagesPage, Error> {
        let user_id = UserId::parse(reader.user_id).map_err(Error::internal)?;
        let not_in_room = || Error::new(ErrorKind::Forbidden, "You are not in this room");
        let membership = self
            .membership(&user_id, room_id)?
            .ok_or_else(not_in_room)?;
        let visible_until = match membership.membership.as_str() {
            "join" => self.visible_position(),
            "leave" | "ban" if membership.joined_stream.is_some() => membership.stream,
            _ => return Err(not_in_room()),
        };
        let visible_from = self.history_start(room_id, &membership)?.saturating_sub(1);
        let MessagesRequest {
            from,
            to,
            direction,
            filter,
        } = request()?;
        let limit = filter.limit_or(DEFAULT_TIMELINE_LIMIT);
        let (events, start, end) = match direction {
            Direction::Backward => {
                let upto = from.unwrap_or(visible_until).min(visible_until);
                let after = to.unwrap_or(0).max(visible_from);
                let read = || {
                    timeline::scan(
                        &self.storage,
                        room_id,
                        (after, upto),
                        (&filter, limit),
                        Some(reader),
                        direction,
                    )
                };
                let mut page = read()?;
                // At the start of what we hold of a room joined over federation: fetch
                // older history from the servers in the room, then read again.
                if !page.limited
                    && to.is_none()
                    && membership.membership == "join"
                    && fetch_older(limit).await? > 0
                {
                    page = read()?;
                    // More may be fetched: the client is told to keep going back.
                    page.limited = true;
                }
                // Continue just below the oldest event looked at (shown or not).
                let end = page.limited.then(|| page.examined_from.saturating_sub(1));
                (page.events, upto, end)
            }
            Direction::Forward => {
                let after = from.unwrap_or(0).max(visible_from);
                let upto = to.unwrap_or(visible_until).min(visible_until);
                let page = timeline::scan(
                    &self.storage,
                    room_id,
                    (after, upto),
                    (&filter, limit),
                    Some(reader),
                    direction,
                )?;
                let end = page.limited.then_some(page.examined_to);
                (page.events, after, end)
            }
        };
        let newest = events.last().map(|(position, _, _)| *position);
        let mut chunk: Vec<Value> = events
            .into_iter()
            .map(|(_, _, event)| with_room(event, room_id))
            .collect();
        if direction == Direction::Backward {
            chunk.reverse();
        }
        let state = if filter.lazy_load_members {
            // The senders' member events as the room had them at the page's newest event.
            let at = newest.unwrap_or(visible_until).min(visible_until);
            Some(self.lazy_loaded_members(room_id, &chunk, at)?)
        } else {
            None
        };
        Ok(MessagesPage {
            chunk,
            start,
            end,
            state,
        })
    }

    /// The event `event_id` of the room with up to `limit` events around it (half before),
    /// for a joined member who may see it, and the state at the last event returned (with
    /// lazy-loading, only the shown senders' members). `filter` reads the request's filter
    /// once the event is found visible (the order of the checks, and so of the errors).
    pub(crate) fn context(
        &self,
        reader: Reader<'_>,
        room_id: &RoomId,
        event_id: &str,
        limit: u64,
        filter: impl FnOnce() -> Result<RoomEventFilter, Error>,
    ) -> Result<EventContext, Error> {
        let user_id = UserId::parse(reader.user_id).map_err(Error::internal)?;
        let record = self.require_joined(&user_id, room_id)?;
        let not_found = || Error::not_found("No such event in this room");
        let meta = self.event_meta(event_id)?.ok_or_else(not_found)?;
        let start_of_history = self.history_start(room_id, &record)?;
        let view = self.visibility(room_id, reader.user_id)?;
        if meta.room_id != room_id.as_str() || !view.allows(meta.stream) {
            return Err(not_found());
        }
        let event = self
            .timeline_form(event_id, Some(room_id.as_str()), Some(reader))?
            .ok_or_else(not_found)?;
        let mut filter = filter()?;
        let limit = limit.min(100);
        let before_n = limit / 2;
        let after_n = usize::try_from(limit - before_n).unwrap_or(usize::MAX);
        filter.limit = Some(before_n.max(1));
        let before = if before_n == 0 {
            Vec::new()
        } else {
            // `view.allows` refused position 0 above; the subtraction cannot wrap, and
            // saturates anyway so that it never could.
            self.timeline(
                room_id,
                (
                    start_of_history.saturating_sub(1),
                    meta.stream.saturating_sub(1),
                ),
                &filter,
                Some(reader),
            )?
            .events
        };
        let after = if after_n == 0 {
            Vec::new()
        } else {
            timeline::scan(
                &self.storage,
                room_id,
                (meta.stream, self.visible_position()),
                (&filter, after_n),
                Some(reader),
                Direction::Forward,
            )?
            .events
        };
        let start = before
            .first()
            .map_or(meta.stream, |(position, _, _)| *position)
            .saturating_sub(1);
        let end = after
            .last()
            .map_or(meta.stream, |(position, _, _)| *position);
        let before: Vec<Value> = before
            .into_iter()
            .rev()
            .map(|(_, _, event)| with_room(event, room_id))
            .collect();
        let after: Vec<Value> = after
            .into_iter()
            .map(|(_, _, event)| with_room(event, room_id))
            .collect();
        let mut shown: Vec<&Value> = before.iter().chain(&after).collect();
        shown.push(&event);
        let senders: BTreeSet<&str> = shown
            .iter()
            .filter_map(|event| event["sender"].as_str())
            .collect();
        let mut state = Vec::new();
        for ((kind, key), id) in self.state_at(room_id, end)? {
            if filter.lazy_load_members
                && kind == "m.room.member"
                && !senders.contains(key.as_str())
            {
                continue;
            }
            if let Some(event) = self.event_for_client(&id, Some(room_id.as_str()), None)? {
                state.push(event);
            }
        }
        Ok(EventContext {
            event,
            before,
            after,
            start,
            end,
            state,
        })
    }

    /// The event nearest to `ts` in the direction asked that a joined member may see (the
    /// rule: [`super::timestamp`]), as its ID and `origin_server_ts`. `forward` reads the
    /// request's direction once access is checked.
    pub(crate) fn event_at_time(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        ts: u64,
        forward: impl FnOnce() -> Result<bool, Error>,
    ) -> Result<(String, u64), Error> {
        let record = self.require_joined(user_id, room_id)?;
        let forward = forward()?;
        let from = self.history_start(room_id, &record)?;
        let view = self.visibility(room_id, user_id.as_str())?;
        super::timestamp::closest_event(
            &self.storage,
            room_id,
            (ts, forward),
            (from, self.visible_position()),
            |position| view.allows(position),
        )?
        .ok_or_else(|| Error::not_found("No event in that direction from that time"))
    }
}

/// `event` as shown outside its room's section of a response: with its `room_id`.
fn with_room(mut event: Value, room_id: &RoomId) -> Value {
    event["room_id"] = json!(room_id);
    event
}
