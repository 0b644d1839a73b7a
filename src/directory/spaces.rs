//! Spaces (spec: client-server API, "Spaces"): walking a space's tree of `m.space.child`
//! events for `GET /rooms/{roomId}/hierarchy`.
//!
//! The walk is depth first, in the spec's order of children, each room once (loops, which
//! the spec forbids but cannot prevent, simply end where a room comes round again). It is
//! deterministic for a given state, so a page token needs to say only how many rooms came
//! before it, with the settings it was made under: no walk is kept on the server between
//! pages. Only rooms this server has joined are described: a child known only by its ID
//! would need the federation `/hierarchy` of one of its `via` servers, and is skipped
//! until Hearth speaks federation.

use std::collections::HashSet;

use ruma::{CanonicalJsonValue, OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use crate::directory;
use crate::error::{Error, ErrorKind};
use crate::rooms;
use crate::storage::Storage;

/// Rooms per page when the client names no `limit`, and the most it may ask for.
pub(crate) const DEFAULT_LIMIT: usize = 20;
pub(crate) const MAX_LIMIT: usize = 50;
/// How deep the walk goes when the client names no `max_depth`, and the deepest it may.
pub(crate) const DEFAULT_MAX_DEPTH: usize = 5;
pub(crate) const MAX_DEPTH: usize = 10;
/// The most rooms one walk looks at (shown or not), however it is paginated: a huge or
/// hostile tree costs a bounded amount of work, and past this the hierarchy simply ends.
const MAX_ROOMS_WALKED: usize = 1000;

/// What the client asked for (the query string of `/hierarchy`).
#[derive(Debug, Default, Clone)]
pub(crate) struct HierarchyRequest {
    pub(crate) suggested_only: Option<bool>,
    pub(crate) limit: Option<u64>,
    pub(crate) max_depth: Option<u64>,
    pub(crate) from: Option<String>,
}

/// One page of the hierarchy.
#[derive(Debug)]
pub(crate) struct HierarchyPage {
    pub(crate) rooms: Vec<Value>,
    pub(crate) next_batch: Option<String>,
}

/// Where a page starts and the settings of the walk it continues. `from` tokens carry the
/// settings so that a client cannot change them halfway, as the spec requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    skip: usize,
    max_depth: usize,
    suggested_only: bool,
    /// A hash of the root's ID: a token is only good for the space it was made for.
    root: u64,
}

impl Position {
    fn token(self) -> String {
        format!(
            "h1_{}_{}_{}_{:016x}",
            self.skip,
            self.max_depth,
            u8::from(self.suggested_only),
            self.root
        )
    }

    fn parse(token: &str) -> Option<Position> {
        let mut parts = token.strip_prefix("h1_")?.split('_');
        let skip = parts.next()?.parse().ok()?;
        let max_depth = parts.next()?.parse().ok()?;
        let suggested_only = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let root = parts.next().filter(|hex| hex.len() == 16)?;
        let root = u64::from_str_radix(root, 16).ok()?;
        if parts.next().is_some() || max_depth > MAX_DEPTH || skip > MAX_ROOMS_WALKED {
            return None;
        }
        Some(Position {
            skip,
            max_depth,
            suggested_only,
            root,
        })
    }
}

