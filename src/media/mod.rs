//! Media: what users share beyond text.
//!
//! # Layout
//! - [`preview`]: URL previews ([`preview::Previews`]), off by default: a page a user pasted,
//!   fetched by [`preview_fetch`] (through the outbound client's private-address refusal,
//!   redirects re-checked, bytes and time bounded) and read by [`opengraph`] (the `<head>`
//!   only), remembered for a while.

pub(crate) mod opengraph;
pub(crate) mod preview;
pub(crate) mod preview_fetch;
