//! What a sliding sync request asks for: MSC4186 as Synapse serves it under
//! `org.matrix.simplified_msc3575` and as matrix-rust-sdk (Element X) sends it. Read
//! leniently where clients differ (`ranges` or `range`; `required_state` as `[type, key]`
//! pairs or as `{include, exclude, lazy_members}`), and bounded everywhere: no field of a
//! hostile body makes one request do unbounded work.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::error::{Error, ErrorKind};

/// At most this many lists (the MSC's own bound).
const MAX_LISTS: usize = 100;
/// At most this many ranges per list, subscriptions per request, and entries in any of the
/// request's arrays (`required_state`, filters' room lists, extensions' `lists`/`rooms`).
const MAX_RANGES: usize = 16;
const MAX_SUBSCRIPTIONS: usize = 200;
const MAX_ENTRIES: usize = 200;
/// The longest `conn_id` or list name.
const MAX_NAME: usize = 255;
/// Timeline events per room at most, whatever the client asks ("the server may cap").
pub(crate) const MAX_TIMELINE_LIMIT: usize = 100;

/// The body of `POST …/org.matrix.simplified_msc3575/sync` (`pos` and `timeout` may also
/// come in the query, where matrix-rust-sdk puts them).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SlidingRequest {
    pub(crate) conn_id: Option<String>,
    pub(crate) pos: Option<String>,
    pub(crate) timeout: Option<u64>,
    pub(crate) lists: BTreeMap<String, ListConfig>,
    pub(crate) room_subscriptions: BTreeMap<String, RoomConfig>,
    pub(crate) extensions: Extensions,
}

/// A list: a window (`ranges`) into the user's rooms that pass its `filters`, ordered by
/// recent activity, and what to send of each room in it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct ListConfig {
    pub(crate) ranges: Vec<(u64, u64)>,
    /// The MSC's newer single `range`.
    pub(crate) range: Option<(u64, u64)>,
    pub(crate) timeline_limit: Option<u64>,
    pub(crate) required_state: Option<RequiredStateWire>,
    pub(crate) filters: Filters,
}

/// What to send of one room: its newest events and which state.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct RoomConfig {
    pub(crate) timeline_limit: Option<u64>,
    pub(crate) required_state: Option<RequiredStateWire>,
}

/// `required_state` in either of its two shapes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RequiredStateWire {
    /// `[["m.room.name", ""], ["m.room.member", "$LAZY"], ["*", "*"]]` (Synapse, the SDK).
    Pairs(Vec<(String, String)>),
    /// `{"include": [{"type": …, "state_key": …}], "exclude": […], "lazy_members": true}`.
    Object {
        #[serde(default)]
        include: Vec<StateElement>,
        #[serde(default)]
        exclude: Vec<StateElement>,
        #[serde(default)]
        lazy_members: bool,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StateElement {
    #[serde(rename = "type")]
    kind: Option<String>,
    state_key: Option<String>,
}

/// Which state keys a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum KeyPattern {
    Any,
    /// `$ME`: the requesting user's ID.
    Me,
    Exact(String),
}

/// One `(type, state key)` pattern; a `None` type matches every type.
pub(crate) type StatePattern = (Option<String>, KeyPattern);

/// A room's `required_state`, normalized: what to include, what to leave out, and whether
/// members come lazily (those of the timeline's senders).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequiredState {
    pub(crate) include: BTreeSet<StatePattern>,
    pub(crate) exclude: BTreeSet<StatePattern>,
    pub(crate) lazy_members: bool,
}

impl RequiredState {
    fn from_wire(wire: Option<&RequiredStateWire>) -> Result<RequiredState, Error> {
        let mut state = RequiredState::default();
        match wire {
            None => {}
            Some(RequiredStateWire::Pairs(pairs)) => {
                bounded("required_state", pairs.len())?;
                for (kind, key) in pairs {
                    if kind == "m.room.member" && key == "$LAZY" {
                        state.lazy_members = true;
                        continue;
                    }
                    let kind = (kind != "*").then(|| kind.clone());
                    let key = match key.as_str() {
                        "*" => KeyPattern::Any,
                        "$ME" => KeyPattern::Me,
                        other => KeyPattern::Exact(other.to_owned()),
                    };
                    state.include.insert((kind, key));
                }
            }
            Some(RequiredStateWire::Object {
                include,
                exclude,
                lazy_members,
            }) => {
                bounded("required_state.include", include.len())?;
                bounded("required_state.exclude", exclude.len())?;
                let pattern = |element: &StateElement| {
                    let key = element
                        .state_key
                        .clone()
                        .map_or(KeyPattern::Any, KeyPattern::Exact);
                    (element.kind.clone(), key)
                };
                state.include = include.iter().map(pattern).collect();
                state.exclude = exclude.iter().map(pattern).collect();
                state.lazy_members = *lazy_members;
            }
        }
        Ok(state)
    }