/// FNV-1a: stable across builds, so tokens outlive a restart (`DefaultHasher` may not).
fn root_hash(room_id: &RoomId) -> u64 {
    room_id
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

fn invalid(message: &'static str) -> Error {
    Error::new(ErrorKind::InvalidParam, message)
}

/// The settings of this page: from the query, checked against the `from` token if any.
fn position(root: &RoomId, request: &HierarchyRequest) -> Result<(Position, usize), Error> {
    let limit = match request.limit {
        None => DEFAULT_LIMIT,
        Some(0) => return Err(invalid("limit must be greater than zero")),
        Some(limit) => usize::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
    };
    let max_depth = request
        .max_depth
        .map(|depth| usize::try_from(depth).unwrap_or(MAX_DEPTH).min(MAX_DEPTH));
    let Some(from) = &request.from else {
        let position = Position {
            skip: 0,
            max_depth: max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
            suggested_only: request.suggested_only.unwrap_or(false),
            root: root_hash(root),
        };
        return Ok((position, limit));
    };
    let position = Position::parse(from).ok_or_else(|| invalid("Unknown from token"))?;
    if position.root != root_hash(root) {
        return Err(invalid("This from token belongs to another space"));
    }
    if max_depth.is_some_and(|depth| depth != position.max_depth)
        || request
            .suggested_only
            .is_some_and(|only| only != position.suggested_only)
    {
        return Err(invalid(
            "suggested_only and max_depth cannot change on paginated requests",
        ));
    }
    Ok((position, limit))
}

/// A valid `m.space.child` event of a space: one whose `via` is a non-empty list of
/// server names (anything else means the child was removed).
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) room_id: OwnedRoomId,
    /// `order`, when valid: 1 to 50 characters between `\x20` and `\x7E`.
    order: Option<String>,
    origin_server_ts: u64,
    pub(crate) suggested: bool,
    /// The event as a stripped state event with its `origin_server_ts`.
    pub(crate) stripped: Value,
}

/// The children of `room_id` in the spec's order ("Ordering of children within a space"):
/// those with a valid `order` first, by `order`; then the rest; ties by the child event's
/// `origin_server_ts`, then by room ID.
pub(crate) fn children(storage: &Storage, room_id: &RoomId) -> Result<Vec<Child>, Error> {
    let mut children = Vec::new();
    for ((kind, state_key), event_id) in rooms::current_state(storage, room_id)? {
        if kind != "m.space.child" {
            continue;
        }
        let Ok(child) = OwnedRoomId::try_from(state_key.as_str()) else {
            continue;
        };
        let Some(event) = rooms::load_json(storage, &event_id)? else {
            continue;
        };
        let event = serde_json::to_value(CanonicalJsonValue::Object(event))
            .map_err(|err| Error::internal(format!("stored event {event_id}: {err}")))?;
        let content = &event["content"];
        let via_ok = content["via"].as_array().is_some_and(|via| {
            !via.is_empty() && via.iter().all(|server| server.as_str().is_some())
        });
        if !via_ok {
            continue;
        }
        let order = content["order"]
            .as_str()
            .filter(|order| {
                (1..=50).contains(&order.len()) && order.bytes().all(|b| (0x20..=0x7E).contains(&b))
            })
            .map(str::to_owned);
        let origin_server_ts = event["origin_server_ts"].as_u64().unwrap_or(0);
        children.push(Child {
            room_id: child,
            order,
            origin_server_ts,
            suggested: content["suggested"] == true,
            stripped: json!({
                "type": kind,
                "state_key": state_key,
                "content": content,
                "sender": event["sender"],
                "origin_server_ts": origin_server_ts,
            }),
        });
    }
    children.sort_by(|a, b| {
        (a.order.is_none(), &a.order, a.origin_server_ts, &a.room_id).cmp(&(
            b.order.is_none(),
            &b.order,
            b.origin_server_ts,
            &b.room_id,
        ))
    });
    Ok(children)
}

fn is_space(storage: &Storage, room_id: &RoomId) -> Result<bool, Error> {
    Ok(rooms::state_content(storage, room_id, "m.room.create", "")?
        .is_some_and(|content| content["type"] == "m.space"))
}

fn is_local(storage: &Storage, room_id: &RoomId) -> Result<bool, Error> {
    Ok(storage.roomid_room.get(&room_id.to_string())?.is_some())
}

