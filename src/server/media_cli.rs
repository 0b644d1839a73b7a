//! `hearth media`: what the operator of a small server needs of the content repository.
//! Like `hearth user`, it opens the data directory itself (the server must be stopped) and
//! calls the same functions the running service uses (`media::admin`).

use clap::Subcommand;

use super::cli::{ConfigArg, load_config, open_storage};
use super::startup_error::StartupError;
use crate::media::admin;
use crate::media::files::MediaFiles;
use crate::users::accounts;

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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| StartupError::Usage(format!("cannot start a runtime: {err}")))?;
    match command {
        MediaCommand::Usage { config } => {
            let (config, _) = load_config(&config)?;
            let storage = open_storage(&config)?;
            for usage in admin::usage_per_user(&storage)? {
                println!(
                    "{}\t{} files\t{} bytes",
                    usage.user, usage.count, usage.bytes
                );
            }
            let remote = admin::remote_bytes(&storage, config.server.server_name.as_str())?;
            println!("(other servers' media, cached)\t{remote} bytes");
        }
        MediaCommand::PurgeRemote { older_than, config } => {
            let age = parse_age(&older_than).ok_or_else(|| {
                StartupError::Usage(format!(
                    "`{older_than}` is not an age: write a number followed by d, h, m or s"
                ))
            })?;
            let (config, _) = load_config(&config)?;
            let storage = open_storage(&config)?;
            let files = MediaFiles::open(&config.database.path);
            let before = crate::matrix::time::now_ms().saturating_sub(age.saturating_mul(1000));
            let our_server = config.server.server_name.to_string();
            let removed = runtime.block_on(admin::purge_remote_before(
                &storage,
                &files,
                &our_server,
                before,
            ))?;
            println!(
                "removed {} cached remote file(s), {} bytes",
                removed.count, removed.bytes
            );
        }
        MediaCommand::DeleteUser { name, config } => {
            let (config, _) = load_config(&config)?;
            let user_id = accounts::local_user_id(&name, &config.server.server_name)
                .map_err(|err| StartupError::Usage(err.to_string()))?;
            let storage = open_storage(&config)?;
            let files = MediaFiles::open(&config.database.path);
            let our_server = config.server.server_name.to_string();
            let removed = runtime.block_on(admin::delete_user_media(
                &storage,
                &files,
                &our_server,
                user_id.as_str(),
            ))?;
            println!(
                "deleted {} file(s) of {user_id}, {} bytes",
                removed.count, removed.bytes
            );
        }
    }
    Ok(())
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