    /// Whether the state entry `(kind, key)` is wanted, for `user`.
    pub(crate) fn wants(&self, kind: &str, key: &str, user: &str) -> bool {
        let matches = |(pattern_kind, pattern_key): &StatePattern| {
            pattern_kind.as_deref().is_none_or(|wanted| wanted == kind)
                && match pattern_key {
                    KeyPattern::Any => true,
                    KeyPattern::Me => key == user,
                    KeyPattern::Exact(wanted) => wanted == key,
                }
        };
        self.include.iter().any(matches) && !self.exclude.iter().any(matches)
    }

    /// The union of two configs (a room in several lists gets everything any asks for).
    fn merge(&mut self, other: &RequiredState) {
        self.include.extend(other.include.iter().cloned());
        // An entry left out by one config but asked for by another is sent.
        self.exclude
            .retain(|pattern| other.exclude.contains(pattern));
        self.lazy_members |= other.lazy_members;
    }

    /// Whether `self` asks for anything `before` did not.
    pub(crate) fn expands(&self, before: &RequiredState) -> bool {
        !self.include.is_subset(&before.include)
            || !before.exclude.is_subset(&self.exclude)
            || (self.lazy_members && !before.lazy_members)
    }
}

/// What to send of a room once every rule that matches it is combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Combined {
    pub(crate) timeline_limit: usize,
    pub(crate) required_state: RequiredState,
}

impl Combined {
    pub(crate) fn from_parts(
        timeline_limit: Option<u64>,
        required_state: Option<&RequiredStateWire>,
    ) -> Result<Combined, Error> {
        let limit = timeline_limit.unwrap_or(0).min(MAX_TIMELINE_LIMIT as u64);
        Ok(Combined {
            timeline_limit: usize::try_from(limit).unwrap_or(MAX_TIMELINE_LIMIT),
            required_state: RequiredState::from_wire(required_state)?,
        })
    }

    /// The superset of both: the larger timeline, the union of the state.
    pub(crate) fn merge(&mut self, other: &Combined) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        self.required_state.merge(&other.required_state);
    }

    /// Whether `self` asks for more than `before` did: the room is sent afresh.
    pub(crate) fn expands(&self, before: &Combined) -> bool {
        self.timeline_limit > before.timeline_limit
            || self.required_state.expands(&before.required_state)
    }
}

/// A list's `filters`. `tags`/`not_tags` are not applied (a room's tags live in its
/// account data; reading them for every room on every request is not worth it yet).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct Filters {
    pub(crate) is_dm: Option<bool>,
    pub(crate) is_encrypted: Option<bool>,
    pub(crate) is_invite: Option<bool>,
    /// The MSC's newer spelling of `is_invite`.
    pub(crate) is_invited: Option<bool>,
    pub(crate) room_types: Option<Vec<Option<String>>>,
    pub(crate) not_room_types: Vec<Option<String>>,
    pub(crate) spaces: Option<Vec<String>>,
}

/// The extensions a request turns on.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Extensions {
    pub(crate) to_device: ToDeviceConfig,
    pub(crate) e2ee: Toggle,
    pub(crate) account_data: ScopedConfig,
    pub(crate) receipts: ScopedConfig,
    pub(crate) typing: ScopedConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Toggle {
    pub(crate) enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ToDeviceConfig {
    pub(crate) enabled: Option<bool>,
    /// The `next_batch` of the last to-device answer: everything up to it was received.
    pub(crate) since: Option<String>,
    pub(crate) limit: Option<u64>,
}

/// An extension about rooms (account data, receipts, typing): which lists' and which
/// subscriptions' rooms it covers (`["*"]`, or absent: all of them).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ScopedConfig {
    pub(crate) enabled: Option<bool>,
    pub(crate) lists: Option<Vec<String>>,
    pub(crate) rooms: Option<Vec<String>>,
}

impl ScopedConfig {
    pub(crate) fn on(&self) -> bool {
        self.enabled == Some(true)
    }

    pub(crate) fn covers_list(&self, name: &str) -> bool {
        self.lists
            .as_ref()
            .is_none_or(|lists| lists.iter().any(|list| list == "*" || list == name))
    }

