//! Which events match a search, and how well: pure, no storage.
//!
//! Text is cut into words at every character that is not a letter or a digit, and compared
//! lowercased. An event matches when every search word occurs in its searched fields, as a
//! whole word or inside one ("cake" finds "cheesecake"): that is what people expect from a
//! search box, and what Hearth did before ranking existed.
//!
//! # The rank
//!
//! Each occurrence of a search word is worth `kind × field`:
//! - kind: 3 for the whole word, 2 for the start of a word ("cake" in "cakes"), 1 inside one;
//! - field: 3 for a room name, 2 for a topic, 1 for a message body (a room named after the
//!   words is a stronger hint than a message that mentions them).
//!
//! A word scores the sum of its best [`MAX_COUNTED_OCCURRENCES`] occurrences (frequency
//! counts, but repeating a word forty times does not win), and the rank is the sum over the
//! search words. Ties are broken by recency (newest first) by the caller. The rank is an
//! integer, so pagination can resume exactly after a result.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most words of a search term that are used; the rest are ignored.
pub(crate) const MAX_WORDS: usize = 16;
/// The most occurrences of one word that add to the rank.
pub(crate) const MAX_COUNTED_OCCURRENCES: usize = 5;

/// The fields the spec lets a client search (`keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SearchKey {
    /// `content.body` of `m.room.message` events.
    #[serde(rename = "content.body")]
    Body,
    /// `content.name` of `m.room.name` events.
    #[serde(rename = "content.name")]
    Name,
    /// `content.topic` (and the `text/plain` `m.topic` body) of `m.room.topic` events.
    #[serde(rename = "content.topic")]
    Topic,
}

impl SearchKey {
    pub(crate) const ALL: [SearchKey; 3] = [SearchKey::Body, SearchKey::Name, SearchKey::Topic];

    fn weight(self) -> u64 {
        match self {
            SearchKey::Name => 3,
            SearchKey::Topic => 2,
            SearchKey::Body => 1,
        }
    }
}

/// How an event matched: its rank and the words of its text that matched (for
/// `highlights`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Score {
    pub(crate) rank: u64,
    pub(crate) matched: BTreeSet<String>,
}

/// The words of a search term, lowercased, each once, at most [`MAX_WORDS`].
pub(crate) fn search_words(term: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in split_words(term) {
        if !words.contains(&word) {
            words.push(word);
        }
        if words.len() == MAX_WORDS {
            break;
        }
    }
    words
}

/// The searched texts of a client-format event, by key, as the spec lists them: message
/// bodies, room names, topics. Other event types (encrypted ones included) have none.
pub(crate) fn searchable_texts(event: &Value, keys: &[SearchKey]) -> Vec<(SearchKey, String)> {
    let content = &event["content"];
    let kind = event["type"].as_str().unwrap_or_default();
    let mut texts = Vec::new();
    let mut push = |key: SearchKey, text: Option<&str>| {
        if let Some(text) = text.filter(|text| !text.is_empty()) {
            texts.push((key, text.to_owned()));
        }
    };
    for key in keys {
        match (key, kind) {
            (SearchKey::Body, "m.room.message") => push(*key, content["body"].as_str()),
            (SearchKey::Name, "m.room.name") => push(*key, content["name"].as_str()),
            (SearchKey::Topic, "m.room.topic") => {
                let topic = content["topic"].as_str();
                push(*key, topic);
                let plain = plain_topic(content).filter(|plain| Some(*plain) != topic);
                push(*key, plain);
            }
            _ => {}
        }
    }
    texts
}

/// The `text/plain` body of a topic's `m.topic` representations (spec: `m.room.topic`).
fn plain_topic(content: &Value) -> Option<&str> {
    content["m.topic"]["m.text"]
        .as_array()?
        .iter()
        .find(|text| {
            text["mimetype"]
                .as_str()
                .is_none_or(|mime| mime == "text/plain")
        })
        .and_then(|text| text["body"].as_str())
}

