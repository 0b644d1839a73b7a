//! `hearth media`: what the operator of a small server needs of the content repository.
//! Like `hearth user`, it goes through the running server's control socket, or opens the
//! data directory itself when the server is stopped; either way the work is
//! `control::commands` calling the functions the running service uses (`media::admin`).

use clap::Subcommand;

use super::cli::{ConfigArg, control};
use super::control::Request;
use super::startup_error::StartupError;

#[derive(Debug, Subcommand)]
pub(crate) enum MediaCommand {
    /// Show how many files and bytes each local user has uploaded, and the size of the
    /// cache of other servers' media.
    Usage {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove other servers' cached media not used for longer than AGE (`30d`, `12h`,
    /// `90m`, `3600s`); they are fetched again if someone asks.
    PurgeRemote {
        /// How long unused: a number followed by d, h, m or s.
        #[arg(long)]
        older_than: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete everything a local user has uploaded.
    DeleteUser {
        /// The user name (`alice`) or full user ID (`@alice:example.org`).
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Runs a `hearth media` command.
pub(crate) fn run(command: MediaCommand) -> Result<(), StartupError> {
    match command {
        MediaCommand::Usage { config } => control(&config, |_| Ok(Request::MediaUsage)),
        MediaCommand::PurgeRemote { older_than, config } => {
            let older_than_secs = parse_age(&older_than).ok_or_else(|| {
                StartupError::Usage(format!(
                    "`{older_than}` is not an age: write a number followed by d, h, m or s"
                ))
            })?;
            control(&config, |_| {
                Ok(Request::MediaPurgeRemote { older_than_secs })
            })
        }
        MediaCommand::DeleteUser { name, config } => {
            control(&config, |_| Ok(Request::MediaDeleteUser { name }))
        }
    }
}

/// Seconds in `30d`, `12h`, `90m` or `3600s`.
fn parse_age(text: &str) -> Option<u64> {
    let text = text.trim();
    let unit = match text.chars().last()? {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    let number: u64 = text[..text.len() - 1].parse().ok()?;
    number.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_with_their_unit() {
        assert_eq!(parse_age("30d"), Some(30 * 86_400));
        assert_eq!(parse_age("2h"), Some(7200));
        assert_eq!(parse_age("5"), None);
        assert_eq!(parse_age("xd"), None);
    }
}