    pub(crate) fn covers_subscription(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|wanted| wanted == "*" || wanted == room))
    }
}

fn bounded(what: &str, len: usize) -> Result<(), Error> {
    if len > MAX_ENTRIES {
        return Err(Error::new(
            ErrorKind::InvalidParam,
            format!("`{what}` has {len} entries; at most {MAX_ENTRIES} are accepted"),
        ));
    }
    Ok(())
}

impl SlidingRequest {
    /// Refuses what no client sends and no server should do the work for: too many lists,
    /// ranges, subscriptions or entries, names too long, ranges that run backwards.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let invalid = |message: String| Err(Error::new(ErrorKind::InvalidParam, message));
        if self.lists.len() > MAX_LISTS {
            return invalid(format!("At most {MAX_LISTS} lists are accepted"));
        }
        if self.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
            return invalid(format!(
                "At most {MAX_SUBSCRIPTIONS} room subscriptions are accepted"
            ));
        }
        if self.conn_id.as_ref().is_some_and(|id| id.len() > MAX_NAME) {
            return invalid("`conn_id` is too long".to_owned());
        }
        for (name, list) in &self.lists {
            if name.len() > MAX_NAME || name.is_empty() {
                return invalid("A list name must have 1 to 255 characters".to_owned());
            }
            if list.ranges.len() > MAX_RANGES {
                return invalid(format!("List `{name}` has more than {MAX_RANGES} ranges"));
            }
            if list
                .ranges
                .iter()
                .chain(&list.range)
                .any(|(from, to)| from > to)
            {
                return invalid(format!("List `{name}` has a range that runs backwards"));
            }
            let filters = &list.filters;
            bounded(
                "filters.spaces",
                filters.spaces.as_ref().map_or(0, Vec::len),
            )?;
            bounded(
                "filters.room_types",
                filters.room_types.as_ref().map_or(0, Vec::len),
            )?;
            bounded("filters.not_room_types", filters.not_room_types.len())?;
        }
        for config in [
            &self.extensions.account_data,
            &self.extensions.receipts,
            &self.extensions.typing,
        ] {
            bounded("extension lists", config.lists.as_ref().map_or(0, Vec::len))?;
            bounded("extension rooms", config.rooms.as_ref().map_or(0, Vec::len))?;
        }
        Ok(())
    }
}

impl ListConfig {
    /// The list's ranges, whichever way the client spelled them.
    pub(crate) fn windows(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().copied().chain(self.range)
    }

    pub(crate) fn config(&self) -> Result<Combined, Error> {
        Combined::from_parts(self.timeline_limit, self.required_state.as_ref())
    }
}

impl RoomConfig {
    pub(crate) fn config(&self) -> Result<Combined, Error> {
        Combined::from_parts(self.timeline_limit, self.required_state.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> RequiredState {
        let wire: RequiredStateWire = serde_json::from_value(json).expect("shape");
        RequiredState::from_wire(Some(&wire)).expect("valid")
    }

    #[test]
    fn element_x_pairs_read_as_patterns() {
        let state = parse(serde_json::json!([
            ["m.room.name", ""],
            ["m.room.member", "$LAZY"],
            ["m.room.member", "$ME"],
            ["m.space.child", "*"]
        ]));
        assert!(state.lazy_members);
        assert!(state.wants("m.room.name", "", "@a:x"));
        assert!(state.wants("m.room.member", "@a:x", "@a:x"));
        assert!(!state.wants("m.room.member", "@b:x", "@a:x"));
        assert!(state.wants("m.space.child", "!r:x", "@a:x"));
        assert!(!state.wants("m.room.topic", "", "@a:x"));
    }

    #[test]
    fn the_object_shape_includes_and_excludes() {
        let state = parse(serde_json::json!({
            "include": [{}],
            "exclude": [{"type": "m.room.create", "state_key": ""}]
        }));
        assert!(state.wants("m.room.topic", "", "@a:x"));
        assert!(!state.wants("m.room.create", "", "@a:x"));
    }

    #[test]
    fn a_bigger_config_expands_a_smaller_one() {
        let small = Combined::from_parts(Some(1), None).expect("valid");
        let mut big = small.clone();
        big.merge(&Combined::from_parts(Some(20), None).expect("valid"));
        assert!(big.expands(&small));
        assert!(!small.expands(&big));
        assert_eq!(
            Combined::from_parts(Some(10_000), None)
                .expect("valid")
                .timeline_limit,
            MAX_TIMELINE_LIMIT
        );
    }
}
