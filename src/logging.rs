//! Logs through `tracing`, to standard error. On a terminal: timestamps and colours. Under
//! systemd (`JOURNAL_STREAM` is set): neither, since journald stamps every line itself.
//! Never log secrets: access tokens, passwords, keys, or query strings (which may hold tokens).

use std::io::IsTerminal as _;
use std::str::FromStr as _;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Parses `info` or `warn,hearth=debug`: each directive a level, or `target=level`.
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    for directive in text.split(',').map(str::trim) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` is not a log level; use one of {} or `target=level`",
                LEVELS.join(", ")
            ));
        }
    }
    let targets = Targets::from_str(text).map_err(|err| err.to_string())?;
    // ruma's auth checks log every rule at INFO: a line per event. Quiet unless asked for.
    let quiet_already =
        ["off", "error", "warn"].contains(&text.trim().to_ascii_lowercase().as_str());
    if text.contains("ruma") || quiet_already {
        return Ok(targets);
    }
    Ok(targets.with_target("ruma_state_res", tracing::Level::WARN))
}

/// Installs the global subscriber. `RUST_LOG`, when set and valid, wins over the config.
pub fn init(configured_level: &str) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = from_env
        .as_deref()
        .and_then(|text| parse_filter(text).ok())
        .or_else(|| parse_filter(configured_level).ok())
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
    use super::*;

    #[test]
    fn accepts_levels_and_directives() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,hearth=debug").is_ok());
        assert!(parse_filter("DEBUG").is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_level() {
        assert!(parse_filter("loud").is_err());
        assert!(parse_filter("hearth=verbose").is_err());
        assert!(parse_filter("").is_err());
    }
}
