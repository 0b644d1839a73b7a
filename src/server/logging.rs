//! Logs through `tracing`, to standard error. On a terminal: timestamps and colours. Under
//! systemd (`JOURNAL_STREAM` is set): neither, since journald stamps every line itself.
//! Never log secrets: access tokens, passwords, keys, or query strings (which may hold tokens).

use std::io::IsTerminal as _;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the global subscriber. `RUST_LOG`, when set and valid, wins over the config.
pub(crate) fn init(configured_level: &str) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = from_env
        .as_deref()
        .and_then(|text| crate::config::parse_filter(text).ok())
        .or_else(|| crate::config::parse_filter(configured_level).ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(!under_journald && std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if under_journald {
        registry.with(fmt.without_time()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}

#[cfg(test)]
mod tests {

    #[test]
    fn accepts_levels_and_directives() {
        assert!(crate::config::parse_filter("info").is_ok());
        assert!(crate::config::parse_filter("warn,hearth=debug").is_ok());
        assert!(crate::config::parse_filter("DEBUG").is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_level() {
        assert!(crate::config::parse_filter("loud").is_err());
        assert!(crate::config::parse_filter("hearth=verbose").is_err());
        assert!(crate::config::parse_filter("").is_err());
    }
}
