//! Server ACLs (spec: `m.room.server_acl`; server-server API, "Server Access Control Lists"):
//! whether a room lets a server take part, decided from the ACL event's content alone.
//!
//! The spec's order: no ACL allows; an IP literal is denied when `allow_ip_literals` is
//! `false`; a `deny` match denies; an `allow` match allows; anything else is denied. Patterns
//! are case-insensitive globs (`*`, `?`) matched against the server name without its port.

use serde_json::Value;

use super::server_name::{Host, ServerAddress};

/// At most this many patterns of each list are looked at: an ACL is one event (64 KiB at
/// most), but a bound keeps a hostile one from costing more than a few thousand matches.
const MAX_PATTERNS: usize = 4096;

/// Whether the current `m.room.server_acl` of `room_id` lets `server` take part.
pub(crate) fn room_allows(
    storage: &crate::storage::Storage,
    room_id: &ruma::RoomId,
    server: &str,
) -> Result<bool, crate::storage::StorageError> {
    Ok(allows(room_acl(storage, room_id)?.as_ref(), server))
}

/// The content of the room's current `m.room.server_acl`, if it has one: read once when
/// many servers are to be judged.
pub(crate) fn room_acl(
    storage: &crate::storage::Storage,
    room_id: &ruma::RoomId,
) -> Result<Option<Value>, crate::storage::StorageError> {
    crate::rooms::state_content(storage, room_id, "m.room.server_acl", "")
}

/// Whether the ACL with `content` (none: the room has no ACL) allows `server`.
/// A server name that does not parse is denied whenever there is an ACL.
pub(crate) fn allows(content: Option<&Value>, server: &str) -> bool {
    let Some(content) = content else {
        return true;
    };
    let Ok(address) = ServerAddress::parse(server) else {
        return false;
    };
    // "Defaults to true if missing or otherwise not a boolean."
    let ip_literals = content
        .get("allow_ip_literals")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if matches!(address.host, Host::Ip(_)) && !ip_literals {
        return false;
    }
    let host = address.host_text().to_lowercase();
    if any_matches(content.get("deny"), &host) {
        return false;
    }
    any_matches(content.get("allow"), &host)
}

/// Whether one of the string patterns of a list matches `host`; entries that are not
/// strings, and a list that is not a list, match nothing.
fn any_matches(list: Option<&Value>, host: &str) -> bool {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(MAX_PATTERNS)
        .filter_map(Value::as_str)
        .any(|pattern| glob_matches(&pattern.to_lowercase(), host))
}

/// Glob matching (spec appendix, "Glob-style matching"): `*` is any run of characters,
/// `?` exactly one. Greedy with one backtrack point, so the cost stays
/// `pattern × text` whatever the pattern holds, never exponential.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // The position of the last `*` seen, and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and try again from there.
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_match_as_the_appendix_says() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "evil.com"));
        assert!(glob_matches("evil.com", "evil.com"));
        assert!(glob_matches("*.evil.com", "a.b.evil.com"));
        assert!(!glob_matches("*.evil.com", "evil.com"));
        assert!(glob_matches("ev?l.com", "evil.com"));
        assert!(!glob_matches("ev?l.com", "evl.com"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(glob_matches("**a", "a"));
        // A pattern made to make naive backtracking explode answers at once.
        let text = "a".repeat(200);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(50)), &text));
    }

    #[test]
    fn acls_apply_in_the_spec_order() {
        assert!(allows(None, "anyone.org"));
        let acl = json!({ "allow": ["*"], "deny": ["evil.com", "*.evil.com"] });
        assert!(allows(Some(&acl), "good.org:8448"));
        assert!(!allows(Some(&acl), "evil.com"));
        assert!(
            !allows(Some(&acl), "EVIL.com:1234"),
            "ports and case do not matter"
        );
        assert!(!allows(Some(&acl), "sub.evil.com"));
        assert!(
            allows(Some(&acl), "127.0.0.1:8448"),
            "IP literals allowed by default"
        );
        let no_ips = json!({ "allow": ["*"], "allow_ip_literals": false });
        assert!(!allows(Some(&no_ips), "127.0.0.1:8448"));
        assert!(!allows(Some(&no_ips), "[::1]:8448"));
        assert!(allows(Some(&no_ips), "good.org"));
        let not_bool = json!({ "allow": ["*"], "allow_ip_literals": "no" });
        assert!(allows(Some(&not_bool), "10.0.0.1"));
    }

    #[test]
    fn an_acl_without_allow_denies_everyone() {
        assert!(!allows(Some(&json!({})), "good.org"));
        assert!(!allows(Some(&json!({ "allow": "*" })), "good.org"));
        assert!(allows(Some(&json!({ "allow": [1, "good.*"] })), "good.org"));
        assert!(!allows(
            Some(&json!({ "allow": ["*"] })),
            "not a server name"
        ));
    }
}
