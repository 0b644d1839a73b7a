//! `groupings`: the page's results partitioned by room or by sender (spec: "Groups").
//! Pure: it works on the matches already found and ordered.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Match;
use super::token::Scope;

/// `groupings` of a search request.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Groupings {
    #[serde(default)]
    pub(crate) group_by: Vec<Group>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Group {
    pub(crate) key: GroupKey,
}

/// What results can be grouped by: the two groupings the spec requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum GroupKey {
    #[serde(rename = "room_id")]
    RoomId,
    #[serde(rename = "sender")]
    Sender,
}

impl GroupKey {
    fn name(self) -> &'static str {
        match self {
            GroupKey::RoomId => "room_id",
            GroupKey::Sender => "sender",
        }
    }

    fn value_of(self, found: &Match) -> &str {
        match self {
            GroupKey::RoomId => &found.room_id,
            GroupKey::Sender => &found.sender,
        }
    }

    fn scope(self, value: &str) -> Scope {
        match self {
            GroupKey::RoomId => Scope::Room(value.to_owned()),
            GroupKey::Sender => Scope::Sender(value.to_owned()),
        }
    }
}

/// `groups`: for each requested key, each value seen on this page with its results (event
/// IDs, in the page's order) and its `order` (1 for the group of the first result, then
/// by first appearance, so groups sort the way the results do). A group with matches past
/// this page gets a `next_batch` that continues within the group: `token_after(last result
/// of the group, group)` makes it.
pub(crate) fn groups(
    keys: &[GroupKey],
    page: &[Match],
    rest: &[Match],
    token_after: impl Fn(&Match, Scope, u64) -> String,
) -> Value {
    let mut groups = Map::new();
    for key in keys {
        if groups.contains_key(key.name()) {
            continue;
        }
        let mut values: Vec<(&str, Vec<&Match>)> = Vec::new();
        for found in page {
            let value = key.value_of(found);
            match values.iter_mut().find(|(seen, _)| *seen == value) {
                Some((_, members)) => members.push(found),
                None => values.push((value, vec![found])),
            }
        }
        let mut by_value = Map::new();
        for (order, (value, members)) in values.into_iter().enumerate() {
            let ids: Vec<&str> = members.iter().map(|m| m.event_id.as_str()).collect();
            let mut group = json!({ "order": order + 1, "results": ids });
            let more = rest.iter().any(|found| key.value_of(found) == value);
            if more && let Some(last) = members.last() {
                group["next_batch"] =
                    json!(token_after(last, key.scope(value), members.len() as u64));
            }
            by_value.insert(value.to_owned(), group);
        }
        groups.insert(key.name().to_owned(), Value::Object(by_value));
    }
    Value::Object(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(event_id: &str, room_id: &str, sender: &str) -> Match {
        Match {
            position: 0,
            rank: 1,
            event_id: event_id.into(),
            room_id: room_id.into(),
            sender: sender.into(),
            window: 0,
            matched: Default::default(),
        }
    }

    #[test]
    fn results_are_partitioned_in_page_order_with_tokens_for_the_rest() {
        let page = [
            found("$1", "!a", "@x"),
            found("$2", "!b", "@x"),
            found("$3", "!a", "@y"),
        ];
        let rest = [found("$4", "!b", "@z")];
        let token =
            |last: &Match, scope: Scope, shown: u64| format!("{}:{scope:?}:{shown}", last.event_id);
        let groups = groups(&[GroupKey::RoomId, GroupKey::Sender], &page, &rest, token);
        assert_eq!(
            groups["room_id"]["!a"],
            json!({ "order": 1, "results": ["$1", "$3"] })
        );
        assert_eq!(groups["room_id"]["!b"]["order"], 2);
        assert_eq!(groups["room_id"]["!b"]["next_batch"], "$2:Room(\"!b\"):1");
        assert_eq!(groups["sender"]["@x"]["results"], json!(["$1", "$2"]));
        assert!(groups["sender"]["@x"].get("next_batch").is_none());
        assert!(
            groups["sender"].get("@z").is_none(),
            "only values on this page"
        );
    }
}