/// A page of the space tree under `root`, as `user` may see it.
///
/// The root must be a room here that the user may preview (`403 M_FORBIDDEN` otherwise,
/// as the spec says for a room one cannot view or that does not exist). Below it, rooms
/// the user may not preview and rooms this server is not in are left out, and so is what
/// lies beneath them.
pub(crate) fn hierarchy(
    storage: &Storage,
    user: &UserId,
    root: &RoomId,
    request: &HierarchyRequest,
) -> Result<HierarchyPage, Error> {
    let (position, limit) = position(root, request)?;
    if !is_local(storage, root)? || !directory::may_preview(storage, user, root)? {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "You are not allowed to view this room",
        ));
    }
    let mut stack = vec![(root.to_owned(), 0usize)];
    let mut seen = HashSet::new();
    let mut shown = 0usize;
    let mut walked = 0usize;
    let mut page = Vec::new();
    let mut next_batch = None;
    while let Some((room_id, depth)) = stack.pop() {
        if !seen.insert(room_id.clone()) {
            continue;
        }
        walked += 1;
        if walked > MAX_ROOMS_WALKED {
            break;
        }
        if !is_local(storage, &room_id)? || !directory::may_preview(storage, user, &room_id)? {
            continue;
        }
        let children = if is_space(storage, &room_id)? {
            children(storage, &room_id)?
        } else {
            Vec::new()
        };
        if shown >= position.skip {
            if page.len() == limit {
                next_batch = Some(
                    Position {
                        skip: shown,
                        ..position
                    }
                    .token(),
                );
                break;
            }
            let mut entry = directory::summary(storage, &room_id)?;
            entry["children_state"] =
                Value::Array(children.iter().map(|c| c.stripped.clone()).collect());
            page.push(entry);
        }
        shown += 1;
        if depth < position.max_depth {
            // Reversed, so that the first child is the next room taken off the stack.
            stack.extend(
                children
                    .into_iter()
                    .rev()
                    .filter(|child| !position.suggested_only || child.suggested)
                    // A room already walked is not stacked again (loops, repeated links).
                    .filter(|child| !seen.contains(&child.room_id))
                    .map(|child| (child.room_id, depth + 1)),
            );
        }
    }
    Ok(HierarchyPage {
        rooms: page,
        next_batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let position = Position {
            skip: 40,
            max_depth: 3,
            suggested_only: true,
            root: root_hash(<&RoomId>::try_from("!space:example.org").expect("valid")),
        };
        assert_eq!(Position::parse(&position.token()), Some(position));
        for bad in [
            "",
            "40",
            "h1_40_3_1",
            "h1_x_3_1_0000000000000000",
            "h1_40_3_2_0000000000000000",
            "h1_40_99_1_0000000000000000",
            "h1_40_3_1_00000000000000000",
            "h1_40_3_1_0000000000000000_extra",
            "h1_99999999999999999999999_3_1_0000000000000000",
        ] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn settings_cannot_change_between_pages() {
        let root = <&RoomId>::try_from("!space:example.org").expect("valid");
        let other = <&RoomId>::try_from("!other:example.org").expect("valid");
        let first = HierarchyRequest {
            max_depth: Some(2),
            limit: Some(500),
            ..Default::default()
        };
        let (position, limit) = super::position(root, &first).expect("valid");
        assert_eq!((position.max_depth, limit), (2, MAX_LIMIT));
        let token = Position {
            skip: 5,
            ..position
        }
        .token();
        let next = |max_depth, suggested_only, room: &RoomId| {
            super::position(
                room,
                &HierarchyRequest {
                    max_depth,
                    suggested_only,
                    from: Some(token.clone()),
                    limit: None,
                },
            )
            .map(|(position, _)| position.skip)
            .map_err(|err| err.kind)
        };
        assert_eq!(next(None, None, root), Ok(5));
        assert_eq!(next(Some(2), Some(false), root), Ok(5));
        assert_eq!(next(Some(3), None, root), Err(ErrorKind::InvalidParam));
        assert_eq!(next(None, Some(true), root), Err(ErrorKind::InvalidParam));
        assert_eq!(next(None, None, other), Err(ErrorKind::InvalidParam));
        let zero = HierarchyRequest {
            limit: Some(0),
            ..Default::default()
        };
        assert!(super::position(root, &zero).is_err());
    }
}

#[cfg(test)]
#[path = "spaces_props.rs"]
mod props;
