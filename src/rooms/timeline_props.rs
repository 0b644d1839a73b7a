//! Property tests of sync and pagination tokens (issue 10): `since`, `from` and `to` come
//! from clients as they please, and `/sync`, `/messages` and `/relations` all read them here
//! ([`parse_token`]), so no text may panic it, and every token we hand out reads back as the
//! position it names.
//!
//! Cases: 256, or `PROPTEST_CASES` (proptest's default config reads it; `scripts/test`
//! raises it under a time bound).

use proptest::prelude::*;

use super::parse_token;

proptest! {
    #[test]
    fn prop_any_token_never_panics(token in ".{0,48}") {
        let _ = parse_token(&token);
    }

    #[test]
    fn prop_token_ish_text_never_panics(token in "[0-9_+\\-sStT ]{0,40}") {
        let _ = parse_token(&token);
    }

    /// `{position}_{serial}`, as `/sync` writes its `next_batch`, reads back exactly.
    #[test]
    fn prop_sync_tokens_round_trip(position in any::<u64>(), serial in any::<u64>()) {
        prop_assert_eq!(parse_token(&format!("{position}_{serial}")), Some((position, serial)));
    }

    /// A bare position, as pagination tokens are, has serial 0.
    #[test]
    fn prop_pagination_tokens_round_trip(position in any::<u64>()) {
        prop_assert_eq!(parse_token(&position.to_string()), Some((position, 0)));
    }

    /// Numbers past `u64`, signs and extra parts are refused, not wrapped or cut.
    #[test]
    fn prop_out_of_range_or_extra_parts_are_refused(
        position in any::<u64>(),
        serial in any::<u64>(),
    ) {
        prop_assert_eq!(parse_token(&format!("{position}0000000000000000000000")), None);
        prop_assert_eq!(parse_token(&format!("-{position}")), None);
        prop_assert_eq!(parse_token(&format!("{position}_{serial}_1")), None);
        prop_assert_eq!(parse_token(&format!("{position}_")), None);
        prop_assert_eq!(parse_token(&format!("_{serial}")), None);
    }
}
