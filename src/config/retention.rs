//! `[retention]`: message retention (MSC1763, `m.room.retention`). Off by default, as in
//! Synapse: a server that deletes history must be asked to.
//!
//! Durations are written as a number of milliseconds or as a number with a unit (`500ms`,
//! `30s`, `10m`, `1h`, `7d`, `2w`, `1y` = 365 days), as Synapse's config writes them.

use serde::{Deserialize, Deserializer, Serialize};

use super::{Invalid, invalid};

/// How long events are kept, and how often the purge job runs. All durations in ms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetentionConfig {
    /// Honour `m.room.retention` and purge expired events at all.
    pub(crate) enabled: bool,
    /// The `max_lifetime` of rooms whose state has no `m.room.retention` (none: kept).
    #[serde(deserialize_with = "optional_duration")]
    pub(crate) default_max_lifetime: Option<u64>,
    /// A room's `max_lifetime` below this is raised to it.
    #[serde(deserialize_with = "optional_duration")]
    pub(crate) allowed_lifetime_min: Option<u64>,
    /// A room's `max_lifetime` above this is lowered to it.
    #[serde(deserialize_with = "optional_duration")]
    pub(crate) allowed_lifetime_max: Option<u64>,
    /// How often the purge job walks the rooms.
    #[serde(deserialize_with = "duration")]
    pub(crate) purge_interval: u64,
}

/// One hour: expired messages linger at most that long after their time.
const DEFAULT_PURGE_INTERVAL_MS: u64 = 60 * 60 * 1000;

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: false,
            default_max_lifetime: None,
            allowed_lifetime_min: None,
            allowed_lifetime_max: None,
            purge_interval: DEFAULT_PURGE_INTERVAL_MS,
        }
    }
}

pub(super) fn validate_retention(retention: &RetentionConfig) -> Result<(), Invalid> {
    // Small intervals are allowed (tests use a fraction of a second); a walk of a room that
    // has nothing expired reads one event, so a short interval costs little.
    if !(10..=30 * DAY).contains(&retention.purge_interval) {
        return Err(invalid(
            &["retention", "purge_interval"],
            "must be from 10ms to 30d",
        ));
    }
    if let (Some(min), Some(max)) = (
        retention.allowed_lifetime_min,
        retention.allowed_lifetime_max,
    ) && min > max
    {
        return Err(invalid(
            &["retention", "allowed_lifetime_min"],
            "must not be above `allowed_lifetime_max`",
        ));
    }
    if let Some(default) = retention.default_max_lifetime {
        let below = retention
            .allowed_lifetime_min
            .is_some_and(|min| default < min);
        let above = retention
            .allowed_lifetime_max
            .is_some_and(|max| default > max);
        if below || above {
            return Err(invalid(
                &["retention", "default_max_lifetime"],
                "must lie between `allowed_lifetime_min` and `allowed_lifetime_max`",
            ));
        }
    }
    Ok(())
}

const DAY: u64 = 24 * 60 * 60 * 1000;

/// A duration as written (`1h`, `500ms`, `7d`, or a number of ms), in milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like `500ms`, `1h` or `30d`)"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 60 * 60 * 1000,
        "d" => DAY,
        "w" => 7 * DAY,
        "y" => 365 * DAY,
        other => return Err(format!("unknown unit `{other}` in `{text}`")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Millis(u64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match Written::deserialize(deserializer)? {
        Written::Millis(ms) => Ok(ms),
        Written::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    duration(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("250"), Ok(250));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("2s"), Ok(2000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("30d"), Ok(30 * DAY));
        assert_eq!(parse_duration("1y"), Ok(365 * DAY));
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn a_section_reads_numbers_and_units() {
        let config: RetentionConfig = toml::from_str(
            "enabled = true\ndefault_max_lifetime = \"30d\"\nallowed_lifetime_min = 1000\npurge_interval = \"15m\"\n",
        )
        .expect("parses");
        assert!(config.enabled);
        assert_eq!(config.default_max_lifetime, Some(30 * DAY));
        assert_eq!(config.allowed_lifetime_min, Some(1000));
        assert_eq!(config.allowed_lifetime_max, None);
        assert_eq!(config.purge_interval, 15 * 60 * 1000);
        assert!(validate_retention(&config).is_ok());
    }

    #[test]
    fn inconsistent_bounds_are_refused() {
        let config = RetentionConfig {
            allowed_lifetime_min: Some(10 * DAY),
            allowed_lifetime_max: Some(DAY),
            ..RetentionConfig::default()
        };
        assert!(validate_retention(&config).is_err());
        let config = RetentionConfig {
            default_max_lifetime: Some(DAY),
            allowed_lifetime_min: Some(2 * DAY),
            ..RetentionConfig::default()
        };
        assert!(validate_retention(&config).is_err());
        let config = RetentionConfig {
            purge_interval: 0,
            ..RetentionConfig::default()
        };
        assert!(validate_retention(&config).is_err());
    }
}
