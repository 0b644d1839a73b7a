//! Property tests of the config file parser (issue 10): an owner's hand-edited file can hold
//! anything, and a mistake must come back as a message naming the line, never a panic at
//! start-up. Arbitrary text and TOML-ish text (the real sections and keys, with values of any
//! type and range) are parsed, and their errors displayed. (Here, beside the start-up that
//! reads the file, rather than in `config.rs`, which is near the 800-line bound.)
//!
//! Cases: 256, or `PROPTEST_CASES` (proptest's default config reads it; `scripts/test`
//! raises it under a time bound).

use std::path::Path;

use proptest::prelude::*;

use crate::config::Config;

const SECTIONS: &[&str] = &[
    "[server]",
    "[[listeners]]",
    "[tls]",
    "[database]",
    "[limits]",
    "[registration]",
    "[federation]",
    "[well_known]",
    "[logging]",
    "[nonsense]",
    "[server.extra]",
    "[[server]]",
];

const KEYS: &[&str] = &[
    "server_name",
    "signing_key",
    "workers",
    "address",
    "tls",
    "certificate",
    "private_key",
    "path",
    "cache_capacity_mb",
    "max_request_body_bytes",
    "shutdown_grace_seconds",
    "keep_alive_seconds",
    "max_connections",
    "auth_attempts_per_minute",
    "trust_forwarded_for",
    "enabled",
    "open",
    "trusted_key_servers",
    "send_presence",
    "receive_presence",
    "retry_initial_seconds",
    "extra_ca_file",
    "allow_private_addresses",
    "level",
    "client",
    "server",
    "unknown_key",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"example.org\"".to_owned()),
        Just("\"127.0.0.1:0\"".to_owned()),
        Just("\"[::1]:8448\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"not a name!\"".to_owned()),
        Just("\"info,hearth=debug\"".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("1.5".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("[\"matrix.org\", 5]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("'''\nmulti\n'''".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[ -~&&[^\"\\\\]]{0,12}\"",
        "[ -~]{0,8}",
    ]
}

/// Lines of a config file: sections, `key = value`, comments, junk.
fn toml_ish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        2 => prop::sample::select(SECTIONS).prop_map(str::to_owned),
        6 => (prop::sample::select(KEYS), value())
            .prop_map(|(key, value)| format!("{key} = {value}")),
        1 => Just("# a comment".to_owned()),
        1 => ".{0,16}",
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

fn parse(text: &str) {
    match Config::parse(text, Path::new("/etc/hearth")) {
        Ok(config) => {
            let _ = config.to_toml();
        }
        Err(err) => {
            let _ = err.to_string();
        }
    }
}

proptest! {
    #[test]
    fn prop_any_text_never_panics_as_a_config(text in ".{0,128}") {
        parse(&text);
    }

    #[test]
    fn prop_toml_ish_text_never_panics_as_a_config(text in toml_ish()) {
        parse(&text);
    }

    /// A valid file with one more line, of any kind, is still read or refused cleanly.
    #[test]
    fn prop_a_valid_file_with_one_more_line_never_panics(
        section in prop::sample::select(SECTIONS),
        key in prop::sample::select(KEYS),
        value in value(),
    ) {
        parse(&format!(
            "[server]\nserver_name = \"example.org\"\n\n{section}\n{key} = {value}\n"
        ));
    }
}
