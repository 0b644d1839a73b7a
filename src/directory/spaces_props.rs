//! Property tests of the `/hierarchy` pagination token (issue 10): `from` comes from any
//! client, so no text may panic its parsing, and every token we hand out reads back as the
//! position it was made from.
//!
//! Cases: 256, or `PROPTEST_CASES` (proptest's default config reads it; `scripts/test`
//! raises it under a time bound).

use proptest::prelude::*;

use super::{MAX_DEPTH, MAX_ROOMS_WALKED, Position};

proptest! {
    #[test]
    fn prop_any_hierarchy_token_never_panics(token in ".{0,64}") {
        let _ = Position::parse(&token);
    }

    #[test]
    fn prop_hierarchy_token_ish_text_never_panics(token in "h1_[0-9a-fA-F_+\\-]{0,48}") {
        let _ = Position::parse(&token);
    }

    #[test]
    fn prop_hierarchy_tokens_round_trip(
        skip in 0..=MAX_ROOMS_WALKED,
        max_depth in 0..=MAX_DEPTH,
        suggested_only in any::<bool>(),
        root in any::<u64>(),
    ) {
        let position = Position { skip, max_depth, suggested_only, root };
        prop_assert_eq!(Position::parse(&position.token()), Some(position));
    }

    /// Positions past the walk's bounds are refused, whoever wrote the token.
    #[test]
    fn prop_hierarchy_tokens_out_of_bounds_are_refused(
        skip in MAX_ROOMS_WALKED + 1..,
        root in any::<u64>(),
    ) {
        let position = Position { skip, max_depth: 1, suggested_only: false, root };
        prop_assert!(Position::parse(&position.token()).is_none());
    }
}
