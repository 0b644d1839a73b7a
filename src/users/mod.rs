//! Users: what the server keeps about each of its own users and what they keep about
//! themselves.
//!
//! - [`accounts`]: accounts, sessions and devices, registration tokens, user-interactive
//!   authentication, password hashing with bounded concurrency.
//! - [`profile`]: display names and avatars (the room service copies them into member events).
//! - [`account_data`]: global and per-room account data, with its own stream.
//! - [`filter`]: stored filter definitions and how they choose events and fields.

pub mod account_data;
pub mod accounts;
pub mod filter;
pub mod profile;
