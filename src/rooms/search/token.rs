//! `next_batch` tokens of `/search`: where the next page starts, opaque to clients.
//!
//! The server keeps nothing between pages: a token carries the order it was made for, the
//! stream position the first page searched up to (so later pages see the same events), the
//! rank and position of the last result given, how many results came before, and, for a
//! token from a group, the group. It is JSON in unpadded URL-safe base64, so it travels in
//! a query string as it is. A token that does not decode is the client's mistake (400).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// Tokens longer than this are not ours (ours are well under 300 characters).
const MAX_TOKEN_LENGTH: usize = 2048;

/// The order results come in (`order_by`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Order {
    /// Newest first.
    Recent,
    /// Highest rank first, then newest first.
    #[default]
    Rank,
}

/// A group a token continues within (spec: "using a token inside a group will return more
/// results from within that group").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    Room(String),
    Sender(String),
}

/// Where a page of results starts: after the result with `rank` and `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cursor {
    #[serde(rename = "o")]
    pub(crate) order: Order,
    /// The stream position the search reads up to.
    #[serde(rename = "s")]
    pub(crate) snapshot: u64,
    #[serde(rename = "r")]
    pub(crate) rank: u64,
    #[serde(rename = "p")]
    pub(crate) position: u64,
    /// Results given before this page (for `count` under `recent`).
    #[serde(rename = "n")]
    pub(crate) offset: u64,
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<Scope>,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        // Serializing plain integers, strings and enums cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a `next_batch` token back; anything else is `400 M_INVALID_PARAM`.
    pub(crate) fn decode(token: &str) -> Result<Cursor, Error> {
        let invalid = || {
            Error::new(
                ErrorKind::InvalidParam,
                "next_batch is not a token from this search",
            )
        };
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(invalid());
        }
        let json = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        serde_json::from_slice(&json).map_err(|_| invalid())
    }

    /// Whether a result with `rank` at `position` comes after this cursor in `self.order`.
    pub(crate) fn comes_after(&self, rank: u64, position: u64) -> bool {
        match self.order {
            Order::Recent => position < self.position,
            Order::Rank => rank < self.rank || (rank == self.rank && position < self.position),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stay_url_safe() {
        let cursor = Cursor {
            order: Order::Rank,
            snapshot: 90,
            rank: 7,
            position: 42,
            offset: 10,
            scope: Some(Scope::Room("!room:example.org".into())),
        };
        let token = cursor.encode();
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(Cursor::decode(&token).expect("decodes"), cursor);
    }

    #[test]
    fn foreign_tokens_are_refused() {
        for token in [
            "",
            "12",
            "not base64!",
            &URL_SAFE_NO_PAD.encode("{\"o\":\"rank\"}"),
        ] {
            let err = Cursor::decode(token).expect_err(token);
            assert_eq!(err.kind, ErrorKind::InvalidParam);
        }
        assert!(Cursor::decode(&"A".repeat(MAX_TOKEN_LENGTH + 1)).is_err());
    }

    #[test]
    fn rank_order_resumes_after_equal_ranks_by_position() {
        let cursor = Cursor {
            order: Order::Rank,
            snapshot: 0,
            rank: 5,
            position: 20,
            offset: 0,
            scope: None,
        };
        assert!(cursor.comes_after(5, 19));
        assert!(cursor.comes_after(4, 99));
        assert!(!cursor.comes_after(5, 20));
        assert!(!cursor.comes_after(6, 1));
    }
}
