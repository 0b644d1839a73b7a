//! The events a search reads: which stretch of each room's timeline the user may see, and a
//! walk over all of them at once, newest first, that stops after a fixed number of events.

use std::iter::Peekable;

use ruma::{OwnedRoomId, UserId};

use super::token::Scope;
use crate::error::Error;
use crate::rooms;
use crate::rooms::timeline::history_start;
use crate::rooms::visibility::Visibility;
use crate::storage::{Storage, StorageError, StorageResult};
use crate::users::filter::RoomEventFilter;

/// The stretch of one room's timeline a user may search.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub(crate) room_id: OwnedRoomId,
    /// The first position they may read (from the room's history visibility; each event
    /// after it is checked too, by `view`).
    pub(crate) from: u64,
    /// The last position they may read now: the newest for a member, their departure for a
    /// former member.
    pub(crate) visible_until: u64,
    /// The last position this search reads (`visible_until`, or less for a later page).
    pub(crate) upto: u64,
    /// Whether they are still in the room (their state view is the current state).
    pub(crate) joined: bool,
    /// Which events of the window they may see, each by the visibility when it was sent.
    pub(crate) view: Visibility,
}

/// The windows of the rooms a user may search, as `/messages` would let them read: rooms
/// they are in, up to now; rooms they left (or were banned from) after being in, up to
/// their departure. The spec asks for both ("including those that they have left").
/// Rooms the filter or the token's group leaves out are skipped.
pub(crate) fn readable_windows(
    storage: &Storage,
    rooms: &crate::rooms::Rooms,
    user_id: &UserId,
    filter: &RoomEventFilter,
    scope: Option<&Scope>,
    snapshot: u64,
) -> Result<Vec<Window>, StorageError> {
    let now = rooms.visible_position();
    let mut windows = Vec::new();
    for (room_id, record) in rooms::memberships(storage, user_id)? {
        let (visible_until, joined) = match record.membership.as_str() {
            "join" => (now, true),
            "leave" | "ban" if record.joined_stream.is_some() => (record.stream, false),
            _ => continue,
        };
        let in_scope = match scope {
            Some(Scope::Room(room)) => room == room_id.as_str(),
            _ => true,
        };
        if !in_scope || !filter.allows_room(room_id.as_str()) {
            continue;
        }
        let from = history_start(storage, &room_id, &record)?;
        let view = Visibility::for_user(storage, &room_id, user_id.as_str())?;
        windows.push(Window {
            view,
            room_id,
            from,
            visible_until,
            upto: visible_until.min(snapshot),
            joined,
        });
    }
    Ok(windows)
}

type Entries<'a> = Box<dyn Iterator<Item = StorageResult<((String, u64), String)>> + 'a>;

/// Calls `visit(index, window, position, event_id)` for the events of all `windows` (at most
/// `below` when given), newest first across rooms, and stops after `max_events`. Returns
/// whether it stopped early, that is whether older events went unread.
///
/// Cost: one sled range per room, and for each event read a look at every room's next
/// entry (rooms are few for a family server); the caller's `visit` loads the event.
pub(crate) fn newest_first(
    storage: &Storage,
    windows: &[Window],
    below: Option<u64>,
    max_events: usize,
    mut visit: impl FnMut(usize, &Window, u64, String) -> Result<(), Error>,
) -> Result<bool, Error> {
    let mut heads: Vec<Peekable<Entries<'_>>> = Vec::with_capacity(windows.len());
    for window in windows {
        let upto = match below {
            Some(below) => window.upto.min(below.saturating_sub(1)),
            None => window.upto,
        };
        let entries: Entries<'_> = if window.from > upto || below == Some(0) {
            Box::new(std::iter::empty())
        } else {
            let room = window.room_id.to_string();
            Box::new(
                storage
                    .roomstream_eventid
                    .range(&(room.clone(), window.from), &(room, upto))
                    .rev(),
            )
        };
        heads.push(entries.peekable());
    }
    let mut read = 0;
    loop {
        let Some(index) = newest_head(&mut heads)? else {
            return Ok(false);
        };
        if read == max_events {
            return Ok(true);
        }
        read += 1;
        if let (Some(Ok(((_, position), event_id))), Some(window)) =
            (heads[index].next(), windows.get(index))
            && window.view.allows(position)
        {
            visit(index, window, position, event_id)?;
        }
    }
}

/// The index of the room whose next entry is the newest, if any is left.
fn newest_head(heads: &mut [Peekable<Entries<'_>>]) -> Result<Option<usize>, StorageError> {
    let mut newest: Option<(usize, u64)> = None;
    for (index, head) in heads.iter_mut().enumerate() {
        match head.peek() {
            None => {}
            Some(Err(_)) => {
                if let Some(Err(err)) = head.next() {
                    return Err(err);
                }
            }
            Some(Ok(((_, position), _))) if newest.is_none_or(|(_, newest)| *position > newest) => {
                newest = Some((index, *position));
            }
            Some(Ok(_)) => {}
        }
    }
    Ok(newest.map(|(index, _)| index))
}