/// The score of `texts` for `words`, or `None` when a word occurs nowhere.
pub(crate) fn score(texts: &[(SearchKey, String)], words: &[String]) -> Option<Score> {
    let tokens: Vec<(SearchKey, String)> = texts
        .iter()
        .flat_map(|(key, text)| split_words(text).map(move |word| (*key, word)))
        .collect();
    let mut rank = 0;
    let mut matched = BTreeSet::new();
    for word in words {
        let mut values: Vec<u64> = Vec::new();
        for (key, token) in &tokens {
            let kind = if token == word {
                3
            } else if token.starts_with(word.as_str()) {
                2
            } else if token.contains(word.as_str()) {
                1
            } else {
                continue;
            };
            values.push(kind * key.weight());
            matched.insert(token.clone());
        }
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        rank += values.iter().take(MAX_COUNTED_OCCURRENCES).sum::<u64>();
    }
    Some(Score { rank, matched })
}

/// Lowercased words: runs of letters and digits.
fn split_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(text: &str) -> Vec<(SearchKey, String)> {
        vec![(SearchKey::Body, text.to_owned())]
    }

    fn rank(texts: &[(SearchKey, String)], term: &str) -> Option<u64> {
        score(texts, &search_words(term)).map(|score| score.rank)
    }

    #[test]
    fn every_word_must_occur() {
        assert_eq!(rank(&body("Chocolate cake recipe"), "cake recipe"), Some(6));
        assert_eq!(rank(&body("Chocolate cake"), "cake recipe"), None);
        assert_eq!(rank(&body(""), "cake"), None);
    }

    #[test]
    fn whole_words_beat_prefixes_beat_infixes() {
        let whole = rank(&body("the cake"), "cake");
        let prefix = rank(&body("the cakes"), "cake");
        let infix = rank(&body("the cheesecake"), "cake");
        assert!(whole > prefix && prefix > infix && infix > Some(0));
    }

    #[test]
    fn frequency_counts_up_to_a_cap() {
        let once = rank(&body("cake"), "cake");
        let twice = rank(&body("cake, more cake"), "cake");
        assert!(twice > once);
        let many = rank(&body(&"cake ".repeat(40)), "cake");
        assert_eq!(many, Some(3 * MAX_COUNTED_OCCURRENCES as u64));
    }

    #[test]
    fn names_weigh_more_than_topics_more_than_bodies() {
        let name = rank(&[(SearchKey::Name, "Cake".into())], "cake");
        let topic = rank(&[(SearchKey::Topic, "Cake".into())], "cake");
        assert!(name > topic && topic > rank(&body("Cake"), "cake"));
    }

    #[test]
    fn words_are_lowercased_deduplicated_and_capped() {
        assert_eq!(
            search_words("  Cake, CAKE! recipe "),
            vec!["cake", "recipe"]
        );
        assert!(search_words("?! ...").is_empty());
        let long: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(search_words(&long).len(), MAX_WORDS);
        let matched = score(&body("The CAKES"), &search_words("cake")).map(|s| s.matched);
        assert_eq!(matched, Some(BTreeSet::from(["cakes".to_owned()])));
    }

    #[test]
    fn only_the_spec_fields_of_the_spec_types_are_searched() {
        let message = json!({ "type": "m.room.message", "content": { "body": "hi", "name": "x" } });
        assert_eq!(
            searchable_texts(&message, &SearchKey::ALL),
            vec![(SearchKey::Body, "hi".to_owned())]
        );
        assert!(searchable_texts(&message, &[SearchKey::Name]).is_empty());
        let notice = json!({ "type": "m.sticker", "content": { "body": "hi" } });
        assert!(searchable_texts(&notice, &SearchKey::ALL).is_empty());
        let topic = json!({ "type": "m.room.topic", "content": {
            "topic": "plain", "m.topic": { "m.text": [
                { "mimetype": "text/html", "body": "<b>rich</b>" },
                { "body": "plain too" } ] } } });
        assert_eq!(
            searchable_texts(&topic, &[SearchKey::Topic]),
            vec![
                (SearchKey::Topic, "plain".to_owned()),
                (SearchKey::Topic, "plain too".to_owned())
            ]
        );
    }
}
